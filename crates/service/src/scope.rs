//! Scope checks that run before the request body is read, so a caller without the scope learns
//! nothing about what the body should contain (403 comes before any 400).

use std::{marker::PhantomData, ops::Deref, sync::Arc};

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;
use oa_auth::{AuthError, Authenticated, Claims, Verifier};

/// A scope as a type, for [`Scoped`]. Declare with [`scope!`](crate::scope).
pub trait ScopeName: Send + Sync + 'static {
    const NAME: &'static str;
}

/// Declares a [`ScopeName`] type: `oa_service::scope!(Liquidity, "hydra:liquidity");`.
#[macro_export]
macro_rules! scope {
    ($name:ident, $scope:literal) => {
        #[derive(Debug, Clone, Copy)]
        pub struct $name;
        impl $crate::ScopeName for $name {
            const NAME: &'static str = $scope;
        }
    };
}

/// An authenticated caller holding scope `S`.
#[derive(Debug, Clone)]
pub struct Scoped<S: ScopeName>(pub Claims, PhantomData<S>);

impl<S: ScopeName> Deref for Scoped<S> {
    type Target = Claims;
    fn deref(&self) -> &Claims {
        &self.0
    }
}

impl<St, S> FromRequestParts<St> for Scoped<S>
where
    Arc<Verifier>: FromRef<St>,
    St: Send + Sync,
    S: ScopeName,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        let Authenticated(claims) = Authenticated::from_request_parts(parts, state).await?;
        claims.require_scope(S::NAME)?;
        Ok(Scoped(claims, PhantomData))
    }
}
