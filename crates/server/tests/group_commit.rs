//! Group commit: while one transaction is being committed, every message that
//! arrives waits and is committed together in the next one, nothing is
//! acknowledged before its commit returns, and a connection's requests are
//! still answered in the order it sent them.

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::TestDatabase;
use petchat_protocol::{
    AttachmentId, ClientMessage, ClientMessageId, ConversationId, JoinConversation, LastSeq, MessageText,
    OpenConversation, Role, SendChat, User, UserId,
};
use petchat_server::Config;
use petchat_server::bus::{ConnSink, Kick, LocalBus};
use petchat_server::hub::{Hub, HubConn};
use petchat_server::store::{
    Applied, AttachmentRecord, ConversationRecord, MessageRecord, PoolRound, ReceiptRecord, Store, StoreError, Write,
};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

/// The run's store (SQLite or PostgreSQL) with its second commit waiting at
/// a gate, recording the size of every committed batch.
struct GatedStore {
    inner: Arc<dyn Store>,
    batches: Mutex<Vec<usize>>,
    entered: Notify,
    release: Notify,
}

#[async_trait]
impl Store for GatedStore {
    async fn apply(&self, batch: &[Write]) -> Result<Vec<Applied>, StoreError> {
        let call = {
            let mut batches = self.batches.lock().expect("lock");
            batches.push(batch.len());
            batches.len()
        };
        if call == 2 {
            self.entered.notify_one();
            self.release.notified().await;
        }
        self.inner.apply(batch).await
    }
    async fn conversation(&self, id: &ConversationId) -> Result<Option<ConversationRecord>, StoreError> {
        self.inner.conversation(id).await
    }
    async fn open_conversations(&self) -> Result<Vec<ConversationRecord>, StoreError> {
        self.inner.open_conversations().await
    }
    async fn messages_after(
        &self,
        id: &ConversationId,
        after: LastSeq,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.inner.messages_after(id, after, limit).await
    }
    async fn stored_message(
        &self,
        conversation: &ConversationId,
        author: &UserId,
        client_message_id: &ClientMessageId,
    ) -> Result<Option<MessageRecord>, StoreError> {
        self.inner.stored_message(conversation, author, client_message_id).await
    }
    async fn attachment(
        &self,
        conversation: &ConversationId,
        id: &AttachmentId,
    ) -> Result<Option<AttachmentRecord>, StoreError> {
        self.inner.attachment(conversation, id).await
    }
    async fn receipts(&self, id: &ConversationId) -> Result<Vec<ReceiptRecord>, StoreError> {
        self.inner.receipts(id).await
    }
    async fn member_conversations(&self, user: &User) -> Result<Vec<ConversationRecord>, StoreError> {
        self.inner.member_conversations(user).await
    }
    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConversationRecord>, StoreError> {
        self.inner.user_conversations(user).await
    }
    async fn feed(
        &self,
        feed: &petchat_server::store::Feed,
        after: Option<LastSeq>,
        limit: usize,
        not_before: Option<petchat_protocol::Timestamp>,
    ) -> Result<petchat_server::store::FeedPage, StoreError> {
        self.inner.feed(feed, after, limit, not_before).await
    }
    async fn first_responses(&self, since: petchat_protocol::Timestamp) -> Result<Vec<u64>, StoreError> {
        self.inner.first_responses(since).await
    }
    async fn list_conversations(
        &self,
        user: &User,
        filter: &petchat_server::store::ListFilter,
    ) -> Result<Vec<petchat_server::store::SummaryRecord>, StoreError> {
        self.inner.list_conversations(user, filter).await
    }
    async fn forget_unsent_attachments(
        &self,
        uploaded_before: petchat_protocol::Timestamp,
        limit: usize,
    ) -> Result<Vec<AttachmentId>, StoreError> {
        self.inner.forget_unsent_attachments(uploaded_before, limit).await
    }
    async fn quiet_conversations(
        &self,
        quiet_since: petchat_protocol::Timestamp,
    ) -> Result<Vec<ConversationId>, StoreError> {
        self.inner.quiet_conversations(quiet_since).await
    }
    async fn lock_pool(&self) -> Result<Box<dyn PoolRound>, StoreError> {
        self.inner.lock_pool().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

/// A hub over a fresh gated store on a database that lives as long as the first value.
async fn gated_hub() -> (TestDatabase, Arc<GatedStore>, Hub) {
    let database = TestDatabase::new().await;
    let store = Arc::new(GatedStore {
        inner: database.open().await,
        batches: Mutex::new(Vec::new()),
        entered: Notify::new(),
        release: Notify::new(),
    });
    let limits = Config::with_defaults(&database.url, "s").limits;
    let (hub, _task) = Hub::start(store.clone(), Arc::new(LocalBus::default()), limits).await.expect("hub");
    (database, store, hub)
}

/// A connection of `user` to the hub, and the queue its frames arrive on.
async fn attach(hub: &Hub, user: &User) -> (HubConn, mpsc::Receiver<axum::extract::ws::Utf8Bytes>) {
    let (tx, rx) = mpsc::channel(1024);
    let conn = hub
        .connect(
            user.clone(),
            Vec::new(),
            petchat_protocol::Timestamp::MAX,
            ConnSink::new(tx, Arc::new(Kick::default())),
        )
        .await
        .expect("connected");
    (conn, rx)
}

async fn next_of(rx: &mut mpsc::Receiver<axum::extract::ws::Utf8Bytes>, kind: &str) -> Value {
    loop {
        let frame =
            tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.expect("in time").expect("open");
        let value: Value = serde_json::from_str(frame.as_str()).expect("JSON");
        if value["type"] == kind {
            return value;
        }
    }
}

fn send(conversation: &ConversationId, n: u8) -> ClientMessage {
    ClientMessage::ChatSend(SendChat {
        conversation_id: conversation.clone(),
        client_message_id: ClientMessageId::from_random_bytes([n; 16]),
        text: MessageText::new(&format!("message {n}")).expect("text"),
        attachments: Default::default(),
    })
}

#[tokio::test]
async fn messages_that_arrive_during_a_commit_share_the_next_one() {
    let (_database, store, hub) = gated_hub().await;
    let customer = User { id: UserId::new("c").expect("id"), role: Role::Customer, name: "C".into() };
    let (conn, mut rx) = attach(&hub, &customer).await;

    // Commit 1: the conversation.
    hub.request(&conn, None, ClientMessage::ConversationOpen(OpenConversation::default())).await;
    let opened = next_of(&mut rx, "conversation.opened").await;
    let id = ConversationId::new(opened["data"]["conversation"]["id"].as_str().expect("id")).expect("id");
    next_of(&mut rx, "conversation.queued").await;

    // Commit 2 holds at the gate; 99 more messages arrive meanwhile.
    hub.request(&conn, None, send(&id, 0)).await;
    store.entered.notified().await;
    for n in 1..100 {
        hub.request(&conn, None, send(&id, n)).await;
    }
    // Nothing is acknowledged while its commit has not returned.
    assert!(rx.try_recv().is_err(), "an ack went out before its commit");
    store.release.notify_one();
    for seq in 1..=100 {
        assert_eq!(next_of(&mut rx, "chat.ack").await["data"]["seq"], seq);
    }
    assert_eq!(*store.batches.lock().expect("lock"), [1, 1, 99], "three transactions for 1 + 100 writes");
}

/// Found by the chaos test: a client that reconnects sends its joins, then
/// its outbox. When both land in one batch, the join (which reads after the
/// commit) was answered after the batch's acks, so the client saw its own
/// message's seq before the messages it had missed, took it for a gap, and
/// got its own message again in the replay.
#[tokio::test]
async fn a_request_after_a_join_in_the_same_batch_is_answered_after_the_join() {
    let (_database, store, hub) = gated_hub().await;
    let customer = User { id: UserId::new("c").expect("id"), role: Role::Customer, name: "C".into() };
    let (phone, mut first) = attach(&hub, &customer).await;
    let (laptop, mut second) = attach(&hub, &customer).await;

    hub.request(&phone, None, ClientMessage::ConversationOpen(OpenConversation::default())).await;
    let opened = next_of(&mut first, "conversation.opened").await;
    let id = ConversationId::new(opened["data"]["conversation"]["id"].as_str().expect("id")).expect("id");

    // The phone's message holds its commit at the gate while the laptop
    // joins and sends: both requests wait for the same next batch.
    hub.request(&phone, None, send(&id, 1)).await;
    store.entered.notified().await;
    let join = JoinConversation { conversation_id: id.clone(), after_seq: None };
    hub.request(&laptop, None, ClientMessage::ConversationJoin(join)).await;
    hub.request(&laptop, None, send(&id, 2)).await;
    store.release.notify_one();

    let mut order = Vec::new();
    while order.last().is_none_or(|kind: &String| !kind.starts_with("chat.ack")) {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), second.recv())
            .await
            .expect("in time")
            .expect("open");
        let value: Value = serde_json::from_str(frame.as_str()).expect("JSON");
        if let Some(kind @ ("conversation.joined" | "chat.message" | "chat.ack")) = value["type"].as_str() {
            order.push(format!("{kind}{}", value["data"]["seq"].as_u64().map_or(String::new(), |s| format!(" {s}"))));
        }
    }
    assert_eq!(order, ["conversation.joined", "chat.message 1", "chat.ack 2"]);
}
