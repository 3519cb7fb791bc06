//! A member of a conversation that talks through a fault the way a client
//! does: it keeps sending with a bounded window, and when its connection
//! ends it reconnects to another node, joins with afterSeq and resends what
//! was not acked, with the same clientMessageId; meanwhile it checks that
//! what it receives comes in seq order, once.

use std::collections::BTreeSet;

use petchat_protocol::Role;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{chat_send, key_of, seq};
use crate::common::Next;
use crate::common::cluster::{Endpoint, Peer, WAIT};

/// One member of a conversation that talks through faults: its user, its
/// conversation, and where it reconnects when its node dies (`None`: it
/// must not need to).
pub(crate) struct Member {
    pub(crate) conversation: String,
    pub(crate) user: String,
    pub(crate) role: Role,
    pub(crate) fallback: Option<Endpoint>,
}

/// What a member saw while it talked.
pub(crate) struct Talk {
    pub(crate) user: String,
    pub(crate) conversation: String,
    /// (text, ack data) of each of its messages.
    pub(crate) acks: Vec<(String, Value)>,
    /// How its connections ended (close frame or none).
    pub(crate) ends: Vec<Option<(u16, String)>>,
    pub(crate) fallback_used: bool,
}

/// Messages a member has sent and not had acked, at most.
const WINDOW: usize = 5;

impl Member {
    /// Sends `count` messages, at most [`WINDOW`] unacked at a time, and reads
    /// until it knows every seq up to `last`; reports on `progress` once a
    /// third of its messages are acked. When its connection ends it
    /// reconnects to its fallback, joins with afterSeq (the end of what it
    /// knows without a gap), checks that the replay holds exactly what it
    /// missed, and resends what was not acked with the same clientMessageId.
    pub(crate) async fn talk(
        mut self,
        mut peer: Peer,
        count: usize,
        last: u64,
        progress: mpsc::UnboundedSender<()>,
    ) -> Talk {
        let label = self.user.clone();
        let sends: Vec<Value> = (0..count).map(|n| chat_send(&self.conversation, &format!("{label} #{n}"))).collect();
        let mut acks: Vec<Option<Value>> = vec![None; count];
        let (mut next, mut unacked) = (0, Vec::<usize>::new());
        let mut known = BTreeSet::new();
        let mut delivered = Vec::<u64>::new();
        let mut resumed_after: Option<u64> = None;
        let mut ends = Vec::new();
        let mut fallback_used = false;
        while unacked.len() + (count - next) > 0 || !(1..=last).all(|s| known.contains(&s)) {
            while unacked.len() < WINDOW && next < count {
                peer.send(sends[next].clone());
                unacked.push(next);
                next += 1;
            }
            let frame = match peer.next().await {
                Next::Frame(frame) => frame,
                Next::Closed(end) => {
                    ends.push(end.clone());
                    let Some(fallback) = self.fallback.take() else {
                        panic!("SPEC §10: {label}'s connection ended ({end:?}) though its node lives")
                    };
                    fallback_used = true;
                    peer = fallback.reconnect(&self.user, self.role).await;
                    let after = (0..).take_while(|s| *s == 0 || known.contains(s)).last().unwrap_or(0);
                    peer.join(&self.conversation, after).await;
                    resumed_after = Some(after);
                    delivered.clear();
                    for &n in &unacked {
                        peer.send(sends[n].clone());
                    }
                    continue;
                }
            };
            match frame["type"].as_str() {
                Some("chat.ack") => {
                    let n = sends.iter().position(|s| frame["data"]["clientMessageId"] == key_of(s));
                    let n = n.unwrap_or_else(|| panic!("{label}: an ack for a key it never sent: {frame}"));
                    match &acks[n] {
                        Some(first) => assert_eq!(
                            first, &frame["data"],
                            "SPEC §5: {label}'s message #{n} acked twice, differently"
                        ),
                        None => acks[n] = Some(frame["data"].clone()),
                    }
                    unacked.retain(|&u| u != n);
                    known.insert(seq(&frame));
                    if acks.iter().filter(|a| a.is_some()).count() == count / 3 {
                        let _ = progress.send(());
                    }
                }
                Some("chat.message") => {
                    let s = seq(&frame);
                    if let Some(after) = resumed_after {
                        assert!(s > after, "SPEC §5/§10: {label}'s join with afterSeq {after} replayed seq {s}");
                    }
                    assert!(
                        delivered.last().is_none_or(|&prev| prev < s),
                        "SPEC §5: {label} got seq {s} after {delivered:?}: in seq order, each once"
                    );
                    delivered.push(s);
                    known.insert(s);
                }
                Some("error") => panic!("{label}: a message was refused: {frame}"),
                _ => {}
            }
        }
        let acks = sends
            .iter()
            .zip(acks)
            .map(|(send, ack)| (send["data"]["text"].as_str().expect("text").to_owned(), ack.expect("acked")))
            .collect();
        Talk { user: self.user, conversation: self.conversation, acks, ends, fallback_used }
    }

    /// After an outage: reads until the member knows every seq up to `last`
    /// (`own`: the seqs of its own acked messages), each chat.message in seq
    /// order and once; a close with 1012 makes it reconnect to its fallback
    /// and join with afterSeq; any other end fails the test.
    pub(crate) async fn catch_up(mut self, mut peer: Peer, mut known: BTreeSet<u64>, last: u64) -> Peer {
        let label = self.user.clone();
        let mut delivered = Vec::<u64>::new();
        let mut resumed = false;
        while !(1..=last).all(|s| known.contains(&s)) {
            let missing: Vec<u64> = (1..=last).filter(|s| !known.contains(s)).collect();
            let frame = match peer.next_within(WAIT).await {
                Some(Next::Frame(frame)) => frame,
                Some(Next::Closed(Some((1012, _)))) => {
                    let fallback = self.fallback.take().expect("one 1012 per outage");
                    peer = fallback.reconnect(&self.user, self.role).await;
                    let after = (0..).take_while(|s| *s == 0 || known.contains(s)).last().unwrap_or(0);
                    peer.join(&self.conversation, after).await;
                    delivered.clear();
                    resumed = true;
                    continue;
                }
                Some(Next::Closed(end)) => panic!(
                    "SPEC §10: after Redis came back {label}'s connection ended with {end:?}; only 1012 (then a \
                     resume) is allowed, and seqs {missing:?} had not arrived"
                ),
                None => panic!(
                    "SPEC §10: a connected client never misses a message silently: {WAIT:?} after Redis came back \
                     {label} still lacks seqs {missing:?} and was not closed with 1012"
                ),
            };
            if frame["type"] == "chat.message" {
                let s = seq(&frame);
                // Its own messages never come back to the connection that
                // sent them, and the others' came once: until a resume
                // replays them, a known seq is a duplicate.
                assert!(
                    resumed || !known.contains(&s),
                    "SPEC §5/§10: {label} got seq {s} a second time after Redis came back"
                );
                assert!(
                    delivered.last().is_none_or(|&prev| prev < s),
                    "SPEC §5/§10: {label} got seq {s} again or out of order after Redis came back ({delivered:?})"
                );
                delivered.push(s);
                known.insert(s);
            }
        }
        peer
    }
}
