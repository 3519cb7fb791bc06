//! The hub across nodes (SPEC §10): what this node's shards and pool tell the
//! other nodes through the Redis link, and the task that hands what they tell
//! back to the right shard.
//!
//! Every payload is an [`Envelope`]: a one-line JSON header (who sent it,
//! its id, what it is), a newline, and the frame as the sender serialized it,
//! so a relayed frame is never parsed or serialized again. Channels:
//!
//! - `conv:{id}`: a conversation's traffic, for the nodes that hold it (a
//!   shard holds a conversation while one of its members used it there);
//! - `user:{id}`: a user's frames, for the nodes where it has a connection,
//!   and the assignment changes its connections must hear of (notifications
//!   and read marks among the frames);
//! - `topic:{name}`: a topic's events, for the nodes with subscribers of it.
//!
//! Chat messages and topic events carry their `seq`: the receiving shard
//! delivers them in order and fills a gap from the store
//! ([`super::sequence`], `feeds/topic.rs`). Assignments,
//! re-queueings and closes are told as facts; each node speaks of them to
//! its own connections. A node hears its own publishes back and drops them.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::Utf8Bytes;
use petchat_protocol::{CloseReason, ConversationId, Participant, PresenceStatus, Seq, TopicName, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::feeds::Feeds;
use super::pool::PoolCommand;
use super::shard::ShardCommand;
use super::shard_of;
use crate::bus::{Bus, Skip, Topic};
use crate::cluster::{LinkEvent, NodeId, RedisLink};
use crate::store::Store;

/// What an envelope says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "camelCase")]
pub(super) enum What {
    /// The frame, for the channel's connections less the user `skip`'s.
    Frame {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        skip: Option<UserId>,
    },
    /// A stored `chat.message` (the frame) with its seq.
    Message { conversation: ConversationId, seq: u64 },
    /// The conversation was assigned to `agent` (stored), when its last seq
    /// was at most `seq`: a node that reads the conversation for this fact
    /// delivers its messages after `seq` to the agent's connections, which
    /// may have been sent before the node heard the conversation's channel.
    Assigned {
        conversation: ConversationId,
        agent: Participant,
        #[serde(default)]
        seq: u64,
    },
    /// The conversation went back to the queue: `agent` no longer holds it (stored).
    Requeued { conversation: ConversationId, agent: UserId },
    /// The conversation was closed by `by` for `reason` (stored); `members` hear it.
    Closed {
        conversation: ConversationId,
        by: UserId,
        members: Vec<UserId>,
        /// Absent from a node of an earlier version: a member's close.
        #[serde(default = "member_close")]
        reason: CloseReason,
    },
    /// A stored `topic.event` (the frame) with its seq.
    Event { topic: TopicName, seq: u64 },
}

/// The reason of a close told by a node that did not say one.
fn member_close() -> CloseReason {
    CloseReason::Closed
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    /// The node that sent it.
    o: String,
    /// Its id among that node's envelopes.
    i: u64,
    #[serde(flatten)]
    what: What,
}

/// One payload between nodes.
#[derive(Debug, Clone)]
pub(super) struct Envelope {
    /// The node that sent it.
    pub(super) origin: String,
    /// Unique among the origin's envelopes (duplicates come by two channels).
    pub(super) id: u64,
    pub(super) what: What,
    /// The frame as the origin serialized it (empty for the facts).
    pub(super) frame: Utf8Bytes,
}

impl Envelope {
    fn encode(origin: &str, id: u64, what: What, frame: &str) -> bytes::Bytes {
        let header = Header { o: origin.to_owned(), i: id, what };
        let mut payload = serde_json::to_vec(&header).expect("a header serializes");
        payload.push(b'\n');
        payload.extend_from_slice(frame.as_bytes());
        payload.into()
    }

    /// The envelope in `payload`, or why it is not one.
    fn decode(payload: &[u8]) -> Result<Self, String> {
        let split = payload.iter().position(|b| *b == b'\n').ok_or("no header line")?;
        let header: Header = serde_json::from_slice(&payload[..split]).map_err(|e| e.to_string())?;
        let frame = std::str::from_utf8(&payload[split + 1..]).map_err(|e| e.to_string())?;
        Ok(Self { origin: header.o, id: header.i, what: header.what, frame: Utf8Bytes::from(frame) })
    }
}

fn conversation_channel(conversation: &ConversationId) -> String {
    format!("conv:{conversation}")
}

fn user_channel(user: &UserId) -> String {
    format!("user:{user}")
}

fn topic_channel(topic: &TopicName) -> String {
    format!("topic:{topic}")
}

/// This node's side of the cluster, as the hub uses it.
pub(crate) struct Remote {
    link: RedisLink,
    node: NodeId,
    next: AtomicU64,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("node", &self.node).finish_non_exhaustive()
    }
}

impl Remote {
    /// The hub's use of `link`.
    pub(crate) fn new(link: RedisLink) -> Self {
        Self { node: link.node().clone(), link, next: AtomicU64::new(1) }
    }

    /// The link itself (presence, the cap, readiness).
    pub(crate) fn link(&self) -> &RedisLink {
        &self.link
    }

    /// This node's id.
    pub(crate) fn node(&self) -> &NodeId {
        &self.node
    }

    fn send(&self, channel: &str, what: What, frame: &str) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        // A dropped publish (Redis down, the queue full) is counted by the
        // link; the other nodes find the gap by seq or catch up after `Restored`.
        let _ = self.link.publish(channel, Envelope::encode(self.node.as_str(), id, what, frame));
    }

    /// A frame for the topic's connections on the other nodes, less `skip`'s.
    pub(super) fn frame(&self, topic: &Topic, frame: &Utf8Bytes, skip: Skip<'_>) {
        let skip = match skip {
            Skip::User(user) => Some(user.clone()),
            // A connection of this node: the others have none of it.
            Skip::Nobody | Skip::Conn(_) => None,
        };
        let channel = match topic {
            Topic::Conversation(conversation) => conversation_channel(conversation),
            Topic::User(user) => user_channel(user),
        };
        self.send(&channel, What::Frame { skip }, frame);
    }

    /// A stored chat message, for the nodes that hold its conversation.
    pub(super) fn message(&self, conversation: &ConversationId, seq: u64, frame: &Utf8Bytes) {
        let what = What::Message { conversation: conversation.clone(), seq };
        self.send(&conversation_channel(conversation), what, frame);
    }

    /// A stored fact about a conversation, for the nodes that hold it and
    /// those where one of `users` has a connection.
    pub(super) fn fact(&self, conversation: &ConversationId, what: What, users: &[UserId]) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let payload = Envelope::encode(self.node.as_str(), id, what, "");
        let channels = std::iter::once(conversation_channel(conversation)).chain(users.iter().map(user_channel));
        for channel in channels {
            let _ = self.link.publish(&channel, payload.clone());
        }
    }

    /// This node hears the conversation's channel from now on (counted).
    pub(super) fn hold_conversation(&self, conversation: &ConversationId) {
        self.link.subscribe(&conversation_channel(conversation));
    }

    /// One reference less to the conversation's channel.
    pub(super) fn drop_conversation(&self, conversation: &ConversationId) {
        self.link.unsubscribe(&conversation_channel(conversation));
    }

    /// A stored topic event, for the nodes with subscribers of the topic.
    pub(super) fn event(&self, topic: &TopicName, seq: Seq, frame: &Utf8Bytes) {
        let what = What::Event { topic: topic.clone(), seq: seq.get() };
        self.send(&topic_channel(topic), what, frame);
    }

    /// This node hears the topic's channel from now on (counted).
    pub(super) fn hold_topic(&self, topic: &TopicName) {
        self.link.subscribe(&topic_channel(topic));
    }

    /// One reference less to the topic's channel.
    pub(super) fn drop_topic(&self, topic: &TopicName) {
        self.link.unsubscribe(&topic_channel(topic));
    }

    /// This node hears the user's channel from now on (its first connection here).
    pub(super) fn hold_user(&self, user: &UserId) {
        self.link.subscribe(&user_channel(user));
    }

    /// Holds the user's channel for a connection being set up and resolves
    /// once Redis confirmed it: whatever another node says to the user from
    /// then on (an assignment, a close) is heard here. While Redis does not
    /// answer it waits one command timeout at most, and the connection is
    /// served by this node meanwhile (`Restored` catches up later). The
    /// reference goes with the guard, once the connection holds its own or
    /// never came.
    pub(super) async fn hear_user(self: Arc<Self>, user: &UserId) -> HeardUser {
        self.hold_user(user);
        let subscribed = self.subscribed();
        let timeout = self.link.command_timeout();
        let heard = HeardUser { remote: self, user: user.clone() };
        let _ = tokio::time::timeout(timeout, subscribed).await;
        heard
    }

    /// The user's last connection here closed.
    pub(super) fn drop_user(&self, user: &UserId) {
        self.link.unsubscribe(&user_channel(user));
    }

    /// Resolves once every subscription made so far is confirmed.
    pub(super) fn subscribed(&self) -> impl Future<Output = ()> + Send + 'static {
        self.link.subscribed()
    }
}

/// A reference to a user's channel taken by [`Remote::hear_user`]; dropped, it is let go.
pub(super) struct HeardUser {
    remote: Arc<Remote>,
    user: UserId,
}

impl Drop for HeardUser {
    fn drop(&mut self) {
        self.remote.drop_user(&self.user);
    }
}

/// Envelopes a shard has seen, so that one that came by two channels acts once.
#[derive(Debug, Default)]
pub(super) struct Seen {
    order: VecDeque<(String, u64)>,
    set: HashSet<(String, u64)>,
}

impl Seen {
    /// How many envelope ids are remembered.
    const CAPACITY: usize = 4096;

    /// Whether this is the first time the envelope is seen.
    pub(super) fn first(&mut self, envelope: &Envelope) -> bool {
        let key = (envelope.origin.clone(), envelope.id);
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// What the link task needs to hand events on.
pub(super) struct Router {
    pub(super) node: NodeId,
    pub(super) bus: Arc<dyn Bus>,
    pub(super) store: Arc<dyn Store>,
    pub(super) shards: Vec<mpsc::WeakUnboundedSender<ShardCommand>>,
    pub(super) pool: mpsc::WeakUnboundedSender<PoolCommand>,
    pub(super) feeds: Feeds,
}

impl Router {
    /// Hands every link event to the part of the hub it concerns, until the link stops.
    pub(super) async fn run(self, mut events: mpsc::Receiver<LinkEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                LinkEvent::Message { channel, payload } => self.message(&channel, &payload),
                LinkEvent::Lost => {
                    warn!("cross-node traffic lost: catching up from the store when redis returns");
                }
                LinkEvent::Restored => {
                    for shard in &self.shards {
                        tell(shard, ShardCommand::CatchUp);
                    }
                    self.feeds.catch_up();
                }
                LinkEvent::NodeGone { node, offline_users } => {
                    warn!(%node, users = offline_users.len(), "a node is gone: its users are offline");
                    if let Some(pool) = self.pool.upgrade() {
                        let _ = pool.send(PoolCommand::NodeGone { node: node.to_string() });
                    }
                    self.customers_presence(&offline_users, false);
                    self.presence_of(offline_users, PresenceStatus::Offline);
                }
                LinkEvent::Recounted { online, offline } => {
                    self.customers_presence(&online, true);
                    self.customers_presence(&offline, false);
                    self.presence_of(online, PresenceStatus::Online);
                    self.presence_of(offline, PresenceStatus::Offline);
                }
            }
        }
        debug!("cluster link events ended");
    }

    /// Users whose connections came back or went on every node: the shared
    /// pool records it for the customers among them (an agent id has no
    /// open conversation as a customer, so it changes nothing).
    fn customers_presence(&self, users: &[impl AsRef<str>], online: bool) {
        let Some(pool) = self.pool.upgrade() else { return };
        for user in users {
            if let Ok(customer) = UserId::new(user.as_ref()) {
                let _ = pool.send(PoolCommand::CustomerPresence { customer, online });
            }
        }
    }

    fn message(&self, channel: &str, payload: &[u8]) {
        let envelope = match Envelope::decode(payload) {
            Ok(envelope) => envelope,
            Err(why) => return warn!(channel, error = %why, "dropping a payload that is not an envelope"),
        };
        if envelope.origin == self.node.as_str() {
            return;
        }
        match &envelope.what {
            What::Frame { skip } => {
                let topic = if let Some(id) = channel.strip_prefix("conv:") {
                    ConversationId::new(id.to_owned()).map(Topic::Conversation)
                } else if let Some(id) = channel.strip_prefix("user:") {
                    UserId::new(id.to_owned()).map(Topic::User)
                } else {
                    return;
                };
                let Ok(topic) = topic else { return };
                let skip = skip.as_ref().map_or(Skip::Nobody, Skip::User);
                let delivered = self.bus.publish(&topic, &envelope.frame, skip);
                metrics::counter!("petchat_cluster_frames_in_total").increment(delivered as u64);
            }
            What::Event { topic, seq } => {
                let Ok(seq) = Seq::new(*seq) else { return };
                self.feeds.remote_event(topic.clone(), seq, envelope.frame.clone());
            }
            What::Message { conversation, .. }
            | What::Assigned { conversation, .. }
            | What::Requeued { conversation, .. }
            | What::Closed { conversation, .. } => {
                let shard = shard_of(conversation, self.shards.len());
                tell(&self.shards[shard], ShardCommand::Remote(Box::new(envelope)));
            }
        }
    }

    /// Presence of users whose state changed elsewhere (a dead node, a
    /// recount), told to every member of their open conversations.
    fn presence_of(&self, users: Vec<String>, status: PresenceStatus) {
        if users.is_empty() {
            return;
        }
        let (store, shards) = (self.store.clone(), self.shards.clone());
        tokio::spawn(async move {
            for user in users {
                let Ok(user) = UserId::new(user) else { continue };
                let conversations = match store.user_conversations(&user).await {
                    Ok(conversations) => conversations,
                    Err(e) => {
                        warn!(error = %e, user = %user, "presence: reading the user's conversations failed");
                        continue;
                    }
                };
                for rec in conversations {
                    let shard = shard_of(&rec.id, shards.len());
                    tell(&shards[shard], ShardCommand::Presence { conversation: rec.id, user: user.clone(), status });
                }
            }
        });
    }
}

fn tell(shard: &mpsc::WeakUnboundedSender<ShardCommand>, command: ShardCommand) {
    if let Some(shard) = shard.upgrade() {
        let _ = shard.send(command);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_carries_its_frame_untouched() {
        let frame = r#"{"type":"chat.message","data":{"text":"a\nb"}}"#;
        let what = What::Message { conversation: ConversationId::new("c1".to_owned()).expect("an id"), seq: 7 };
        let payload = Envelope::encode("n1", 42, what.clone(), frame);
        let envelope = Envelope::decode(&payload).expect("an envelope");
        assert_eq!((envelope.origin.as_str(), envelope.id, &envelope.what), ("n1", 42, &what));
        assert_eq!(envelope.frame.as_str(), frame);
    }

    #[test]
    fn a_payload_without_a_header_is_refused() {
        assert!(Envelope::decode(b"{\"type\":\"x\"}").is_err());
        assert!(Envelope::decode(b"{\"o\":\"n1\",\"i\":1,\"k\":\"nonsense\"}\n{}").is_err());
    }

    #[test]
    fn an_envelope_seen_twice_acts_once() {
        let envelope =
            Envelope::decode(&Envelope::encode("n1", 1, What::Frame { skip: None }, "{}")).expect("an envelope");
        let mut seen = Seen::default();
        assert!(seen.first(&envelope));
        assert!(!seen.first(&envelope));
    }
}
