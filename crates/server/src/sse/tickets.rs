//! SSE tickets (SPEC §14): a browser's `EventSource` cannot send an
//! `Authorization` header, and the token itself never goes into a URL, so the
//! page trades its token for a ticket (`POST /v1/sse/tickets`) and opens
//! `/v1/sse?ticket=…` with it. A ticket is 32 random bytes in hex, good once
//! within 60 s: it is kept with the token's claims in this process (one node)
//! or in Redis (a cluster, where the stream may open on another node), and
//! taken away by its first use.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use petchat_protocol::limits::SSE_TICKET_TTL_MS;
use petchat_protocol::token::Claims;

use crate::cluster::{ClusterError, RedisLink};

/// Tickets one user may hold at once on one node; more are refused (429) until some are used or expire.
pub(crate) const MAX_TICKETS_PER_USER: usize = 16;

/// How long a ticket may be used.
pub(crate) const TTL: Duration = Duration::from_millis(SSE_TICKET_TTL_MS);

/// Where tickets are kept.
pub(crate) enum Tickets {
    /// In this process: ticket to (claims, expiry).
    Local(Mutex<HashMap<String, (Claims, Instant)>>),
    /// In Redis, for every node.
    Shared(RedisLink),
}

/// Why a ticket was not minted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MintError {
    /// The user holds [`MAX_TICKETS_PER_USER`] unused ones.
    #[error("too many unused tickets")]
    TooMany,
    /// Redis did not answer.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl Tickets {
    /// Tickets in Redis when there is a link, in this process otherwise.
    pub(crate) fn new(link: Option<RedisLink>) -> Self {
        match link {
            Some(link) => Self::Shared(link),
            None => Self::Local(Mutex::new(HashMap::new())),
        }
    }

    /// A new ticket for `claims`.
    pub(crate) async fn mint(&self, claims: &Claims) -> Result<String, MintError> {
        let ticket: String = rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
        match self {
            Self::Local(map) => {
                let mut map = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = Instant::now();
                map.retain(|_, (_, expiry)| *expiry > now);
                if map.values().filter(|(held, _)| held.sub == claims.sub).count() >= MAX_TICKETS_PER_USER {
                    return Err(MintError::TooMany);
                }
                map.insert(ticket.clone(), (claims.clone(), now + TTL));
            }
            Self::Shared(link) => {
                let value = serde_json::to_string(claims).expect("claims serialize");
                link.put_ticket(&ticket, &value, TTL).await?;
            }
        }
        Ok(ticket)
    }

    /// The claims of a ticket not used yet and not expired; it is used now.
    pub(crate) async fn redeem(&self, ticket: &str) -> Result<Option<Claims>, ClusterError> {
        if ticket.len() != 64 || !ticket.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        match self {
            Self::Local(map) => {
                let mut map = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                Ok(map.remove(ticket).filter(|(_, expiry)| *expiry > Instant::now()).map(|(claims, _)| claims))
            }
            Self::Shared(link) => {
                let value = link.take_ticket(ticket).await?;
                Ok(value.and_then(|value| serde_json::from_str(&value).ok()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use petchat_protocol::{Role, UserId};

    use super::*;

    fn claims(sub: &str) -> Claims {
        Claims {
            sub: UserId::new(sub).expect("id"),
            role: Role::Customer,
            name: "N".into(),
            exp: u64::MAX / 2,
            iat: None,
            nbf: None,
            topics: None,
        }
    }

    #[tokio::test]
    async fn a_ticket_is_good_once_and_a_user_holds_a_bounded_number() {
        let tickets = Tickets::new(None);
        let ticket = tickets.mint(&claims("u1")).await.expect("minted");
        assert_eq!(ticket.len(), 64);
        assert_eq!(tickets.redeem(&ticket).await.expect("redeemed").map(|c| c.sub), Some(claims("u1").sub));
        assert_eq!(tickets.redeem(&ticket).await.expect("answered"), None, "used once");
        assert_eq!(tickets.redeem("not a ticket").await.expect("answered"), None);
        for _ in 0..MAX_TICKETS_PER_USER {
            tickets.mint(&claims("u2")).await.expect("minted");
        }
        assert!(matches!(tickets.mint(&claims("u2")).await, Err(MintError::TooMany)));
        assert!(tickets.mint(&claims("u3")).await.is_ok(), "another user is not held back");
    }
}
