//! Feeds: numbered streams of items with bounded history, the storage of a
//! topic's events (SPEC §11) and of a user's notifications (SPEC §12).
//!
//! A feed is one row (`last_seq`, `read_seq`) and its items; a post takes the
//! next `seq` under the feed row's lock, so seq is gapless per feed whatever
//! node writes, and trims what the feed's [`Retention`] no longer keeps. An
//! [`Once`] key makes a post idempotent for [`IDEMPOTENCY_WINDOW_MS`]: the
//! same key with the same request returns the first item, with another
//! request a conflict. Every store implements the same rules; `tests/store.rs`
//! states them once and runs them on each store.

use petchat_protocol::api::IdempotencyKey;
use petchat_protocol::limits::IDEMPOTENCY_WINDOW_MS;
use petchat_protocol::{EventName, LastSeq, Seq, Timestamp, TopicName, UserId};

/// Which feed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feed {
    /// A topic's events.
    Topic(TopicName),
    /// A user's notifications.
    User(UserId),
}

impl Feed {
    /// The feed's key in the database: `topic:NAME` or `user:ID`.
    pub fn key(&self) -> String {
        match self {
            Self::Topic(topic) => format!("topic:{topic}"),
            Self::User(user) => format!("user:{user}"),
        }
    }
}

/// A stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedItem {
    /// Its position in the feed.
    pub seq: Seq,
    /// A notification's id; empty for a topic event.
    pub id: String,
    /// The event name or the notification's kind.
    pub name: EventName,
    /// JSON: the event's data, or the notification's `{title, body, link}`.
    pub body: String,
    /// When it was posted.
    pub at: Timestamp,
}

/// An item to post: everything but the seq the store gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    /// A notification's id; empty for a topic event.
    pub id: String,
    /// The event name or the notification's kind.
    pub name: EventName,
    /// JSON, as [`FeedItem::body`].
    pub body: String,
    /// When.
    pub at: Timestamp,
}

/// An idempotency key and the digest of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Once {
    /// The caller's key.
    pub key: IdempotencyKey,
    /// SHA-256 (hex) of the request, to tell a retry from a different request under the same key.
    pub digest: String,
}

/// What a feed keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The last this many items.
    pub keep: usize,
    /// Items older than this are dropped (and never read), if set.
    pub ttl_ms: Option<u64>,
    /// Unread items are kept whatever `keep` says (notifications).
    pub keep_unread: bool,
}

impl Retention {
    /// The highest seq to drop after posting `seq` with `read_seq` read:
    /// everything at or below it goes.
    pub(super) fn drop_up_to(&self, seq: u64, read_seq: u64) -> u64 {
        let by_count = seq.saturating_sub(self.keep as u64);
        if self.keep_unread { by_count.min(read_seq) } else { by_count }
    }

    /// Items posted before this are dropped, if the feed has a TTL.
    pub(super) fn not_before(&self, now: Timestamp) -> Option<i64> {
        self.ttl_ms.map(|ttl| now.as_unix_ms() - ttl as i64)
    }
}

/// Idempotency keys posted before this are forgotten.
pub(super) fn keys_not_before(now: Timestamp) -> i64 {
    now.as_unix_ms() - IDEMPOTENCY_WINDOW_MS as i64
}

/// A read of a feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedPage {
    /// The seq of the feed's last item (0 when none was ever posted).
    pub last_seq: LastSeq,
    /// Every item up to this seq is read.
    pub read_seq: LastSeq,
    /// The items asked for, in seq order.
    pub items: Vec<FeedItem>,
}

impl FeedPage {
    /// How many items are unread: seqs are gapless and unread items are
    /// kept (notifications), so it is the distance between the two.
    pub fn unread(&self) -> u64 {
        self.last_seq.get().saturating_sub(self.read_seq.get())
    }
}
