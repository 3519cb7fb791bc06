//! The SQLite store: one file, WAL journal, `synchronous=FULL`, migrations at start.
//!
//! It runs on rusqlite, synchronously, on tokio's blocking threads: a whole
//! batch of writes is one hop to a blocking thread and one transaction there,
//! with cached prepared statements. (With sqlx's SQLite driver every statement
//! was a round trip to its worker thread; at four statements per chat message
//! those hand-offs, not the fsync, bounded the hub: docs/benchmarks.md.) A chat
//! message is now two statements, and the WAL checkpoints run on their own
//! thread (`checkpoint.rs`). The write path is in `sqlite/batch.rs`.

mod batch;
mod feeds;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use petchat_protocol::{
    AttachmentId, ClientMessageId, ConversationId, LastSeq, ListScope, Role, Timestamp, User, UserId,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use self::batch::{apply_one, one_node_only, stored_message};
use super::checkpoint::{self, Checkpointer};
use super::columns::{
    ATTACHMENT_COLUMNS, CONVERSATION_COLUMNS, Columns, MESSAGE_COLUMNS, attachment, conversation, like_pattern,
    member_column, message, receipt, status_name,
};
use super::{
    Applied, AttachmentRecord, ConversationRecord, Feed, FeedPage, ListFilter, MessageRecord, PoolRound, ReceiptRecord,
    Store, StoreError, SummaryRecord, Write,
};

/// Conversations and messages in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The connection every write batch goes through.
    writer: Arc<Mutex<Connection>>,
    /// A second connection for reads, which WAL lets run beside a write.
    reader: Arc<Mutex<Connection>>,
    /// Copies the log into the database file off the writer's path (none in memory).
    checkpointer: Option<Arc<Checkpointer>>,
}

/// The schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_initial.sql"),
    include_str!("../../migrations/sqlite/0002_conversations_by_agent.sql"),
    include_str!("../../migrations/sqlite/0003_feeds.sql"),
    include_str!("../../migrations/sqlite/0004_lifecycle.sql"),
    include_str!("../../migrations/sqlite/0005_attachments.sql"),
    include_str!("../../migrations/sqlite/0006_unsent_attachments.sql"),
];

impl SqliteStore {
    /// Opens (creating if missing) the database of a `sqlite://FILE` URL
    /// (or `sqlite::memory:`) and migrates it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let path = database_path(url)?;
        tokio::task::spawn_blocking(move || {
            let writer = connect(path.as_deref())?;
            migrate(&writer)?;
            writer.pragma_update(None, "wal_autocheckpoint", checkpoint::WRITER_CHECKPOINT_PAGES)?;
            let writer = Arc::new(Mutex::new(writer));
            let (reader, checkpointer) = match path {
                Some(path) => {
                    let checkpointer = Checkpointer::start(&path).map_err(|e| StoreError::Unavailable(Box::new(e)))?;
                    (Arc::new(Mutex::new(connect(Some(&path))?)), Some(Arc::new(checkpointer)))
                }
                // An in-memory database lives in its one connection.
                None => (writer.clone(), None),
            };
            Ok(Self { writer, reader, checkpointer })
        })
        .await
        .map_err(|e| StoreError::Unavailable(Box::new(e)))?
    }

    /// Runs `f` on a blocking thread with the writer or the reader.
    async fn on<T: Send + 'static>(
        connection: &Arc<Mutex<Connection>>,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = connection.clone();
        tokio::task::spawn_blocking(move || {
            // A thread that panicked holding the lock left no transaction
            // open (rusqlite rolls back on drop), so the connection is usable.
            let mut connection = connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut connection)
        })
        .await
        .map_err(|e| StoreError::Unavailable(Box::new(e)))?
    }
}

/// `sqlite://FILE`, `sqlite:FILE` (a `?query` is ignored), or `None` for `sqlite::memory:`.
/// The search condition of a list (`?3`: a `LIKE` pattern, or NULL for none).
const SEARCH: &str = "(?3 IS NULL OR customer_name LIKE ?3 ESCAPE '\\' OR customer_id LIKE ?3 ESCAPE '\\' \
     OR topic LIKE ?3 ESCAPE '\\')";

/// The open conversations where `user` is the customer or the assigned agent, oldest first.
fn member_conversations(connection: &Connection, user: &User) -> Result<Vec<ConversationRecord>, StoreError> {
    let sql = format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE {} = ? AND status != 'closed' ORDER BY created_at, id",
        member_column(user.role)
    );
    all(connection, &sql, [user.id.as_str()], |row| conversation(row))
}

/// The `past` most recent closed conversations of `user`, with their last
/// messages: `list` with `status: closed`, as a fixed statement that walks
/// the member's index (`conversations_by_customer` / `_by_agent`) backwards and
/// stops at `past`, since every connection reads it for its `session.ready`.
fn past_conversations(connection: &Connection, user: &User, past: usize) -> Result<Vec<SummaryRecord>, StoreError> {
    static SQL: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
        [Role::Customer, Role::Agent].map(|role| {
            format!(
                "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE {} = ?1 AND status = 'closed' \
                 ORDER BY created_at DESC, id DESC LIMIT ?2",
                member_column(role)
            )
        })
    });
    let sql = &SQL[usize::from(user.role == Role::Agent)];
    let page = all(connection, sql, params![user.id.as_str(), past as i64], |row| conversation(row))?;
    with_last_messages(connection, page)
}

/// Each conversation with its last message (seq = `last_seq`), if it has one.
fn with_last_messages(
    connection: &Connection,
    page: Vec<ConversationRecord>,
) -> Result<Vec<SummaryRecord>, StoreError> {
    if page.is_empty() {
        return Ok(Vec::new());
    }
    let mut last = connection
        .prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND seq = ?"))?;
    page.into_iter()
        .map(|rec| {
            let mut rows = last.query(params![rec.id.as_str(), rec.last_seq.get() as i64])?;
            let last_message = rows.next()?.map(message).transpose()?;
            Ok(SummaryRecord { conversation: rec, last_message })
        })
        .collect()
}

/// A page of conversations for `user` with their last messages ([`Store::list_conversations`]).
fn list(connection: &Connection, user: &User, filter: &ListFilter) -> Result<Vec<SummaryRecord>, StoreError> {
    let sql = match filter.scope {
        ListScope::Mine => format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE {} = ?1 \
             AND (?2 IS NULL OR status = ?2) AND {SEARCH} \
             AND (?4 IS NULL OR (created_at, id) < (SELECT created_at, id FROM conversations WHERE id = ?4)) \
             ORDER BY created_at DESC, id DESC LIMIT ?5",
            member_column(user.role)
        ),
        ListScope::Queue => format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations \
             WHERE status = 'queued' AND customer_away_since IS NULL \
             AND {SEARCH} AND (?4 IS NULL OR (queued_at, created_at, id) > \
             (SELECT queued_at, created_at, id FROM conversations WHERE id = ?4)) \
             ORDER BY queued_at, created_at, id LIMIT ?5"
        ),
    };
    let status = filter.status.filter(|_| filter.scope == ListScope::Mine).map(status_name);
    let query = filter.query.as_ref().map(|q| like_pattern(q.as_str()));
    let after = filter.after.as_ref().map(ConversationId::as_str);
    let limit = filter.limit.saturating_add(1) as i64;
    let page = all(connection, &sql, params![user.id.as_str(), status, query, after, limit], |row| conversation(row))?;
    let mut last = connection
        .prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND seq = ?"))?;
    page.into_iter()
        .map(|rec| {
            let mut rows = last.query(params![rec.id.as_str(), rec.last_seq.get() as i64])?;
            let last_message = rows.next()?.map(message).transpose()?;
            Ok(SummaryRecord { conversation: rec, last_message })
        })
        .collect()
}

fn database_path(url: &str) -> Result<Option<PathBuf>, StoreError> {
    let rest = url.strip_prefix("sqlite:").ok_or_else(|| StoreError::Unsupported(url.to_owned()))?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    match path {
        ":memory:" => Ok(None),
        "" => Err(StoreError::Unsupported(url.to_owned())),
        path => Ok(Some(PathBuf::from(path))),
    }
}

/// A connection with the durability settings: every acknowledged message
/// must survive a crash or a power cut, so WAL with synchronous=FULL syncs
/// each commit; group commit amortizes it.
pub(super) fn connect(path: Option<&Path>) -> Result<Connection, StoreError> {
    let connection = match path {
        Some(path) => Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?,
        None => Connection::open_in_memory()?,
    };
    connection.busy_timeout(Duration::from_secs(5))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", true)?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

/// Applies the migrations not yet applied, each in its own transaction.
fn migrate(connection: &Connection) -> Result<(), StoreError> {
    let mut version: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    // Databases made before the store moved to rusqlite kept their migration
    // record in sqlx's table; they have the first schema.
    if version == 0 {
        let by_sqlx: Option<i64> = connection
            .query_row("SELECT 1 FROM sqlite_master WHERE name = '_sqlx_migrations'", [], |row| row.get(0))
            .optional()?;
        if by_sqlx.is_some() {
            version = 1;
            connection.pragma_update(None, "user_version", 1)?;
        }
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        connection.execute_batch(&format!("BEGIN; {migration}; PRAGMA user_version = {}; COMMIT;", index + 1))?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn apply(&self, batch: &[Write]) -> Result<Vec<Applied>, StoreError> {
        if batch.iter().any(Write::is_agent_pool_write) {
            return Err(one_node_only());
        }
        let batch = batch.to_vec();
        let checkpointer = self.checkpointer.clone();
        Self::on(&self.writer, move |connection| {
            let tx = connection.transaction()?;
            let results = batch.iter().map(|write| apply_one(&tx, write)).collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            if let Some(checkpointer) = checkpointer {
                checkpointer.committed();
            }
            Ok(results)
        })
        .await
    }

    async fn conversation(&self, id: &ConversationId) -> Result<Option<ConversationRecord>, StoreError> {
        let id = id.clone();
        Self::on(&self.reader, move |connection| {
            let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?");
            let mut statement = connection.prepare_cached(&sql)?;
            let mut rows = statement.query([id.as_str()])?;
            rows.next()?.map(conversation).transpose()
        })
        .await
    }

    async fn open_conversations(&self) -> Result<Vec<ConversationRecord>, StoreError> {
        Self::on(&self.reader, |connection| {
            let sql = format!(
                "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE status != 'closed' \
                 ORDER BY status = 'active', queued_at, created_at, id"
            );
            all(connection, &sql, [], |row| conversation(row))
        })
        .await
    }

    async fn messages_after(
        &self,
        id: &ConversationId,
        after: LastSeq,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let id = id.clone();
        Self::on(&self.reader, move |connection| {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND seq > ? ORDER BY seq LIMIT ?"
            );
            all(connection, &sql, params![id.as_str(), after.get() as i64, limit as i64], |row| message(row))
        })
        .await
    }

    async fn stored_message(
        &self,
        conversation: &ConversationId,
        author: &UserId,
        client_message_id: &ClientMessageId,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let (conversation, author, key) = (conversation.clone(), author.clone(), client_message_id.clone());
        Self::on(&self.reader, move |connection| stored_message(connection, &conversation, &author, &key)).await
    }

    async fn attachment(
        &self,
        conversation: &ConversationId,
        id: &AttachmentId,
    ) -> Result<Option<AttachmentRecord>, StoreError> {
        let (conversation, id) = (conversation.clone(), id.clone());
        Self::on(&self.reader, move |connection| {
            let sql = format!("SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE id = ? AND conversation_id = ?");
            let mut statement = connection.prepare_cached(&sql)?;
            let mut rows = statement.query([id.as_str(), conversation.as_str()])?;
            rows.next()?.map(attachment).transpose()
        })
        .await
    }

    async fn forget_unsent_attachments(
        &self,
        uploaded_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<AttachmentId>, StoreError> {
        Self::on(&self.writer, move |connection| {
            let mut statement = connection.prepare_cached(
                "DELETE FROM attachments WHERE id IN (SELECT id FROM attachments \
                 WHERE message_id IS NULL AND created_at < ? ORDER BY created_at, id LIMIT ?) RETURNING id",
            )?;
            let ids = statement
                .query_map(params![uploaded_before.as_unix_ms(), i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                    row.get::<_, String>(0)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            ids.into_iter()
                .map(|id| AttachmentId::new(id).map_err(|e| StoreError::Corrupt(format!("attachment id: {e}"))))
                .collect()
        })
        .await
    }

    async fn receipts(&self, id: &ConversationId) -> Result<Vec<ReceiptRecord>, StoreError> {
        let id = id.clone();
        Self::on(&self.reader, move |connection| {
            let sql =
                "SELECT user_id, kind, up_to_seq, at FROM receipts WHERE conversation_id = ? ORDER BY kind, user_id";
            all(connection, sql, [id.as_str()], |row| receipt(row))
        })
        .await
    }

    async fn member_conversations(&self, user: &User) -> Result<Vec<ConversationRecord>, StoreError> {
        let user = user.clone();
        Self::on(&self.reader, move |connection| member_conversations(connection, &user)).await
    }

    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConversationRecord>, StoreError> {
        let id = user.clone();
        Self::on(&self.reader, move |connection| {
            // SQLite's OR optimization serves it from the two indexes (by customer, by agent).
            let sql = format!(
                "SELECT {CONVERSATION_COLUMNS} FROM conversations \
                 WHERE (customer_id = ?1 OR agent_id = ?1) AND status != 'closed' ORDER BY created_at, id"
            );
            all(connection, &sql, [id.as_str()], |row| conversation(row))
        })
        .await
    }

    async fn feed(
        &self,
        feed: &Feed,
        after: Option<LastSeq>,
        limit: usize,
        not_before: Option<Timestamp>,
    ) -> Result<FeedPage, StoreError> {
        let feed = feed.clone();
        Self::on(&self.reader, move |connection| feeds::page(connection, &feed, after, limit, not_before)).await
    }

    async fn list_conversations(&self, user: &User, filter: &ListFilter) -> Result<Vec<SummaryRecord>, StoreError> {
        let (user, filter) = (user.clone(), filter.clone());
        Self::on(&self.reader, move |connection| list(connection, &user, &filter)).await
    }

    async fn ready_conversations(
        &self,
        user: &User,
        past: usize,
    ) -> Result<(Vec<ConversationRecord>, Vec<SummaryRecord>), StoreError> {
        // One hop to the reader for both: a connection's first frame waits for it.
        let user = user.clone();
        Self::on(&self.reader, move |connection| {
            let open = member_conversations(connection, &user)?;
            let closed = past_conversations(connection, &user, past)?;
            Ok((open, closed))
        })
        .await
    }

    async fn quiet_conversations(&self, quiet_since: Timestamp) -> Result<Vec<ConversationId>, StoreError> {
        Self::on(&self.reader, move |connection| {
            let sql = "SELECT c.id AS id FROM conversations c \
                 LEFT JOIN messages m ON m.conversation_id = c.id AND m.seq = c.last_seq \
                 WHERE c.status != 'closed' AND COALESCE(m.sent_at, c.created_at) < ? \
                 ORDER BY COALESCE(m.sent_at, c.created_at), c.id";
            all(connection, sql, [quiet_since.as_unix_ms()], |row| {
                ConversationId::new(row.text("id")?).map_err(|e| StoreError::Corrupt(format!("conversation id: {e}")))
            })
        })
        .await
    }

    async fn first_responses(&self, since: Timestamp) -> Result<Vec<u64>, StoreError> {
        Self::on(&self.reader, move |connection| {
            let sql = "SELECT MIN(m.sent_at) - c.created_at AS wait FROM conversations c JOIN messages m ON m.conversation_id = c.id AND m.author_role = 'agent' WHERE c.created_at >= ? GROUP BY c.id, c.created_at";
            all(connection, sql, [since.as_unix_ms()], |row| Ok(row.get::<_, i64>("wait")?.max(0) as u64))
        })
        .await
    }

    async fn lock_pool(&self) -> Result<Box<dyn PoolRound>, StoreError> {
        Err(one_node_only())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Self::on(&self.reader, |connection| Ok(connection.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    async fn close(&self) {
        // Checkpoint the WAL into the main file, so a clean stop leaves one file.
        let _ =
            Self::on(&self.writer, |connection| Ok(connection.pragma_update(None, "wal_checkpoint", "TRUNCATE")?))
                .await;
    }
}

impl From<rusqlite::Error> for StoreError {
    /// Sorts SQLite's errors by what a caller can do: wait (busy, I/O, a full
    /// disk), give up (a constraint, a bad statement), or distrust the data.
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as Code;
        match &error {
            rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
                Code::DatabaseBusy
                | Code::DatabaseLocked
                | Code::SystemIoFailure
                | Code::DiskFull
                | Code::CannotOpen
                | Code::OutOfMemory
                | Code::FileLockingProtocolFailed
                | Code::OperationInterrupted => Self::Unavailable(Box::new(error)),
                Code::DatabaseCorrupt | Code::NotADatabase => Self::Corrupt(error.to_string()),
                _ => Self::Refused(Box::new(error)),
            },
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..) => Self::Corrupt(error.to_string()),
            _ => Self::Refused(Box::new(error)),
        }
    }
}

impl Columns for Row<'_> {
    fn text(&self, name: &str) -> Result<String, StoreError> {
        Ok(self.get(name)?)
    }
    fn optional_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.get(name)?)
    }
    fn int(&self, name: &str) -> Result<i64, StoreError> {
        Ok(self.get(name)?)
    }
    fn optional_int(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.get(name)?)
    }
    fn flag(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.get(name)?)
    }
}

/// Every row `sql` selects with `params`, each decoded by `decode`.
fn all<T>(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    decode: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = connection.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut records = Vec::new();
    while let Some(row) = rows.next()? {
        records.push(decode(row)?);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_name_a_file_or_memory() {
        assert_eq!(database_path("sqlite://petchat.db").ok().flatten(), Some(PathBuf::from("petchat.db")));
        assert_eq!(
            database_path("sqlite:///var/lib/p.db?mode=rwc").ok().flatten(),
            Some(PathBuf::from("/var/lib/p.db"))
        );
        assert_eq!(database_path("sqlite:p.db").ok().flatten(), Some(PathBuf::from("p.db")));
        assert!(matches!(database_path("sqlite::memory:"), Ok(None)));
        assert!(matches!(database_path("sqlite://"), Err(StoreError::Unsupported(_))));
        assert!(matches!(database_path("postgres://x"), Err(StoreError::Unsupported(_))));
    }

    #[test]
    fn a_new_database_gets_every_migration_and_an_old_sqlx_one_keeps_its_schema() {
        let fresh = Connection::open_in_memory().expect("a database");
        migrate(&fresh).expect("migrates");
        let version: usize = fresh.pragma_query_value(None, "user_version", |r| r.get(0)).expect("a version");
        assert_eq!(version, MIGRATIONS.len());
        migrate(&fresh).expect("migrating twice changes nothing");

        // A database made by the sqlx store: the schema plus sqlx's record of it.
        let old = Connection::open_in_memory().expect("a database");
        old.execute_batch(MIGRATIONS[0]).expect("the first schema");
        old.execute_batch("CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY)").expect("sqlx's table");
        migrate(&old).expect("recognised, not re-created");
        let version: usize = old.pragma_query_value(None, "user_version", |r| r.get(0)).expect("a version");
        assert_eq!(version, MIGRATIONS.len());
    }
}
