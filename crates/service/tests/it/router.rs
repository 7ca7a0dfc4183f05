use std::{sync::Arc, time::Duration};

use axum::{Json, Router, body::Body, routing::post};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use oa_proto::treasury::SetBudgetRequest;
use oa_service::{ProtoJson, Route, ServiceRouter, metrics::Metrics};
use tower::ServiceExt;

async fn echo(ProtoJson(req): ProtoJson<SetBudgetRequest>) -> Json<SetBudgetRequest> {
    Json(req)
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(5)).await;
    "late"
}

fn app() -> Router {
    let api = Router::new()
        .route("/echo", post(echo))
        .route("/slow", post(slow));
    ServiceRouter::new("test", api, Arc::new(Metrics::new()))
        .routes(&[Route::not_supported("POST", "/v1/later", "not yet")])
        .body_limit(1024)
        .timeout(Duration::from_millis(100))
        .build()
}

async fn send(req: Request<Body>) -> (StatusCode, http::HeaderMap, serde_json::Value, String) {
    let resp = app().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap_or_default(),
        text,
    )
}

fn json_post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_the_callers() {
    let (_, headers, _, _) = send(Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert!(!headers["x-request-id"].is_empty());
    let req = Request::get("/healthz")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _, _) = send(req).await;
    assert_eq!(headers["x-request-id"], "abc-123");
}

#[tokio::test]
async fn bodies_are_strict_proto_json_with_typed_errors() {
    let (status, _, v, _) = send(json_post(
        "/echo",
        r#"{"idempotency_key":"k","limit_msat":"5"}"#,
    ))
    .await;
    assert_eq!(
        (status, v["limit_msat"].as_str()),
        (StatusCode::OK, Some("5"))
    );
    let cases = [
        (
            r#"{"limit_msat":"5","extra":true}"#,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            r#"{"limit_msat":"-5"}"#,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            r#"{"limit_msat":"#,
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
        ),
    ];
    for (body, want, code) in cases {
        let (status, _, v, _) = send(json_post("/echo", body)).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (want, Some(code)),
            "{body}"
        );
    }
    let req = Request::post("/echo")
        .header("content-type", "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    let (status, _, v, _) = send(req).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("UNSUPPORTED_MEDIA_TYPE")
        )
    );
    let big = format!(r#"{{"idempotency_key":"{}"}}"#, "k".repeat(2048));
    let (status, _, v, _) = send(json_post("/echo", big)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("PAYLOAD_TOO_LARGE"))
    );
}

#[tokio::test]
async fn slow_handlers_time_out_with_a_retryable_error() {
    let (status, _, v, _) = send(json_post("/slow", "{}")).await;
    assert_eq!(
        (
            status,
            v["error"]["code"].as_str(),
            v["error"]["retryable"].as_bool()
        ),
        (StatusCode::SERVICE_UNAVAILABLE, Some("TIMEOUT"), Some(true))
    );
}

#[tokio::test]
async fn unknown_routes_methods_and_unbuilt_routes_are_typed() {
    let (status, _, v, _) = send(Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
    let (status, _, v, _) = send(Request::get("/echo").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("METHOD_NOT_ALLOWED"))
    );
    let (status, _, v, _) = send(json_post("/v1/later", "{}")).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::NOT_IMPLEMENTED, Some("NOT_SUPPORTED"))
    );
}

#[tokio::test]
async fn metrics_stats_and_openapi_are_served() {
    let router = app();
    let req = || json_post("/echo", r#"{"limit_msat":"1"}"#);
    router.clone().oneshot(req()).await.unwrap();
    let metrics = router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(
        metrics
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("oa_http_requests_total{route=\"/echo\",method=\"POST\",status=\"200\"} 1"),
        "{text}"
    );
    let stats = router
        .clone()
        .oneshot(Request::get("/stats").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&stats.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["service"], "test");
    assert_eq!(v["http"]["requests_total"], 2);
    assert_eq!(v["cache_ttl_s"], 60);
    // Cached: a second read within the TTL returns the same snapshot.
    router.clone().oneshot(req()).await.unwrap();
    let again = router
        .clone()
        .oneshot(Request::get("/stats").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let w: serde_json::Value =
        serde_json::from_slice(&again.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(w["http"], v["http"]);
    let (status, _, doc, _) =
        send(Request::get("/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, doc["openapi"].as_str()),
        (StatusCode::OK, Some("3.0.3"))
    );
    assert!(doc["paths"]["/v1/later"]["post"]["responses"]["501"].is_object());
}

#[tokio::test]
async fn receipts_survive_the_proto_round_trip_with_their_hash() {
    let key = oa_receipts::ReceiptKey::generate();
    let mut body = serde_json::Map::new();
    body.insert("payment_hash".into(), "ab".repeat(32).into());
    body.insert(
        "nested".into(),
        serde_json::json!({"list": ["a", true, {"x": "1"}], "flag": false}),
    );
    let r = oa_receipts::ReceiptDraft {
        schema: "oa.test.thing.v1".into(),
        receipt_id: "r1".into(),
        idempotency_key: "k".into(),
        links: vec![oa_receipts::Hash::of(b"x")],
        body,
    }
    .seal(&key, "test", 0, oa_receipts::Hash::ZERO, 1)
    .unwrap();
    let proto = oa_service::receipts::to_proto(&r);
    // Through the binary encoding too, as over gRPC.
    let bytes = prost::Message::encode_to_vec(&proto);
    let decoded: oa_proto::common::Receipt = prost::Message::decode(bytes.as_slice()).unwrap();
    let back = oa_service::receipts::from_proto(&decoded).unwrap();
    assert_eq!(back, r);
    back.verify().unwrap();
}
