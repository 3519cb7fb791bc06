//! The write path of the SQLite store: each write of a batch as statements
//! on the writer's transaction, and the refusal of the shared pool's writes.

use petchat_protocol::{ClientMessageId, ConversationId, ConversationStatus, OrderId, PetId, Timestamp, Topic, UserId};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::super::columns::{MESSAGE_COLUMNS, message, seq, status_name};
use super::super::{Applied, MessageRecord, StoreError, Write};

/// Whether the user of the parameters (role, id) is a member: the customer
/// as a customer, the assigned agent as an agent.
const MEMBER: &str = "(CASE ? WHEN 'customer' THEN customer_id WHEN 'agent' THEN agent_id END) = ?";

/// Why SQLite has no shared agent pool: it is one node's database (SPEC §10).
pub(super) fn one_node_only() -> StoreError {
    StoreError::Refused("the shared agent pool needs PostgreSQL: SQLite serves one node only".into())
}

/// One write of a batch, on the writer's transaction.
pub(super) fn apply_one(tx: &Transaction<'_>, write: &Write) -> Result<Applied, StoreError> {
    match write {
        Write::CreateConversation(c) => {
            tx.prepare_cached(
                "INSERT INTO conversations (id, customer_id, customer_name, agent_id, agent_name, status, last_seq, \
                 created_at, queued_at, topic, pet_id, order_id, customer_away_since) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                c.id.as_str(),
                c.customer.id.as_str(),
                &c.customer.name,
                c.agent.as_ref().map(|a| a.id.as_str()),
                c.agent.as_ref().map(|a| a.name.as_str()),
                status_name(c.status),
                c.last_seq.get() as i64,
                c.created_at.as_unix_ms(),
                c.queued_at.map(Timestamp::as_unix_ms),
                c.topic.as_ref().map(Topic::as_str),
                c.pet_id.as_ref().map(PetId::as_str),
                c.order_id.as_ref().map(OrderId::as_str),
                c.customer_away_since.map(Timestamp::as_unix_ms),
            ])?;
            Ok(Applied::Done)
        }
        Write::Assign { conversation, agent, status, at, declined_by } => {
            let queued_at = (*status == ConversationStatus::Queued).then(|| at.as_unix_ms());
            let changed = tx
                .prepare_cached(
                    "UPDATE conversations SET agent_id = ?, agent_name = ?, status = ?, \
                     queued_at = COALESCE(?, queued_at), declined_by = ? WHERE id = ? AND status != 'closed'",
                )?
                .execute(params![
                    agent.as_ref().map(|a| a.id.as_str()),
                    agent.as_ref().map(|a| a.name.as_str()),
                    status_name(*status),
                    queued_at,
                    declined_by.as_ref().map(UserId::as_str),
                    conversation.as_str(),
                ])?;
            Ok(if changed == 1 { Applied::Done } else { Applied::Closed })
        }
        Write::Close { conversation, by, reason, at } => {
            let changed = tx
                .prepare_cached(
                    "UPDATE conversations SET status = 'closed', closed_at = ?, closed_by = ?, close_reason = ?, \
                     customer_away_since = NULL WHERE id = ? AND status != 'closed'",
                )?
                .execute(params![at.as_unix_ms(), by.as_str(), reason.as_str(), conversation.as_str()])?;
            Ok(if changed == 1 { Applied::Done } else { Applied::Closed })
        }
        Write::CustomerAway { conversation, since } => {
            let changed = tx
                .prepare_cached("UPDATE conversations SET customer_away_since = ? WHERE id = ? AND status != 'closed'")?
                .execute(params![since.map(Timestamp::as_unix_ms), conversation.as_str()])?;
            Ok(if changed == 1 { Applied::Done } else { Applied::Closed })
        }
        Write::Append { conversation, id, author, client_message_id, text, sent_at } => {
            // Two statements in the common case: take the next seq (only for a
            // member of an open conversation), insert. A repeated
            // clientMessageId (a client's retry, rare) gives the seq back and
            // returns the message stored the first time.
            let next: Option<i64> = tx
                .prepare_cached(&format!(
                    "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = ? AND status != 'closed' \
                     AND {MEMBER} RETURNING last_seq"
                ))?
                .query_row(params![conversation.as_str(), author.role.as_str(), author.id.as_str()], |row| row.get(0))
                .optional()?;
            let Some(next) = next else {
                // A retry of a message stored before the conversation closed
                // (or before its agent changed) still gets its ack.
                if let Some(existing) = stored_message(tx, conversation, &author.id, client_message_id)? {
                    return Ok(Applied::Duplicate(existing));
                }
                let state: Option<(String, bool)> = tx
                    .prepare_cached(&format!("SELECT status, {MEMBER} FROM conversations WHERE id = ?"))?
                    .query_row(params![author.role.as_str(), author.id.as_str(), conversation.as_str()], |row| {
                        Ok((row.get(0)?, row.get::<_, Option<bool>>(1)?.unwrap_or(false)))
                    })
                    .optional()?;
                return Ok(match state {
                    None => Applied::NotFound,
                    Some((status, _)) if status == "closed" => Applied::Closed,
                    Some(_) => Applied::NotMember,
                });
            };
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO messages (conversation_id, seq, id, author_id, author_role, author_name, \
                     client_message_id, text, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (conversation_id, author_id, client_message_id) DO NOTHING",
                )?
                .execute(params![
                    conversation.as_str(),
                    next,
                    id.as_str(),
                    author.id.as_str(),
                    author.role.as_str(),
                    &author.name,
                    client_message_id.as_str(),
                    text.as_str(),
                    sent_at.as_unix_ms(),
                ])?;
            if inserted == 0 {
                tx.prepare_cached("UPDATE conversations SET last_seq = last_seq - 1 WHERE id = ?")?
                    .execute([conversation.as_str()])?;
                let existing = stored_message(tx, conversation, &author.id, client_message_id)?
                    .ok_or_else(|| StoreError::Corrupt("an idempotency conflict without its message".into()))?;
                return Ok(Applied::Duplicate(existing));
            }
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
            let changed = tx
                .prepare_cached(
                    "INSERT INTO receipts (conversation_id, user_id, kind, up_to_seq, at) VALUES (?, ?, ?, ?, ?) \
                     ON CONFLICT (conversation_id, user_id, kind) DO UPDATE SET up_to_seq = excluded.up_to_seq, \
                     at = excluded.at WHERE excluded.up_to_seq > receipts.up_to_seq",
                )?
                .execute(params![
                    conversation.as_str(),
                    user.as_str(),
                    kind.as_str(),
                    up_to_seq.get() as i64,
                    at.as_unix_ms(),
                ])?;
            Ok(Applied::Receipt { advanced: changed == 1 })
        }
        // `apply` refuses these before it begins; kept here so the match says so.
        Write::AgentConnection { .. }
        | Write::AgentAvailability { .. }
        | Write::AgentIdle { .. }
        | Write::NodeGone { .. } => Err(one_node_only()),
        Write::Post { feed, item, once, retention } => super::feeds::post(tx, feed, item, once.as_ref(), *retention),
        Write::MarkRead { feed, up_to } => super::feeds::mark_read(tx, feed, *up_to),
    }
}

/// The message `author` already stored under `client_message_id`, if any.
pub(super) fn stored_message(
    connection: &Connection,
    conversation: &ConversationId,
    author: &UserId,
    client_message_id: &ClientMessageId,
) -> Result<Option<MessageRecord>, StoreError> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND author_id = ? AND client_message_id = ?"
    );
    connection
        .prepare_cached(&sql)?
        .query(params![conversation.as_str(), author.as_str(), client_message_id.as_str()])?
        .next()?
        .map(message)
        .transpose()
}
