//! AFL entry point of the `session` target ([`petchat_fuzz::session`]).

fn main() {
    afl::fuzz!(|data: &[u8]| petchat_fuzz::session(data));
}
