//! The agent pool: agents say when they can take conversations.

use serde::{Deserialize, Serialize};

/// `agent.status` from an agent: joins (`true`) or leaves (`false`) the pool of
/// agents that can be assigned new conversations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SetAgentStatus {
    /// Whether the agent can take new conversations.
    pub available: bool,
}

/// `agent.status` to the agent: its state after its `agent.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// Whether the agent is in the pool.
    pub available: bool,
    /// How many open conversations are assigned to it.
    pub active_conversations: u32,
}
