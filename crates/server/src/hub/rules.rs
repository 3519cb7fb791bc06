//! The assignment rules of SPEC §6, as pure functions over the pool's state.

use std::collections::{BTreeSet, HashMap};

use petchat_protocol::{ConversationId, Timestamp, UserId};

/// An agent the pool knows: connected, or holding conversations.
#[derive(Debug, Clone)]
pub(super) struct Agent {
    /// The agent's display name, as its latest token says.
    pub(super) name: String,
    /// The agent asked to be in the pool (`agent.status`).
    pub(super) available: bool,
    /// At least one connection is open.
    pub(super) online: bool,
    /// Open conversations assigned to it.
    pub(super) active: BTreeSet<ConversationId>,
    /// Ties of least-loaded assignment go to the smallest: the longest idle.
    /// A mark of the pool's idle clock ([`IdleClock`]).
    pub(super) idle_since: i64,
    /// Bumped on every connect and disconnect, so a stale grace timer does nothing.
    pub(super) grace_generation: u64,
    /// Several nodes: when its last connection anywhere closed.
    pub(super) offline_since: Option<Timestamp>,
}

impl Agent {
    /// A new agent, offline and unavailable, idle since `idle_since`.
    pub(super) fn new(name: &str, idle_since: i64) -> Self {
        Self {
            name: name.to_owned(),
            available: false,
            online: false,
            active: BTreeSet::new(),
            idle_since,
            grace_generation: 0,
            offline_since: None,
        }
    }

    /// Whether it may be offered one more conversation.
    pub(super) fn can_take(&self, max_conversations: usize) -> bool {
        self.available && self.online && self.active.len() < max_conversations
    }
}

/// The order in which agents became idle: on one node a counter (so ties
/// never depend on the clock's resolution), across nodes the Unix
/// milliseconds every node's pool agrees on (stored as `idle_since`).
#[derive(Debug, Default)]
pub(super) struct IdleClock {
    /// One node: the last mark given.
    last: i64,
    /// Several nodes: marks are wall-clock milliseconds.
    shared: bool,
}

impl IdleClock {
    /// The clock of a pool shared by several nodes.
    pub(super) fn shared() -> Self {
        Self { last: 0, shared: true }
    }

    /// A mark after every earlier one of this pool.
    pub(super) fn mark(&mut self) -> i64 {
        if self.shared {
            super::frames::now().as_unix_ms()
        } else {
            self.last += 1;
            self.last
        }
    }
}

/// The agent a new conversation goes to: among those that can take one, the
/// fewest open conversations, then the longest idle, then the smallest id
/// (so the choice never depends on a map's order).
pub(super) fn pick_agent(agents: &HashMap<UserId, Agent>, max_conversations: usize) -> Option<UserId> {
    agents
        .iter()
        .filter(|(_, agent)| agent.can_take(max_conversations))
        .min_by_key(|(id, agent)| (agent.active.len(), agent.idle_since, (*id).clone()))
        .map(|(id, _)| id.clone())
}

/// [`pick_agent`] among every agent but `except`.
pub(super) fn pick_agent_except(
    agents: &HashMap<UserId, Agent>,
    max_conversations: usize,
    except: &UserId,
) -> Option<UserId> {
    agents
        .iter()
        .filter(|(id, agent)| *id != except && agent.can_take(max_conversations))
        .min_by_key(|(id, agent)| (agent.active.len(), agent.idle_since, (*id).clone()))
        .map(|(id, _)| id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(available: bool, online: bool, active: usize, idle_since: i64) -> Agent {
        let active = (0..active).map(|n| ConversationId::new(format!("c-{n}")).expect("id")).collect();
        Agent { available, online, active, idle_since, ..Agent::new("A", 0) }
    }

    fn pool(agents: Vec<(&str, Agent)>) -> HashMap<UserId, Agent> {
        agents.into_iter().map(|(id, a)| (UserId::new(id).expect("id"), a)).collect()
    }

    #[test]
    fn the_fewest_open_conversations_win_then_the_longest_idle_then_the_id() {
        let mut clock = IdleClock::default();
        let (t, later) = (clock.mark(), clock.mark());
        let agents = pool(vec![("a", agent(true, true, 2, t)), ("b", agent(true, true, 1, later))]);
        assert_eq!(pick_agent(&agents, 5).map(|id| id.to_string()).as_deref(), Some("b"), "fewest open first");

        let agents = pool(vec![("a", agent(true, true, 1, later)), ("b", agent(true, true, 1, t))]);
        assert_eq!(pick_agent(&agents, 5).map(|id| id.to_string()).as_deref(), Some("b"), "then longest idle");

        let agents = pool(vec![("b", agent(true, true, 1, t)), ("a", agent(true, true, 1, t))]);
        assert_eq!(pick_agent(&agents, 5).map(|id| id.to_string()).as_deref(), Some("a"), "then the id");
    }

    #[test]
    fn unavailable_offline_and_full_agents_are_offered_nothing() {
        let t = IdleClock::default().mark();
        let agents = pool(vec![
            ("away", agent(false, true, 0, t)),
            ("gone", agent(true, false, 0, t)),
            ("full", agent(true, true, 5, t)),
        ]);
        assert_eq!(pick_agent(&agents, 5), None);
        assert_eq!(pick_agent(&agents, 6).map(|id| id.to_string()).as_deref(), Some("full"), "below a higher cap");
    }
}
