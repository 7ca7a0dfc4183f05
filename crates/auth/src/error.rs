//! Why a token was refused or a key could not be loaded, and the one place where that maps to
//! HTTP statuses, stable error codes and gRPC statuses.
//!
//! Messages name the cause, never the token: a bearer token in a log line is a credential leak.

use std::path::PathBuf;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::WWW_AUTHENTICATE;

/// An authentication (401), authorization (403) or configuration (500) failure.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer ...` header (or `authorization` metadata) was sent.
    #[error("no bearer token was presented")]
    MissingToken,
    /// The token is not a well-formed compact JWS with the claims this suite requires.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header asks for an algorithm other than EdDSA (`none`, `HS256`, ...).
    #[error("token algorithm is not accepted (only EdDSA is)")]
    UnsupportedAlgorithm,
    /// The header's `kid` names no key in the trust store.
    #[error("token was signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify under the key named by `kid`.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` is in the past, beyond the verifier's leeway.
    #[error("token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future, beyond the verifier's leeway.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `aud` is not exactly this verifier's audience.
    #[error("token was issued for another audience")]
    WrongAudience,
    /// The token asserts a scope that its signing key is not allowed to grant.
    #[error("token asserts scope `{0}`, which its signing key may not grant")]
    ScopeNotAllowedForKey(String),
    /// The token is valid but lacks the scope the operation needs.
    #[error("token lacks the required scope `{0}`")]
    MissingScope(String),
    /// A scope or scope pattern given to this library (not read from a token) is malformed.
    #[error("invalid scope `{0}`")]
    InvalidScope(String),
    /// A requested token lifetime is zero or above [`crate::MAX_TOKEN_TTL`].
    #[error("token lifetime must be between 1 s and {max_secs} s")]
    InvalidTtl { max_secs: u64 },
    /// Key material or a key id could not be used.
    #[error("invalid key: {0}")]
    Key(String),
    /// A trust store file or entry is invalid.
    #[error("invalid trust store: {0}")]
    TrustStore(String),
    /// Reading or writing a key or trust store file failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The JWT library refused to sign.
    #[error("cannot sign token: {0}")]
    Signing(String),
}

impl AuthError {
    /// `401` for authentication failures, `403` for authorization failures, `500` for local
    /// configuration errors (which are never the caller's fault).
    pub fn http_status(&self) -> StatusCode {
        match self {
            AuthError::MissingToken
            | AuthError::Malformed(_)
            | AuthError::UnsupportedAlgorithm
            | AuthError::UnknownKey
            | AuthError::BadSignature
            | AuthError::Expired
            | AuthError::NotYetValid
            | AuthError::WrongAudience => StatusCode::UNAUTHORIZED,
            AuthError::ScopeNotAllowedForKey(_) | AuthError::MissingScope(_) => {
                StatusCode::FORBIDDEN
            }
            AuthError::InvalidScope(_)
            | AuthError::InvalidTtl { .. }
            | AuthError::Key(_)
            | AuthError::TrustStore(_)
            | AuthError::Io { .. }
            | AuthError::Signing(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable `UPPER_SNAKE` code, one per cause; clients may branch on it.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "UNAUTHENTICATED",
            AuthError::Malformed(_) => "MALFORMED_TOKEN",
            AuthError::UnsupportedAlgorithm => "UNSUPPORTED_ALGORITHM",
            AuthError::UnknownKey => "UNKNOWN_KEY",
            AuthError::BadSignature => "BAD_SIGNATURE",
            AuthError::Expired => "TOKEN_EXPIRED",
            AuthError::NotYetValid => "TOKEN_NOT_YET_VALID",
            AuthError::WrongAudience => "WRONG_AUDIENCE",
            AuthError::ScopeNotAllowedForKey(_) => "SCOPE_NOT_ALLOWED_FOR_KEY",
            AuthError::MissingScope(_) => "FORBIDDEN",
            AuthError::InvalidScope(_)
            | AuthError::InvalidTtl { .. }
            | AuthError::Key(_)
            | AuthError::TrustStore(_)
            | AuthError::Io { .. }
            | AuthError::Signing(_) => "INTERNAL",
        }
    }

    /// True for failures of the caller's credentials (401).
    pub fn is_unauthenticated(&self) -> bool {
        self.http_status() == StatusCode::UNAUTHORIZED
    }

    /// True for valid credentials that do not permit the operation (403).
    pub fn is_forbidden(&self) -> bool {
        self.http_status() == StatusCode::FORBIDDEN
    }

    /// The message a client may see: the cause for 4xx, a generic text for 5xx (whose detail is
    /// logged by the caller of this method, once).
    pub fn public_message(&self) -> String {
        if self.http_status().is_server_error() {
            "internal error".to_owned()
        } else {
            self.to_string()
        }
    }

    /// The gRPC status for this error: `UNAUTHENTICATED`, `PERMISSION_DENIED` or `INTERNAL`,
    /// with the stable code in the `oa-error-code` metadata entry.
    pub fn to_status(&self) -> tonic::Status {
        let code = match self.http_status() {
            StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
            StatusCode::FORBIDDEN => tonic::Code::PermissionDenied,
            _ => {
                tracing::error!(error = %self, "authentication configuration error");
                tonic::Code::Internal
            }
        };
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(
            "oa-error-code",
            tonic::metadata::MetadataValue::from_static(self.code()),
        );
        tonic::Status::with_metadata(code, self.public_message(), metadata)
    }
}

impl From<AuthError> for tonic::Status {
    fn from(err: AuthError) -> Self {
        err.to_status()
    }
}

/// Renders `{"error":{"code":"...","message":"..."}}` with the status from
/// [`AuthError::http_status`], plus the RFC 6750 `WWW-Authenticate` challenge on 401 and 403.
impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        if status.is_server_error() {
            tracing::error!(error = %self, "authentication configuration error");
        }
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.public_message() }
        });
        let mut response = (status, Json(body)).into_response();
        let challenge = match (&self, status) {
            // A request without credentials gets a bare challenge (RFC 6750 section 3.1).
            (AuthError::MissingToken, _) => Some("Bearer"),
            (_, StatusCode::UNAUTHORIZED) => Some("Bearer error=\"invalid_token\""),
            (_, StatusCode::FORBIDDEN) => Some("Bearer error=\"insufficient_scope\""),
            _ => None,
        };
        if let Some(challenge) = challenge {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, http::HeaderValue::from_static(challenge));
        }
        response
    }
}
