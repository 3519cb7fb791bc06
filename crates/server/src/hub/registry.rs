//! This node's connections per user: the connection caps, who is online, and
//! the first and last connection of a user, which the pool hears about.
//!
//! Connects and disconnects take one short lock; the hot path (chat,
//! receipts, typing) never does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use petchat_protocol::{CloseCode, User, UserId};
use tokio::sync::mpsc;

use super::pool::PoolCommand;
use super::remote::Remote;
use crate::bus::{Bus, ConnId, ConnSink};
use crate::config::Limits;

/// Connections of this node, counted per user.
pub(super) struct Registry {
    inner: Mutex<Inner>,
    bus: Arc<dyn Bus>,
    /// Hears a user's first and last connection (weak: the hub's handle keeps it open).
    pool: mpsc::WeakUnboundedSender<PoolCommand>,
    max_connections: usize,
    max_per_user: usize,
    /// The other nodes, in a cluster: a user's channel is heard while it has a connection here.
    remote: Option<Arc<Remote>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    /// Connections counted against the caps, attached or still connecting.
    total: usize,
    users: HashMap<UserId, Conns>,
}

#[derive(Default)]
struct Conns {
    /// Counted, `session.ready` not yet queued.
    connecting: usize,
    /// Attached to the bus.
    attached: Vec<ConnId>,
}

impl Registry {
    pub(super) fn new(
        bus: Arc<dyn Bus>,
        pool: mpsc::WeakUnboundedSender<PoolCommand>,
        limits: &Limits,
        remote: Option<Arc<Remote>>,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            bus,
            pool,
            max_connections: limits.max_connections,
            max_per_user: limits.max_connections_per_user,
            remote,
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a connection of `user` about to connect; refused with 1013 beyond the caps.
    pub(super) fn reserve(&self, user: &User) -> Result<(), (CloseCode, String)> {
        let retry = petchat_protocol::close::reason_with_retry_hint;
        let mut inner = self.inner();
        if inner.total >= self.max_connections {
            return Err((CloseCode::TRY_AGAIN_LATER, retry("server at capacity", 5_000)));
        }
        let conns = inner.users.entry(user.id.clone()).or_default();
        if conns.connecting + conns.attached.len() >= self.max_per_user {
            return Err((CloseCode::TRY_AGAIN_LATER, retry("too many connections for this user", 10_000)));
        }
        conns.connecting += 1;
        inner.total += 1;
        Ok(())
    }

    /// Gives back a reservation whose connection never attached.
    pub(super) fn unreserve(&self, user: &User) {
        let mut inner = self.inner();
        if let Some(conns) = inner.users.get_mut(&user.id) {
            conns.connecting = conns.connecting.saturating_sub(1);
            if conns.connecting == 0 && conns.attached.is_empty() {
                inner.users.remove(&user.id);
            }
            inner.total = inner.total.saturating_sub(1);
        }
    }

    /// Attaches a reserved connection to the bus; the user's first tells the pool.
    pub(super) fn attach(&self, conn: ConnId, user: &User, sink: ConnSink) {
        let mut inner = self.inner();
        self.bus.attach(conn, &user.id, sink);
        let conns = inner.users.entry(user.id.clone()).or_default();
        conns.connecting = conns.connecting.saturating_sub(1);
        conns.attached.push(conn);
        if conns.attached.len() == 1 {
            // Under the lock, so the pool (and Redis) hear firsts and lasts in their order.
            if let Some(remote) = &self.remote {
                remote.hold_user(&user.id);
            }
            self.tell_pool(PoolCommand::Online { user: user.clone() });
        }
    }

    /// Forgets a connection; the user's last tells the pool.
    pub(super) fn detach(&self, conn: ConnId, user: &User) {
        let mut inner = self.inner();
        self.bus.detach(conn);
        let Some(conns) = inner.users.get_mut(&user.id) else { return };
        let Some(at) = conns.attached.iter().position(|c| *c == conn) else { return };
        conns.attached.swap_remove(at);
        inner.total = inner.total.saturating_sub(1);
        let conns = inner.users.get(&user.id).expect("looked up above");
        if conns.attached.is_empty() {
            if conns.connecting == 0 {
                inner.users.remove(&user.id);
            }
            if let Some(remote) = &self.remote {
                remote.drop_user(&user.id);
            }
            self.tell_pool(PoolCommand::Offline { user: user.clone() });
        }
    }

    fn tell_pool(&self, command: PoolCommand) {
        if let Some(pool) = self.pool.upgrade() {
            let _ = pool.send(command);
        }
    }

    /// The user's attached connections.
    pub(super) fn conns_of(&self, user: &UserId) -> Vec<ConnId> {
        self.inner().users.get(user).map(|c| c.attached.clone()).unwrap_or_default()
    }

    /// Whether the user has an attached connection.
    pub(super) fn online(&self, user: &UserId) -> bool {
        self.inner().users.get(user).is_some_and(|c| !c.attached.is_empty())
    }

    /// This node's connections (connecting ones included).
    pub(super) fn total(&self) -> usize {
        self.inner().total
    }

    /// One frame to one connection.
    pub(super) fn send_to(&self, conn: ConnId, frame: &Utf8Bytes) {
        self.bus.send_to(conn, frame);
    }
}
