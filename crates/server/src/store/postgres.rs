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
//! - Nothing hangs: the pool waits, connects and every statement run have
//!   timeouts, so an unreachable database gives an error in a few seconds;
//!   closed connections are dropped from the pool, which opens new ones when
//!   the database is back.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use petchat_protocol::{ClientMessageId, ConversationId, LastSeq, Timestamp, User, UserId};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Statement};
use tracing::{debug, warn};

use super::columns::{
    CONVERSATION_COLUMNS, Columns, MESSAGE_COLUMNS, conversation, member_column, message, receipt, seq, status,
    status_name,
};
use super::{Applied, ConversationRecord, MessageRecord, ReceiptRecord, Store, StoreError, Write};

/// Conversations and messages in a PostgreSQL database that several nodes may share.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// Connections for writes and reads alike; each caches its prepared statements.
    pool: Pool,
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

/// The bound on migrating at start, waiting for another node's migrations included.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(30);
/// The schema migrations, applied in order and recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str, &str)] = &[(1, "initial", include_str!("../../migrations/postgres/0001_initial.sql"))];

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
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
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
            let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, apply_once(&mut client, batch)).await;
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
                Failure::Conflict(e) if attempt < CONFLICT_ATTEMPTS => {
                    debug!(error = %e, attempt, "a write batch conflicted with another; retrying it");
                    true
                }
                // Lost before COMMIT was sent: the server rolled it back.
                // Once, for a pooled connection the database closed.
                Failure::Connection(e) if attempt == 1 => {
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
        // The order SQLite gives, which sorts NULL first.
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE status <> 'closed' \
             ORDER BY status = 'active', queued_at NULLS FIRST, created_at"
        );
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

/// Locks the conversation rows a batch touches, in id order, before any
/// write: every batch takes its locks in the same order, so none waits for
/// another that waits for it.
const LOCK: &str = "SELECT id FROM conversations WHERE id = ANY($1) ORDER BY id FOR UPDATE";

const CREATE: &str = "INSERT INTO conversations (id, customer_id, customer_name, agent_id, agent_name, status, \
     last_seq, created_at, queued_at, topic, pet_id, order_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

const ASSIGN: &str = "UPDATE conversations SET agent_id = $1, agent_name = $2, status = $3, \
     queued_at = COALESCE($4, queued_at) WHERE id = $5 AND status <> 'closed' RETURNING 1";

const CLOSE: &str = "UPDATE conversations SET status = 'closed', closed_at = $1, closed_by = $2 \
     WHERE id = $3 AND status <> 'closed' RETURNING 1";

/// An append in one statement, so that a batch's appends pipeline: take the
/// next seq (`next`: only for a member of an open conversation, only when
/// the key is new) and insert the message with it (`inserted`). The outer
/// SELECT reads the statement's snapshot, from before both: the
/// conversation's status and whether the author is a member, and the message
/// already stored under the key, if any. That snapshot is taken after the
/// batch locked the conversation, so it holds every append committed before.
const APPEND: &str = "WITH next AS ( \
         UPDATE conversations SET last_seq = last_seq + 1 \
         WHERE id = $1 AND status <> 'closed' \
           AND (CASE $4::text WHEN 'customer' THEN customer_id WHEN 'agent' THEN agent_id END) = $3 \
           AND NOT EXISTS (SELECT 1 FROM messages \
                           WHERE conversation_id = $1 AND author_id = $3 AND client_message_id = $6) \
         RETURNING last_seq \
     ), inserted AS ( \
         INSERT INTO messages (conversation_id, seq, id, author_id, author_role, author_name, \
                               client_message_id, text, sent_at) \
         SELECT $1::text, last_seq, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::bigint \
         FROM next \
         RETURNING seq \
     ) \
     SELECT (SELECT seq FROM inserted) AS appended, c.status AS conversation_status, \
            (CASE $4::text WHEN 'customer' THEN c.customer_id WHEN 'agent' THEN c.agent_id END) = $3 AS member, \
            m.conversation_id, m.id, m.seq, m.author_id, m.author_role, m.author_name, m.client_message_id, \
            m.text, m.sent_at \
     FROM (SELECT 1) AS one \
     LEFT JOIN conversations c ON c.id = $1 \
     LEFT JOIN messages m ON m.conversation_id = $1 AND m.author_id = $3 AND m.client_message_id = $6";

const RECEIPT: &str = "INSERT INTO receipts (conversation_id, user_id, kind, up_to_seq, at) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (conversation_id, user_id, kind) DO UPDATE SET up_to_seq = excluded.up_to_seq, \
     at = excluded.at WHERE excluded.up_to_seq > receipts.up_to_seq RETURNING 1";

/// Why one attempt at a batch failed, sorted by whether to try again.
#[derive(Debug)]
enum Failure {
    /// A serialization failure or a deadlock: rolled back, worth retrying.
    Conflict(tokio_postgres::Error),
    /// The connection was lost before COMMIT was sent: rolled back.
    Connection(tokio_postgres::Error),
    /// Anything else, COMMIT's own failures among them.
    Other(StoreError),
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Conflict(e) | Failure::Connection(e) => classify(e),
            Failure::Other(e) => e,
        }
    }
}

impl Failure {
    /// Sorts an error of a statement sent before COMMIT.
    fn before_commit(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(&SqlState::T_R_SERIALIZATION_FAILURE | &SqlState::T_R_DEADLOCK_DETECTED) => Self::Conflict(e),
            None if e.is_closed() => Self::Connection(e),
            _ => Self::Other(classify(e)),
        }
    }
}

/// One attempt at a batch: BEGIN; the lock and every write, pipelined;
/// COMMIT. The results are decoded before COMMIT, so a batch whose answer
/// cannot be given is not committed either.
async fn apply_once(client: &mut Object, batch: &[Write]) -> Result<Vec<Applied>, Failure> {
    let tx = client.transaction().await.map_err(Failure::before_commit)?;
    let kinds: Vec<&'static str> = batch.iter().map(statement_of).collect();
    let mut distinct: Vec<&'static str> = std::iter::once(LOCK).chain(kinds.iter().copied()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let prepared: Vec<Statement> =
        futures_util::future::try_join_all(distinct.iter().map(|sql| tx.prepare_cached(sql)))
            .await
            .map_err(Failure::before_commit)?;
    let statement = |sql: &str| -> &Statement {
        let index = distinct.binary_search(&sql).expect("every statement of the batch was prepared");
        &prepared[index]
    };

    let mut ids: Vec<&str> = batch.iter().filter_map(conversation_locked_by).collect();
    ids.sort_unstable();
    ids.dedup();
    let lock_params: Vec<Param<'_>> = vec![Box::new(ids)];
    let write_params: Vec<Vec<Param<'_>>> = batch.iter().map(params_of).collect();
    let lock = (statement(LOCK), lock_params.as_slice());
    let steps = std::iter::once(lock).chain(kinds.iter().zip(&write_params).map(|(sql, p)| (statement(sql), &p[..])));
    let borrowed: Vec<(&Statement, Vec<&(dyn ToSql + Sync)>)> =
        steps.map(|(statement, params)| (statement, params.iter().map(|p| &**p as _).collect())).collect();
    // Each query is written to the connection when first polled: polled in
    // order, they reach the server in order, one round trip for them all.
    let mut rows = in_order(borrowed.iter().map(|(statement, params)| tx.query(*statement, params)).collect())
        .await
        .map_err(Failure::before_commit)?;
    rows.remove(0); // the lock's
    let applied = batch
        .iter()
        .zip(&rows)
        .map(|(write, rows)| applied(write, rows))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::Other)?;
    tx.commit().await.map_err(|e| Failure::Other(classify(e)))?;
    Ok(applied)
}

/// A statement parameter, borrowed from the batch where it can be.
type Param<'a> = Box<dyn ToSql + Sync + Send + 'a>;

fn statement_of(write: &Write) -> &'static str {
    match write {
        Write::CreateConversation(_) => CREATE,
        Write::Assign { .. } => ASSIGN,
        Write::Close { .. } => CLOSE,
        Write::Append { .. } => APPEND,
        Write::Receipt { .. } => RECEIPT,
    }
}

/// The existing conversation a write changes or depends on (a new one is
/// invisible to other transactions until COMMIT, so needs no lock).
fn conversation_locked_by(write: &Write) -> Option<&str> {
    match write {
        Write::CreateConversation(_) => None,
        Write::Assign { conversation, .. }
        | Write::Close { conversation, .. }
        | Write::Append { conversation, .. }
        | Write::Receipt { conversation, .. } => Some(conversation.as_str()),
    }
}

fn params_of(write: &Write) -> Vec<Param<'_>> {
    match write {
        Write::CreateConversation(c) => vec![
            Box::new(c.id.as_str()),
            Box::new(c.customer.id.as_str()),
            Box::new(c.customer.name.as_str()),
            Box::new(c.agent.as_ref().map(|a| a.id.as_str())),
            Box::new(c.agent.as_ref().map(|a| a.name.as_str())),
            Box::new(status_name(c.status)),
            Box::new(c.last_seq.get() as i64),
            Box::new(c.created_at.as_unix_ms()),
            Box::new(c.queued_at.map(Timestamp::as_unix_ms)),
            Box::new(c.topic.as_ref().map(|t| t.as_str())),
            Box::new(c.pet_id.as_ref().map(|p| p.as_str())),
            Box::new(c.order_id.as_ref().map(|o| o.as_str())),
        ],
        Write::Assign { conversation, agent, status, at } => vec![
            Box::new(agent.as_ref().map(|a| a.id.as_str())),
            Box::new(agent.as_ref().map(|a| a.name.as_str())),
            Box::new(status_name(*status)),
            Box::new((*status == petchat_protocol::ConversationStatus::Queued).then(|| at.as_unix_ms())),
            Box::new(conversation.as_str()),
        ],
        Write::Close { conversation, by, at } => {
            vec![Box::new(at.as_unix_ms()), Box::new(by.as_str()), Box::new(conversation.as_str())]
        }
        Write::Append { conversation, id, author, client_message_id, text, sent_at } => vec![
            Box::new(conversation.as_str()),
            Box::new(id.as_str()),
            Box::new(author.id.as_str()),
            Box::new(author.role.as_str()),
            Box::new(author.name.as_str()),
            Box::new(client_message_id.as_str()),
            Box::new(text.as_str()),
            Box::new(sent_at.as_unix_ms()),
        ],
        Write::Receipt { conversation, user, kind, up_to_seq, at } => vec![
            Box::new(conversation.as_str()),
            Box::new(user.as_str()),
            Box::new(kind.as_str()),
            Box::new(up_to_seq.get() as i64),
            Box::new(at.as_unix_ms()),
        ],
    }
}

/// What a write did, from the rows its statement returned.
fn applied(write: &Write, rows: &[Row]) -> Result<Applied, StoreError> {
    Ok(match write {
        Write::CreateConversation(_) => Applied::Done,
        Write::Assign { .. } | Write::Close { .. } => {
            if rows.is_empty() {
                Applied::Closed
            } else {
                Applied::Done
            }
        }
        Write::Receipt { .. } => Applied::Receipt { advanced: !rows.is_empty() },
        Write::Append { conversation, id, author, client_message_id, text, sent_at } => {
            let row = Pg(rows.first().ok_or_else(|| StoreError::Corrupt("an append returned no row".into()))?);
            if let Some(appended) = row.optional_int("appended")? {
                return Ok(Applied::Appended(MessageRecord {
                    conversation_id: conversation.clone(),
                    id: id.clone(),
                    seq: seq(appended)?,
                    author: author.clone(),
                    client_message_id: client_message_id.clone(),
                    text: text.clone(),
                    sent_at: *sent_at,
                }));
            }
            // Checked in SQLite's order: a retry of a stored message gets
            // it whatever became of the conversation since.
            if row.optional_text("id")?.is_some() {
                return Ok(Applied::Duplicate(message(&row)?));
            }
            match row.optional_text("conversation_status")? {
                None => Applied::NotFound,
                Some(name) if status(&name)? == petchat_protocol::ConversationStatus::Closed => Applied::Closed,
                Some(_) if !row.0.try_get::<_, Option<bool>>("member").map_err(corrupt)?.unwrap_or(false) => {
                    Applied::NotMember
                }
                Some(_) => return Err(StoreError::Corrupt("an append to an open conversation took no seq".into())),
            }
        }
    })
}

/// Polls every future in order until all are ready (or one fails), and
/// returns their outputs in that order. Unlike `try_join_all`, whose large
/// form polls through a queue, it keeps the order of first polls, which is
/// the order tokio-postgres sends the queries in.
fn in_order<F, T, E>(futures: Vec<F>) -> impl Future<Output = Result<Vec<T>, E>>
where
    F: Future<Output = Result<T, E>>,
{
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_some() {
                continue;
            }
            match future.as_mut().poll(cx) {
                Poll::Ready(Ok(value)) => *output = Some(value),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(Ok(outputs.iter_mut().map(|o| o.take().expect("every future is done")).collect()))
    })
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
