//! The tonic side: a server interceptor that authenticates every call, a scope check for
//! handlers, and a client interceptor that attaches a fresh token to every outgoing call.
//!
//! Server:
//! ```text
//! let svc = WalletServer::with_interceptor(impl_, oa_auth::grpc::interceptor(verifier));
//! // in a handler:
//! let claims = oa_auth::grpc::require_scope(&request, "wallet:pay")?;
//! ```
//! Client:
//! ```text
//! let bearer = BearerInterceptor::new(identity, "wallet-executor", ["wallet:pay"], ttl)?;
//! let client = WalletClient::with_interceptor(channel, bearer);
//! ```

use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::{AuthError, Claims, SigningIdentity, TokenSource, Verifier};

/// Verifies the `authorization` metadata of every call and stores the [`Claims`] in the request
/// extensions; refuses with `UNAUTHENTICATED` (or `PERMISSION_DENIED` for a scope its key may not
/// grant).
#[derive(Clone, Debug)]
pub struct AuthInterceptor {
    verifier: Arc<Verifier>,
}

/// The server interceptor for `verifier`.
pub fn interceptor(verifier: Arc<Verifier>) -> AuthInterceptor {
    AuthInterceptor { verifier }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let claims = authenticate(&self.verifier, &request).map_err(|e| e.to_status())?;
        request.extensions_mut().insert(claims);
        Ok(request)
    }
}

fn authenticate<T>(verifier: &Verifier, request: &Request<T>) -> Result<Claims, AuthError> {
    let mut values = request.metadata().get_all("authorization").iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(AuthError::MissingToken),
        (Some(v), None) => v,
        (Some(_), Some(_)) => {
            return Err(AuthError::Malformed("more than one authorization entry"));
        }
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("authorization metadata is not ASCII"))?;
    verifier.verify_authorization(value)
}

/// The claims stored by [`AuthInterceptor`]; `UNAUTHENTICATED` if the service was not wrapped
/// with it (a wiring bug that must not read as "allowed").
pub fn claims<T>(request: &Request<T>) -> Result<&Claims, Status> {
    request
        .extensions()
        .get::<Claims>()
        .ok_or_else(|| AuthError::MissingToken.to_status())
}

/// The caller's claims if they carry `scope`; `PERMISSION_DENIED` if not.
pub fn require_scope<T>(request: &Request<T>, scope: &str) -> Result<Claims, Status> {
    let claims = claims(request)?;
    claims.require_scope(scope).map_err(|e| e.to_status())?;
    Ok(claims.clone())
}

/// Client interceptor: sets `authorization: Bearer <token>` from a [`TokenSource`].
#[derive(Clone, Debug)]
pub struct BearerInterceptor {
    source: TokenSource,
}

impl BearerInterceptor {
    /// Tokens from `identity` for `audience` carrying `scopes`, each living `ttl`.
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
        Ok(Self::from_source(TokenSource::new(
            identity, audience, scopes, ttl,
        )?))
    }

    pub fn from_source(source: TokenSource) -> Self {
        BearerInterceptor { source }
    }

    pub fn source(&self) -> &TokenSource {
        &self.source
    }
}

impl Interceptor for BearerInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let value = self
            .source
            .authorization_value()
            .map_err(|e| e.to_status())?;
        let value = MetadataValue::try_from(value)
            .map_err(|_| Status::internal("minted token is not valid metadata"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}
