//! The in-process bus: delivery to this node's connections.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use axum::extract::ws::Utf8Bytes;
use petchat_protocol::{CloseCode, ConversationId, UserId};

use super::{Bus, ConnId, ConnSink, Skip, Topic};

/// Connections and subscriptions of this process.
#[derive(Debug, Default)]
pub struct LocalBus {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    conns: HashMap<ConnId, Attached>,
    topics: HashMap<Topic, HashSet<ConnId>>,
}

#[derive(Debug)]
struct Attached {
    user: UserId,
    sink: ConnSink,
    conversations: HashSet<ConversationId>,
}

impl LocalBus {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Bus for LocalBus {
    fn attach(&self, conn: ConnId, user: &UserId, sink: ConnSink) {
        let mut inner = self.inner();
        inner.conns.insert(conn, Attached { user: user.clone(), sink, conversations: HashSet::new() });
        inner.topics.entry(Topic::User(user.clone())).or_default().insert(conn);
    }

    fn detach(&self, conn: ConnId) {
        let mut inner = self.inner();
        let Some(attached) = inner.conns.remove(&conn) else { return };
        let topics = attached.conversations.into_iter().map(Topic::Conversation).chain([Topic::User(attached.user)]);
        for topic in topics {
            if let Some(set) = inner.topics.get_mut(&topic) {
                set.remove(&conn);
                if set.is_empty() {
                    inner.topics.remove(&topic);
                }
            }
        }
    }

    fn subscribe(&self, conn: ConnId, conversation: &ConversationId) {
        let mut inner = self.inner();
        let Some(attached) = inner.conns.get_mut(&conn) else { return };
        attached.conversations.insert(conversation.clone());
        inner.topics.entry(Topic::Conversation(conversation.clone())).or_default().insert(conn);
    }

    fn unsubscribe(&self, conn: ConnId, conversation: &ConversationId) {
        let mut inner = self.inner();
        if let Some(attached) = inner.conns.get_mut(&conn) {
            attached.conversations.remove(conversation);
        }
        let topic = Topic::Conversation(conversation.clone());
        if let Some(set) = inner.topics.get_mut(&topic) {
            set.remove(&conn);
            if set.is_empty() {
                inner.topics.remove(&topic);
            }
        }
    }

    fn unsubscribe_all(&self, conversation: &ConversationId) {
        let mut inner = self.inner();
        let Some(conns) = inner.topics.remove(&Topic::Conversation(conversation.clone())) else { return };
        for conn in conns {
            if let Some(attached) = inner.conns.get_mut(&conn) {
                attached.conversations.remove(conversation);
            }
        }
    }

    fn publish(&self, topic: &Topic, frame: &Utf8Bytes, skip: Skip<'_>) -> usize {
        let inner = self.inner();
        let Some(conns) = inner.topics.get(topic) else { return 0 };
        let mut delivered = 0;
        for conn in conns {
            let Some(attached) = inner.conns.get(conn) else { continue };
            let skipped = match skip {
                Skip::Nobody => false,
                Skip::Conn(skip) => skip == *conn,
                Skip::User(user) => attached.user == *user,
            };
            if !skipped {
                attached.sink.deliver(frame);
                delivered += 1;
            }
        }
        delivered
    }

    fn send_to(&self, conn: ConnId, frame: &Utf8Bytes) {
        if let Some(attached) = self.inner().conns.get(&conn) {
            attached.sink.deliver(frame);
        }
    }

    fn kick(&self, conn: ConnId, code: CloseCode, reason: &str) {
        if let Some(attached) = self.inner().conns.get(&conn) {
            attached.sink.kick(code, reason);
        }
    }
}
