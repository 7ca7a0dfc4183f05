//! The HTTP clients treasury uses for Hydra and Aegis, against loopback servers that answer as
//! the contracts say: the right paths and audiences, answers decoded, refusals typed, an
//! unreachable peer a retryable `HYDRA_UNAVAILABLE` or an unavailable risk reading.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::Request, routing::any};
use http::StatusCode;
use oa_auth::TokenSource;
use oa_proto::{aegis, hydra};
use oa_testkit::DevKeyring;
use serde_json::{Value, json};
use treasury::{
    hydra_client::{HttpHydra, Hydra, SCOPES},
    risk::{HttpRisk, RiskError, RiskSource, RiskState, Subject},
};

type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// Serves `answer(method, path_and_query)` on a loopback port; records method, path and the
/// bearer token's audience.
async fn server(
    answer: impl Fn(&str, &str) -> (StatusCode, Value) + Clone + Send + Sync + 'static,
) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = Router::new().fallback(any(move |req: Request| {
        let (answer, seen) = (answer.clone(), s.clone());
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let token = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("")
                .to_owned();
            // The payload's audience, without verifying (the server is a stand-in).
            let aud = token
                .split('.')
                .nth(1)
                .and_then(|p| {
                    use base64::Engine;
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(p)
                        .ok()
                })
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v["aud"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let method = req.method().to_string();
            seen.lock()
                .unwrap()
                .push((method.clone(), path.clone(), aud));
            let (status, body) = answer(&method, &path);
            (status, Json(body))
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn tokens(audience: &str, scopes: &[&str]) -> (tempfile::TempDir, TokenSource) {
    let dir = tempfile::tempdir().unwrap();
    let ring = DevKeyring::ensure(dir.path()).unwrap();
    let t = TokenSource::new(
        ring.identity("treasury").unwrap(),
        audience,
        scopes.iter().copied(),
        Duration::from_secs(300),
    )
    .unwrap();
    (dir, t)
}

#[tokio::test]
async fn the_hydra_client_calls_each_route_of_the_contract_and_types_refusals() {
    let (url, seen) = server(|method, path| match (method, path) {
        ("POST", "/v1/liquidity/quote_pay") => (
            StatusCode::CONFLICT,
            json!({"error": {"code": "INSUFFICIENT_LIQUIDITY", "message": "no", "retryable": false}}),
        ),
        ("POST", "/v1/liquidity/pay") => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": {"code": "BREAKER_OPEN", "message": "halted", "retryable": true}}),
        ),
        ("GET", "/v1/liquidity/status") => (
            StatusCode::OK,
            json!({"executor_reachable": true, "local_balance_msat": "5000"}),
        ),
        ("POST", "/v1/routing/score") => (StatusCode::OK, json!({"decision_id": "rd1", "ranking": [{"rank": 1, "candidate_id": "credit_envelope", "rail": "envelope", "reachable": true}]})),
        ("POST", "/v1/credit/intent") => (StatusCode::OK, json!({"envelope": {"envelope_id": "e1", "state": "ENVELOPE_STATE_INTENT"}})),
        ("POST", "/v1/credit/offer") => (StatusCode::OK, json!({"envelope": {"envelope_id": "e1", "offer": {"offer_id": "o1", "fee_msat": "10"}}})),
        ("POST", "/v1/credit/envelope") => (StatusCode::OK, json!({"envelope": {"envelope_id": "e1", "state": "ENVELOPE_STATE_ISSUED"}})),
        ("POST", "/v1/credit/settle") => (
            StatusCode::CONFLICT,
            json!({"error": {"code": "VERIFICATION_PENDING", "message": "later", "retryable": true}}),
        ),
        _ => (StatusCode::NOT_FOUND, json!({"error": {"code": "NOT_FOUND", "message": path}})),
    })
    .await;
    let (_dir, tokens) = tokens("hydra", &SCOPES);
    let h = HttpHydra::new(&url, tokens).unwrap();

    let e = h
        .quote_pay(hydra::QuotePayRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.code.as_ref(), e.retryable, e.status),
        ("INSUFFICIENT_LIQUIDITY", false, StatusCode::CONFLICT)
    );
    let e = h.pay(hydra::PayRequest::default()).await.unwrap_err();
    assert_eq!(
        (e.code.as_ref(), e.retryable),
        ("HYDRA_UNAVAILABLE", true),
        "a 5xx is Hydra unavailable"
    );
    assert_eq!(
        h.liquidity_status().await.unwrap().local_balance_msat,
        5_000
    );
    let r = h
        .routing_score(hydra::RoutingScoreRequest::default())
        .await
        .unwrap();
    assert_eq!(r.ranking[0].candidate_id, "credit_envelope");
    assert_eq!(
        h.credit_intent(hydra::CreditIntentRequest::default())
            .await
            .unwrap()
            .envelope
            .unwrap()
            .envelope_id,
        "e1"
    );
    let offer = h
        .credit_offer(hydra::CreditOfferRequest::default())
        .await
        .unwrap();
    assert_eq!(offer.envelope.unwrap().offer.unwrap().fee_msat, 10);
    let issued = h
        .credit_envelope(hydra::CreditEnvelopeRequest::default())
        .await
        .unwrap();
    assert_eq!(
        issued.envelope.unwrap().state(),
        hydra::EnvelopeState::Issued
    );
    let e = h
        .credit_settle(hydra::CreditSettleRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.code.as_ref(), e.retryable),
        ("VERIFICATION_PENDING", true)
    );

    let seen = seen.lock().unwrap().clone();
    let paths: Vec<(&str, &str)> = seen
        .iter()
        .map(|(m, p, _)| (m.as_str(), p.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            ("POST", "/v1/liquidity/quote_pay"),
            ("POST", "/v1/liquidity/pay"),
            ("GET", "/v1/liquidity/status"),
            ("POST", "/v1/routing/score"),
            ("POST", "/v1/credit/intent"),
            ("POST", "/v1/credit/offer"),
            ("POST", "/v1/credit/envelope"),
            ("POST", "/v1/credit/settle"),
        ]
    );
    assert!(seen.iter().all(|(_, _, aud)| aud == "hydra"), "{seen:?}");

    // Nobody listening: retryable, typed.
    let (_dir, tokens) = self::tokens("hydra", &SCOPES);
    let port = oa_testkit::free_port().unwrap();
    let down = HttpHydra::new(&format!("http://127.0.0.1:{port}"), tokens).unwrap();
    let e = down.liquidity_status().await.unwrap_err();
    assert_eq!((e.code.as_ref(), e.retryable), ("HYDRA_UNAVAILABLE", true));
}

#[tokio::test]
async fn the_aegis_client_reads_risk_budget_status_and_maps_every_state() {
    let (url, seen) = server(|_, path| {
        let state = if path.contains("subject_id=calm") {
            "RISK_STATE_NORMAL"
        } else if path.contains("subject_id=hot") {
            "RISK_STATE_ELEVATED"
        } else if path.contains("subject_id=spent") {
            "RISK_STATE_EXHAUSTED"
        } else if path.contains("subject_id=free") {
            "RISK_STATE_UNBUDGETED"
        } else if path.contains("subject_id=gone") {
            return (StatusCode::NOT_FOUND, json!({"error": {"code": "NOT_FOUND", "message": "x"}}));
        } else {
            return (StatusCode::INTERNAL_SERVER_ERROR, json!({"error": {"code": "INTERNAL", "message": "x"}}));
        };
        (
            StatusCode::OK,
            json!({"status": {"subject_type": "RISK_SUBJECT_TYPE_AGENT", "state": state, "effective_cap_msat": "250"}}),
        )
    })
    .await;
    let (_dir, tokens) = tokens("aegis", &["aegis:read"]);
    let r = HttpRisk::new(&url, tokens).unwrap();
    for (id, state, cap) in [
        ("calm", RiskState::Normal, Some(250)),
        ("hot", RiskState::Elevated, Some(250)),
        ("spent", RiskState::Exhausted, Some(250)),
        ("free", RiskState::Unbudgeted, None),
        ("gone", RiskState::Unbudgeted, None),
    ] {
        let s = r.status(Subject::Agent, id).await.unwrap();
        assert_eq!(s.state, state, "{id}");
        assert_eq!(s.effective_cap.map(|m| m.as_u64()), cap, "{id}");
    }
    assert!(matches!(
        r.status(Subject::Org, "broken").await,
        Err(RiskError::Unavailable(_))
    ));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen[0],
        (
            "GET".to_owned(),
            "/v1/aegis/risk_budget/status?subject_type=agent&subject_id=calm".to_owned(),
            "aegis".to_owned()
        )
    );
    assert_eq!(
        seen.last().unwrap().1,
        "/v1/aegis/risk_budget/status?subject_type=org&subject_id=broken"
    );
    // The message it decodes is Aegis's contract.
    let _: aegis::RiskBudgetResponse = serde_json::from_value(
        json!({"status": {"state": "RISK_STATE_NORMAL", "effective_cap_msat": "1"}}),
    )
    .unwrap();
}
