//! Delivery in `seq` order: a conversation's chat messages reach this node's
//! connections one after the other, whichever node stored them (SPEC §5,
//! §10). A message that comes after a gap waits until the gap is filled, by
//! the message that was late or by a read of the store.
//!
//! On one node the shard stores every message itself, in order, so nothing
//! ever waits; across nodes the messages of two senders may cross in Redis.

use std::collections::BTreeMap;

use axum::extract::ws::Utf8Bytes;
use petchat_protocol::{LastSeq, Seq};

use crate::bus::ConnId;

/// A message ready to be delivered once every earlier one was.
#[derive(Debug, Clone)]
pub(super) struct Ready {
    /// The `chat.message` frame; empty when only the ack is still due (the
    /// message itself was delivered already, read from the store).
    pub(super) frame: Utf8Bytes,
    /// When it was sent through this node: the sender's connection and its
    /// `chat.ack`, which goes out in the message's place (never before an
    /// earlier message).
    pub(super) sender: Option<(ConnId, Utf8Bytes)>,
}

/// Where one conversation's delivery on this node stands.
#[derive(Debug)]
pub(super) struct Sequence {
    /// Every message up to here was delivered.
    delivered: u64,
    /// Messages after a gap, by seq.
    waiting: BTreeMap<u64, Ready>,
}

impl Sequence {
    /// Every message up to `delivered` has been (or needs not be) delivered.
    pub(super) fn new(delivered: LastSeq) -> Self {
        Self { delivered: delivered.get(), waiting: BTreeMap::new() }
    }

    /// The last seq delivered in order.
    pub(super) fn delivered(&self) -> LastSeq {
        Seq::new(self.delivered).map_or(LastSeq::NONE, LastSeq::from)
    }

    /// Whether messages wait behind a gap.
    pub(super) fn has_gap(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Takes message `seq`: returns what can be delivered now, in order.
    /// A message already delivered is dropped, but its ack is still due.
    pub(super) fn offer(&mut self, seq: u64, ready: Ready) -> Vec<Ready> {
        if seq <= self.delivered {
            return match ready.sender {
                Some(sender) => vec![Ready { frame: Utf8Bytes::from_static(""), sender: Some(sender) }],
                None => Vec::new(),
            };
        }
        match self.waiting.get_mut(&seq) {
            // The same message by two ways: keep the one with an ack to give.
            Some(held) if held.sender.is_none() => *held = ready,
            Some(_) => {}
            None => {
                self.waiting.insert(seq, ready);
            }
        }
        self.drain()
    }

    /// Takes messages read from the store after a gap (in seq order, each
    /// with its frame): returns what can be delivered now, in order.
    pub(super) fn fill(&mut self, read: impl IntoIterator<Item = (u64, Utf8Bytes)>) -> Vec<Ready> {
        for (seq, frame) in read {
            if seq > self.delivered {
                self.waiting.entry(seq).or_insert(Ready { frame, sender: None });
            }
        }
        self.drain()
    }

    fn drain(&mut self) -> Vec<Ready> {
        let mut out = Vec::new();
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() != self.delivered + 1 {
                break;
            }
            self.delivered += 1;
            out.push(entry.remove());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(seq: u64) -> LastSeq {
        LastSeq::new(seq).expect("a seq")
    }

    fn remote(text: &'static str) -> Ready {
        Ready { frame: Utf8Bytes::from_static(text), sender: None }
    }

    fn frames(ready: &[Ready]) -> Vec<&str> {
        ready.iter().map(|r| r.frame.as_str()).collect()
    }

    #[test]
    fn messages_in_order_go_at_once() {
        let mut seq = Sequence::new(last(4));
        assert_eq!(frames(&seq.offer(5, remote("5"))), ["5"]);
        assert_eq!(frames(&seq.offer(6, remote("6"))), ["6"]);
        assert_eq!(seq.delivered(), last(6));
        assert!(!seq.has_gap());
    }

    #[test]
    fn a_message_after_a_gap_waits_for_the_late_one() {
        let mut seq = Sequence::new(last(0));
        assert!(seq.offer(2, remote("2")).is_empty());
        assert!(seq.offer(3, remote("3")).is_empty());
        assert!(seq.has_gap());
        assert_eq!(frames(&seq.offer(1, remote("1"))), ["1", "2", "3"]);
        assert!(!seq.has_gap());
    }

    #[test]
    fn a_read_of_the_store_fills_the_gap_and_later_copies_are_dropped() {
        let mut seq = Sequence::new(last(0));
        assert!(seq.offer(3, remote("3 by redis")).is_empty());
        let read = [(1, Utf8Bytes::from_static("1")), (2, Utf8Bytes::from_static("2")), (3, "3 read".into())];
        assert_eq!(frames(&seq.fill(read)), ["1", "2", "3 by redis"]);
        assert!(seq.offer(2, remote("2 late")).is_empty());
    }

    #[test]
    fn an_ack_waits_for_the_messages_before_it_and_is_never_dropped() {
        let mut seq = Sequence::new(last(0));
        let mine = Ready { frame: "2".into(), sender: Some((7, "ack 2".into())) };
        assert!(seq.offer(2, mine.clone()).is_empty(), "the ack of 2 went out before message 1");
        let out = seq.offer(1, remote("1"));
        assert_eq!(frames(&out), ["1", "2"]);
        assert_eq!(out[1].sender.as_ref().map(|(conn, ack)| (*conn, ack.as_str())), Some((7, "ack 2")));
        // Delivered already by a read of the store: the ack is still due.
        let again = seq.offer(2, mine);
        assert_eq!(again.len(), 1);
        assert!(again[0].sender.is_some());
    }
}
