//! The memory store's feeds: the rules of `store/feeds.rs` in maps.

use std::collections::{BTreeMap, VecDeque};

use petchat_protocol::{LastSeq, Seq, Timestamp};

use super::super::Applied;
use super::super::feeds::{FeedItem, FeedPage, NewItem, Once, Retention, keys_not_before};

/// One feed.
#[derive(Debug, Clone, Default)]
pub(super) struct FeedState {
    last_seq: u64,
    read_seq: u64,
    items: VecDeque<FeedItem>,
    /// Idempotency keys: (digest, seq, item id, when).
    keys: BTreeMap<String, (String, Seq, String, Timestamp)>,
}

impl FeedState {
    /// A post, as `Write::Post` says.
    pub(super) fn post(&mut self, item: &NewItem, once: Option<&Once>, retention: Retention) -> Applied {
        if let Some(once) = once {
            let cutoff = keys_not_before(item.at);
            self.keys.retain(|_, (.., at)| at.as_unix_ms() >= cutoff);
            if let Some((digest, seq, id, _)) = self.keys.get(once.key.as_str()) {
                return if *digest == once.digest {
                    Applied::PostedBefore { seq: *seq, id: id.clone() }
                } else {
                    Applied::KeyConflict
                };
            }
        }
        self.last_seq += 1;
        let seq = Seq::new(self.last_seq).expect("a feed holds fewer than 2^53 items");
        let stored =
            FeedItem { seq, id: item.id.clone(), name: item.name.clone(), body: item.body.clone(), at: item.at };
        self.items.push_back(stored.clone());
        let drop_up_to = retention.drop_up_to(self.last_seq, self.read_seq);
        let not_before = retention.not_before(item.at);
        self.items.retain(|i| i.seq.get() > drop_up_to && not_before.is_none_or(|t| i.at.as_unix_ms() >= t));
        if let Some(once) = once {
            self.keys.insert(once.key.as_str().to_owned(), (once.digest.clone(), seq, item.id.clone(), item.at));
        }
        Applied::Posted(stored)
    }

    /// A read mark, as `Write::MarkRead` says.
    pub(super) fn mark_read(&mut self, up_to: Seq) -> Applied {
        let target = up_to.get().min(self.last_seq);
        let advanced = target > self.read_seq;
        if advanced {
            self.read_seq = target;
        }
        Applied::Read { read_seq: LastSeq::new(self.read_seq).expect("at most the last seq"), advanced }
    }

    /// A read, as `Store::feed` says.
    pub(super) fn page(&self, after: Option<LastSeq>, limit: usize, not_before: Option<Timestamp>) -> FeedPage {
        let after = after.map_or(self.read_seq, LastSeq::get);
        let items = self
            .items
            .iter()
            .filter(|i| i.seq.get() > after && not_before.is_none_or(|t| i.at >= t))
            .take(limit)
            .cloned()
            .collect();
        FeedPage {
            last_seq: LastSeq::new(self.last_seq).expect("a valid seq"),
            read_seq: LastSeq::new(self.read_seq).expect("a valid seq"),
            items,
        }
    }
}
