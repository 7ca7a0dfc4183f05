//! The axum side: an extractor that authenticates the caller from `Authorization: Bearer ...`.
//!
//! ```text
//! async fn pay(Authenticated(claims): Authenticated, ...) -> Result<Json<..>, AuthError> {
//!     claims.require_scope("treasury:pay")?;
//!     ...
//! }
//! ```
//!
//! The state must give an `Arc<Verifier>` through `FromRef`. A service whose handlers return its
//! own error type implements `From<AuthError>` for it and keeps `?`.

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use http::header::AUTHORIZATION;
use http::request::Parts;

use crate::{AuthError, Claims, Verifier};

/// An authenticated caller. Scopes are checked by the handler with
/// [`Claims::require_scope`], because which scope applies is the handler's decision.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Claims);

impl Deref for Authenticated {
    type Target = Claims;
    fn deref(&self) -> &Claims {
        &self.0
    }
}

impl<S> FromRequestParts<S> for Authenticated
where
    Arc<Verifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Arc::<Verifier>::from_ref(state);
        let mut values = parts.headers.get_all(AUTHORIZATION).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return Err(AuthError::MissingToken),
            (Some(v), None) => v,
            (Some(_), Some(_)) => {
                return Err(AuthError::Malformed("more than one Authorization header"));
            }
        };
        let value = value
            .to_str()
            .map_err(|_| AuthError::Malformed("Authorization header is not ASCII"))?;
        let claims = verifier.verify_authorization(value)?;
        // Later layers (logging, audit) may read who called without verifying again.
        parts.extensions.insert(claims.clone());
        Ok(Authenticated(claims))
    }
}

/// The token in an `Authorization` header value: `Bearer <token>`, scheme case-insensitive
/// (RFC 7235 section 2.1).
pub fn bearer_token(header_value: &str) -> Result<&str, AuthError> {
    let value = header_value.trim();
    if value.is_empty() || value.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MissingToken);
    }
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed(
        "authorization is not `Bearer <token>`",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed("authorization scheme is not Bearer"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token("Bearer abc").ok(), Some("abc"));
        assert_eq!(bearer_token("bearer   abc ").ok(), Some("abc"));
        assert!(matches!(bearer_token(""), Err(AuthError::MissingToken)));
        assert!(matches!(
            bearer_token("Bearer "),
            Err(AuthError::MissingToken)
        ));
        assert!(matches!(
            bearer_token("Basic dXNlcjpwYXNz"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(bearer_token("abc"), Err(AuthError::Malformed(_))));
    }
}
