//! Token verification for one audience: algorithm, key, signature, time, audience, then scopes.
//!
//! The header is read by this module before any cryptography: only `alg: EdDSA` is accepted
//! whatever else the header says (`none`, `HS256` with the public key as an HMAC secret, ...), the
//! key comes from the trust store by `kid` and never from the token (`jwk`, `jku`, `x5u` are
//! ignored), and `crit` extensions are refused because none are understood. The signature is
//! checked by `jsonwebtoken`; the claims are checked here with an explicit clock, so tests need no
//! sleeping and every cause gets its own error.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};

use crate::identity::MAX_TOKEN_TTL;
use crate::scope::{MAX_SCOPES_PER_TOKEN, is_valid_scope};
use crate::{AuthError, TrustStore};

/// Most clock skew tolerated between signer and verifier. Hosts run NTP, so skew is seconds;
/// more leeway would only stretch the life of stolen tokens.
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);

/// Longest token accepted, in bytes. Our tokens are about 400 bytes; the bound stops a huge
/// header from costing base64 and JSON work.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The verified claims of a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The key id that signed the token (from the header), for audit logs.
    pub kid: String,
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub scopes: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, seconds since the Unix epoch.
    pub iat: u64,
    pub jti: String,
}

impl Claims {
    /// Whether the token carries exactly this scope. Tokens never carry wildcards.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// `Ok` if the token carries `scope`, else [`AuthError::MissingScope`] (403).
    pub fn require_scope(&self, scope: &str) -> Result<(), AuthError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(AuthError::MissingScope(scope.to_owned()))
        }
    }

    /// `Ok` if the token carries `scope` or any of `also` (a route's published alternatives),
    /// else [`AuthError::MissingScope`] naming `scope`.
    pub fn require_any(&self, scope: &str, also: &[&str]) -> Result<(), AuthError> {
        if self.has_scope(scope) || also.iter().any(|s| self.has_scope(s)) {
            Ok(())
        } else {
            Err(AuthError::MissingScope(scope.to_owned()))
        }
    }
}

/// The header fields read before verification.
#[derive(Deserialize)]
struct PeekHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// `aud` may be a string or an array (RFC 7519 section 4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims as read from the token, all optional so each absence gets a precise error.
#[derive(Deserialize)]
struct WireClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    scope: Option<String>,
    iat: Option<u64>,
    nbf: Option<u64>,
    exp: Option<u64>,
    jti: Option<String>,
}

/// Most verified tokens remembered per verifier (see [`Verifier::verify_at`]). A service has a
/// few callers, each reusing one token until it nears expiry; the bound keeps memory at a few
/// megabytes whatever callers send (tokens are at most [`MAX_TOKEN_LEN`] bytes).
pub const VERIFIED_CACHE_SIZE: usize = 512;

/// What a verified token's later uses still check: the time-dependent claims.
#[derive(Debug)]
struct Verified {
    claims: Claims,
    nbf: Option<u64>,
}

/// Verifies tokens addressed to one audience against a trust store.
#[derive(Debug)]
pub struct Verifier {
    trust: TrustStore,
    audience: String,
    leeway_secs: u64,
    verified: std::sync::Mutex<std::collections::HashMap<String, Verified>>,
}

impl Verifier {
    /// A verifier for tokens whose `aud` is `audience`. `leeway` above [`MAX_LEEWAY`] is clamped
    /// to it (with a warning), so a configuration typo cannot make expired tokens live for hours.
    pub fn new(trust: TrustStore, audience: &str, leeway: Duration) -> Self {
        let leeway = if leeway > MAX_LEEWAY {
            tracing::warn!(
                requested_secs = leeway.as_secs(),
                max_secs = MAX_LEEWAY.as_secs(),
                "token leeway clamped"
            );
            MAX_LEEWAY
        } else {
            leeway
        };
        Verifier {
            trust,
            audience: audience.to_owned(),
            leeway_secs: leeway.as_secs(),
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn leeway(&self) -> Duration {
        Duration::from_secs(self.leeway_secs)
    }

    pub fn trust_store(&self) -> &TrustStore {
        &self.trust
    }

    /// Verifies a compact JWS (no `Bearer ` prefix) at the system clock's time.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, crate::unix_now_secs())
    }

    /// Verifies the value of an `Authorization` header (`Bearer <token>`).
    pub fn verify_authorization(&self, header_value: &str) -> Result<Claims, AuthError> {
        self.verify(crate::bearer_token(header_value)?)
    }

    /// [`Verifier::verify`] with an explicit clock, in seconds since the Unix epoch.
    ///
    /// A token that verified before is not checked again except for its times (`exp`, `nbf`,
    /// `iat` against `now_secs`): its signature, audience and scopes cannot have changed, since
    /// the token is the same bytes and the trust store of a verifier never changes. Callers reuse
    /// a token for many calls, and the signature check (Ed25519) was a tenth of the CPU of a
    /// payment through the wallet-executor. Only successes are remembered, at most
    /// [`VERIFIED_CACHE_SIZE`] of them.
    pub fn verify_at(&self, token: &str, now_secs: u64) -> Result<Claims, AuthError> {
        let cached = self
            .verified
            .lock()
            .ok()
            .and_then(|map| map.get(token).map(|v| (v.claims.clone(), v.nbf)));
        if let Some((claims, nbf)) = cached {
            self.check_times(now_secs, claims.exp, claims.iat, nbf)?;
            return Ok(claims);
        }
        let (claims, nbf) = self.verify_uncached(token, now_secs)?;
        if let Ok(mut map) = self.verified.lock() {
            if map.len() >= VERIFIED_CACHE_SIZE {
                let leeway = self.leeway_secs;
                map.retain(|_, v| now_secs < v.claims.exp.saturating_add(leeway));
                if map.len() >= VERIFIED_CACHE_SIZE {
                    map.clear();
                }
            }
            map.insert(
                token.to_owned(),
                Verified {
                    claims: claims.clone(),
                    nbf,
                },
            );
        }
        Ok(claims)
    }

    /// RFC 7519: valid strictly before `exp`; `nbf` and `iat` must not be in the future.
    fn check_times(
        &self,
        now_secs: u64,
        exp: u64,
        iat: u64,
        nbf: Option<u64>,
    ) -> Result<(), AuthError> {
        if now_secs >= exp.saturating_add(self.leeway_secs) {
            return Err(AuthError::Expired);
        }
        let latest_start = now_secs.saturating_add(self.leeway_secs);
        if nbf.is_some_and(|nbf| nbf > latest_start) || iat > latest_start {
            return Err(AuthError::NotYetValid);
        }
        Ok(())
    }

    /// The full check of a token, giving its claims and its `nbf`.
    fn verify_uncached(
        &self,
        token: &str,
        now_secs: u64,
    ) -> Result<(Claims, Option<u64>), AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed("token is too long"));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "not a compact JWS (three dot-separated parts)",
            ));
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| AuthError::Malformed("header is not base64url"))?;
        let header: PeekHeader = serde_json::from_slice(&header_json)
            .map_err(|_| AuthError::Malformed("header is not a JSON object"))?;
        if header.alg.as_deref() != Some("EdDSA") {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        if header.crit.is_some() {
            return Err(AuthError::Malformed(
                "critical header extensions are not supported",
            ));
        }
        let kid = header
            .kid
            .ok_or(AuthError::Malformed("header has no kid"))?;
        let entry = self.trust.entry(&kid).ok_or(AuthError::UnknownKey)?;

        // Signature only: time, audience and required claims are checked below, with our clock.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<WireClaims>(token, &entry.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::UnsupportedAlgorithm
                }
                ErrorKind::Base64(_) => AuthError::Malformed("a part is not base64url"),
                ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                    AuthError::Malformed("claims are not a valid JSON object")
                }
                _ => AuthError::Malformed("token could not be decoded"),
            })?;
        let wire = data.claims;

        let exp = wire
            .exp
            .ok_or(AuthError::Malformed("token has no exp claim"))?;
        let iat = wire
            .iat
            .ok_or(AuthError::Malformed("token has no iat claim"))?;
        let iss = wire
            .iss
            .ok_or(AuthError::Malformed("token has no iss claim"))?;
        let sub = wire
            .sub
            .ok_or(AuthError::Malformed("token has no sub claim"))?;
        let jti = wire
            .jti
            .ok_or(AuthError::Malformed("token has no jti claim"))?;

        self.check_times(now_secs, exp, iat, wire.nbf)?;
        // A token living longer than any identity may mint was not made by this suite.
        if exp < iat || exp - iat > MAX_TOKEN_TTL.as_secs() {
            return Err(AuthError::Malformed("token lifetime is out of bounds"));
        }

        // One audience only: a token naming several services could be replayed at each.
        let aud = match wire.aud {
            Some(Audience::One(a)) => a,
            Some(Audience::Many(mut v)) if v.len() == 1 => v.remove(0),
            _ => return Err(AuthError::WrongAudience),
        };
        if aud != self.audience {
            return Err(AuthError::WrongAudience);
        }

        let scope = wire.scope.unwrap_or_default();
        let scopes: Vec<String> = scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if scopes.len() > MAX_SCOPES_PER_TOKEN {
            return Err(AuthError::Malformed("token carries too many scopes"));
        }
        if scopes.iter().any(|s| !is_valid_scope(s)) {
            return Err(AuthError::Malformed("token carries an invalid scope"));
        }
        if let Some(denied) = scopes.iter().find(|s| !entry.key.allows(s)) {
            return Err(AuthError::ScopeNotAllowedForKey(denied.clone()));
        }

        let claims = Claims {
            kid,
            iss,
            sub,
            aud,
            scopes,
            exp,
            iat,
            jti,
        };
        Ok((claims, wire.nbf))
    }

    /// How many verified tokens are remembered (for tests of the bound).
    pub fn remembered(&self) -> usize {
        self.verified.lock().map_or(0, |m| m.len())
    }
}
