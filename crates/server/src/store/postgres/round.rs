//! A round of the shared agent pool on PostgreSQL: one transaction that
//! holds the pool's advisory lock from `lock_pool` to `commit`.
//!
//! The round owns its pooled connection with the transaction open on it, so
//! it cannot borrow a `Transaction`: it sends BEGIN and COMMIT itself. A
//! connection must never go back to the pool mid-transaction (the next user
//! would run inside it, holding the lock). So a round dropped without
//! committing, or whose commit failed or timed out, detaches its connection
//! from the pool with [`Object::take`] and drops it: the socket closes, and
//! the server rolls the transaction back and frees the lock. That costs a
//! new connection, only on those failure paths. A node that holds a round
//! and freezes loses it to `idle_in_transaction_session_timeout`.

use async_trait::async_trait;
use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;

use super::super::columns::{AGENT_COLUMNS, CONVERSATION_COLUMNS, agent, conversation};
use super::super::{Applied, PoolRound, PoolSnapshot, StoreError, Write};
use super::{ATTEMPT_TIMEOUT, OPEN_CONVERSATIONS, POOL_LOCK, Pg, PostgresStore, batch, classify, timed_out};

/// Begins the round's transaction, waits for the pool's lock (at most the
/// store's pool lock timeout), then reads the snapshot: each read is a
/// statement after the lock, so it sees every earlier round's commit.
pub(super) async fn lock(store: &PostgresStore) -> Result<Box<dyn PoolRound>, StoreError> {
    let wait = store.pool_lock_timeout;
    let begin = format!(
        "BEGIN; SET LOCAL lock_timeout = {}; SELECT pg_advisory_xact_lock({POOL_LOCK})",
        wait.as_millis().max(1)
    );
    let open_sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations {OPEN_CONVERSATIONS}");
    let agents_sql = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY id COLLATE \"C\"");
    let mut retried = false;
    loop {
        let client = store.client().await?;
        let attempt = async {
            client.batch_execute(&begin).await?;
            let (open, agents) =
                futures_util::future::try_join(client.prepare_cached(&open_sql), client.prepare_cached(&agents_sql))
                    .await?;
            futures_util::future::try_join(client.query(&open, &[]), client.query(&agents, &[])).await
        };
        let outcome = tokio::time::timeout(wait + ATTEMPT_TIMEOUT, attempt).await;
        let error = match outcome {
            Ok(Ok((open, agents))) => match snapshot(&open, &agents) {
                Ok(snapshot) => return Ok(Box::new(Round { client: Some(client), snapshot })),
                Err(e) => {
                    detach(client);
                    return Err(e);
                }
            },
            // A pooled connection the database closed since (it restarted):
            // nothing was held on it; once more on a fresh one.
            Ok(Err(e)) if e.is_closed() && !retried => {
                detach(client);
                retried = true;
                continue;
            }
            Ok(Err(e)) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => StoreError::Unavailable(
                format!("another round held the agent pool's lock for more than {} ms", wait.as_millis()).into(),
            ),
            Ok(Err(e)) => classify(e),
            Err(_) => timed_out("locking the agent pool"),
        };
        detach(client);
        return Err(error);
    }
}

/// A locked round: its connection, inside the transaction that holds the lock.
struct Round {
    /// `None` once `commit` has taken it.
    client: Option<Object>,
    snapshot: PoolSnapshot,
}

#[async_trait]
impl PoolRound for Round {
    fn snapshot(&self) -> &PoolSnapshot {
        &self.snapshot
    }

    /// No retry: the writes were decided from the snapshot, which a new
    /// transaction would not see again; the caller starts a new round.
    async fn commit(mut self: Box<Self>, writes: &[Write]) -> Result<Vec<Applied>, StoreError> {
        let client = self.client.take().expect("only commit takes the connection, and it consumes the round");
        let work = async {
            // The pool's lock is held already: only the conversations' rows.
            let applied = batch::run(&client, writes, false).await?;
            client.batch_execute("COMMIT").await.map_err(classify)?;
            Ok::<_, StoreError>(applied)
        };
        let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, work).await;
        match outcome {
            // Committed: the connection goes back to the pool, outside any transaction.
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(e)) => {
                detach(client);
                Err(e)
            }
            Err(_) => {
                detach(client);
                Err(timed_out("a pool round's commit"))
            }
        }
    }
}

impl Drop for Round {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            detach(client);
        }
    }
}

/// Closes a connection instead of returning it to the pool (see the module docs).
fn detach(client: Object) {
    drop(Object::take(client));
}

fn snapshot(open: &[tokio_postgres::Row], agents: &[tokio_postgres::Row]) -> Result<PoolSnapshot, StoreError> {
    Ok(PoolSnapshot {
        open: open.iter().map(|row| conversation(&Pg(row))).collect::<Result<_, _>>()?,
        agents: agents.iter().map(|row| agent(&Pg(row))).collect::<Result<_, _>>()?,
    })
}
