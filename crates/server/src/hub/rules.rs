//! The assignment rules of SPEC §6, as pure functions over the pool's state.

use std::collections::{BTreeSet, HashMap};

use petchat_protocol::{ConversationId, UserId};
use tokio::time::Instant;

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
    /// Ties of least-loaded assignment go to the longest idle.
    pub(super) idle_since: Instant,
    /// Bumped on every connect and disconnect, so a stale grace timer does nothing.
    pub(super) grace_generation: u64,
}

impl Agent {
    /// A new agent, offline and unavailable.
    pub(super) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            available: false,
            online: false,
            active: BTreeSet::new(),
            idle_since: Instant::now(),
            grace_generation: 0,
        }
    }

    /// Whether it may be offered one more conversation.
    pub(super) fn can_take(&self, max_conversations: usize) -> bool {
        self.available && self.online && self.active.len() < max_conversations
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn agent(available: bool, online: bool, active: usize, idle_since: Instant) -> Agent {
        let active = (0..active).map(|n| ConversationId::new(format!("c-{n}")).expect("id")).collect();
        Agent { available, online, active, idle_since, ..Agent::new("A") }
    }

    fn pool(agents: Vec<(&str, Agent)>) -> HashMap<UserId, Agent> {
        agents.into_iter().map(|(id, a)| (UserId::new(id).expect("id"), a)).collect()
    }

    #[test]
    fn the_fewest_open_conversations_win_then_the_longest_idle_then_the_id() {
        let t = Instant::now();
        let later = t + Duration::from_secs(1);
        let agents = pool(vec![("a", agent(true, true, 2, t)), ("b", agent(true, true, 1, later))]);
        assert_eq!(pick_agent(&agents, 5).map(|id| id.to_string()).as_deref(), Some("b"), "fewest open first");

        let agents = pool(vec![("a", agent(true, true, 1, later)), ("b", agent(true, true, 1, t))]);
        assert_eq!(pick_agent(&agents, 5).map(|id| id.to_string()).as_deref(), Some("b"), "then longest idle");

        let agents = pool(vec![("b", agent(true, true, 1, t)), ("a", agent(true, true, 1, t))]);
        assert_eq!(pick_agent(&agents, 5).map(|id| id.to_string()).as_deref(), Some("a"), "then the id");
    }

    #[test]
    fn unavailable_offline_and_full_agents_are_offered_nothing() {
        let t = Instant::now();
        let agents = pool(vec![
            ("away", agent(false, true, 0, t)),
            ("gone", agent(true, false, 0, t)),
            ("full", agent(true, true, 5, t)),
        ]);
        assert_eq!(pick_agent(&agents, 5), None);
        assert_eq!(pick_agent(&agents, 6).map(|id| id.to_string()).as_deref(), Some("full"), "below a higher cap");
    }
}
