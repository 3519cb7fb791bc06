//! The PostgreSQL store, for several nodes on one database (SPEC §10): the
//! SQLite store's guarantees where many writers commit at once.
//!
//! It runs on `tokio-postgres` with a `deadpool-postgres` pool. Both are
//! maintained by the rust-postgres project's people, talk the wire protocol
//! asynchronously on tokio, pipeline statements (a batch is sent in one go
//! and answered in one go) and cache prepared statements per connection;
//! unlike sqlx they need no database at compile time and add no query macros.
//! TLS is off (`NoTls`): the database is expected on a private network.
//!
//! How the guarantees hold across nodes:
//! - `seq`: an append takes the next seq by updating its conversation's row
//!   (`last_seq = last_seq + 1`), whose lock it holds until COMMIT; so seqs
//!   are gapless and in commit order whatever node writes. No sequence
//!   object is involved: those leave gaps on rollback.
//! - Deadlocks: a batch first locks every conversation row it touches in id
//!   order, so two batches never wait on each other in a cycle; a
//!   serialization failure or deadlock reported anyway retries the whole
//!   transaction a few times.
//! - Idempotency: (conversation, author, clientMessageId) is a unique index,
//!   and an append inserts only when no row holds its key: a resend through
//!   another node finds the original, because the original's transaction
//!   held the conversation's lock and committed before the resend got it.
//! - The shared agent pool: a round takes a transaction-scoped advisory
//!   lock ([`POOL_LOCK`]) and reads the agents and the open conversations
//!   after it, so it sees every earlier round's commit (READ COMMITTED takes
//!   a snapshot per statement); its writes then lock conversation rows like
//!   any batch (`postgres/round.rs`). Pool writes sent through `apply` take
//!   the same lock first, so they never interleave with a round.
//! - Nothing hangs: the pool waits, connects and every statement run have
//!   timeouts, so an unreachable database gives an error in a few seconds;
//!   closed connections are dropped from the pool, which opens new ones when
//!   the database is back.

mod batch;
mod round;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use petchat_protocol::{AttachmentId, ClientMessageId, ConversationId, LastSeq, ListScope, Timestamp, User, UserId};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use tracing::{debug, warn};

use super::columns::{
    ATTACHMENT_COLUMNS, CONVERSATION_COLUMNS, Columns, FEED_ITEM_COLUMNS, MESSAGE_COLUMNS, attachment, conversation,
    feed_item, last_seq, like_pattern, member_column, message, receipt, status_name,
};
use super::{
    Applied, AttachmentRecord, ConversationRecord, Feed, FeedPage, ListFilter, MessageRecord, PoolRound, ReceiptRecord,
    Store, StoreError, SummaryRecord, Write,
};

/// The search condition of a list (`$3`: a pattern for `ILIKE`, or NULL for none).
const SEARCH: &str = "($3::text IS NULL OR customer_name ILIKE $3 ESCAPE '\\' OR customer_id ILIKE $3 ESCAPE '\\' \
     OR topic ILIKE $3 ESCAPE '\\')";

/// Conversations and messages in a PostgreSQL database that several nodes may share.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// Connections for writes and reads alike; each caches its prepared statements.
    pool: Pool,
    /// How long `lock_pool` waits for another node's round to end.
    pool_lock_timeout: Duration,
}

/// Connections the pool keeps at most: one writer plus readers (joins, history, readiness).
const POOL_SIZE: usize = 16;
/// How long to wait for a connection to open, and for a free one from the pool.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The server-side bound on one statement (lock waits included).
const STATEMENT_TIMEOUT_MS: u64 = 5_000;
/// The server ends a session left idle inside a transaction this long, so a
/// node that froze mid-batch does not hold conversation locks forever.
const IDLE_IN_TRANSACTION_TIMEOUT_MS: u64 = 10_000;
/// The client-side bound on one attempt of a read or a batch, beyond the
/// server's own: a database that stopped answering must not hang a caller.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);
/// `/readyz` must answer quickly.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts of a batch that hit a serialization failure or a deadlock.
const CONFLICT_ATTEMPTS: u32 = 5;
/// The `pg_advisory_xact_lock` key that serializes migrations between nodes
/// starting at once ("petchat" in ASCII).
const MIGRATION_LOCK: i64 = 0x0070_6574_6368_6174;
/// The `pg_advisory_xact_lock` key of the shared agent pool, one round at a
/// time whatever node ("petcpool" in ASCII).
const POOL_LOCK: i64 = 0x7065_7463_706f_6f6c;
/// How long a round waits for the previous one by default: rounds are short
/// (read, decide in memory, write), so a wait this long means a node is stuck.
const POOL_LOCK_TIMEOUT: Duration = Duration::from_secs(3);

/// The bound on migrating at start, waiting for another node's migrations included.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(30);
/// The schema migrations, applied in order and recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/postgres/0001_initial.sql")),
    (2, "agents", include_str!("../../migrations/postgres/0002_agents.sql")),
    (3, "feeds", include_str!("../../migrations/postgres/0003_feeds.sql")),
    (4, "lifecycle", include_str!("../../migrations/postgres/0004_lifecycle.sql")),
    (5, "attachments", include_str!("../../migrations/postgres/0005_attachments.sql")),
    (6, "unsent_attachments", include_str!("../../migrations/postgres/0006_unsent_attachments.sql")),
];

/// The open conversations, in the order SQLite gives (which sorts NULL first), ties by id.
const OPEN_CONVERSATIONS: &str = "WHERE status <> 'closed' \
     ORDER BY status = 'active', queued_at NULLS FIRST, created_at, id COLLATE \"C\"";

/// Whether a database URL names PostgreSQL.
pub(super) fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl PostgresStore {
    /// Connects to the database of a `postgres://USER[:PASS]@HOST:PORT/DB`
    /// (or `postgresql://`) URL and applies the migrations it lacks.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Refused(Box::new(e)))?;
        let options = format!(
            "{} -c statement_timeout={STATEMENT_TIMEOUT_MS} \
             -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}",
            config.get_options().unwrap_or_default()
        );
        config
            .options(options.trim_start())
            .application_name("petchat-server")
            .connect_timeout(CONNECT_TIMEOUT)
            // A peer that vanished without closing (a dead host, a cut
            // network) is noticed in seconds, not TCP's two hours.
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(10));
        // Fast recycling: a connection the driver saw close is dropped; one
        // that died unseen fails its next statement, which a read retries.
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Refused(Box::new(e)))?;
        let store = Self { pool, pool_lock_timeout: POOL_LOCK_TIMEOUT };
        store.migrate().await?;
        Ok(store)
    }

    /// The same store with `lock_pool` waiting at most `timeout` for the
    /// pool's lock (default 3 s) before it fails with `Unavailable`.
    pub fn with_pool_lock_timeout(mut self, timeout: Duration) -> Self {
        self.pool_lock_timeout = timeout;
        self
    }

    /// Applies the migrations not yet applied, in one transaction under an
    /// advisory lock: nodes starting at once wait for the first, then find
    /// nothing to do. (PostgreSQL's DDL is transactional: all or nothing.)
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let work = async {
            let tx = client.transaction().await?;
            // Another node's migrations may hold the lock for a while.
            tx.batch_execute(&format!("SET LOCAL statement_timeout = {}", MIGRATION_TIMEOUT.as_millis())).await?;
            tx.query("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (\
                 version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .await?;
            let applied: Vec<i64> = tx
                .query("SELECT version FROM schema_migrations", &[])
                .await?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()?;
            for (version, name, sql) in MIGRATIONS.iter().filter(|(version, ..)| !applied.contains(version)) {
                debug!(version, name, "applying a migration");
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    &[version, name, &unix_ms_now()],
                )
                .await?;
            }
            tx.commit().await
        };
        match tokio::time::timeout(MIGRATION_TIMEOUT + CONNECT_TIMEOUT, work).await {
            Ok(done) => done.map_err(classify),
            Err(_) => Err(timed_out("migrating the schema")),
        }
    }

    /// A pooled connection, or why none could be had in time.
    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => classify(e),
            other => StoreError::Unavailable(Box::new(other)),
        })
    }

    /// Runs one read statement on a pooled connection, within `limit`. A
    /// connection that turns out closed (the database restarted since it was
    /// opened) is dropped and the read tried once more on a fresh one.
    async fn read(&self, sql: &str, params: &[&(dyn ToSql + Sync)], limit: Duration) -> Result<Vec<Row>, StoreError> {
        let mut retried = false;
        loop {
            let client = self.client().await?;
            let attempt = async {
                let statement = client.prepare_cached(sql).await?;
                client.query(&statement, params).await
            };
            match tokio::time::timeout(limit, attempt).await {
                Ok(Ok(rows)) => return Ok(rows),
                Ok(Err(e)) if e.is_closed() && !retried => {
                    debug!(error = %e, "a pooled connection was closed; reading again on a new one");
                    retried = true;
                }
                Ok(Err(e)) => return Err(classify(e)),
                Err(_) => {
                    // The connection may still be busy with the statement: not back to the pool.
                    drop(Object::take(client));
                    return Err(timed_out("a read"));
                }
            }
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn apply(&self, batch: &[Write]) -> Result<Vec<Applied>, StoreError> {
        let mut attempt = 1;
        loop {
            let mut client = self.client().await?;
            let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, batch::apply_once(&mut client, batch)).await;
            let failure = match outcome {
                Ok(Ok(applied)) => return Ok(applied),
                Ok(Err(failure)) => failure,
                Err(_) => {
                    // Whether the COMMIT happened is unknown, and the
                    // connection may be mid-statement: drop it, report.
                    drop(Object::take(client));
                    return Err(timed_out("a write batch"));
                }
            };
            let retry = match &failure {
                batch::Failure::Conflict(e) if attempt < CONFLICT_ATTEMPTS => {
                    debug!(error = %e, attempt, "a write batch conflicted with another; retrying it");
                    true
                }
                // Lost before COMMIT was sent: the server rolled it back.
                // Once, for a pooled connection the database closed.
                batch::Failure::Connection(e) if attempt == 1 => {
                    debug!(error = %e, "the connection closed before the commit; retrying the batch");
                    true
                }
                _ => false,
            };
            if !retry {
                return Err(failure.into());
            }
            attempt += 1;
            // Conflicting writers step apart before trying again.
            tokio::time::sleep(Duration::from_millis(rand::random_range(1..=10) * u64::from(attempt))).await;
        }
    }

    async fn conversation(&self, id: &ConversationId) -> Result<Option<ConversationRecord>, StoreError> {
        let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1");
        let rows = self.read(&sql, &[&id.as_str()], ATTEMPT_TIMEOUT).await?;
        rows.first().map(|row| conversation(&Pg(row))).transpose()
    }

    async fn open_conversations(&self) -> Result<Vec<ConversationRecord>, StoreError> {
        let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations {OPEN_CONVERSATIONS}");
        let rows = self.read(&sql, &[], ATTEMPT_TIMEOUT).await?;
        rows.iter().map(|row| conversation(&Pg(row))).collect()
    }

    async fn messages_after(
        &self,
        id: &ConversationId,
        after: LastSeq,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        );
        let (after, limit) = (after.get() as i64, i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self.read(&sql, &[&id.as_str(), &after, &limit], ATTEMPT_TIMEOUT).await?;
        rows.iter().map(|row| message(&Pg(row))).collect()
    }

    async fn stored_message(
        &self,
        conversation: &ConversationId,
        author: &UserId,
        client_message_id: &ClientMessageId,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE conversation_id = $1 AND author_id = $2 AND client_message_id = $3"
        );
        let params: [&(dyn ToSql + Sync); 3] = [&conversation.as_str(), &author.as_str(), &client_message_id.as_str()];
        let rows = self.read(&sql, &params, ATTEMPT_TIMEOUT).await?;
        rows.first().map(|row| message(&Pg(row))).transpose()
    }

    async fn feed(
        &self,
        feed: &Feed,
        after: Option<LastSeq>,
        limit: usize,
        not_before: Option<Timestamp>,
    ) -> Result<FeedPage, StoreError> {
        // One statement, one snapshot: the feed's row and its items.
        let sql = format!(
            "SELECT f.last_seq, f.read_seq, i.* FROM (SELECT 1) AS one \
             LEFT JOIN feeds f ON f.feed = $1 \
             LEFT JOIN LATERAL (SELECT {FEED_ITEM_COLUMNS} FROM feed_items \
                 WHERE feed = $1 AND seq > COALESCE($2, f.read_seq, 0) AND at >= $3 ORDER BY seq LIMIT $4) AS i ON TRUE"
        );
        let (key, after) = (feed.key(), after.map(|seq| seq.get() as i64));
        let (not_before, limit) =
            (not_before.map_or(i64::MIN, Timestamp::as_unix_ms), i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self.read(&sql, &[&key, &after, &not_before, &limit], ATTEMPT_TIMEOUT).await?;
        let mut page = FeedPage::default();
        for row in &rows {
            let row = Pg(row);
            page.last_seq = last_seq(row.optional_int("last_seq")?.unwrap_or(0))?;
            page.read_seq = last_seq(row.optional_int("read_seq")?.unwrap_or(0))?;
            if row.optional_int("seq")?.is_some() {
                page.items.push(feed_item(&row)?);
            }
        }
        Ok(page)
    }

    async fn first_responses(&self, since: Timestamp) -> Result<Vec<u64>, StoreError> {
        let sql = "SELECT MIN(m.sent_at) - c.created_at AS wait FROM conversations c JOIN messages m ON m.conversation_id = c.id AND m.author_role = 'agent' WHERE c.created_at >= $1 GROUP BY c.id, c.created_at";
        let rows = self.read(sql, &[&since.as_unix_ms()], ATTEMPT_TIMEOUT).await?;
        rows.iter().map(|row| Ok(Pg(row).int("wait")?.max(0) as u64)).collect()
    }

    async fn attachment(
        &self,
        conversation: &ConversationId,
        id: &AttachmentId,
    ) -> Result<Option<AttachmentRecord>, StoreError> {
        let sql = format!("SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE id = $1 AND conversation_id = $2");
        let rows = self.read(&sql, &[&id.as_str(), &conversation.as_str()], ATTEMPT_TIMEOUT).await?;
        rows.first().map(|row| attachment(&Pg(row))).transpose()
    }

    async fn receipts(&self, id: &ConversationId) -> Result<Vec<ReceiptRecord>, StoreError> {
        // Byte order, as SQLite sorts, whatever the database's collation.
        let sql = "SELECT user_id, kind, up_to_seq, at FROM receipts WHERE conversation_id = $1 \
                   ORDER BY kind COLLATE \"C\", user_id COLLATE \"C\"";
        let rows = self.read(sql, &[&id.as_str()], ATTEMPT_TIMEOUT).await?;
        rows.iter().map(|row| receipt(&Pg(row))).collect()
    }

    async fn member_conversations(&self, user: &User) -> Result<Vec<ConversationRecord>, StoreError> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE {} = $1 AND status <> 'closed' \
             ORDER BY created_at, id COLLATE \"C\"",
            member_column(user.role)
        );
        let rows = self.read(&sql, &[&user.id.as_str()], ATTEMPT_TIMEOUT).await?;
        rows.iter().map(|row| conversation(&Pg(row))).collect()
    }

    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConversationRecord>, StoreError> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations \
             WHERE (customer_id = $1 OR agent_id = $1) AND status <> 'closed' ORDER BY created_at, id COLLATE \"C\""
        );
        let rows = self.read(&sql, &[&user.as_str()], ATTEMPT_TIMEOUT).await?;
        rows.iter().map(|row| conversation(&Pg(row))).collect()
    }

    async fn list_conversations(&self, user: &User, filter: &ListFilter) -> Result<Vec<SummaryRecord>, StoreError> {
        // Ids in byte order, as SQLite compares them, whatever the database's collation.
        let sql = match filter.scope {
            ListScope::Mine => format!(
                "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE {} = $1 \
                 AND ($2::text IS NULL OR status = $2) AND {SEARCH} \
                 AND ($4::text IS NULL OR (created_at, id COLLATE \"C\") < \
                      (SELECT created_at, id COLLATE \"C\" FROM conversations WHERE id = $4)) \
                 ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT $5",
                member_column(user.role)
            ),
            ListScope::Queue => format!(
                "SELECT {CONVERSATION_COLUMNS} FROM conversations \
                 WHERE status = 'queued' AND customer_away_since IS NULL AND ($1::text IS NOT NULL) \
                 AND ($2::text IS NULL) AND {SEARCH} \
                 AND ($4::text IS NULL OR (queued_at, created_at, id COLLATE \"C\") > \
                      (SELECT queued_at, created_at, id COLLATE \"C\" FROM conversations WHERE id = $4)) \
                 ORDER BY queued_at, created_at, id COLLATE \"C\" LIMIT $5"
            ),
        };
        let status = filter.status.filter(|_| filter.scope == ListScope::Mine).map(status_name);
        let query = filter.query.as_ref().map(|q| like_pattern(q.as_str()));
        let after = filter.after.as_ref().map(ConversationId::as_str);
        let limit = i64::try_from(filter.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let params: [&(dyn ToSql + Sync); 5] = [&user.id.as_str(), &status, &query, &after, &limit];
        let rows = self.read(&sql, &params, ATTEMPT_TIMEOUT).await?;
        let page = rows.iter().map(|row| conversation(&Pg(row))).collect::<Result<Vec<_>, _>>()?;
        let (ids, seqs): (Vec<&str>, Vec<i64>) =
            page.iter().map(|rec| (rec.id.as_str(), rec.last_seq.get() as i64)).unzip();
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE (conversation_id, seq) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))"
        );
        let rows = self.read(&sql, &[&ids, &seqs], ATTEMPT_TIMEOUT).await?;
        let mut last: std::collections::HashMap<ConversationId, MessageRecord> = rows
            .iter()
            .map(|row| message(&Pg(row)).map(|m| (m.conversation_id.clone(), m)))
            .collect::<Result<_, _>>()?;
        Ok(page
            .into_iter()
            .map(|rec| SummaryRecord { last_message: last.remove(&rec.id), conversation: rec })
            .collect())
    }

    async fn quiet_conversations(&self, quiet_since: Timestamp) -> Result<Vec<ConversationId>, StoreError> {
        let sql = "SELECT c.id FROM conversations c \
             LEFT JOIN messages m ON m.conversation_id = c.id AND m.seq = c.last_seq \
             WHERE c.status <> 'closed' AND COALESCE(m.sent_at, c.created_at) < $1 \
             ORDER BY COALESCE(m.sent_at, c.created_at), c.id COLLATE \"C\"";
        let rows = self.read(sql, &[&quiet_since.as_unix_ms()], ATTEMPT_TIMEOUT).await?;
        rows.iter()
            .map(|row| {
                ConversationId::new(Pg(row).text("id")?)
                    .map_err(|e| StoreError::Corrupt(format!("conversation id: {e}")))
            })
            .collect()
    }

    async fn forget_unsent_attachments(
        &self,
        uploaded_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<AttachmentId>, StoreError> {
        // SKIP LOCKED: the nodes of a cluster sweep side by side, and an
        // append claiming one of the rows makes the sweep pass it by.
        let sql = "DELETE FROM attachments WHERE id IN (SELECT id FROM attachments \
             WHERE message_id IS NULL AND created_at < $1 ORDER BY created_at, id COLLATE \"C\" LIMIT $2 \
             FOR UPDATE SKIP LOCKED) RETURNING id";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.read(sql, &[&uploaded_before.as_unix_ms(), &limit], ATTEMPT_TIMEOUT).await?;
        rows.iter()
            .map(|row| {
                AttachmentId::new(Pg(row).text("id")?).map_err(|e| StoreError::Corrupt(format!("attachment id: {e}")))
            })
            .collect()
    }

    async fn lock_pool(&self) -> Result<Box<dyn PoolRound>, StoreError> {
        round::lock(self).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match tokio::time::timeout(PING_TIMEOUT, self.read("SELECT 1", &[], PING_TIMEOUT)).await {
            Ok(rows) => rows.map(drop),
            Err(_) => Err(timed_out("the readiness check")),
        }
    }

    async fn close(&self) {
        self.pool.close();
    }
}

/// Sorts a driver error by what a caller can do about it.
fn classify(e: tokio_postgres::Error) -> StoreError {
    let Some(code) = e.code() else {
        // No answer from the database: I/O, a closed connection, a timeout.
        return StoreError::Unavailable(Box::new(e));
    };
    let class = &code.code()[..2];
    let transient = matches!(class, "08" | "40" | "53" | "57")
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT;
    if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_CATALOG_NAME {
        warn!(error = %e, "the database refused the connection");
    }
    if transient { StoreError::Unavailable(Box::new(e)) } else { StoreError::Refused(Box::new(e)) }
}

fn timed_out(what: &str) -> StoreError {
    StoreError::Unavailable(format!("{what} got no answer within its timeout").into())
}

fn corrupt(e: tokio_postgres::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn unix_ms_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A row read through the shared decoders.
struct Pg<'a>(&'a Row);

impl Columns for Pg<'_> {
    fn text(&self, name: &str) -> Result<String, StoreError> {
        self.0.try_get(name).map_err(corrupt)
    }
    fn optional_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.0.try_get(name).map_err(corrupt)
    }
    fn int(&self, name: &str) -> Result<i64, StoreError> {
        self.0.try_get(name).map_err(corrupt)
    }
    fn optional_int(&self, name: &str) -> Result<Option<i64>, StoreError> {
        self.0.try_get(name).map_err(corrupt)
    }
    fn flag(&self, name: &str) -> Result<bool, StoreError> {
        self.0.try_get(name).map_err(corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_schemes_name_postgres() {
        assert!(is_postgres_url("postgres://u@127.0.0.1:5432/db"));
        assert!(is_postgres_url("postgresql://u:p@host/db"));
        assert!(!is_postgres_url("sqlite://petchat.db"));
        assert!(!is_postgres_url("postgres:/db"));
    }

    #[test]
    fn migrations_are_numbered_in_order_from_one() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|(v, ..)| *v).collect();
        assert_eq!(versions, (1..=MIGRATIONS.len() as i64).collect::<Vec<_>>());
    }
}
