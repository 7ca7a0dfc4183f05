//! Service-to-service and caller authentication for the suite: EdDSA (Ed25519) JWTs, scoped and
//! audience-bound.
//!
//! Every token signer has a key id (`kid`). A [`TrustStore`] maps each kid to its Ed25519 public
//! key and to the scopes that key may grant, so a service's own signing key carries least
//! privilege: a token whose scopes are not all allowed for its kid is refused, even when its
//! signature is good. A [`SigningIdentity`] mints tokens; a [`Verifier`] checks them for one
//! audience (the service that receives them).
//!
//! Transport glue:
//! - HTTP (axum): the [`Authenticated`] extractor; its rejection, [`AuthError`], renders the
//!   suite's JSON error body with `401` or `403`.
//! - gRPC (tonic): [`grpc::interceptor`] on the server side, [`grpc::require_scope`] in handlers,
//!   and [`grpc::BearerInterceptor`] on the client side, which attaches a cached short-lived token
//!   minted by a [`TokenSource`].
//!
//! Secrets never leave this crate in text form by accident: `Debug` of a signing identity or a
//! token source redacts the key and the cached token, and no error message includes a token.

mod client;
mod error;
pub mod grpc;
mod http;
mod identity;
mod scope;
mod trust;
mod verify;

pub use client::{TOKEN_REFRESH_MARGIN, TokenSource};
pub use error::AuthError;
pub use http::{Authenticated, bearer_token};
pub use identity::{MAX_TOKEN_TTL, SigningIdentity};
pub use scope::{MAX_SCOPE_LEN, MAX_SCOPES_PER_TOKEN, is_valid_scope, scope_pattern_allows};
pub use trust::{MAX_KID_LEN, MAX_TRUST_STORE_BYTES, MAX_TRUSTED_KEYS, TrustStore, TrustedKey};
pub use verify::{Claims, MAX_LEEWAY, MAX_TOKEN_LEN, VERIFIED_CACHE_SIZE, Verifier};

/// Seconds since the Unix epoch by the system clock. A clock set before 1970 reads as 0, which
/// makes every token look expired rather than making the process panic.
pub fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
