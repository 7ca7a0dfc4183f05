//! Request bodies in the proto3 JSON mapping, with every rejection a typed 4xx.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
};
use http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::ApiError;

/// Extracts `T` (a pbjson-generated proto message) from a JSON body. Unknown fields, wrong types,
/// negative or overflowing integers and malformed JSON are `400`; a non-JSON content type is
/// `415`; a body over the router's limit is `413`.
#[derive(Debug, Clone)]
pub struct ProtoJson<T>(pub T);

impl<S, T> FromRequest<S> for ProtoJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let mime = ct.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json")
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "expected Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    "request body is too large",
                )
            } else {
                ApiError::bad_request("INVALID_BODY", "could not read the request body")
            }
        })?;
        parse(&bytes).map(ProtoJson)
    }
}

/// Parses a proto-JSON body, mapping serde's error categories to stable codes.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let code = match e.classify() {
            serde_json::error::Category::Data => "INVALID_REQUEST",
            _ => "MALFORMED_JSON",
        };
        ApiError::bad_request(code, e.to_string())
    })
}
