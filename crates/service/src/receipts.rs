//! Receipts on the wire: conversion to and from the proto `Receipt`, and the routes every service
//! serves for its own log (`GET /v1/receipts` and the public `GET /v1/receipts/keys`).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{FromRef, Query, State},
    routing::get,
};
use oa_auth::{Authenticated, Verifier};
use oa_proto::{common, pbjson_types};
use oa_receipts::{KEY_ALGORITHM, Receipt};
use oa_store::{Db, receipt_log};
use serde::Deserialize;

use crate::{ApiError, Route};

/// Scope needed to read a service's receipts.
pub const READ_SCOPE: &str = "receipts:read";
/// Default page size of `GET /v1/receipts`.
const DEFAULT_PAGE: u32 = 100;

/// A receipt as its proto message. The JSON forms are identical because receipt bodies hold no
/// JSON numbers (strings, booleans, nulls, arrays and objects map one to one onto `Struct`).
pub fn to_proto(r: &Receipt) -> common::Receipt {
    common::Receipt {
        schema: r.schema.clone(),
        receipt_id: r.receipt_id.clone(),
        issuer: Some(common::Issuer {
            service: r.issuer.service.clone(),
            key_id: r.issuer.key_id.clone(),
        }),
        log_index: r.log_index,
        prev_hash: r.prev_hash.to_string(),
        issued_at_ms: r.issued_at_ms,
        idempotency_key: r.idempotency_key.clone(),
        links: r.links.iter().map(ToString::to_string).collect(),
        body: Some(json_to_struct(&r.body)),
        hash: r.hash.to_string(),
        signature: r.signature.clone(),
    }
}

/// A proto receipt (for example from another service over gRPC) back to the signed form; the
/// caller should `verify()` it.
pub fn from_proto(r: &common::Receipt) -> Result<Receipt, String> {
    let json = serde_json::to_value(r).map_err(|e| e.to_string())?;
    serde_json::from_value(json).map_err(|e| format!("not a valid receipt: {e}"))
}

fn json_to_struct(map: &serde_json::Map<String, serde_json::Value>) -> pbjson_types::Struct {
    pbjson_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &serde_json::Value) -> pbjson_types::Value {
    use pbjson_types::{ListValue, Value, value::Kind};
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        // Receipt bodies carry no numbers (sealing refuses them); kept total for safety.
        serde_json::Value::Number(n) => Kind::StringValue(n.to_string()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(m) => Kind::StructValue(json_to_struct(m)),
    };
    Value { kind: Some(kind) }
}

/// What the receipt routes need.
#[derive(Clone)]
pub struct ReceiptsState {
    pub db: Db,
    pub service: String,
    pub key_id: String,
    pub verifier: Arc<Verifier>,
}

impl FromRef<ReceiptsState> for Arc<Verifier> {
    fn from_ref(s: &ReceiptsState) -> Self {
        s.verifier.clone()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    from_log_index: Option<u64>,
    limit: Option<u32>,
}

/// The route table entries, for `/openapi.json`.
pub const ROUTES: [Route; 2] = [
    Route::built(
        "GET",
        "/v1/receipts",
        "This service's receipts in log order (JSON); page with from_log_index",
        None,
        Some("openagents.common.v1.ListReceiptsResponse"),
        Some(READ_SCOPE),
    ),
    Route::built(
        "GET",
        "/v1/receipts/keys",
        "This service's receipt signing keys (public)",
        None,
        Some("openagents.common.v1.ReceiptKeysResponse"),
        None,
    ),
];

pub fn router(state: ReceiptsState) -> Router {
    Router::new()
        .route("/v1/receipts", get(list))
        .route("/v1/receipts/keys", get(keys))
        .with_state(state)
}

async fn keys(State(s): State<ReceiptsState>) -> Json<common::ReceiptKeysResponse> {
    Json(common::ReceiptKeysResponse {
        keys: vec![common::ReceiptKey {
            service: s.service.clone(),
            key_id: s.key_id.clone(),
            algorithm: KEY_ALGORITHM.to_owned(),
        }],
    })
}

async fn list(
    State(s): State<ReceiptsState>,
    auth: Authenticated,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<common::ListReceiptsResponse>, ApiError> {
    auth.require_scope(READ_SCOPE)?;
    let Query(page) = page.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
    let from = page.from_log_index.unwrap_or(0);
    let limit = page
        .limit
        .unwrap_or(DEFAULT_PAGE)
        .clamp(1, receipt_log::MAX_PAGE);
    let mut conn = s.db.reader().await.map_err(ApiError::internal)?;
    let receipts = receipt_log::list(&mut conn, &s.service, from, limit)
        .await
        .map_err(ApiError::internal)?;
    let next = receipts.last().map_or(from, |r| r.log_index + 1);
    Ok(Json(common::ListReceiptsResponse {
        receipts: receipts.iter().map(to_proto).collect(),
        next_log_index: next,
    }))
}
