//! Topics (SPEC §11) and notifications (SPEC §12) on this node: the owner of
//! each feed's subscribers, writes and delivery.
//!
//! Feeds are partitioned across shards by key, like conversations. A shard
//! gathers the posts and read marks waiting into one store transaction (group
//! commit) and only after it answers the caller and delivers: a topic event is
//! serialized once and its bytes are queued on every subscriber's connection
//! (a full queue closes that connection with 4001 and slows nobody else); a
//! notification and a read mark go to every connection of the user, on every
//! node (`Out`). A subscription's replay is read off the loop; the connection
//! is added in the same step that sends the replay, after checking that the
//! read reached every event this shard committed meanwhile, so an event is
//! never missed between the replay and the live ones.

mod topic;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use petchat_protocol::api::{NotifyRequest, PublishRequest};
use petchat_protocol::{
    ErrorCode, EventName, LastSeq, Link, Notification, NotificationBody, NotificationId, NotificationRead,
    NotificationTitle, RequestId, Seq, ServerMessage, Timestamp, TopicEvent, TopicName, TopicRef, TopicSubscribed,
    UserId,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, warn};

use self::topic::{Next, TopicState};
use super::frames::{frame, now};
use super::out::{Out, count_out, error_frame};
use super::remote::Remote;
use crate::bus::{ConnId, ConnSink, Skip};
use crate::config::TopicSettings;
use crate::store::{Applied, Feed, FeedItem, FeedPage, NewItem, Once, Retention, Store, StoreError, Write};

/// Read notifications a user keeps beyond its unread ones.
const READ_NOTIFICATIONS_KEPT: usize = 100;

/// How long an event waits for its predecessor before the gap is read from
/// the store (as chat messages wait, `sequence.rs`).
const GAP_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// What a post to a feed can come to, besides success.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PostError {
    /// The idempotency key was used within 24 h for a different request.
    #[error("the idempotencyKey was used for a different request")]
    KeyConflict,
    /// The store failed; nothing was posted.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A post's outcome: the item's seq and id (the first post's, for a repeated key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Posted {
    /// The item's seq.
    pub(crate) seq: Seq,
    /// A notification's id; empty for a topic event.
    pub(crate) id: String,
}

type Reply = oneshot::Sender<Result<Posted, PostError>>;

/// The stored form of a notification's text (the `body` of its feed item).
#[derive(Debug, Serialize, Deserialize)]
struct NotificationText {
    title: NotificationTitle,
    body: NotificationBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<Link>,
}

/// A request to a feed shard.
pub(super) enum FeedCommand {
    /// `POST /v1/api/publish`.
    Publish { request: PublishRequest, body: String, digest: Option<String>, reply: Reply },
    /// `POST /v1/api/notify`, or the server's own notification (no reply).
    Notify { request: NotifyRequest, digest: Option<String>, reply: Option<Reply> },
    /// `notification.read` from one of the user's connections.
    MarkRead { user: UserId, up_to: Seq, conn: ConnId, sink: ConnSink, id: Option<RequestId> },
    /// `topic.subscribe`.
    Subscribe { conn: ConnId, sink: ConnSink, id: Option<RequestId>, topic: TopicName, after: Option<LastSeq> },
    /// A subscription's read came back.
    Loaded {
        conn: ConnId,
        sink: ConnSink,
        id: Option<RequestId>,
        topic: TopicName,
        after: Option<LastSeq>,
        page: Result<FeedPage, StoreError>,
    },
    /// `topic.unsubscribe`.
    Unsubscribe { conn: ConnId, sink: ConnSink, id: Option<RequestId>, topic: TopicName },
    /// A connection closed: it leaves these topics.
    Gone { conn: ConnId, topics: Vec<TopicName> },
    /// An event stored by another node.
    RemoteEvent { topic: TopicName, seq: Seq, frame: Utf8Bytes },
    /// An event waited for its predecessor: read the gap if it still does.
    GapCheck { topic: TopicName },
    /// The store's events after the last delivered one, read for a gap.
    GapRead { topic: TopicName, page: Result<FeedPage, StoreError> },
    /// Redis came back: read every held topic's missed events.
    CatchUp,
}

/// The feeds' handle: which shard owns which feed.
#[derive(Clone)]
pub(crate) struct Feeds {
    shards: Vec<mpsc::Sender<FeedCommand>>,
    /// Each shard's internal channel, for what other nodes publish.
    internals: Vec<mpsc::UnboundedSender<FeedCommand>>,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Feeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feeds").field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for FeedCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Publish { .. } => "Publish",
            Self::Notify { .. } => "Notify",
            Self::MarkRead { .. } => "MarkRead",
            Self::Subscribe { .. } => "Subscribe",
            Self::Loaded { .. } => "Loaded",
            Self::Unsubscribe { .. } => "Unsubscribe",
            Self::Gone { .. } => "Gone",
            Self::RemoteEvent { .. } => "RemoteEvent",
            Self::GapCheck { .. } => "GapCheck",
            Self::GapRead { .. } => "GapRead",
            Self::CatchUp => "CatchUp",
        })
    }
}

impl Feeds {
    /// Starts `shards` feed shards; each task ends once every handle is dropped.
    pub(super) fn start(
        store: Arc<dyn Store>,
        out: Out,
        settings: TopicSettings,
        max_replay: usize,
        commit_batch: usize,
        shards: usize,
    ) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let settings = Arc::new(settings);
        let mut senders = Vec::with_capacity(shards);
        let mut internals = Vec::with_capacity(shards);
        let mut tasks = Vec::with_capacity(shards);
        for _ in 0..shards.max(1) {
            let (tx, rx) = mpsc::channel(4 * commit_batch.max(64));
            let (internal, internal_rx) = mpsc::unbounded_channel();
            let shard = Shard {
                store: store.clone(),
                out: out.clone(),
                settings: settings.clone(),
                max_replay,
                commit_batch: commit_batch.max(1),
                internal: internal.clone(),
                reading: 0,
                topics: HashMap::new(),
                remote: out.remote.clone(),
            };
            internals.push(internal);
            tasks.push(tokio::spawn(shard.run(rx, internal_rx).in_current_span()));
            senders.push(tx);
        }
        (Self { shards: senders, internals, store }, tasks)
    }

    /// Which shard owns a feed: FNV-1a of its key, as conversations are placed.
    fn shard_index(&self, feed: &Feed) -> usize {
        let hash = feed
            .key()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
        (hash % self.shards.len() as u64) as usize
    }

    fn shard(&self, feed: &Feed) -> &mpsc::Sender<FeedCommand> {
        &self.shards[self.shard_index(feed)]
    }

    async fn send(&self, feed: &Feed, command: FeedCommand) {
        // The shards outlive every handle; a send fails only while the
        // process stops, when nobody is left to answer.
        let _ = self.shard(feed).send(command).await;
    }

    /// Publishes a topic event once it is stored.
    pub(crate) async fn publish(&self, request: PublishRequest) -> Result<Posted, PostError> {
        let body = serde_json::to_string(&request.data).expect("a JSON object serializes");
        let digest = request.idempotency_key.as_ref().map(|_| digest(&[request.event.as_str(), &body]));
        let (reply, answer) = oneshot::channel();
        let feed = Feed::Topic(request.topic.clone());
        self.send(&feed, FeedCommand::Publish { request, body, digest, reply }).await;
        answer.await.unwrap_or_else(|_| Err(PostError::Store(StoreError::Unavailable("the server is stopping".into()))))
    }

    /// Notifies a user once the notification is stored.
    pub(crate) async fn notify(&self, request: NotifyRequest) -> Result<Posted, PostError> {
        let digest = request.idempotency_key.as_ref().map(|_| {
            let link = request.link.as_ref().map_or("", Link::as_str);
            digest(&[request.kind.as_str(), request.title.as_str(), request.body.as_str(), link])
        });
        let (reply, answer) = oneshot::channel();
        let feed = Feed::User(request.user_id.clone());
        self.send(&feed, FeedCommand::Notify { request, digest, reply: Some(reply) }).await;
        answer.await.unwrap_or_else(|_| Err(PostError::Store(StoreError::Unavailable("the server is stopping".into()))))
    }

    /// The server's own notification: stored and delivered as the backend's are, answered to nobody.
    pub(super) fn notify_soon(&self, request: NotifyRequest) {
        let feed = Feed::User(request.user_id.clone());
        if let Err(e) = self.shard(&feed).try_send(FeedCommand::Notify { request, digest: None, reply: None }) {
            warn!(error = %e, "a server notification was dropped: the feed shard is full");
        }
    }

    /// `topic.subscribe` of a connection (access already checked).
    pub(super) async fn subscribe(
        &self,
        conn: ConnId,
        sink: ConnSink,
        id: Option<RequestId>,
        topic: TopicName,
        after: Option<LastSeq>,
    ) {
        let feed = Feed::Topic(topic.clone());
        self.send(&feed, FeedCommand::Subscribe { conn, sink, id, topic, after }).await;
    }

    /// `topic.unsubscribe` of a connection.
    pub(super) async fn unsubscribe(&self, conn: ConnId, sink: ConnSink, id: Option<RequestId>, topic: TopicName) {
        let feed = Feed::Topic(topic.clone());
        self.send(&feed, FeedCommand::Unsubscribe { conn, sink, id, topic }).await;
    }

    /// `notification.read` of a connection of `user`.
    pub(super) async fn mark_read(
        &self,
        user: UserId,
        up_to: Seq,
        conn: ConnId,
        sink: ConnSink,
        id: Option<RequestId>,
    ) {
        let feed = Feed::User(user.clone());
        self.send(&feed, FeedCommand::MarkRead { user, up_to, conn, sink, id }).await;
    }

    /// An event another node stored and published on the topic's channel.
    pub(super) fn remote_event(&self, topic: TopicName, seq: Seq, frame: Utf8Bytes) {
        let shard = self.shard_index(&Feed::Topic(topic.clone()));
        let _ = self.internals[shard].send(FeedCommand::RemoteEvent { topic, seq, frame });
    }

    /// Redis is back: every topic held here reads what it may have missed.
    pub(super) fn catch_up(&self) {
        for internal in &self.internals {
            let _ = internal.send(FeedCommand::CatchUp);
        }
    }

    /// A connection closed: its topics forget it.
    pub(super) fn gone(&self, conn: ConnId, topics: Vec<TopicName>) {
        let mut by_shard: HashMap<usize, Vec<TopicName>> = HashMap::new();
        for topic in topics {
            by_shard.entry(self.shard_index(&Feed::Topic(topic.clone()))).or_default().push(topic);
        }
        for (shard, topics) in by_shard {
            let _ = self.shards[shard].try_send(FeedCommand::Gone { conn, topics });
        }
    }

    /// The user's notifications for a new connection: where they stand and,
    /// oldest first, at most `limit` of them: those after `after`, or the
    /// unread ones.
    pub(super) async fn unread(
        &self,
        user: &UserId,
        after: Option<LastSeq>,
        limit: usize,
    ) -> Result<FeedPage, StoreError> {
        self.store.feed(&Feed::User(user.clone()), after, limit, None).await
    }
}

/// SHA-256 of the parts of a request, NUL-separated, in hex.
fn digest(parts: &[&str]) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `notification` of a stored item of a user's feed.
pub(super) fn notification(item: &FeedItem) -> Result<Notification, StoreError> {
    let text: NotificationText =
        serde_json::from_str(&item.body).map_err(|e| StoreError::Corrupt(format!("notification {}: {e}", item.seq)))?;
    Ok(Notification {
        id: NotificationId::new(item.id.clone()).map_err(|e| StoreError::Corrupt(format!("notification id: {e}")))?,
        seq: item.seq,
        kind: item.name.clone(),
        title: text.title,
        body: text.body,
        link: text.link,
        created_at: item.at,
    })
}

/// The `topic.event` of a stored item of a topic's feed.
fn topic_event(topic: &TopicName, item: &FeedItem) -> Result<TopicEvent, StoreError> {
    let data = serde_json::from_str(&item.body)
        .map_err(|e| StoreError::Corrupt(format!("event {} of {topic}: {e}", item.seq)))?;
    Ok(TopicEvent { topic: topic.clone(), seq: item.seq, event: item.name.clone(), data, published_at: item.at })
}

/// One shard: its topics' subscribers, and the writes of its feeds.
struct Shard {
    store: Arc<dyn Store>,
    out: Out,
    settings: Arc<TopicSettings>,
    max_replay: usize,
    commit_batch: usize,
    /// Where reads come back.
    internal: mpsc::UnboundedSender<FeedCommand>,
    /// Reads under way: the loop ends once the handles are gone and none is.
    reading: usize,
    topics: HashMap<TopicName, TopicState>,
    /// The other nodes, in a cluster: a topic held here is heard on its channel.
    remote: Option<Arc<Remote>>,
}

impl Shard {
    async fn run(mut self, mut rx: mpsc::Receiver<FeedCommand>, mut internal_rx: mpsc::UnboundedReceiver<FeedCommand>) {
        let mut open = true;
        while open || self.reading > 0 {
            let first = tokio::select! {
                biased;
                Some(command) = internal_rx.recv() => command,
                command = rx.recv(), if open => match command {
                    Some(command) => command,
                    None => { open = false; continue; }
                },
            };
            let mut commands = vec![first];
            while commands.len() < self.commit_batch {
                match internal_rx.try_recv().or_else(|_| rx.try_recv()) {
                    Ok(command) => commands.push(command),
                    Err(_) => break,
                }
            }
            self.step(commands).await;
        }
    }

    /// Decides every command, commits the writes in one transaction, then
    /// answers and delivers in order.
    async fn step(&mut self, commands: Vec<FeedCommand>) {
        let at = now();
        let mut writes = Vec::new();
        let mut posts = Vec::new();
        for command in commands {
            match self.write_of(&command, at) {
                Some(write) => {
                    writes.push(write);
                    posts.push(command);
                }
                None => self.handle(command),
            }
        }
        if writes.is_empty() {
            return;
        }
        match self.store.apply(&writes).await {
            Ok(results) => {
                for (command, applied) in posts.into_iter().zip(results) {
                    self.committed(command, applied, at);
                }
            }
            Err(e) => {
                warn!(error = %e, writes = writes.len(), "storing feed writes failed");
                let transient = e.is_transient();
                for command in posts {
                    self.failed(command, transient);
                }
            }
        }
    }

    /// The store write a command makes, if any.
    fn write_of(&self, command: &FeedCommand, at: Timestamp) -> Option<Write> {
        match command {
            FeedCommand::Publish { request, body, digest, .. } => Some(Write::Post {
                feed: Feed::Topic(request.topic.clone()),
                item: NewItem { id: String::new(), name: request.event.clone(), body: body.clone(), at },
                once: once(request.idempotency_key.as_ref(), digest.as_ref()),
                retention: Retention {
                    keep: self.settings.topic_history.max(1),
                    ttl_ms: Some(self.settings.topic_history_ttl_ms),
                    keep_unread: false,
                },
            }),
            FeedCommand::Notify { request, digest, .. } => {
                let text = NotificationText {
                    title: request.title.clone(),
                    body: request.body.clone(),
                    link: request.link.clone(),
                };
                Some(Write::Post {
                    feed: Feed::User(request.user_id.clone()),
                    item: NewItem {
                        id: uuid::Uuid::now_v7().to_string(),
                        name: request.kind.clone(),
                        body: serde_json::to_string(&text).expect("notification text serializes"),
                        at,
                    },
                    once: once(request.idempotency_key.as_ref(), digest.as_ref()),
                    retention: Retention { keep: READ_NOTIFICATIONS_KEPT, ttl_ms: None, keep_unread: true },
                })
            }
            FeedCommand::MarkRead { user, up_to, .. } => {
                Some(Write::MarkRead { feed: Feed::User(user.clone()), up_to: *up_to })
            }
            _ => None,
        }
    }

    fn committed(&mut self, command: FeedCommand, applied: Applied, at: Timestamp) {
        match (command, applied) {
            (FeedCommand::Publish { request, reply, .. }, Applied::Posted(item)) => {
                let event = TopicEvent {
                    topic: request.topic.clone(),
                    seq: item.seq,
                    event: request.event,
                    data: request.data,
                    published_at: at,
                };
                let frame = frame(ServerMessage::TopicEvent(event), None);
                if let Some(remote) = &self.remote {
                    remote.event(&request.topic, item.seq, &frame);
                }
                self.accept(&request.topic, item.seq, frame);
                let _ = reply.send(Ok(Posted { seq: item.seq, id: item.id }));
            }
            (FeedCommand::Notify { request, reply, .. }, Applied::Posted(item)) => {
                let notification = Notification {
                    id: NotificationId::new(item.id.clone()).expect("a UUID is a valid id"),
                    seq: item.seq,
                    kind: request.kind,
                    title: request.title,
                    body: request.body,
                    link: request.link,
                    created_at: at,
                };
                self.out.to_user(&request.user_id, ServerMessage::Notification(notification), Skip::Nobody);
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(Posted { seq: item.seq, id: item.id }));
                }
            }
            (FeedCommand::Publish { reply, .. }, Applied::PostedBefore { seq, id })
            | (FeedCommand::Notify { reply: Some(reply), .. }, Applied::PostedBefore { seq, id }) => {
                let _ = reply.send(Ok(Posted { seq, id }));
            }
            (FeedCommand::Publish { reply, .. }, Applied::KeyConflict)
            | (FeedCommand::Notify { reply: Some(reply), .. }, Applied::KeyConflict) => {
                let _ = reply.send(Err(PostError::KeyConflict));
            }
            (FeedCommand::MarkRead { user, up_to, conn, sink, id }, Applied::Read { read_seq, advanced }) => {
                // The connection that asked gets the answer to its request;
                // when the mark moved, every other connection of the user
                // (on every node) learns where it stands now.
                let mark = read_seq.seq().filter(|_| advanced).unwrap_or(up_to);
                sink.deliver(&frame(ServerMessage::NotificationRead(NotificationRead { up_to_seq: mark }), id));
                if advanced {
                    let read = ServerMessage::NotificationRead(NotificationRead { up_to_seq: mark });
                    self.out.to_user(&user, read, Skip::Conn(conn));
                }
            }
            (command, applied) => warn!(?command, ?applied, "a feed write answered unexpectedly"),
        }
    }

    fn failed(&mut self, command: FeedCommand, transient: bool) {
        let error = || {
            if transient {
                StoreError::Unavailable("the store did not commit".into())
            } else {
                StoreError::Refused("the store refused the write".into())
            }
        };
        match command {
            FeedCommand::Publish { reply, .. } | FeedCommand::Notify { reply: Some(reply), .. } => {
                let _ = reply.send(Err(PostError::Store(error())));
            }
            FeedCommand::MarkRead { sink, id, .. } => {
                sink.deliver(&error_frame(ErrorCode::Internal, "storing the read mark failed; send it again", id));
            }
            _ => {}
        }
    }

    /// A stored event for the topic's subscribers here, in seq order.
    fn accept(&mut self, topic: &TopicName, seq: Seq, frame: Utf8Bytes) {
        let Some(state) = self.topics.get_mut(topic) else { return };
        let next = state.accept(seq, frame);
        self.after(topic, next);
    }

    /// Schedules a gap check when an event waits.
    fn after(&mut self, topic: &TopicName, next: Next) {
        let Some(state) = self.topics.get_mut(topic) else { return };
        if next == Next::Gap && !state.gap_pending {
            state.gap_pending = true;
            let internal = self.internal.clone();
            let topic = topic.clone();
            self.reading += 1;
            tokio::spawn(async move {
                tokio::time::sleep(GAP_WAIT).await;
                let _ = internal.send(FeedCommand::GapCheck { topic });
            });
        }
    }

    /// Reads the store after the topic's last delivered event, off the loop.
    fn read_gap(&mut self, topic: &TopicName) {
        let Some(state) = self.topics.get_mut(topic) else { return };
        state.gap_pending = true;
        let after = state.last_seq();
        let (store, internal, topic) = (self.store.clone(), self.internal.clone(), topic.clone());
        let (limit, not_before) = (self.settings.topic_history.max(1), not_before(&self.settings));
        self.reading += 1;
        tokio::spawn(
            async move {
                let page = store.feed(&Feed::Topic(topic.clone()), Some(after), limit, not_before).await;
                let _ = internal.send(FeedCommand::GapRead { topic, page });
            }
            .in_current_span(),
        );
    }

    fn gap_read(&mut self, topic: &TopicName, page: Result<FeedPage, StoreError>) {
        let Some(state) = self.topics.get_mut(topic) else { return };
        state.gap_pending = false;
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                warn!(error = %e, %topic, "reading a topic's missed events failed; trying again");
                let next = state.next();
                return self.after(topic, next);
            }
        };
        let first_kept = page.items.first().map(|item| item.seq.get());
        let events = page.items.iter().filter_map(|item| Some((item.seq, event_frame(topic, item)?))).collect();
        let next = state.fill(first_kept, events, page.last_seq);
        self.after(topic, next);
        self.forget_if_idle(topic);
    }

    fn handle(&mut self, command: FeedCommand) {
        match command {
            FeedCommand::Subscribe { conn, sink, id, topic, after } => {
                let state = match self.topics.entry(topic.clone()) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        if let Some(remote) = &self.remote {
                            remote.hold_topic(&topic);
                        }
                        entry.insert(TopicState::default())
                    }
                };
                state.loading.push(conn);
                self.load(conn, sink, id, topic, after);
            }
            FeedCommand::Loaded { conn, sink, id, topic, after, page } => {
                self.reading -= 1;
                self.loaded(conn, sink, id, topic, after, page);
            }
            FeedCommand::Unsubscribe { conn, sink, id, topic } => {
                if let Some(state) = self.topics.get_mut(&topic) {
                    if state.loading.contains(&conn) {
                        state.leaving.push((conn, sink, id));
                        return;
                    }
                    state.subscribers.retain(|s| s.conn != conn);
                }
                self.forget_if_idle(&topic);
                sink.deliver(&frame(ServerMessage::TopicUnsubscribed(TopicRef { topic }), id));
            }
            FeedCommand::Gone { conn, topics } => {
                for topic in topics {
                    if let Some(state) = self.topics.get_mut(&topic) {
                        state.subscribers.retain(|s| s.conn != conn);
                        state.loading.retain(|c| *c != conn);
                        state.leaving.retain(|(c, ..)| *c != conn);
                    }
                    self.forget_if_idle(&topic);
                }
            }
            FeedCommand::RemoteEvent { topic, seq, frame } => self.accept(&topic, seq, frame),
            FeedCommand::GapCheck { topic } => {
                self.reading -= 1;
                let Some(state) = self.topics.get_mut(&topic) else { return };
                state.gap_pending = false;
                if state.next() == Next::Gap && state.known() {
                    self.read_gap(&topic);
                }
            }
            FeedCommand::GapRead { topic, page } => {
                self.reading -= 1;
                self.gap_read(&topic, page);
            }
            FeedCommand::CatchUp => {
                let held: Vec<TopicName> =
                    self.topics.iter().filter(|(_, s)| s.known() && !s.gap_pending).map(|(t, _)| t.clone()).collect();
                for topic in held {
                    self.read_gap(&topic);
                }
            }
            command => warn!(?command, "a feed write reached the read path"),
        }
    }

    /// Reads a topic for a subscription, off the loop; in a cluster the
    /// first read of a topic waits until Redis confirmed its channel, so
    /// that no event published after the read is missed.
    fn load(&mut self, conn: ConnId, sink: ConnSink, id: Option<RequestId>, topic: TopicName, after: Option<LastSeq>) {
        let internal = self.internal.clone();
        self.reading += 1;
        let store = self.store.clone();
        let heard = match (&self.remote, self.topics.get(&topic)) {
            (Some(remote), Some(state)) if !state.known() => Some(remote.subscribed()),
            _ => None,
        };
        // Every kept event when replaying (the newest `max_replay` are sent);
        // only the last seq otherwise.
        let limit = if after.is_some() { self.settings.topic_history.max(1) } else { 0 };
        let not_before = not_before(&self.settings);
        tokio::spawn(
            async move {
                if let Some(heard) = heard {
                    heard.await;
                }
                let feed = Feed::Topic(topic.clone());
                let page = store.feed(&feed, Some(after.unwrap_or(LastSeq::NONE)), limit, not_before).await;
                let _ = internal.send(FeedCommand::Loaded { conn, sink, id, topic, after, page });
            }
            .in_current_span(),
        );
    }

    fn loaded(
        &mut self,
        conn: ConnId,
        sink: ConnSink,
        id: Option<RequestId>,
        topic: TopicName,
        after: Option<LastSeq>,
        page: Result<FeedPage, StoreError>,
    ) {
        let Some(state) = self.topics.get_mut(&topic) else { return };
        if !state.loading.contains(&conn) {
            // The connection closed meanwhile.
            return self.forget_if_idle(&topic);
        }
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                warn!(error = %e, %topic, "reading a topic for a subscription failed");
                state.loading.retain(|c| *c != conn);
                sink.deliver(&error_frame(ErrorCode::Internal, "the topic could not be read; subscribe again", id));
                return self.after_load(&topic, conn);
            }
        };
        // What waited for the first read follows it (to the subscribers
        // already here; this one's replay covers it when it asked for one).
        let next = state.learned(page.last_seq);
        if after.is_some() && page.last_seq < state.last_seq() {
            // Events were delivered here after the read's snapshot: read again.
            self.after(&topic, next);
            return self.load(conn, sink, id, topic, after);
        }
        let last_seq = state.last_seq();
        let (replay, recovered) = match after {
            None => (Vec::new(), true),
            Some(after) => {
                let mut items = page.items;
                let mut recovered = after <= last_seq
                    && (after == last_seq || items.first().is_some_and(|i| i.seq.get() == after.get() + 1));
                if items.len() > self.max_replay {
                    items.drain(..items.len() - self.max_replay);
                    recovered = false;
                }
                (items, recovered)
            }
        };
        let subscribed = TopicSubscribed { topic: topic.clone(), last_seq, recovered };
        sink.deliver(&frame(ServerMessage::TopicSubscribed(subscribed), id));
        for item in &replay {
            if let Some(frame) = event_frame(&topic, item) {
                sink.deliver(&frame);
            }
        }
        count_out("topic.event", replay.len());
        state.loading.retain(|c| *c != conn);
        state.add(conn, sink);
        self.after(&topic, next);
        self.after_load(&topic, conn);
    }

    /// Runs the unsubscribe that waited for the connection's read, if any.
    fn after_load(&mut self, topic: &TopicName, conn: ConnId) {
        let Some(state) = self.topics.get_mut(topic) else { return };
        if let Some(at) = state.leaving.iter().position(|(c, ..)| *c == conn) {
            let (conn, sink, id) = state.leaving.remove(at);
            self.handle(FeedCommand::Unsubscribe { conn, sink, id, topic: topic.clone() });
        } else {
            self.forget_if_idle(topic);
        }
    }

    fn forget_if_idle(&mut self, topic: &TopicName) {
        if self.topics.get(topic).is_some_and(|s| s.idle() && !s.gap_pending) {
            self.topics.remove(topic);
            if let Some(remote) = &self.remote {
                remote.drop_topic(topic);
            }
        }
    }
}

/// The frame of a stored event, or none (logged) if it is unreadable.
fn event_frame(topic: &TopicName, item: &FeedItem) -> Option<Utf8Bytes> {
    match topic_event(topic, item) {
        Ok(event) => Some(frame(ServerMessage::TopicEvent(event), None)),
        Err(e) => {
            warn!(error = %e, "a stored topic event is unreadable: skipped");
            None
        }
    }
}

/// Events posted before this are no longer kept.
fn not_before(settings: &TopicSettings) -> Option<Timestamp> {
    Timestamp::from_unix_ms(now().as_unix_ms() - settings.topic_history_ttl_ms as i64)
}

fn once(key: Option<&petchat_protocol::api::IdempotencyKey>, digest: Option<&String>) -> Option<Once> {
    Some(Once { key: key?.clone(), digest: digest?.clone() })
}

/// A server notification of `kind` for `user`.
pub(super) fn server_notification(user: &UserId, kind: &str, title: &str, body: &str) -> NotifyRequest {
    NotifyRequest {
        user_id: user.clone(),
        kind: EventName::new(kind).expect("a server notification kind is a valid name"),
        title: NotificationTitle::new(title).expect("a server notification title is valid"),
        body: NotificationBody::new(body).expect("a server notification body is valid"),
        link: None,
        idempotency_key: None,
    }
}
