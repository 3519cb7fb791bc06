//! A store in memory, with the SQLite and PostgreSQL stores' rules (all or
//! nothing per batch, gapless seq, the idempotency key, members only, the
//! shared agent pool's round and its rules), for the hub's deterministic
//! tests: it answers at once, on the caller's task.

mod feeds;
mod pool;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use petchat_protocol::{
    AttachmentId, ClientMessageId, Closure, ConversationId, ConversationStatus, LastSeq, ListScope, Seq, Timestamp,
    User, UserId,
};

use super::{
    Applied, AttachmentRecord, ConversationRecord, Feed, FeedPage, ListFilter, MessageRecord, PoolRound, ReceiptRecord,
    Store, StoreError, SummaryRecord, Write,
};

/// Conversations, messages, receipts and agents in maps; lost when dropped.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// What the store holds, shared with the pool round that commits into it.
    shared: Arc<Shared>,
    /// The shared agent pool's lock: a round holds it until it commits or is
    /// dropped, and pool writes sent through `apply` wait for it.
    pool: Arc<tokio::sync::Mutex<()>>,
}

/// The part of the store a pool round writes to after the call that made it returned.
#[derive(Debug, Default)]
struct Shared {
    data: Mutex<Data>,
    /// While set, every `apply` and every round's commit fails (to test what a failed commit does).
    failing: Mutex<bool>,
}

#[derive(Debug, Default, Clone)]
struct Data {
    conversations: BTreeMap<ConversationId, ConversationRecord>,
    messages: HashMap<ConversationId, Vec<MessageRecord>>,
    receipts: BTreeMap<(ConversationId, UserId, &'static str), ReceiptRecord>,
    /// Every agent the pool knows, by id (`online` is derived from `connections`).
    agents: BTreeMap<UserId, pool::Agent>,
    /// The nodes where each agent has connections; an agent with none has no entry.
    connections: BTreeMap<UserId, BTreeSet<String>>,
    /// Topics' events and users' notifications, by feed key.
    feeds: BTreeMap<String, feeds::FeedState>,
    /// Uploaded attachments, by id.
    attachments: BTreeMap<AttachmentId, AttachmentRecord>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following commit fail (`true`) or succeed again (`false`).
    pub fn fail_commits(&self, failing: bool) {
        *self.shared.failing.lock().unwrap_or_else(|e| e.into_inner()) = failing;
    }

    /// The seqs stored in a conversation, in order (for tests).
    pub async fn messages_after_for_test(&self, conversation: &ConversationId) -> Vec<u64> {
        self.data().messages.get(conversation).map(|m| m.iter().map(|m| m.seq.get()).collect()).unwrap_or_default()
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        self.shared.data()
    }
}

impl Shared {
    fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a batch all or nothing, as one transaction would.
    fn apply(&self, batch: &[Write]) -> Result<Vec<Applied>, StoreError> {
        if *self.failing.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(StoreError::Unavailable("commits are failing (MemoryStore::fail_commits)".into()));
        }
        let mut data = self.data();
        // All or nothing: work on a copy, keep it only when every write applied.
        let mut next = data.clone();
        let results = batch.iter().map(|write| next.apply_one(write)).collect();
        *data = next;
        Ok(results)
    }
}

impl Data {
    fn apply_one(&mut self, write: &Write) -> Applied {
        match write {
            Write::CreateConversation(rec) => {
                self.conversations.insert(rec.id.clone(), rec.clone());
                Applied::Done
            }
            Write::Assign { conversation, agent, status, at, declined_by } => {
                match self.conversations.get_mut(conversation) {
                    Some(rec) if rec.status != ConversationStatus::Closed => {
                        rec.agent.clone_from(agent);
                        rec.declined_by.clone_from(declined_by);
                        rec.status = *status;
                        if *status == ConversationStatus::Queued {
                            rec.queued_at = Some(*at);
                        }
                        Applied::Done
                    }
                    _ => Applied::Closed,
                }
            }
            Write::Close { conversation, by, reason, at } => match self.conversations.get_mut(conversation) {
                Some(rec) if rec.status != ConversationStatus::Closed => {
                    rec.status = ConversationStatus::Closed;
                    rec.customer_away_since = None;
                    rec.closed = Some(Closure { at: *at, by: by.clone(), reason: *reason });
                    Applied::Done
                }
                _ => Applied::Closed,
            },
            Write::CustomerAway { conversation, since } => match self.conversations.get_mut(conversation) {
                Some(rec) if rec.status != ConversationStatus::Closed => {
                    rec.customer_away_since = *since;
                    Applied::Done
                }
                _ => Applied::Closed,
            },
            Write::CreateAttachment { record, max_per_conversation } => {
                let Some(rec) = self.conversations.get(&record.conversation_id) else { return Applied::NotFound };
                if rec.status == ConversationStatus::Closed {
                    return Applied::Closed;
                }
                let held = self.attachments.values().filter(|a| a.conversation_id == record.conversation_id).count();
                if held >= *max_per_conversation {
                    return Applied::AttachmentsFull;
                }
                self.attachments.insert(record.attachment.id.clone(), record.clone());
                Applied::Done
            }
            Write::Append { conversation, id, author, client_message_id, text, attachments, sent_at } => {
                if let Some(existing) = self.stored(conversation, &author.id, client_message_id) {
                    return Applied::Duplicate(existing);
                }
                let Some(rec) = self.conversations.get_mut(conversation) else { return Applied::NotFound };
                if rec.status == ConversationStatus::Closed {
                    return Applied::Closed;
                }
                if !rec.has_member(&author.id, author.role) {
                    return Applied::NotMember;
                }
                let sendable = |a: &&AttachmentRecord| {
                    a.conversation_id == *conversation
                        && a.uploader == author.id
                        && a.uploader_role == author.role
                        && a.message_id.is_none()
                };
                let sent: Option<Vec<_>> = attachments
                    .as_slice()
                    .iter()
                    .map(|a| self.attachments.get(a).filter(sendable).map(|a| a.attachment.clone()))
                    .collect();
                let Some(sent) = sent else { return Applied::AttachmentsRefused };
                for a in attachments.as_slice() {
                    if let Some(record) = self.attachments.get_mut(a) {
                        record.message_id = Some(id.clone());
                    }
                }
                let Some(rec) = self.conversations.get_mut(conversation) else { return Applied::NotFound };
                let seq = Seq::new(rec.last_seq.get() + 1).expect("a seq after a last seq");
                rec.last_seq = seq.into();
                let record = MessageRecord {
                    conversation_id: conversation.clone(),
                    id: id.clone(),
                    seq,
                    author: author.clone(),
                    client_message_id: client_message_id.clone(),
                    text: text.clone(),
                    attachments: sent,
                    sent_at: *sent_at,
                };
                self.messages.entry(conversation.clone()).or_default().push(record.clone());
                Applied::Appended(record)
            }
            Write::Receipt { conversation, user, kind, up_to_seq, at } => {
                let key = (conversation.clone(), user.clone(), kind.as_str());
                let advanced = self.receipts.get(&key).is_none_or(|r| r.up_to_seq < *up_to_seq);
                if advanced {
                    let record = ReceiptRecord { user_id: user.clone(), kind: *kind, up_to_seq: *up_to_seq, at: *at };
                    self.receipts.insert(key, record);
                }
                Applied::Receipt { advanced }
            }
            Write::AgentConnection { agent, name, node, online, at } => {
                self.agent_connection(agent, name, node, *online, *at);
                Applied::Done
            }
            Write::AgentAvailability { agent, name, available, at } => {
                self.agent_availability(agent, name, *available, *at);
                Applied::Done
            }
            Write::AgentIdle { agent, at } => {
                self.agent_idle(agent, *at);
                Applied::Done
            }
            Write::NodeGone { node, at } => {
                self.node_gone(node, *at);
                Applied::Done
            }
            Write::Post { feed, item, once, retention } => {
                self.feeds.entry(feed.key()).or_default().post(item, once.as_ref(), *retention)
            }
            Write::MarkRead { feed, up_to } => self.feeds.entry(feed.key()).or_default().mark_read(*up_to),
        }
    }

    /// Every conversation that is not closed, queued ones in queue order first (ties: by id).
    fn open_conversations(&self) -> Vec<ConversationRecord> {
        let mut records: Vec<ConversationRecord> =
            self.conversations.values().filter(|rec| rec.status != ConversationStatus::Closed).cloned().collect();
        // A stable sort of the id-ordered map: ties stay in id order.
        records.sort_by_key(|rec| (rec.status == ConversationStatus::Active, rec.queued_at, rec.created_at));
        records
    }

    fn stored(&self, conversation: &ConversationId, author: &UserId, key: &ClientMessageId) -> Option<MessageRecord> {
        self.messages.get(conversation)?.iter().find(|m| m.author.id == *author && m.client_message_id == *key).cloned()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn apply(&self, batch: &[Write]) -> Result<Vec<Applied>, StoreError> {
        // Pool writes wait for the round in progress, as on PostgreSQL.
        let _lock = if batch.iter().any(Write::is_agent_pool_write) {
            Some(pool::wait_for_lock(&self.pool).await?)
        } else {
            None
        };
        self.shared.apply(batch)
    }

    async fn conversation(&self, id: &ConversationId) -> Result<Option<ConversationRecord>, StoreError> {
        Ok(self.data().conversations.get(id).cloned())
    }

    async fn member_conversations(&self, user: &User) -> Result<Vec<ConversationRecord>, StoreError> {
        let mut records: Vec<ConversationRecord> = self
            .data()
            .conversations
            .values()
            .filter(|rec| rec.status != ConversationStatus::Closed && rec.has_member(&user.id, user.role))
            .cloned()
            .collect();
        records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(records)
    }

    async fn open_conversations(&self) -> Result<Vec<ConversationRecord>, StoreError> {
        Ok(self.data().open_conversations())
    }

    async fn messages_after(
        &self,
        id: &ConversationId,
        after: LastSeq,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let data = self.data();
        let messages = data.messages.get(id).map(Vec::as_slice).unwrap_or_default();
        Ok(messages.iter().filter(|m| m.seq.get() > after.get()).take(limit).cloned().collect())
    }

    async fn stored_message(
        &self,
        conversation: &ConversationId,
        author: &UserId,
        client_message_id: &ClientMessageId,
    ) -> Result<Option<MessageRecord>, StoreError> {
        Ok(self.data().stored(conversation, author, client_message_id))
    }

    async fn attachment(
        &self,
        conversation: &ConversationId,
        id: &AttachmentId,
    ) -> Result<Option<AttachmentRecord>, StoreError> {
        Ok(self.data().attachments.get(id).filter(|a| a.conversation_id == *conversation).cloned())
    }

    async fn forget_unsent_attachments(
        &self,
        uploaded_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<AttachmentId>, StoreError> {
        let mut data = self.data();
        let mut unsent: Vec<(Timestamp, AttachmentId)> = data
            .attachments
            .values()
            .filter(|a| a.message_id.is_none() && a.created_at < uploaded_before)
            .map(|a| (a.created_at, a.attachment.id.clone()))
            .collect();
        unsent.sort();
        unsent.truncate(limit);
        for (_, id) in &unsent {
            data.attachments.remove(id);
        }
        Ok(unsent.into_iter().map(|(_, id)| id).collect())
    }

    async fn receipts(&self, id: &ConversationId) -> Result<Vec<ReceiptRecord>, StoreError> {
        let data = self.data();
        let mut records: Vec<ReceiptRecord> =
            data.receipts.iter().filter(|((c, _, _), _)| c == id).map(|(_, r)| r.clone()).collect();
        records.sort_by(|a, b| (a.kind.as_str(), &a.user_id).cmp(&(b.kind.as_str(), &b.user_id)));
        Ok(records)
    }

    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConversationRecord>, StoreError> {
        let mut records: Vec<ConversationRecord> = self
            .data()
            .conversations
            .values()
            .filter(|rec| rec.status != ConversationStatus::Closed)
            .filter(|rec| rec.customer.id == *user || rec.agent.as_ref().is_some_and(|a| a.id == *user))
            .cloned()
            .collect();
        records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(records)
    }

    async fn list_conversations(&self, user: &User, filter: &ListFilter) -> Result<Vec<SummaryRecord>, StoreError> {
        let data = self.data();
        let matches = |rec: &&ConversationRecord| {
            let query = filter.query.as_ref().map(|q| q.as_str().to_lowercase());
            let found = |text: &str| query.as_ref().is_none_or(|q| text.to_lowercase().contains(q.as_str()));
            let searched = query.is_none()
                || found(&rec.customer.name)
                || found(rec.customer.id.as_str())
                || rec.topic.as_ref().is_some_and(|t| found(t.as_str()));
            let wanted = match filter.scope {
                ListScope::Mine => {
                    rec.has_member(&user.id, user.role) && filter.status.is_none_or(|status| rec.status == status)
                }
                ListScope::Queue => rec.status == ConversationStatus::Queued && rec.customer_away_since.is_none(),
            };
            wanted && searched
        };
        let mut page: Vec<&ConversationRecord> = data.conversations.values().filter(matches).collect();
        match filter.scope {
            ListScope::Mine => page.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id))),
            ListScope::Queue => {
                page.sort_by(|a, b| (a.queued_at, a.created_at, &a.id).cmp(&(b.queued_at, b.created_at, &b.id)))
            }
        }
        if let Some(after) = &filter.after {
            // As the SQL stores do: after an id that is not listed, nothing.
            let position = page.iter().position(|rec| rec.id == *after);
            page = position.map_or_else(Vec::new, |index| page.split_off(index + 1));
        }
        Ok(page
            .into_iter()
            .take(filter.limit.saturating_add(1))
            .map(|rec| SummaryRecord {
                conversation: rec.clone(),
                last_message: data
                    .messages
                    .get(&rec.id)
                    .and_then(|messages| messages.iter().find(|m| m.seq.get() == rec.last_seq.get()))
                    .cloned(),
            })
            .collect())
    }

    async fn quiet_conversations(&self, quiet_since: Timestamp) -> Result<Vec<ConversationId>, StoreError> {
        let data = self.data();
        let mut quiet: Vec<(Timestamp, ConversationId)> = data
            .conversations
            .values()
            .filter(|rec| rec.status != ConversationStatus::Closed)
            .map(|rec| {
                let last = data.messages.get(&rec.id).and_then(|messages| messages.last()).map(|m| m.sent_at);
                (last.unwrap_or(rec.created_at), rec.id.clone())
            })
            .filter(|(at, _)| *at < quiet_since)
            .collect();
        quiet.sort();
        Ok(quiet.into_iter().map(|(_, id)| id).collect())
    }

    async fn feed(
        &self,
        feed: &Feed,
        after: Option<LastSeq>,
        limit: usize,
        not_before: Option<Timestamp>,
    ) -> Result<FeedPage, StoreError> {
        Ok(self.data().feeds.get(&feed.key()).map(|f| f.page(after, limit, not_before)).unwrap_or_default())
    }

    async fn first_responses(&self, since: Timestamp) -> Result<Vec<u64>, StoreError> {
        let data = self.data();
        let waits = data.conversations.values().filter(|rec| rec.created_at >= since).filter_map(|rec| {
            let messages = data.messages.get(&rec.id)?;
            let first =
                messages.iter().filter(|m| m.author.role == petchat_protocol::Role::Agent).map(|m| m.sent_at).min()?;
            Some((first.as_unix_ms() - rec.created_at.as_unix_ms()).max(0) as u64)
        });
        Ok(waits.collect())
    }

    async fn lock_pool(&self) -> Result<Box<dyn PoolRound>, StoreError> {
        pool::lock(&self.shared, &self.pool).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use petchat_protocol::{MessageId, MessageText, Participant, Role, Timestamp};

    use super::*;

    fn customer(id: &str) -> User {
        User { id: UserId::new(id).expect("id"), role: Role::Customer, name: id.into() }
    }

    fn conversation(id: &str, customer: &User) -> ConversationRecord {
        ConversationRecord {
            id: ConversationId::new(id).expect("id"),
            customer: Participant { id: customer.id.clone(), name: customer.name.clone() },
            agent: None,
            status: ConversationStatus::Queued,
            last_seq: LastSeq::NONE,
            created_at: Timestamp::from_unix_ms(1).expect("time"),
            queued_at: None,
            topic: None,
            pet_id: None,
            order_id: None,
            customer_away_since: None,
            closed: None,
            declined_by: None,
        }
    }

    fn append(conversation: &str, author: &User, key: u8) -> Write {
        Write::Append {
            conversation: ConversationId::new(conversation).expect("id"),
            id: MessageId::new(format!("m-{key}")).expect("id"),
            author: author.clone(),
            client_message_id: ClientMessageId::from_random_bytes([key; 16]),
            text: MessageText::new("hello").expect("text"),
            attachments: Default::default(),
            sent_at: Timestamp::from_unix_ms(2).expect("time"),
        }
    }

    #[tokio::test]
    async fn seqs_are_gapless_keys_are_idempotent_and_only_members_write() {
        let (alice, mallory) = (customer("alice"), customer("mallory"));
        let store = MemoryStore::new();
        store.apply(&[Write::CreateConversation(conversation("c", &alice))]).await.expect("created");
        let applied = store
            .apply(&[append("c", &alice, 1), append("c", &alice, 2), append("c", &alice, 1), append("c", &mallory, 3)])
            .await
            .expect("applied");
        let seqs: Vec<Option<u64>> = applied
            .iter()
            .map(|a| match a {
                Applied::Appended(m) | Applied::Duplicate(m) => Some(m.seq.get()),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, [Some(1), Some(2), Some(1), None]);
        assert!(matches!(applied[2], Applied::Duplicate(_)));
        assert_eq!(applied[3], Applied::NotMember);
    }

    #[tokio::test]
    async fn a_failed_batch_writes_nothing() {
        let alice = customer("alice");
        let store = MemoryStore::new();
        store.fail_commits(true);
        assert!(store.apply(&[Write::CreateConversation(conversation("c", &alice))]).await.is_err());
        store.fail_commits(false);
        assert!(store.open_conversations().await.expect("read").is_empty());
    }
}
