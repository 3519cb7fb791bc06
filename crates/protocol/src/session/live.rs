//! Live updates in the session (SPEC §11, §12): the topics it subscribed to,
//! each with the last `seq` it handed to the application, and the user's
//! notification position, so that after every reconnect each topic resumes
//! with `afterSeq` and the notifications the server replays are handed on
//! once each: nothing lost, nothing repeated.
//!
//! A topic event that skips a `seq` (the server delivers in order, so one was
//! lost) is held back and the topic is subscribed again from the last one
//! handed on, except the first after a `topic.subscribed` with
//! `recovered: false` (the server no longer keeps the ones in between); a notification is handed on unless it was already (its `seq`
//! is at most the contiguous position, or among those seen beyond it).

use std::collections::BTreeSet;

use super::{Millis, SendError, Session};
use crate::{
    ClientEnvelope, ClientMessage, LastSeq, Notification, NotificationRead, NotificationsState, RequestId, Seq,
    SessionReady, SubscribeTopic, TopicEvent, TopicName, TopicRef, TopicSubscribed,
};

/// Notification seqs remembered beyond the contiguous position at most.
const SEEN_BEYOND: usize = 256;

/// What the session knows of a subscribed topic.
#[derive(Debug, Clone, Default)]
pub(super) struct TopicTrack {
    /// The seq of the last event handed on, once the first subscription told it.
    last_seq: Option<u64>,
    /// A `topic.subscribe` is queued or on its way.
    subscribing: bool,
    /// The last subscription came with `recovered: false`: the next event
    /// may skip seqs, since the server no longer keeps the ones in between.
    resync: bool,
}

/// The user's notifications as the session has handed them on.
#[derive(Debug, Clone, Default)]
pub(super) struct NotificationTrack {
    /// Every notification up to this seq was handed on (or read before this session).
    contiguous: u64,
    /// Seqs handed on beyond `contiguous`.
    beyond: BTreeSet<u64>,
    /// The user's last notification, as far as the session heard.
    last_seq: u64,
    /// Read up to this seq (on any of the user's connections).
    read_seq: u64,
}

impl NotificationTrack {
    /// Whether a notification is new to the application; marks it handed on.
    fn fresh(&mut self, seq: u64) -> bool {
        self.last_seq = self.last_seq.max(seq);
        if seq <= self.contiguous || !self.beyond.insert(seq) {
            return false;
        }
        while self.beyond.remove(&(self.contiguous + 1)) {
            self.contiguous += 1;
        }
        while self.beyond.len() > SEEN_BEYOND {
            // A notification that never came: give up waiting for it.
            let first = self.beyond.pop_first().expect("not empty");
            self.contiguous = first;
            while self.beyond.remove(&(self.contiguous + 1)) {
                self.contiguous += 1;
            }
        }
        true
    }

    /// `session.ready` said where the notifications stand.
    fn ready(&mut self, state: NotificationsState) {
        let read = state.last_seq.get().saturating_sub(state.unread);
        self.read(read);
        self.last_seq = self.last_seq.max(state.last_seq.get());
    }

    /// Read up to `seq`: those are never handed on again.
    fn read(&mut self, seq: u64) {
        self.read_seq = self.read_seq.max(seq);
        if seq > self.contiguous {
            self.contiguous = seq;
            self.beyond.retain(|s| *s > seq);
            while self.beyond.remove(&(self.contiguous + 1)) {
                self.contiguous += 1;
            }
        }
    }
}

/// Where the user's notifications stand, as the session knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationStatus {
    /// The seq of the user's last notification.
    pub last_seq: u64,
    /// Every notification up to this seq is read.
    pub read_seq: u64,
}

impl NotificationStatus {
    /// How many are unread.
    pub fn unread(&self) -> u64 {
        self.last_seq.saturating_sub(self.read_seq)
    }
}

impl Session {
    /// Subscribes to a topic's live events; after a reconnect the session
    /// subscribes again from the last event it handed on.
    pub fn subscribe(&mut self, now: Millis, topic: &TopicName) -> Result<(), SendError> {
        let subscribe = SubscribeTopic { topic: topic.clone(), after_seq: None };
        self.send(now, ClientMessage::TopicSubscribe(subscribe), None)
    }

    /// Ends a topic subscription.
    pub fn unsubscribe(&mut self, now: Millis, topic: &TopicName) -> Result<(), SendError> {
        self.send(now, ClientMessage::TopicUnsubscribe(TopicRef { topic: topic.clone() }), None)
    }

    /// Marks the user's notifications read up to `up_to` (on every connection of the user).
    pub fn mark_notifications_read(&mut self, now: Millis, up_to: Seq) -> Result<(), SendError> {
        self.send(now, ClientMessage::NotificationRead(NotificationRead { up_to_seq: up_to }), None)
    }

    /// [`Session::send`] of a live-update request: tracked, so that it
    /// resumes after a reconnect. An explicit `afterSeq` starts the topic there.
    pub(super) fn send_live(&mut self, message: ClientMessage, id: Option<RequestId>) {
        match message {
            ClientMessage::TopicSubscribe(subscribe) => {
                let track = self.topics.entry(subscribe.topic.clone()).or_default();
                if let Some(after) = subscribe.after_seq {
                    track.last_seq = Some(after.get());
                }
                self.queue_subscribe(&subscribe.topic);
            }
            ClientMessage::TopicUnsubscribe(unsubscribe) => {
                let topic = &unsubscribe.topic;
                self.topics.remove(topic);
                self.subscribes.retain(|_, t| t != topic);
                self.control
                    .retain(|(_, e)| !matches!(&e.message, ClientMessage::TopicSubscribe(s) if &s.topic == topic));
                let id = id.unwrap_or_else(|| self.request_id("u"));
                let message = ClientMessage::TopicUnsubscribe(unsubscribe);
                self.control.push_back((None, ClientEnvelope::new(message).with_id(id)));
            }
            ClientMessage::NotificationRead(read) => {
                self.notifications.read(read.up_to_seq.get());
                let id = id.unwrap_or_else(|| self.request_id("n"));
                self.control.push_back((None, ClientEnvelope::new(ClientMessage::NotificationRead(read)).with_id(id)));
            }
            other => self.control.push_back((None, super::envelope(other, id))),
        }
    }

    /// The topics subscribed to, with the seq of the last event handed on (`None` before the first `topic.subscribed`).
    pub fn topics(&self) -> impl Iterator<Item = (&TopicName, Option<u64>)> {
        self.topics.iter().map(|(topic, track)| (topic, track.last_seq))
    }

    /// Where the user's notifications stand.
    pub fn notification_status(&self) -> NotificationStatus {
        let n = &self.notifications;
        NotificationStatus { last_seq: n.last_seq, read_seq: n.read_seq }
    }

    /// `session.ready`: the notification position, and every topic subscribed again.
    pub(super) fn live_ready(&mut self, ready: &SessionReady) {
        self.notifications.ready(ready.notifications);
        self.subscribes.clear();
        self.control.retain(|(_, e)| !matches!(e.message, ClientMessage::TopicSubscribe(_)));
        let topics: Vec<TopicName> = self.topics.keys().cloned().collect();
        for topic in topics {
            self.queue_subscribe(&topic);
        }
    }

    /// `topic.subscribed`: where a new subscription starts.
    pub(super) fn on_subscribed(&mut self, id: Option<&RequestId>, subscribed: &TopicSubscribed) -> bool {
        if let Some(id) = id {
            self.subscribes.remove(id);
        }
        let Some(track) = self.topics.get_mut(&subscribed.topic) else { return true };
        track.subscribing = false;
        track.resync = !subscribed.recovered;
        if track.last_seq.is_none() {
            track.last_seq = Some(subscribed.last_seq.get());
        }
        true
    }

    /// `topic.event`: handed on once, in order; a skipped seq subscribes
    /// again. An event of a topic not subscribed (one in flight when the
    /// application unsubscribed) or before its `topic.subscribed` is dropped.
    pub(super) fn on_topic_event(&mut self, event: &TopicEvent) -> bool {
        let Some(track) = self.topics.get_mut(&event.topic) else { return false };
        let Some(last) = track.last_seq else { return false };
        let seq = event.seq.get();
        if seq <= last {
            return false;
        }
        if seq > last + 1 && !track.resync {
            if !track.subscribing {
                self.queue_subscribe(&event.topic);
            }
            return false;
        }
        track.last_seq = Some(seq);
        track.resync = false;
        true
    }

    /// `notification`: handed on unless it was already.
    pub(super) fn on_notification(&mut self, notification: &Notification) -> bool {
        self.notifications.fresh(notification.seq.get())
    }

    /// `notification.read` from the server: read on some connection of the user.
    pub(super) fn on_notifications_read(&mut self, read: &NotificationRead) -> bool {
        self.notifications.read(read.up_to_seq.get());
        true
    }

    /// A refused `topic.subscribe` (forbidden, the per-connection cap): the
    /// topic is dropped; true when the error answered one.
    pub(super) fn on_subscribe_refused(&mut self, ref_id: &RequestId) -> bool {
        let Some(topic) = self.subscribes.remove(ref_id) else { return false };
        self.topics.remove(&topic);
        true
    }

    /// Queues a subscription from the last event handed on, replacing one that waits.
    fn queue_subscribe(&mut self, topic: &TopicName) {
        let Some(track) = self.topics.get_mut(topic) else { return };
        track.subscribing = true;
        let after = track.last_seq.and_then(|seq| LastSeq::new(seq).ok());
        self.control.retain(|(_, e)| !matches!(&e.message, ClientMessage::TopicSubscribe(s) if &s.topic == topic));
        self.subscribes.retain(|_, t| t != topic);
        let id = self.request_id("t");
        self.subscribes.insert(id.clone(), topic.clone());
        let message = ClientMessage::TopicSubscribe(SubscribeTopic { topic: topic.clone(), after_seq: after });
        self.control.push_back((None, ClientEnvelope::new(message).with_id(id)));
    }
}
