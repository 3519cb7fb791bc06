//! The write path of the PostgreSQL store: one batch, one transaction,
//! every statement of it pipelined (sent at once, answered at once); the
//! same statements serve `apply` and a pool round's commit.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use deadpool_postgres::{GenericClient, Object};
use petchat_protocol::{ConversationStatus, Timestamp};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use super::super::columns::{Columns, last_seq, message, seq, status, status_name};
use super::super::feeds::{FeedItem, keys_not_before};
use super::super::{Applied, MessageRecord, StoreError, Write};
use super::{POOL_LOCK, Pg, classify, corrupt};

/// Locks the conversation rows a batch touches, in id order, before any
/// write: every batch takes its locks in the same order, so none waits for
/// another that waits for it.
const LOCK: &str = "SELECT id FROM conversations WHERE id = ANY($1) ORDER BY id FOR UPDATE";

/// Takes the shared agent pool's lock until the transaction ends, as a round does.
const POOL_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1)";

const CREATE: &str = "INSERT INTO conversations (id, customer_id, customer_name, agent_id, agent_name, status, \
     last_seq, created_at, queued_at, topic, pet_id, order_id, customer_away_since) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

const ASSIGN: &str = "UPDATE conversations SET agent_id = $1, agent_name = $2, status = $3, \
     queued_at = COALESCE($4, queued_at), declined_by = $6 WHERE id = $5 AND status <> 'closed' RETURNING 1";

const CLOSE: &str = "UPDATE conversations SET status = 'closed', closed_at = $1, closed_by = $2, close_reason = $3, \
     customer_away_since = NULL WHERE id = $4 AND status <> 'closed' RETURNING 1";

const CUSTOMER_AWAY: &str =
    "UPDATE conversations SET customer_away_since = $1 WHERE id = $2 AND status <> 'closed' RETURNING 1";

/// An append in one statement, so that a batch's appends pipeline: check
/// the attachments (`sendable`: every id an unsent upload of the author in
/// this conversation, and their metadata in order), take the next seq
/// (`next`: only for a member of an open conversation, only when the key is
/// new and the attachments are sendable), claim the attachments for the
/// message (`claimed`) and insert it with that seq (`inserted`). The outer
/// SELECT reads the statement's snapshot, from before all of them: the
/// conversation's status and whether the author is a member, and the message
/// already stored under the key, if any. That snapshot is taken after the
/// batch locked the conversation, so it holds every append (and every claim
/// of an attachment of this conversation) committed before.
const APPEND: &str = "WITH sendable AS ( \
         SELECT count(*) = cardinality($9::text[]) AS ok, \
                json_agg(json_strip_nulls(json_build_object('id', a.id, 'name', a.name, \
                         'contentType', a.content_type, 'size', a.size, 'width', a.width, 'height', a.height)) \
                         ORDER BY array_position($9::text[], a.id))::text AS sent \
         FROM attachments a \
         WHERE a.id = ANY($9::text[]) AND a.conversation_id = $1 AND a.uploader_id = $3 \
           AND a.uploader_role = $4::text AND a.message_id IS NULL \
     ), next AS ( \
         UPDATE conversations SET last_seq = last_seq + 1 \
         WHERE id = $1 AND status <> 'closed' \
           AND (CASE $4::text WHEN 'customer' THEN customer_id WHEN 'agent' THEN agent_id END) = $3 \
           AND NOT EXISTS (SELECT 1 FROM messages \
                           WHERE conversation_id = $1 AND author_id = $3 AND client_message_id = $6) \
           AND (SELECT ok FROM sendable) \
         RETURNING last_seq \
     ), claimed AS ( \
         UPDATE attachments SET message_id = $2 \
         WHERE id = ANY($9::text[]) AND EXISTS (SELECT 1 FROM next) \
         RETURNING 1 \
     ), inserted AS ( \
         INSERT INTO messages (conversation_id, seq, id, author_id, author_role, author_name, \
                               client_message_id, text, sent_at, attachments) \
         SELECT $1::text, last_seq, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::bigint, \
                (SELECT sent FROM sendable) \
         FROM next \
         RETURNING seq \
     ) \
     SELECT (SELECT seq FROM inserted) AS appended, (SELECT sent FROM sendable) AS sent, \
            (SELECT ok FROM sendable) AS sendable, c.status AS conversation_status, \
            (CASE $4::text WHEN 'customer' THEN c.customer_id WHEN 'agent' THEN c.agent_id END) = $3 AS member, \
            m.conversation_id, m.id, m.seq, m.author_id, m.author_role, m.author_name, m.client_message_id, \
            m.text, m.sent_at, m.attachments \
     FROM (SELECT 1) AS one \
     LEFT JOIN conversations c ON c.id = $1 \
     LEFT JOIN messages m ON m.conversation_id = $1 AND m.author_id = $3 AND m.client_message_id = $6";

/// An attachment's metadata, only into an open conversation that holds fewer
/// than `$13` (under the conversation's lock, so the count holds); the outer
/// SELECT tells why nothing was inserted.
const CREATE_ATTACHMENT: &str = "WITH inserted AS ( \
         INSERT INTO attachments (id, conversation_id, uploader_id, uploader_role, name, content_type, size, \
                                  width, height, sha256, created_at, message_id) \
         SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::bigint, $8::bigint, $9::bigint, \
                $10::text, $11::bigint, $12::text \
         FROM conversations c \
         WHERE c.id = $2 AND c.status <> 'closed' \
           AND (SELECT count(*) FROM attachments WHERE conversation_id = $2) < $13::bigint \
         RETURNING 1 \
     ) \
     SELECT (SELECT count(*) FROM inserted) AS inserted, c.status AS conversation_status \
     FROM (SELECT 1) AS one LEFT JOIN conversations c ON c.id = $2";

const RECEIPT: &str = "INSERT INTO receipts (conversation_id, user_id, kind, up_to_seq, at) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (conversation_id, user_id, kind) DO UPDATE SET up_to_seq = excluded.up_to_seq, \
     at = excluded.at WHERE excluded.up_to_seq > receipts.up_to_seq RETURNING 1";

/// An agent's first connection on a node: records the agent if new and
/// keeps its latest name; it is online, so not offline since anything. (The
/// new agent's row is visible to the foreign key check, which runs at the
/// end of the statement.)
const CONNECT: &str = "WITH agent AS ( \
         INSERT INTO agents (id, name, available, idle_since, offline_since) \
         VALUES ($1, $2, FALSE, $4::bigint, NULL) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, offline_since = NULL \
         RETURNING id \
     ) \
     INSERT INTO agent_connections (agent_id, node_id) SELECT id, $3::text FROM agent ON CONFLICT DO NOTHING";

/// An agent's last connection on a node closed: forget the node's row and,
/// when it was the agent's last row, the agent is offline since then. The
/// UPDATE reads the statement's snapshot, from before the DELETE, hence the
/// `node_id <> $2` to ask about the other nodes only.
const DISCONNECT: &str = "WITH gone AS ( \
         DELETE FROM agent_connections WHERE agent_id = $1 AND node_id = $2 RETURNING agent_id \
     ) \
     UPDATE agents SET name = $3, offline_since = CASE \
         WHEN EXISTS (SELECT 1 FROM agent_connections WHERE agent_id = $1 AND node_id <> $2) THEN offline_since \
         ELSE $4::bigint END \
     WHERE id IN (SELECT agent_id FROM gone)";

/// `agent.status`: becoming available from unavailable starts its idle time.
/// A new agent has no connection (the foreign key), so it is offline since then.
const AVAILABILITY: &str = "INSERT INTO agents AS a (id, name, available, idle_since, offline_since) \
     VALUES ($1, $2, $3, $4::bigint, $4::bigint) \
     ON CONFLICT (id) DO UPDATE SET name = excluded.name, available = excluded.available, \
     idle_since = CASE WHEN excluded.available AND NOT a.available THEN excluded.idle_since ELSE a.idle_since END";

const IDLE: &str = "UPDATE agents SET idle_since = $2 WHERE id = $1";

/// A node is gone: its rows go, and the agents it leaves with none are
/// offline since then (the snapshot is from before the DELETE, as in DISCONNECT).
const NODE_GONE: &str = "WITH gone AS (DELETE FROM agent_connections WHERE node_id = $1 RETURNING agent_id) \
     UPDATE agents SET offline_since = $2 \
     WHERE id IN (SELECT agent_id FROM gone) \
       AND NOT EXISTS (SELECT 1 FROM agent_connections c WHERE c.agent_id = agents.id AND c.node_id <> $1)";

/// Creates the feed rows a batch posts to, in key order, then locks them in
/// that order, after the conversations: the same order in every batch.
const CREATE_FEEDS: &str =
    "INSERT INTO feeds (feed) SELECT f FROM unnest($1::text[]) AS f ORDER BY f ON CONFLICT DO NOTHING";
const LOCK_FEEDS: &str = "SELECT feed FROM feeds WHERE feed = ANY($1) ORDER BY feed FOR UPDATE";

/// A post (migrations/postgres/0003_feeds.sql has the function).
const POST: &str = "SELECT out_outcome, out_seq, out_item_id \
     FROM petchat_post($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// A read mark: raised to at most the feed's last seq, never lowered; the
/// second column reads the statement's snapshot, from before the update.
const MARK_READ: &str = "WITH moved AS ( \
         UPDATE feeds SET read_seq = LEAST($1, last_seq) WHERE feed = $2 AND read_seq < LEAST($1, last_seq) \
         RETURNING read_seq \
     ) \
     SELECT (SELECT read_seq FROM moved) AS moved, (SELECT read_seq FROM feeds WHERE feed = $2) AS read_seq";

/// Why one attempt at a batch failed, sorted by whether to try again.
#[derive(Debug)]
pub(super) enum Failure {
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

/// One attempt at a batch: BEGIN; the locks and every write, pipelined;
/// COMMIT. The results are decoded before COMMIT, so a batch whose answer
/// cannot be given is not committed either.
pub(super) async fn apply_once(client: &mut Object, batch: &[Write]) -> Result<Vec<Applied>, Failure> {
    let tx = client.transaction().await.map_err(Failure::before_commit)?;
    // Pool writes outside a round wait for the pool's lock like a round, so
    // that they never interleave with one (whose decisions rest on the agents
    // it read) nor with each other (whether an agent's last node went is
    // decided under it). Taken before any row lock, as a round takes it.
    let pool_lock = batch.iter().any(Write::is_agent_pool_write);
    let applied = run(&tx, batch, pool_lock).await?;
    tx.commit().await.map_err(|e| Failure::Other(classify(e)))?;
    Ok(applied)
}

/// The writes of a batch on `client`, inside a transaction the caller began
/// and commits: first the pool's lock (when `pool_lock`), then every
/// conversation row the batch touches locked in id order, then the writes,
/// all pipelined in one round trip; the results, decoded.
pub(super) async fn run(
    client: &impl GenericClient,
    batch: &[Write],
    pool_lock: bool,
) -> Result<Vec<Applied>, Failure> {
    let mut ids: Vec<&str> = batch.iter().filter_map(conversation_locked_by).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut locks: Vec<(&'static str, Vec<Param<'_>>)> = Vec::new();
    if pool_lock {
        locks.push((POOL_LOCK_SQL, vec![Box::new(POOL_LOCK)]));
    }
    locks.push((LOCK, vec![Box::new(ids)]));
    let mut feeds: Vec<String> = batch.iter().filter_map(feed_posted_by).collect();
    if !feeds.is_empty() {
        feeds.sort_unstable();
        feeds.dedup();
        locks.push((CREATE_FEEDS, vec![Box::new(feeds.clone())]));
        locks.push((LOCK_FEEDS, vec![Box::new(feeds)]));
    }

    let kinds: Vec<&'static str> = batch.iter().map(statement_of).collect();
    let mut distinct: Vec<&'static str> = locks.iter().map(|(sql, _)| *sql).chain(kinds.iter().copied()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let prepared: Vec<Statement> =
        futures_util::future::try_join_all(distinct.iter().map(|sql| client.prepare_cached(sql)))
            .await
            .map_err(Failure::before_commit)?;
    let statement = |sql: &str| -> &Statement {
        let index = distinct.binary_search(&sql).expect("every statement of the batch was prepared");
        &prepared[index]
    };

    let write_params: Vec<Vec<Param<'_>>> = batch.iter().map(params_of).collect();
    let steps = locks
        .iter()
        .map(|(sql, p)| (statement(sql), &p[..]))
        .chain(kinds.iter().zip(&write_params).map(|(sql, p)| (statement(sql), &p[..])));
    let borrowed: Vec<(&Statement, Vec<&(dyn ToSql + Sync)>)> =
        steps.map(|(statement, params)| (statement, params.iter().map(|p| &**p as _).collect())).collect();
    // Each query is written to the connection when first polled: polled in
    // order, they reach the server in order, one round trip for them all.
    let mut rows = in_order(borrowed.iter().map(|(statement, params)| client.query(*statement, params)).collect())
        .await
        .map_err(Failure::before_commit)?;
    rows.drain(..locks.len());
    batch
        .iter()
        .zip(&rows)
        .map(|(write, rows)| applied(write, rows))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::Other)
}

/// A statement parameter, borrowed from the batch where it can be.
type Param<'a> = Box<dyn ToSql + Sync + Send + 'a>;

fn statement_of(write: &Write) -> &'static str {
    match write {
        Write::CreateConversation(_) => CREATE,
        Write::Assign { .. } => ASSIGN,
        Write::Close { .. } => CLOSE,
        Write::CustomerAway { .. } => CUSTOMER_AWAY,
        Write::Append { .. } => APPEND,
        Write::CreateAttachment { .. } => CREATE_ATTACHMENT,
        Write::Receipt { .. } => RECEIPT,
        Write::AgentConnection { online: true, .. } => CONNECT,
        Write::AgentConnection { online: false, .. } => DISCONNECT,
        Write::AgentAvailability { .. } => AVAILABILITY,
        Write::AgentIdle { .. } => IDLE,
        Write::NodeGone { .. } => NODE_GONE,
        Write::Post { .. } => POST,
        Write::MarkRead { .. } => MARK_READ,
    }
}

/// The feed a write posts to, which the batch locks before any post.
fn feed_posted_by(write: &Write) -> Option<String> {
    match write {
        Write::Post { feed, .. } => Some(feed.key()),
        _ => None,
    }
}

/// The existing conversation a write changes or depends on (a new one is
/// invisible to other transactions until COMMIT, so needs no lock).
fn conversation_locked_by(write: &Write) -> Option<&str> {
    match write {
        Write::CreateConversation(_)
        | Write::AgentConnection { .. }
        | Write::AgentAvailability { .. }
        | Write::AgentIdle { .. }
        | Write::NodeGone { .. }
        | Write::Post { .. }
        | Write::MarkRead { .. } => None,
        Write::Assign { conversation, .. }
        | Write::Close { conversation, .. }
        | Write::CustomerAway { conversation, .. }
        | Write::Append { conversation, .. }
        | Write::Receipt { conversation, .. } => Some(conversation.as_str()),
        Write::CreateAttachment { record, .. } => Some(record.conversation_id.as_str()),
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
            Box::new(c.customer_away_since.map(Timestamp::as_unix_ms)),
        ],
        Write::Assign { conversation, agent, status, at, declined_by } => vec![
            Box::new(agent.as_ref().map(|a| a.id.as_str())),
            Box::new(agent.as_ref().map(|a| a.name.as_str())),
            Box::new(status_name(*status)),
            Box::new((*status == ConversationStatus::Queued).then(|| at.as_unix_ms())),
            Box::new(conversation.as_str()),
            Box::new(declined_by.as_ref().map(|a| a.as_str())),
        ],
        Write::Close { conversation, by, reason, at } => vec![
            Box::new(at.as_unix_ms()),
            Box::new(by.as_str()),
            Box::new(reason.as_str()),
            Box::new(conversation.as_str()),
        ],
        Write::CustomerAway { conversation, since } => {
            vec![Box::new(since.map(Timestamp::as_unix_ms)), Box::new(conversation.as_str())]
        }
        Write::Append { conversation, id, author, client_message_id, text, attachments, sent_at } => vec![
            Box::new(conversation.as_str()),
            Box::new(id.as_str()),
            Box::new(author.id.as_str()),
            Box::new(author.role.as_str()),
            Box::new(author.name.as_str()),
            Box::new(client_message_id.as_str()),
            Box::new(text.as_str()),
            Box::new(sent_at.as_unix_ms()),
            Box::new(attachments.as_slice().iter().map(|a| a.as_str()).collect::<Vec<&str>>()),
        ],
        Write::CreateAttachment { record, max_per_conversation } => {
            let a = &record.attachment;
            vec![
                Box::new(a.id.as_str()),
                Box::new(record.conversation_id.as_str()),
                Box::new(record.uploader.as_str()),
                Box::new(record.uploader_role.as_str()),
                Box::new(a.name.as_str()),
                Box::new(a.content_type.as_str()),
                Box::new(i64::try_from(a.size).unwrap_or(i64::MAX)),
                Box::new(a.width.map(i64::from)),
                Box::new(a.height.map(i64::from)),
                Box::new(record.sha256.as_str()),
                Box::new(record.created_at.as_unix_ms()),
                Box::new(record.message_id.as_ref().map(|m| m.as_str())),
                Box::new(i64::try_from(*max_per_conversation).unwrap_or(i64::MAX)),
            ]
        }
        Write::Receipt { conversation, user, kind, up_to_seq, at } => vec![
            Box::new(conversation.as_str()),
            Box::new(user.as_str()),
            Box::new(kind.as_str()),
            Box::new(up_to_seq.get() as i64),
            Box::new(at.as_unix_ms()),
        ],
        Write::AgentConnection { agent, name, node, online: true, at } => {
            vec![Box::new(agent.as_str()), Box::new(name.as_str()), Box::new(node.as_str()), Box::new(at.as_unix_ms())]
        }
        Write::AgentConnection { agent, name, node, online: false, at } => {
            vec![Box::new(agent.as_str()), Box::new(node.as_str()), Box::new(name.as_str()), Box::new(at.as_unix_ms())]
        }
        Write::AgentAvailability { agent, name, available, at } => {
            vec![Box::new(agent.as_str()), Box::new(name.as_str()), Box::new(*available), Box::new(at.as_unix_ms())]
        }
        Write::AgentIdle { agent, at } => vec![Box::new(agent.as_str()), Box::new(at.as_unix_ms())],
        Write::NodeGone { node, at } => vec![Box::new(node.as_str()), Box::new(at.as_unix_ms())],
        Write::Post { feed, item, once, retention } => vec![
            Box::new(feed.key()),
            Box::new(item.id.as_str()),
            Box::new(item.name.as_str()),
            Box::new(item.body.as_str()),
            Box::new(item.at.as_unix_ms()),
            Box::new(once.as_ref().map(|o| o.key.as_str())),
            Box::new(once.as_ref().map(|o| o.digest.as_str())),
            Box::new(keys_not_before(item.at)),
            Box::new(i64::try_from(retention.keep).unwrap_or(i64::MAX)),
            Box::new(retention.keep_unread),
            Box::new(retention.not_before(item.at)),
        ],
        Write::MarkRead { feed, up_to } => vec![Box::new(up_to.get() as i64), Box::new(feed.key())],
    }
}

/// What a write did, from the rows its statement returned.
fn applied(write: &Write, rows: &[Row]) -> Result<Applied, StoreError> {
    Ok(match write {
        Write::CreateConversation(_)
        | Write::AgentConnection { .. }
        | Write::AgentAvailability { .. }
        | Write::AgentIdle { .. }
        | Write::NodeGone { .. } => Applied::Done,
        Write::Assign { .. } | Write::Close { .. } | Write::CustomerAway { .. } => {
            if rows.is_empty() {
                Applied::Closed
            } else {
                Applied::Done
            }
        }
        Write::Receipt { .. } => Applied::Receipt { advanced: !rows.is_empty() },
        Write::Post { item, .. } => {
            let row = Pg(rows.first().ok_or_else(|| StoreError::Corrupt("a post returned no row".into()))?);
            match row.text("out_outcome")?.as_str() {
                "posted" => Applied::Posted(FeedItem {
                    seq: seq(row.int("out_seq")?)?,
                    id: item.id.clone(),
                    name: item.name.clone(),
                    body: item.body.clone(),
                    at: item.at,
                }),
                "before" => Applied::PostedBefore { seq: seq(row.int("out_seq")?)?, id: row.text("out_item_id")? },
                "conflict" => Applied::KeyConflict,
                other => return Err(StoreError::Corrupt(format!("a post answered {other:?}"))),
            }
        }
        Write::MarkRead { .. } => {
            let row = Pg(rows.first().ok_or_else(|| StoreError::Corrupt("a read mark returned no row".into()))?);
            match row.optional_int("moved")? {
                Some(moved) => Applied::Read { read_seq: last_seq(moved)?, advanced: true },
                None => {
                    Applied::Read { read_seq: last_seq(row.optional_int("read_seq")?.unwrap_or(0))?, advanced: false }
                }
            }
        }
        Write::CreateAttachment { .. } => {
            let row = Pg(rows.first().ok_or_else(|| StoreError::Corrupt("an attachment returned no row".into()))?);
            if row.int("inserted")? == 1 {
                return Ok(Applied::Done);
            }
            match row.optional_text("conversation_status")? {
                None => Applied::NotFound,
                Some(name) if status(&name)? == ConversationStatus::Closed => Applied::Closed,
                Some(_) => Applied::AttachmentsFull,
            }
        }
        Write::Append { conversation, id, author, client_message_id, text, sent_at, .. } => {
            let row = Pg(rows.first().ok_or_else(|| StoreError::Corrupt("an append returned no row".into()))?);
            if let Some(appended) = row.optional_int("appended")? {
                let attachments = match row.optional_text("sent")? {
                    None => Vec::new(),
                    Some(json) => serde_json::from_str(&json)
                        .map_err(|e| StoreError::Corrupt(format!("attachments of an append: {e}")))?,
                };
                return Ok(Applied::Appended(MessageRecord {
                    conversation_id: conversation.clone(),
                    id: id.clone(),
                    seq: seq(appended)?,
                    author: author.clone(),
                    client_message_id: client_message_id.clone(),
                    text: text.clone(),
                    attachments,
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
                Some(name) if status(&name)? == ConversationStatus::Closed => Applied::Closed,
                Some(_) if !row.0.try_get::<_, Option<bool>>("member").map_err(corrupt)?.unwrap_or(false) => {
                    Applied::NotMember
                }
                Some(_) if !row.flag("sendable")? => Applied::AttachmentsRefused,
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
