//! Small values the nodes share besides presence: leases (one node at a time
//! does a cluster-wide chore) and SSE tickets (minted on one node, used once
//! on any).

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{ClusterError, RedisLink, within};

static LEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/lease.lua")));

impl RedisLink {
    /// Takes or renews the lease `name` for `hold`: true while this node
    /// holds it (another takes over once a holder stops renewing).
    pub async fn lease(&self, name: &str, hold: Duration) -> Result<bool, ClusterError> {
        self.check_open()?;
        let presence = &self.inner.presence;
        let mut invocation = LEASE.prepare_invoke();
        invocation.key(presence.keys.lease(name)).arg(presence.node.as_str()).arg(hold.as_millis() as u64);
        let mut conn = presence.conn.clone();
        let held: i64 = within(presence.timeout, invocation.invoke_async(&mut conn)).await?;
        Ok(held == 1)
    }

    /// Keeps `value` under the ticket `id` for `ttl`.
    pub async fn put_ticket(&self, id: &str, value: &str, ttl: Duration) -> Result<(), ClusterError> {
        self.check_open()?;
        let presence = &self.inner.presence;
        let mut set = redis::cmd("SET");
        set.arg(presence.keys.ticket(id)).arg(value).arg("PX").arg(ttl.as_millis() as u64);
        let mut conn = presence.conn.clone();
        within(presence.timeout, set.query_async::<()>(&mut conn)).await
    }

    /// The value of the ticket `id`, taken away (GETDEL): the first caller
    /// on any node gets it, every later one none.
    pub async fn take_ticket(&self, id: &str) -> Result<Option<String>, ClusterError> {
        self.check_open()?;
        let presence = &self.inner.presence;
        let mut take = redis::cmd("GETDEL");
        take.arg(presence.keys.ticket(id));
        let mut conn = presence.conn.clone();
        within(presence.timeout, take.query_async(&mut conn)).await
    }
}
