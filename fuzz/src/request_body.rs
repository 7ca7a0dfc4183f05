//! Request bodies as every route decodes them: the [`ProtoJson`] extractor (proto3 JSON through
//! pbjson), driven through its public `FromRequest` impl on a real request.
//!
//! Three request types stand for the rest: treasury's payment request (strings and 64-bit
//! integers as JSON strings), aegis's verify request (nested messages, repeated fields, an enum,
//! base64 bytes) and hydra's withdrawal request. For any body and each type:
//! - decoding does not panic;
//! - the extractor and the public [`oa_service::parse_json`] helper agree;
//! - a refused body is `400` with `MALFORMED_JSON` or `INVALID_REQUEST`, never a 5xx, and its
//!   response is the error envelope with that code;
//! - an accepted body re-encodes (proto3 JSON) to a body that decodes to the same message;
//! - with a content type other than JSON the body is refused with `415`, whatever it holds.

use std::fmt::Debug;

use axum::body::Body;
use axum::extract::FromRequest;
use axum::response::IntoResponse;
use http::{Request, StatusCode, header};
use oa_proto::openagents::aegis::v1::VerifyRequest;
use oa_proto::openagents::hydra::v1::WithdrawRequest;
use oa_proto::openagents::treasury::v1::CreatePaymentRequest;
use oa_service::{ApiError, ProtoJson, parse_json};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Largest error body read back from a response; the envelope is a few hundred bytes.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

thread_local! {
    /// The extractor is async; it never waits on anything here, but it needs an executor.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime without drivers always builds");
}

/// Checks the properties above for `data` as a body of each request type.
pub fn check(data: &[u8]) {
    check_as::<CreatePaymentRequest>(data);
    check_as::<VerifyRequest>(data);
    check_as::<WithdrawRequest>(data);
}

fn check_as<T>(data: &[u8])
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let extracted = extract::<T>(data, "application/json");
    let parsed = parse_json::<T>(data);
    assert_eq!(
        extracted.as_ref().err(),
        parsed.as_ref().err(),
        "the extractor and parse_json disagree"
    );
    match extracted {
        Ok(message) => {
            assert_eq!(Some(&message), parsed.as_ref().ok());
            let json = serde_json::to_vec(&message).expect("a decoded message re-encodes");
            let again = parse_json::<T>(&json).unwrap_or_else(|e| {
                panic!(
                    "the re-encoded body {} is refused: {e:?}",
                    String::from_utf8_lossy(&json)
                )
            });
            assert_eq!(
                again, message,
                "a message changed in a proto-JSON round trip"
            );
        }
        Err(e) => {
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
            assert!(
                matches!(e.code.as_ref(), "MALFORMED_JSON" | "INVALID_REQUEST"),
                "{e:?}"
            );
            assert_envelope(e);
        }
    }
    let wrong_type =
        extract::<T>(data, "text/plain").expect_err("a body that is not declared JSON is refused");
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_envelope(wrong_type);
}

/// Runs the extractor on a POST with `data` as its body.
fn extract<T: DeserializeOwned>(data: &[u8], content_type: &str) -> Result<T, ApiError> {
    let request = Request::post("/")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(data.to_vec()))
        .expect("a request with a static URI and header always builds");
    RUNTIME.with(|rt| {
        rt.block_on(<ProtoJson<T> as FromRequest<()>>::from_request(
            request,
            &(),
        ))
        .map(|ProtoJson(message)| message)
    })
}

/// The response for `error` is its status and the envelope `{"error": {"code", "message"}}`.
fn assert_envelope(error: ApiError) {
    let (status, code) = (error.status, error.code.clone());
    assert!(status.is_client_error(), "{error:?}");
    let response = error.into_response();
    assert_eq!(response.status(), status);
    let bytes = RUNTIME
        .with(|rt| {
            rt.block_on(axum::body::to_bytes(
                response.into_body(),
                MAX_ERROR_BODY_BYTES,
            ))
        })
        .expect("an error envelope is small and in memory");
    let envelope: Value = serde_json::from_slice(&bytes).expect("the error body is JSON");
    assert_eq!(envelope["error"]["code"], Value::from(code.as_ref()));
    assert!(envelope["error"]["message"].is_string(), "{envelope}");
}
