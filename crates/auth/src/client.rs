//! The calling side: a source of short-lived tokens for one audience and scope set, cached until
//! shortly before they expire, so a busy client signs once per few minutes rather than per call.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::identity::{check_ttl, join_scopes};
use crate::{AuthError, SigningIdentity};

/// How long before expiry a cached token is replaced: enough for a request to cross the network
/// and for modest clock skew, small against the usual five-minute service token. For short TTLs
/// half the TTL is used instead.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(30);

struct Cached {
    token: String,
    exp_secs: u64,
}

/// Mints and caches tokens for one audience and scope set. Clones share the cache.
#[derive(Clone)]
pub struct TokenSource {
    identity: Arc<SigningIdentity>,
    audience: String,
    scopes: Vec<String>,
    ttl: Duration,
    cache: Arc<Mutex<Option<Cached>>>,
}

impl TokenSource {
    /// Checks the scopes and TTL now, so a misconfigured client fails at start-up, not per call.
    pub fn new<I, S>(
        identity: Arc<SigningIdentity>,
        audience: impl Into<String>,
        scopes: I,
        ttl: Duration,
    ) -> Result<Self, AuthError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
        join_scopes(&scopes)?;
        check_ttl(ttl)?;
        Ok(TokenSource {
            identity,
            audience: audience.into(),
            scopes,
            ttl,
            cache: Arc::new(Mutex::new(None)),
        })
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// A token valid for at least the refresh margin.
    pub fn token(&self) -> Result<String, AuthError> {
        self.token_at(crate::unix_now_secs())
    }

    /// `Bearer <token>`, ready for an `Authorization` header.
    pub fn authorization_value(&self) -> Result<String, AuthError> {
        Ok(format!("Bearer {}", self.token()?))
    }

    /// [`TokenSource::token`] with an explicit clock, in seconds since the Unix epoch.
    pub fn token_at(&self, now_secs: u64) -> Result<String, AuthError> {
        let margin = TOKEN_REFRESH_MARGIN.min(self.ttl / 2).as_secs();
        // The cache holds a plain value that is valid whatever a panicking holder left behind,
        // so a poisoned lock is safe to reuse.
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cached) = cache.as_ref()
            && now_secs.saturating_add(margin) < cached.exp_secs
        {
            return Ok(cached.token.clone());
        }
        let token = self
            .identity
            .mint_at(&self.audience, &self.scopes, self.ttl, now_secs)?;
        *cache = Some(Cached {
            token: token.clone(),
            exp_secs: now_secs.saturating_add(self.ttl.as_secs()),
        });
        Ok(token)
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("kid", &self.identity.kid())
            .field("audience", &self.audience)
            .field("scopes", &self.scopes)
            .field("ttl", &self.ttl)
            .field("cached_token", &"[redacted]")
            .finish()
    }
}
