//! One topic on this node: its subscribers, and the order its events reach
//! them in, whichever node published them.
//!
//! Events come from this node's commits and, in a cluster, from the topic's
//! channel; either way they are delivered in `seq` order. One that arrives
//! before its predecessor waits (at most [`MAX_WAITING`]) while the shard gives
//! the predecessor a moment to come and then reads the gap from the store; an
//! event the store no longer keeps is lost for the subscribers, which are
//! then closed (1012) so that they resubscribe and learn it (`recovered:
//! false`). Until the first read of a new topic tells its last seq, events
//! wait.

use std::collections::BTreeMap;

use axum::extract::ws::Utf8Bytes;
use petchat_protocol::{CloseCode, LastSeq, RequestId, Seq};

use crate::bus::{ConnId, ConnSink};

/// Events that may wait for a predecessor; beyond, later ones are dropped
/// and the gap read brings them.
pub(super) const MAX_WAITING: usize = 1_024;

/// A connection hearing a topic.
pub(super) struct Subscriber {
    pub(super) conn: ConnId,
    pub(super) sink: ConnSink,
}

/// What delivering left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Every event so far reached the subscribers.
    Nothing,
    /// An event waits for one before it: check again shortly, then read the gap.
    Gap,
}

/// A topic with connections on this node, or a read for one under way.
#[derive(Default)]
pub(super) struct TopicState {
    /// The last seq is known (the first read came back).
    known: bool,
    /// The seq of the last event delivered (or read) here.
    last_seq: LastSeq,
    pub(super) subscribers: Vec<Subscriber>,
    /// Connections whose subscription read is under way.
    pub(super) loading: Vec<ConnId>,
    /// Unsubscribes that wait for their connection's read.
    pub(super) leaving: Vec<(ConnId, ConnSink, Option<RequestId>)>,
    /// Events that came before their predecessor, by seq.
    waiting: BTreeMap<u64, Utf8Bytes>,
    /// A gap check or read is scheduled or under way.
    pub(super) gap_pending: bool,
}

impl TopicState {
    /// Whether nothing holds the topic here any more.
    pub(super) fn idle(&self) -> bool {
        self.subscribers.is_empty() && self.loading.is_empty()
    }

    /// The seq of the last event delivered here.
    pub(super) fn last_seq(&self) -> LastSeq {
        self.last_seq
    }

    /// Whether the last seq is known.
    pub(super) fn known(&self) -> bool {
        self.known
    }

    /// A stored event and its frame: delivered now if it is the next one,
    /// kept if it comes early, dropped if it was delivered already.
    pub(super) fn accept(&mut self, seq: Seq, frame: Utf8Bytes) -> Next {
        if self.known && seq.get() <= self.last_seq.get() {
            return self.next();
        }
        if self.known && seq.get() == self.last_seq.get() + 1 {
            self.deliver(seq, &frame);
            self.drain();
        } else if self.waiting.len() < MAX_WAITING || self.waiting.contains_key(&seq.get()) {
            self.waiting.insert(seq.get(), frame);
        }
        self.next()
    }

    /// The first read told the last seq: what waited beyond it follows.
    pub(super) fn learned(&mut self, last_seq: LastSeq) -> Next {
        if !self.known {
            self.known = true;
            self.last_seq = last_seq;
        } else {
            self.last_seq = self.last_seq.max(last_seq);
        }
        self.drain();
        self.next()
    }

    /// The store's events after the last delivered one, read for a gap,
    /// with their frames; what cannot be bridged is lost, and the
    /// subscribers are closed so that they resubscribe.
    pub(super) fn fill(&mut self, first_kept: Option<u64>, events: Vec<(Seq, Utf8Bytes)>, last_seq: LastSeq) -> Next {
        let expected = self.last_seq.get() + 1;
        let lost = match first_kept {
            Some(first) => first > expected && last_seq.get() >= expected,
            None => last_seq.get() >= expected,
        };
        if lost {
            for subscriber in &self.subscribers {
                subscriber.sink.kick(CloseCode::SERVICE_RESTART, "topic events were lost: resubscribe");
            }
            self.subscribers.clear();
            self.last_seq = last_seq;
            self.waiting.retain(|seq, _| *seq > last_seq.get());
            self.drain();
            return self.next();
        }
        for (seq, frame) in events {
            if seq.get() == self.last_seq.get() + 1 {
                self.deliver(seq, &frame);
            }
        }
        self.drain();
        self.next()
    }

    /// Whether an event waits for its predecessor.
    pub(super) fn next(&self) -> Next {
        if self.waiting.is_empty() { Next::Nothing } else { Next::Gap }
    }

    /// Delivers what waited and now follows the last delivered event.
    fn drain(&mut self) {
        let last = self.last_seq.get();
        self.waiting.retain(|seq, _| *seq > last);
        while let Some(frame) = self.waiting.remove(&(self.last_seq.get() + 1)) {
            let seq = Seq::new(self.last_seq.get() + 1).expect("a seq after a last seq");
            self.deliver(seq, &frame);
        }
    }

    /// Queues the frame on every subscriber, forgetting closed connections.
    fn deliver(&mut self, seq: Seq, frame: &Utf8Bytes) {
        self.last_seq = seq.into();
        self.subscribers.retain(|s| s.sink.deliver(frame));
        super::count_out("topic.event", self.subscribers.len());
    }

    /// Adds (or replaces) a subscriber.
    pub(super) fn add(&mut self, conn: ConnId, sink: ConnSink) {
        self.subscribers.retain(|s| s.conn != conn);
        self.subscribers.push(Subscriber { conn, sink });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;

    use super::*;
    use crate::bus::Kick;

    fn seq(n: u64) -> Seq {
        Seq::new(n).expect("seq")
    }

    fn frame(n: u64) -> Utf8Bytes {
        Utf8Bytes::from(format!("event {n}"))
    }

    /// A topic with one subscriber, and what that subscriber got.
    fn topic(last_seq: u64) -> (TopicState, mpsc::Receiver<Utf8Bytes>, Arc<Kick>) {
        let (tx, rx) = mpsc::channel(64);
        let kick = Arc::new(Kick::default());
        let mut state = TopicState::default();
        state.learned(LastSeq::new(last_seq).expect("seq"));
        state.add(1, ConnSink::new(tx, kick.clone()));
        (state, rx, kick)
    }

    fn got(rx: &mut mpsc::Receiver<Utf8Bytes>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok()).map(|f| f.as_str().to_owned()).collect()
    }

    #[test]
    fn events_reach_subscribers_in_seq_order_whatever_order_they_come_in() {
        let (mut state, mut rx, _) = topic(2);
        assert_eq!(state.accept(seq(3), frame(3)), Next::Nothing);
        assert_eq!(state.accept(seq(5), frame(5)), Next::Gap, "5 waits for 4");
        assert_eq!(got(&mut rx), ["event 3"]);
        assert_eq!(state.accept(seq(4), frame(4)), Next::Nothing);
        assert_eq!(got(&mut rx), ["event 4", "event 5"]);
        assert_eq!(state.accept(seq(4), frame(4)), Next::Nothing, "a duplicate is dropped");
        assert!(got(&mut rx).is_empty());
    }

    #[test]
    fn events_wait_until_the_first_read_tells_the_last_seq() {
        let (tx, mut rx) = mpsc::channel(64);
        let mut state = TopicState::default();
        state.add(1, ConnSink::new(tx, Arc::new(Kick::default())));
        assert_eq!(state.accept(seq(7), frame(7)), Next::Gap);
        assert_eq!(state.accept(seq(8), frame(8)), Next::Gap);
        assert!(got(&mut rx).is_empty());
        // The read saw up to 7: only 8 is new.
        assert_eq!(state.learned(LastSeq::new(7).expect("seq")), Next::Nothing);
        assert_eq!(got(&mut rx), ["event 8"]);
    }

    #[test]
    fn a_gap_is_filled_from_the_store_and_an_unbridgeable_one_closes_the_subscribers() {
        let (mut state, mut rx, _) = topic(2);
        state.accept(seq(5), frame(5));
        let next = state.fill(Some(3), vec![(seq(3), frame(3)), (seq(4), frame(4))], LastSeq::new(5).expect("seq"));
        assert_eq!(next, Next::Nothing);
        assert_eq!(got(&mut rx), ["event 3", "event 4", "event 5"]);

        let (mut state, mut rx, kick) = topic(2);
        state.accept(seq(9), frame(9));
        // The store keeps 6 onwards: 3 to 5 are gone.
        state.fill(Some(6), vec![(seq(6), frame(6))], LastSeq::new(9).expect("seq"));
        assert!(got(&mut rx).is_empty());
        assert!(state.subscribers.is_empty());
        let (code, _) = futures_util::FutureExt::now_or_never(kick.kicked()).expect("kicked");
        assert_eq!(code, CloseCode::SERVICE_RESTART);
    }

    #[test]
    fn what_waits_is_bounded() {
        let (mut state, _rx, _) = topic(0);
        for n in 2..(MAX_WAITING as u64 + 100) {
            state.accept(seq(n), frame(n));
        }
        assert_eq!(state.waiting.len(), MAX_WAITING);
    }
}
