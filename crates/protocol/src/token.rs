//! The claims of a petchat token (SPEC §1): HS256 JWTs carry who the user is.
//!
//! Signing and checking live with the parties that hold the secret (the
//! server, the CLI's `--secret`); this crate only says what a token contains.

use serde::{Deserialize, Serialize};

use crate::ids::UserId;
use crate::time::Timestamp;
use crate::topic::TopicPattern;
use crate::user::{Role, User};

/// The claims of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: UserId,
    /// What the user may do.
    pub role: Role,
    /// The display name.
    pub name: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, in seconds since the Unix epoch: the token is refused
    /// while this is later than now plus the leeway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The topics the user may subscribe to besides the server's public ones
    /// (SPEC §11): exact names or prefixes ending in `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<TopicPattern>>,
}

impl Claims {
    /// The user the token names, its name cut to
    /// [`MAX_NAME_CHARS`](crate::limits::MAX_NAME_CHARS) characters (every
    /// message the user sends carries it).
    pub fn user(&self) -> User {
        let name = match self.name.char_indices().nth(crate::limits::MAX_NAME_CHARS) {
            Some((end, _)) => self.name[..end].to_owned(),
            None => self.name.clone(),
        };
        User { id: self.sub.clone(), role: self.role, name }
    }

    /// `exp` as a wire timestamp (`tokenExpiresAt`); an `exp` beyond the
    /// year 9999 reads as the last instant a timestamp can say.
    pub fn expires_at(&self) -> Timestamp {
        i64::try_from(self.exp.saturating_mul(1000)).ok().and_then(Timestamp::from_unix_ms).unwrap_or(Timestamp::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(name: &str) -> Claims {
        Claims {
            sub: UserId::new("u").expect("valid id"),
            role: Role::Customer,
            name: name.into(),
            exp: 0,
            iat: None,
            nbf: None,
            topics: None,
        }
    }

    #[test]
    fn a_long_name_is_cut_to_the_limit_on_a_character_boundary() {
        let long = "é".repeat(5_000);
        let name = claims(&long).user().name;
        assert_eq!(name.chars().count(), crate::limits::MAX_NAME_CHARS);
        assert!(long.starts_with(&name));
        assert_eq!(claims("Casey").user().name, "Casey");
    }
}
