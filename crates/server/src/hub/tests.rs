//! The hub's rules, tested without sockets: a hub over a [`MemoryStore`] and
//! a [`LocalBus`], on tokio's paused clock, in the style of quinn-proto's
//! deterministic tests.

mod harness;
