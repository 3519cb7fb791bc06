//! The `id:` of an SSE event (SPEC §14): one cursor over every topic of the
//! stream and the user's notifications, `n=SEQ;TOPIC=SEQ;…`, so that a
//! stream resumed with `Last-Event-ID` sends each later item exactly once.
//! Topic names never hold `;` or `=`, so the form needs no escaping; clients
//! treat it as opaque.

use std::collections::BTreeMap;
use std::fmt;

use petchat_protocol::{LastSeq, TopicName};

/// Where a stream stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// The last notification sent.
    pub(crate) notifications: LastSeq,
    /// The last event sent, per topic.
    pub(crate) topics: BTreeMap<TopicName, LastSeq>,
}

impl Cursor {
    /// Reads a `Last-Event-ID`.
    pub(crate) fn parse(id: &str) -> Result<Self, String> {
        let mut cursor = Self::default();
        for part in id.trim().split(';') {
            let (name, seq) = part.rsplit_once('=').ok_or_else(|| format!("{part:?} is not NAME=SEQ"))?;
            let seq =
                seq.parse::<u64>().ok().and_then(|n| LastSeq::new(n).ok()).ok_or(format!("bad seq in {part:?}"))?;
            if name == "n" {
                cursor.notifications = seq;
            } else {
                let topic = TopicName::new(name).map_err(|e| format!("topic {name:?}: {e}"))?;
                cursor.topics.insert(topic, seq);
            }
        }
        Ok(cursor)
    }

    /// Moves a topic on to `seq` if that is beyond where it stands (a
    /// topic not known yet starts there); false when the event was sent
    /// already or the name is not a topic's.
    pub(crate) fn advance(&mut self, topic: &str, seq: LastSeq) -> bool {
        if let Some(at) = self.topics.get_mut(topic) {
            let beyond = seq.get() > at.get();
            if beyond {
                *at = seq;
            }
            return beyond;
        }
        TopicName::new(topic).is_ok_and(|topic| self.topics.insert(topic, seq).is_none())
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n={}", self.notifications)?;
        for (topic, seq) in &self.topics {
            write!(f, ";{topic}={seq}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_writes() {
        let mut cursor = Cursor { notifications: LastSeq::new(5).expect("seq"), ..Cursor::default() };
        let seq = |n| LastSeq::new(n).expect("seq");
        assert!(cursor.advance("orders:1234", seq(3)));
        assert!(cursor.advance("pets:42", seq(9)));
        assert!(!cursor.advance("orders:1234", seq(2)), "an event sent already");
        assert!(!cursor.advance("orders:1234", seq(3)), "an event sent already");
        assert!(!cursor.advance("Not a topic", seq(1)));
        assert_eq!(cursor.to_string(), "n=5;orders:1234=3;pets:42=9");
        assert_eq!(Cursor::parse(&cursor.to_string()), Ok(cursor));
        for bad in ["", "x", "n=", "n=-1", "n=1;orders=2", "n=1;Orders:1=2", "n=99999999999999999999"] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?}");
        }
    }
}
