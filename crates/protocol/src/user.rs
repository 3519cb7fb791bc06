//! Who takes part in a conversation: users, their roles and how others see them.

use serde::{Deserialize, Serialize};

use crate::ids::UserId;

/// The role a token grants (`role` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Role {
    /// A customer of the pet store, who opens conversations.
    #[serde(rename = "customer")]
    Customer,
    /// A support agent, who is assigned conversations.
    #[serde(rename = "agent")]
    Agent,
}

impl Role {
    /// The wire name of the role.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Agent => "agent",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    /// Reads a wire name (`customer`, `agent`), as CLIs take it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "customer" => Ok(Self::Customer),
            "agent" => Ok(Self::Agent),
            _ => Err(format!("expected customer or agent, not {s:?}")),
        }
    }
}

/// A user as its own `session.ready` and the authors of messages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct User {
    /// The user's id (`sub` claim).
    pub id: UserId,
    /// The user's role (`role` claim).
    pub role: Role,
    /// The display name (`name` claim).
    pub name: String,
}

/// The customer or the agent of a conversation, as the other side sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Participant {
    /// The user's id.
    pub id: UserId,
    /// The display name.
    pub name: String,
}
