//! Tokens: HS256 JWTs minted for development and checked on every connection.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use petchat_protocol::limits::TOKEN_LEEWAY_SECS;
use petchat_protocol::token::Claims;
use petchat_protocol::{Role, UserId};

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
}

/// The keys of one HS256 secret.
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

impl Keys {
    /// Keys for `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = TOKEN_LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_aud = false;
        Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    /// Mints a token for `sub` that expires `ttl` from now.
    pub fn mint(&self, sub: &UserId, role: Role, name: &str, ttl: Duration) -> String {
        let now = jiff::Timestamp::now().as_second().max(0) as u64;
        let claims = Claims { sub: sub.clone(), role, name: name.to_owned(), exp: now + ttl.as_secs(), iat: Some(now) };
        self.mint_claims(&claims)
    }

    /// Mints a token with exactly these claims.
    pub fn mint_claims(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of serializable claims cannot fail")
    }

    /// Checks a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|data| data.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            }
        })
    }
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

    #[test]
    fn expiry_allows_sixty_seconds_of_leeway() {
        let keys = Keys::new(b"secret");
        let now = jiff::Timestamp::now().as_second() as u64;
        let claims = |exp| Claims { sub: alice(), role: Role::Agent, name: "A".into(), exp, iat: None };
        assert!(keys.verify(&keys.mint_claims(&claims(now - 30))).is_ok());
        assert_eq!(keys.verify(&keys.mint_claims(&claims(now - 120))), Err(AuthError::Expired));
    }
}
