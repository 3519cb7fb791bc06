//! Where the client's token comes from: a fixed one, or one minted from the
//! server's secret (development and scripts).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use petchat_protocol::token::Claims;
use petchat_protocol::{Role, UserId};

/// A future that yields a token, or `None` when there is none to be had.
pub(crate) type TokenFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// Gives the client a token for each connection attempt; `fresh` asks for a
/// new one after the server refused the last (4500, 4501).
#[derive(Clone)]
pub struct TokenProvider(Arc<dyn Fn(bool) -> TokenFuture + Send + Sync>);

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenProvider(..)")
    }
}

impl TokenProvider {
    /// A provider from any async function.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(bool) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<String>> + Send + 'static,
    {
        Self(Arc::new(move |fresh| Box::pin(f(fresh))))
    }

    /// Always the same token: a refused token ends the session.
    pub fn fixed(token: impl Into<String>) -> Self {
        let token = token.into();
        Self::new(move |fresh| {
            let token = (!fresh).then(|| token.clone());
            async move { token }
        })
    }

    /// A fresh HS256 token for every attempt, minted with the server's secret.
    pub fn minted(secret: impl Into<String>, sub: UserId, role: Role, name: impl Into<String>, ttl: Duration) -> Self {
        let (secret, name) = (secret.into(), name.into());
        Self::new(move |_| {
            let token = mint(&secret, &sub, role, &name, ttl);
            async move { Some(token) }
        })
    }

    /// A token, fresh or not.
    pub async fn get(&self, fresh: bool) -> Option<String> {
        (self.0)(fresh).await
    }
}

/// Signs a token for `sub` that expires `ttl` from now.
pub fn mint(secret: &str, sub: &UserId, role: Role, name: &str, ttl: Duration) -> String {
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
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("HS256 signing of serializable claims cannot fail")
}
