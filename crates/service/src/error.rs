//! The error envelope of every HTTP response that is not a success.

use std::borrow::Cow;

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde_json::{Map, Value, json};

/// A typed error for callers: an HTTP status, a stable `code`, a safe message, and for denials a
/// `reason_code`. 5xx errors keep their detail in the log and send only a generic message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub message: String,
    pub reason_code: Option<String>,
    pub retryable: bool,
    pub details: Option<Map<String, Value>>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            reason_code: None,
            retryable: false,
            details: None,
        }
    }

    /// `400` with a code: the request is wrong and repeating it will not help.
    pub fn bad_request(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("{what} not found"),
        )
    }

    pub fn conflict(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// `501 NOT_SUPPORTED`: the route is part of the contract but not built in this version.
    pub fn not_supported(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "NOT_SUPPORTED", what)
    }

    /// `503` for a dependency that is down or slow: retry later.
    pub fn unavailable(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message).retryable()
    }

    /// A server fault: logs `detail` once and tells the caller only that it failed.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let id = uuid::Uuid::now_v7();
        tracing::error!(error_id = %id, "internal error: {detail}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("internal error (error id {id})"),
        )
        .retryable()
    }

    pub fn with_reason(mut self, reason_code: impl Into<String>) -> Self {
        self.reason_code = Some(reason_code.into());
        self
    }

    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details
            .get_or_insert_with(Map::new)
            .insert(key.to_owned(), value.into());
        self
    }

    /// The envelope as JSON, e.g. for storing a refusal as an idempotent response.
    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        body.insert("code".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        if let Some(r) = &self.reason_code {
            body.insert("reason_code".into(), json!(r));
        }
        body.insert("retryable".into(), json!(self.retryable));
        if let Some(d) = &self.details {
            body.insert("details".into(), Value::Object(d.clone()));
        }
        json!({ "error": body })
    }

    /// The gRPC status for this error; the stable code travels in the `oa-error-code` metadata.
    pub fn to_grpc_status(&self) -> tonic::Status {
        let code = match self.status.as_u16() {
            400 | 413 | 415 | 422 => tonic::Code::InvalidArgument,
            401 => tonic::Code::Unauthenticated,
            403 => tonic::Code::PermissionDenied,
            404 => tonic::Code::NotFound,
            409 => tonic::Code::AlreadyExists,
            412 => tonic::Code::FailedPrecondition,
            429 => tonic::Code::ResourceExhausted,
            501 => tonic::Code::Unimplemented,
            503 => tonic::Code::Unavailable,
            504 => tonic::Code::DeadlineExceeded,
            _ => tonic::Code::Internal,
        };
        let mut status = tonic::Status::new(code, self.message.clone());
        if let Ok(v) = self.code.parse() {
            status.metadata_mut().insert("oa-error-code", v);
        }
        if let Some(Ok(v)) = self.reason_code.as_ref().map(|r| r.parse()) {
            status.metadata_mut().insert("oa-reason-code", v);
        }
        status
    }
}

/// Turns a gRPC status from another service back into a typed error, keeping its stable code.
pub fn grpc_status_to_api_error(status: &tonic::Status) -> ApiError {
    let code = status
        .metadata()
        .get("oa-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let reason = status
        .metadata()
        .get("oa-reason-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let http = match status.code() {
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::AlreadyExists => StatusCode::CONFLICT,
        tonic::Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        tonic::Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        tonic::Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    let mut err = ApiError::new(
        http,
        code.unwrap_or_else(|| "UPSTREAM_ERROR".into()),
        status.message().to_owned(),
    );
    err.reason_code = reason;
    err.retryable = matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
    );
    err
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.to_json())).into_response()
    }
}

impl From<oa_auth::AuthError> for ApiError {
    fn from(e: oa_auth::AuthError) -> Self {
        ApiError::new(e.http_status(), e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_code_message_and_reason() {
        let e = ApiError::new(StatusCode::FORBIDDEN, "BUDGET_EXCEEDED", "over budget")
            .with_reason("agent_daily_limit")
            .with_detail("available_msat", "5");
        let v = e.to_json();
        assert_eq!(v["error"]["code"], "BUDGET_EXCEEDED");
        assert_eq!(v["error"]["reason_code"], "agent_daily_limit");
        assert_eq!(v["error"]["details"]["available_msat"], "5");
        assert_eq!(v["error"]["retryable"], false);
    }

    #[test]
    fn grpc_round_trip_keeps_the_stable_code() {
        let e = ApiError::conflict("PAYMENT_IN_FLIGHT", "busy").with_reason("r");
        let back = grpc_status_to_api_error(&e.to_grpc_status());
        assert_eq!(back.code, "PAYMENT_IN_FLIGHT");
        assert_eq!(back.status, StatusCode::CONFLICT);
        assert_eq!(back.reason_code.as_deref(), Some("r"));
    }

    #[test]
    fn internal_errors_do_not_leak_detail() {
        let e = ApiError::internal("password=hunter2 in connection string");
        assert!(!e.message.contains("hunter2"));
        assert_eq!(e.code, "INTERNAL");
    }
}
