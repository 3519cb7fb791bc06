//! Tokens: HS256 JWTs minted for development and checked on every connection.
//!
//! `exp` and `nbf` are checked here, in milliseconds, with the server's
//! `--token-leeway-ms` (jsonwebtoken's own leeway counts whole seconds).

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use petchat_protocol::limits::{DEFAULT_TOKEN_LEEWAY_MS, MAX_TOKEN_LEEWAY_MS};
use petchat_protocol::token::Claims;
use petchat_protocol::{CloseCode, Role, UserId};

/// Why a token was refused; each maps to one close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in the query nor in the subprotocols (4500).
    #[error("token missing")]
    Missing,
    /// Malformed, wrongly signed, or with bad claims (4500).
    #[error("token invalid")]
    Invalid,
    /// Past its `exp`, beyond the leeway (4501).
    #[error("token expired")]
    Expired,
    /// Its `nbf` is later than now plus the leeway (4500).
    #[error("token not yet valid")]
    NotYetValid,
    /// A token in the query and another in the subprotocols (4500): which one
    /// is meant cannot be told, so neither is used.
    #[error("two tokens: send ?token= or bearer., not both")]
    Ambiguous,
    /// Its `sub` is `system`, the name the server closes conversations under (4500).
    #[error("the user id system is reserved")]
    Reserved,
}

impl AuthError {
    /// The close code and reason a refused handshake gets (SPEC §1, §4).
    pub fn close(&self) -> (CloseCode, &'static str) {
        match self {
            Self::Expired => (CloseCode::TOKEN_EXPIRED, "token expired"),
            Self::Missing => (CloseCode::UNAUTHORIZED, "token missing"),
            Self::Invalid => (CloseCode::UNAUTHORIZED, "token invalid"),
            Self::NotYetValid => (CloseCode::UNAUTHORIZED, "token not yet valid"),
            Self::Ambiguous => (CloseCode::UNAUTHORIZED, "two tokens: send ?token= or bearer., not both"),
            Self::Reserved => (CloseCode::UNAUTHORIZED, "the user id system is reserved"),
        }
    }
}

/// The one token of a handshake: from the `token` query parameter or from the
/// `bearer.` subprotocol. Both at once is refused as ambiguous (4500), even
/// when they are equal: a proxy or a page that adds a token of its own must
/// not silently decide which user connects.
pub fn pick_token(query: Option<String>, bearer: Option<String>) -> Result<String, AuthError> {
    match (query, bearer) {
        (Some(_), Some(_)) => Err(AuthError::Ambiguous),
        (Some(token), None) | (None, Some(token)) => Ok(token),
        (None, None) => Err(AuthError::Missing),
    }
}

/// The keys of one HS256 secret.
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Clock leeway on `exp` and `nbf`, in milliseconds.
    leeway_ms: u64,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

impl Keys {
    /// Keys for `secret`, with the default leeway.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Checked in `verify_at`, to the millisecond.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_aud = false;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            leeway_ms: DEFAULT_TOKEN_LEEWAY_MS,
        }
    }

    /// The same keys with another clock leeway, at most
    /// [`MAX_TOKEN_LEEWAY_MS`] (the configuration refuses more).
    pub fn with_leeway_ms(mut self, leeway_ms: u64) -> Self {
        self.leeway_ms = leeway_ms.min(MAX_TOKEN_LEEWAY_MS);
        self
    }

    /// The clock leeway on `exp` and `nbf`, in milliseconds.
    pub fn leeway_ms(&self) -> u64 {
        self.leeway_ms
    }

    /// Mints a token for `sub` that expires `ttl` from now.
    pub fn mint(&self, sub: &UserId, role: Role, name: &str, ttl: Duration) -> String {
        let now = jiff::Timestamp::now().as_second().max(0) as u64;
        let claims = Claims {
            sub: sub.clone(),
            role,
            name: name.to_owned(),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            nbf: None,
            topics: None,
        };
        self.mint_claims(&claims)
    }

    /// Mints a token with exactly these claims.
    pub fn mint_claims(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of serializable claims cannot fail")
    }

    /// Checks a token against the wall clock and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, now_ms())
    }

    /// Checks a token as of `now_ms` (milliseconds since the Unix epoch):
    /// signature and claims first, then `exp` and `nbf` with the leeway.
    pub fn verify_at(&self, token: &str, now_ms: u64) -> Result<Claims, AuthError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| AuthError::Invalid)?;
        if claims.sub.is_system() {
            return Err(AuthError::Reserved);
        }
        if now_ms > expiry_ms(&claims, self.leeway_ms) {
            return Err(AuthError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf.saturating_mul(1000) > now_ms.saturating_add(self.leeway_ms)) {
            return Err(AuthError::NotYetValid);
        }
        Ok(claims)
    }
}

/// The wall clock in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0)
}

/// When a connection authenticated by `claims` must close: `exp` plus the
/// leeway, in milliseconds since the Unix epoch.
pub fn expiry_ms(claims: &Claims, leeway_ms: u64) -> u64 {
    claims.exp.saturating_mul(1000).saturating_add(leeway_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserId {
        UserId::new("alice").expect("valid id")
    }

    #[test]
    fn a_minted_token_verifies_with_the_same_secret_only() {
        let keys = Keys::new(b"secret");
        let token = keys.mint(&alice(), Role::Customer, "Alice", Duration::from_secs(60));
        let claims = keys.verify(&token).expect("valid");
        assert_eq!((claims.sub, claims.role, claims.name.as_str()), (alice(), Role::Customer, "Alice"));
        assert_eq!(Keys::new(b"other").verify(&token), Err(AuthError::Invalid));
        assert_eq!(keys.verify("not.a.jwt"), Err(AuthError::Invalid));
    }

    fn claims(exp: u64, nbf: Option<u64>) -> Claims {
        Claims { sub: alice(), role: Role::Agent, name: "A".into(), exp, iat: None, nbf, topics: None }
    }

    #[test]
    fn expiry_allows_sixty_seconds_of_leeway_by_default() {
        let keys = Keys::new(b"secret");
        let now = jiff::Timestamp::now().as_second() as u64;
        assert!(keys.verify(&keys.mint_claims(&claims(now - 30, None))).is_ok());
        assert_eq!(keys.verify(&keys.mint_claims(&claims(now - 120, None))), Err(AuthError::Expired));
    }

    #[test]
    fn exp_and_nbf_are_checked_to_the_millisecond_with_the_leeway() {
        let keys = Keys::new(b"secret").with_leeway_ms(500);
        let token = keys.mint_claims(&claims(1_000, Some(900)));
        assert_eq!(keys.verify_at(&token, 899_499), Err(AuthError::NotYetValid));
        assert!(keys.verify_at(&token, 899_500).is_ok());
        assert!(keys.verify_at(&token, 1_000_500).is_ok());
        assert_eq!(keys.verify_at(&token, 1_000_501), Err(AuthError::Expired));
    }

    #[test]
    fn the_leeway_is_capped_and_a_huge_exp_saturates() {
        assert_eq!(Keys::new(b"s").with_leeway_ms(u64::MAX).leeway_ms(), MAX_TOKEN_LEEWAY_MS);
        assert_eq!(expiry_ms(&claims(u64::MAX, None), 60_000), u64::MAX);
    }

    #[test]
    fn a_token_for_the_reserved_system_user_is_refused() {
        let keys = Keys::new(b"secret");
        let system = UserId::new(UserId::SYSTEM).expect("valid id");
        let token = keys.mint(&system, Role::Agent, "System", Duration::from_secs(60));
        assert_eq!(keys.verify(&token), Err(AuthError::Reserved));
        assert_eq!(AuthError::Reserved.close().0, CloseCode::UNAUTHORIZED);
    }

    #[test]
    fn one_token_is_picked_and_two_are_refused() {
        let t = |s: &str| Some(s.to_owned());
        assert_eq!(pick_token(t("q"), None), Ok("q".into()));
        assert_eq!(pick_token(None, t("b")), Ok("b".into()));
        assert_eq!(pick_token(t("q"), t("b")), Err(AuthError::Ambiguous));
        assert_eq!(pick_token(t("same"), t("same")), Err(AuthError::Ambiguous));
        assert_eq!(pick_token(None, None), Err(AuthError::Missing));
    }
}
