//! Who may subscribe to a topic (SPEC §11): the token's `topics` claim,
//! `--public-topics`, and for agents `--agent-topics`.

use petchat_protocol::{Role, TopicName, TopicPattern};

use crate::config::TopicSettings;

/// The server's half of the rule; the token brings the other.
#[derive(Debug, Clone, Default)]
pub(crate) struct TopicAccess {
    public: Vec<TopicPattern>,
    agent: Vec<TopicPattern>,
}

impl TopicAccess {
    /// The patterns of the configuration.
    pub(crate) fn new(settings: &TopicSettings) -> Self {
        Self { public: settings.public_topics.clone(), agent: settings.agent_topics.clone() }
    }

    /// Whether a user of `role` whose token grants `claimed` may subscribe to `topic`.
    pub(crate) fn allows(&self, role: Role, claimed: &[TopicPattern], topic: &TopicName) -> bool {
        let matches = |patterns: &[TopicPattern]| patterns.iter().any(|p| p.matches(topic));
        matches(claimed) || matches(&self.public) || (role == Role::Agent && matches(&self.agent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> Vec<TopicPattern> {
        list.iter().map(|p| TopicPattern::new(*p).expect("valid pattern")).collect()
    }

    fn topic(name: &str) -> TopicName {
        TopicName::new(name).expect("valid topic")
    }

    #[test]
    fn a_topic_is_granted_by_the_token_the_public_list_or_the_agent_list_for_agents() {
        let access = TopicAccess { public: patterns(&["pets:*"]), agent: patterns(&["support:*"]) };
        let claims = patterns(&["orders:1234"]);
        assert!(access.allows(Role::Customer, &claims, &topic("orders:1234")));
        assert!(!access.allows(Role::Customer, &claims, &topic("orders:1235")));
        assert!(access.allows(Role::Customer, &[], &topic("pets:42")));
        assert!(!access.allows(Role::Customer, &[], &topic("support:stats")));
        assert!(access.allows(Role::Agent, &[], &topic("support:stats")));
        assert!(!access.allows(Role::Agent, &[], &topic("orders:1234")));
    }
}
