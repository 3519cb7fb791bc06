//! The write path of the SQLite store: each write of a batch as statements
//! on the writer's transaction, and the refusal of the shared pool's writes.

use petchat_protocol::{ClientMessageId, ConversationId, ConversationStatus, OrderId, PetId, Timestamp, Topic, UserId};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use petchat_protocol::{Attachment, AttachmentId, MessageId, User};

use super::super::columns::{
    ATTACHMENT_COLUMNS, MESSAGE_COLUMNS, attachment, attachments_json, message, seq, status_name,
};
use super::super::{Applied, AttachmentRecord, MessageRecord, StoreError, Write};

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
        Write::CreateAttachment { record, max_per_conversation } => {
            create_attachment(tx, record, *max_per_conversation)
        }
        Write::Append { conversation, id, author, client_message_id, text, attachments, sent_at } => {
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
            let sent = if attachments.is_empty() {
                Vec::new()
            } else {
                // A retry finds its original before its attachments, which that
                // original claimed, are checked.
                let existing = stored_message(tx, conversation, &author.id, client_message_id)?;
                let claimed = match existing {
                    Some(_) => None,
                    None => claim_attachments(tx, conversation, author, id, attachments.as_slice())?,
                };
                match (existing, claimed) {
                    (Some(existing), _) => {
                        give_seq_back(tx, conversation)?;
                        return Ok(Applied::Duplicate(existing));
                    }
                    (None, None) => {
                        give_seq_back(tx, conversation)?;
                        return Ok(Applied::AttachmentsRefused);
                    }
                    (None, Some(sent)) => sent,
                }
            };
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO messages (conversation_id, seq, id, author_id, author_role, author_name, \
                     client_message_id, text, sent_at, attachments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
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
                    attachments_json(&sent),
                ])?;
            if inserted == 0 {
                give_seq_back(tx, conversation)?;
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
                attachments: sent,
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

/// Undoes the seq an append took and did not use.
fn give_seq_back(tx: &Transaction<'_>, conversation: &ConversationId) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE conversations SET last_seq = last_seq - 1 WHERE id = ?")?
        .execute([conversation.as_str()])?;
    Ok(())
}

/// `Write::CreateAttachment`: only into an open conversation, and only below its cap.
fn create_attachment(tx: &Transaction<'_>, record: &AttachmentRecord, max: usize) -> Result<Applied, StoreError> {
    let state: Option<(String, i64)> = tx
        .prepare_cached(
            "SELECT status, (SELECT count(*) FROM attachments WHERE conversation_id = c.id) \
             FROM conversations c WHERE id = ?",
        )?
        .query_row([record.conversation_id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    match state {
        None => return Ok(Applied::NotFound),
        Some((status, _)) if status == "closed" => return Ok(Applied::Closed),
        Some((_, held)) if usize::try_from(held).unwrap_or(usize::MAX) >= max => return Ok(Applied::AttachmentsFull),
        Some(_) => {}
    }
    let a = &record.attachment;
    tx.prepare_cached(
        "INSERT INTO attachments (id, conversation_id, uploader_id, uploader_role, name, content_type, size, \
         width, height, sha256, created_at, message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        a.id.as_str(),
        record.conversation_id.as_str(),
        record.uploader.as_str(),
        record.uploader_role.as_str(),
        a.name.as_str(),
        a.content_type.as_str(),
        i64::try_from(a.size).unwrap_or(i64::MAX),
        a.width,
        a.height,
        &record.sha256,
        record.created_at.as_unix_ms(),
        record.message_id.as_ref().map(MessageId::as_str),
    ])?;
    Ok(Applied::Done)
}

/// Claims `ids` for message `message` when each is an unsent upload of
/// `author` (its id and role) in `conversation`; their metadata in order, or `None` (nothing claimed).
fn claim_attachments(
    tx: &Transaction<'_>,
    conversation: &ConversationId,
    author: &User,
    message: &MessageId,
    ids: &[AttachmentId],
) -> Result<Option<Vec<Attachment>>, StoreError> {
    let mut sent = Vec::with_capacity(ids.len());
    let mut read = tx.prepare_cached(&format!(
        "SELECT {ATTACHMENT_COLUMNS} FROM attachments \
         WHERE id = ? AND conversation_id = ? AND uploader_id = ? AND uploader_role = ? AND message_id IS NULL"
    ))?;
    for id in ids {
        match read
            .query(params![id.as_str(), conversation.as_str(), author.id.as_str(), author.role.as_str()])?
            .next()?
        {
            Some(row) => sent.push(attachment(row)?.attachment),
            None => return Ok(None),
        }
    }
    let mut claim = tx.prepare_cached("UPDATE attachments SET message_id = ? WHERE id = ?")?;
    for id in ids {
        claim.execute(params![message.as_str(), id.as_str()])?;
    }
    Ok(Some(sent))
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
