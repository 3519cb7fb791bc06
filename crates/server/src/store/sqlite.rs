//! The SQLite store: one file, WAL journal, `synchronous=FULL`, migrations at start.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use petchat_protocol::{
    ClientMessageId, ConversationId, ConversationStatus, LastSeq, MessageId, MessageText, OrderId, Participant, PetId,
    Role, Seq, Timestamp, Topic, User, UserId,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::{Applied, ConversationRecord, MessageRecord, ReceiptKind, ReceiptRecord, Store, StoreError, Write};

/// Conversations and messages in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

const CONVERSATION_COLUMNS: &str = "id, customer_id, customer_name, agent_id, agent_name, status, last_seq, \
     created_at, queued_at, topic, pet_id, order_id";
const MESSAGE_COLUMNS: &str =
    "conversation_id, id, seq, author_id, author_role, author_name, client_message_id, text, sent_at";

impl SqliteStore {
    /// Opens (creating if missing) the database of a `sqlite://FILE` URL and migrates it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        // Every acknowledged message must survive a crash or a power cut: WAL
        // with synchronous=FULL syncs each commit; group commit amortizes it.
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn apply(&self, batch: &[Write]) -> Result<Vec<Applied>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut results = Vec::with_capacity(batch.len());
        for write in batch {
            results.push(apply_one(&mut tx, write).await?);
        }
        tx.commit().await?;
        Ok(results)
    }

    async fn conversation(&self, id: &ConversationId) -> Result<Option<ConversationRecord>, StoreError> {
        let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?");
        sqlx::query(&sql).bind(id.as_str()).fetch_optional(&self.pool).await?.map(|row| conversation(&row)).transpose()
    }

    async fn open_conversations(&self) -> Result<Vec<ConversationRecord>, StoreError> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE status != 'closed' \
             ORDER BY status = 'active', queued_at, created_at"
        );
        sqlx::query(&sql).fetch_all(&self.pool).await?.iter().map(conversation).collect()
    }

    async fn messages_after(
        &self,
        id: &ConversationId,
        after: LastSeq,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND seq > ? ORDER BY seq LIMIT ?"
        );
        sqlx::query(&sql)
            .bind(id.as_str())
            .bind(after.get() as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(message)
            .collect()
    }

    async fn receipts(&self, id: &ConversationId) -> Result<Vec<ReceiptRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, kind, up_to_seq, at FROM receipts WHERE conversation_id = ? ORDER BY kind, user_id",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let kind = match row.try_get::<String, _>("kind")?.as_str() {
                    "delivered" => ReceiptKind::Delivered,
                    "read" => ReceiptKind::Read,
                    other => return Err(StoreError::Corrupt(format!("receipt kind {other:?}"))),
                };
                Ok(ReceiptRecord {
                    user_id: user_id(row.try_get("user_id")?)?,
                    kind,
                    up_to_seq: seq(row.try_get("up_to_seq")?)?,
                    at: time(row.try_get("at")?)?,
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

async fn apply_one(tx: &mut Transaction<'_, Sqlite>, write: &Write) -> Result<Applied, StoreError> {
    match write {
        Write::CreateConversation(c) => {
            sqlx::query(
                "INSERT INTO conversations (id, customer_id, customer_name, agent_id, agent_name, status, last_seq, \
                 created_at, queued_at, topic, pet_id, order_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(c.id.as_str())
            .bind(c.customer.id.as_str())
            .bind(&c.customer.name)
            .bind(c.agent.as_ref().map(|a| a.id.as_str()))
            .bind(c.agent.as_ref().map(|a| a.name.as_str()))
            .bind(status_name(c.status))
            .bind(c.last_seq.get() as i64)
            .bind(c.created_at.as_unix_ms())
            .bind(c.queued_at.map(Timestamp::as_unix_ms))
            .bind(c.topic.as_ref().map(Topic::as_str))
            .bind(c.pet_id.as_ref().map(PetId::as_str))
            .bind(c.order_id.as_ref().map(OrderId::as_str))
            .execute(&mut **tx)
            .await?;
            Ok(Applied::Done)
        }
        Write::Assign { conversation, agent, status, at } => {
            let queued_at = (*status == ConversationStatus::Queued).then(|| at.as_unix_ms());
            let done = sqlx::query(
                "UPDATE conversations SET agent_id = ?, agent_name = ?, status = ?, queued_at = COALESCE(?, queued_at) \
                 WHERE id = ? AND status != 'closed'",
            )
            .bind(agent.as_ref().map(|a| a.id.as_str()))
            .bind(agent.as_ref().map(|a| a.name.as_str()))
            .bind(status_name(*status))
            .bind(queued_at)
            .bind(conversation.as_str())
            .execute(&mut **tx)
            .await?;
            Ok(if done.rows_affected() == 1 { Applied::Done } else { Applied::Closed })
        }
        Write::Close { conversation, by, at } => {
            let done = sqlx::query(
                "UPDATE conversations SET status = 'closed', closed_at = ?, closed_by = ? WHERE id = ? AND status != 'closed'",
            )
            .bind(at.as_unix_ms())
            .bind(by.as_str())
            .bind(conversation.as_str())
            .execute(&mut **tx)
            .await?;
            Ok(if done.rows_affected() == 1 { Applied::Done } else { Applied::Closed })
        }
        Write::Append { conversation, id, author, client_message_id, text, sent_at } => {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND author_id = ? AND client_message_id = ?"
            );
            let existing = sqlx::query(&sql)
                .bind(conversation.as_str())
                .bind(author.id.as_str())
                .bind(client_message_id.as_str())
                .fetch_optional(&mut **tx)
                .await?;
            if let Some(row) = existing {
                return Ok(Applied::Duplicate(message(&row)?));
            }
            let next: Option<i64> = sqlx::query_scalar(
                "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = ? AND status != 'closed' RETURNING last_seq",
            )
            .bind(conversation.as_str())
            .fetch_optional(&mut **tx)
            .await?;
            let Some(next) = next else {
                let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM conversations WHERE id = ?")
                    .bind(conversation.as_str())
                    .fetch_optional(&mut **tx)
                    .await?;
                return Ok(if exists.is_some() { Applied::Closed } else { Applied::NotFound });
            };
            sqlx::query(
                "INSERT INTO messages (conversation_id, seq, id, author_id, author_role, author_name, \
                 client_message_id, text, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(conversation.as_str())
            .bind(next)
            .bind(id.as_str())
            .bind(author.id.as_str())
            .bind(author.role.as_str())
            .bind(&author.name)
            .bind(client_message_id.as_str())
            .bind(text.as_str())
            .bind(sent_at.as_unix_ms())
            .execute(&mut **tx)
            .await?;
            Ok(Applied::Appended(MessageRecord {
                conversation_id: conversation.clone(),
                id: id.clone(),
                seq: seq(next)?,
                author: author.clone(),
                client_message_id: client_message_id.clone(),
                text: text.clone(),
                sent_at: *sent_at,
            }))
        }
        Write::Receipt { conversation, user, kind, up_to_seq, at } => {
            let done = sqlx::query(
                "INSERT INTO receipts (conversation_id, user_id, kind, up_to_seq, at) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (conversation_id, user_id, kind) DO UPDATE SET up_to_seq = excluded.up_to_seq, at = excluded.at \
                 WHERE excluded.up_to_seq > receipts.up_to_seq",
            )
            .bind(conversation.as_str())
            .bind(user.as_str())
            .bind(kind.as_str())
            .bind(up_to_seq.get() as i64)
            .bind(at.as_unix_ms())
            .execute(&mut **tx)
            .await?;
            Ok(Applied::Receipt { advanced: done.rows_affected() == 1 })
        }
    }
}

fn status_name(status: ConversationStatus) -> &'static str {
    match status {
        ConversationStatus::Queued => "queued",
        ConversationStatus::Active => "active",
        ConversationStatus::Closed => "closed",
    }
}

fn conversation(row: &SqliteRow) -> Result<ConversationRecord, StoreError> {
    let status = match row.try_get::<String, _>("status")?.as_str() {
        "queued" => ConversationStatus::Queued,
        "active" => ConversationStatus::Active,
        "closed" => ConversationStatus::Closed,
        other => return Err(StoreError::Corrupt(format!("conversation status {other:?}"))),
    };
    let agent = match (row.try_get::<Option<String>, _>("agent_id")?, row.try_get::<Option<String>, _>("agent_name")?) {
        (Some(id), Some(name)) => Some(Participant { id: user_id(id)?, name }),
        _ => None,
    };
    Ok(ConversationRecord {
        id: ConversationId::new(row.try_get::<String, _>("id")?).map_err(corrupt("conversation id"))?,
        customer: Participant { id: user_id(row.try_get("customer_id")?)?, name: row.try_get("customer_name")? },
        agent,
        status,
        last_seq: LastSeq::new(row.try_get::<i64, _>("last_seq")?.max(0) as u64).map_err(corrupt("last_seq"))?,
        created_at: time(row.try_get("created_at")?)?,
        queued_at: row.try_get::<Option<i64>, _>("queued_at")?.map(time).transpose()?,
        topic: row.try_get::<Option<String>, _>("topic")?.map(Topic::new).transpose().map_err(corrupt("topic"))?,
        pet_id: row.try_get::<Option<String>, _>("pet_id")?.map(PetId::new).transpose().map_err(corrupt("pet_id"))?,
        order_id: row
            .try_get::<Option<String>, _>("order_id")?
            .map(OrderId::new)
            .transpose()
            .map_err(corrupt("order_id"))?,
    })
}

fn message(row: &SqliteRow) -> Result<MessageRecord, StoreError> {
    let role = match row.try_get::<String, _>("author_role")?.as_str() {
        "customer" => Role::Customer,
        "agent" => Role::Agent,
        other => return Err(StoreError::Corrupt(format!("author role {other:?}"))),
    };
    Ok(MessageRecord {
        conversation_id: ConversationId::new(row.try_get::<String, _>("conversation_id")?)
            .map_err(corrupt("conversation id"))?,
        id: MessageId::new(row.try_get::<String, _>("id")?).map_err(corrupt("message id"))?,
        seq: seq(row.try_get("seq")?)?,
        author: User { id: user_id(row.try_get("author_id")?)?, role, name: row.try_get("author_name")? },
        client_message_id: ClientMessageId::new(row.try_get::<String, _>("client_message_id")?)
            .map_err(corrupt("client message id"))?,
        text: MessageText::new(&row.try_get::<String, _>("text")?).map_err(corrupt("text"))?,
        sent_at: time(row.try_get("sent_at")?)?,
    })
}

fn user_id(id: String) -> Result<UserId, StoreError> {
    UserId::new(id).map_err(corrupt("user id"))
}

fn seq(n: i64) -> Result<Seq, StoreError> {
    Seq::new(n.max(0) as u64).map_err(corrupt("seq"))
}

fn time(ms: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_unix_ms(ms).ok_or_else(|| StoreError::Corrupt(format!("time {ms}")))
}

fn corrupt<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}
