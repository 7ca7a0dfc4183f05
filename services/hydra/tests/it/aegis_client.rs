//! The HTTP client for Aegis against a stand-in server that speaks the contract in
//! `proto/openagents/aegis/v1/aegis.proto` and checks Hydra's token like Aegis will.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::Path,
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderMap, StatusCode};
use hydra::aegis::{HttpAegis, Verifications};
use oa_auth::{TokenSource, TrustStore, Verifier};
use oa_proto::aegis;
use oa_testkit::DevKeyring;

use crate::fake::FakeAegis;

#[tokio::test]
async fn the_http_client_reads_verifications_by_the_contract_with_hydras_token() {
    let dir = tempfile::tempdir().unwrap();
    let ring = DevKeyring::ensure(dir.path()).unwrap();
    let verifier = Arc::new(Verifier::new(
        TrustStore::load(ring.trust_file()).unwrap(),
        "aegis",
        Duration::from_secs(30),
    ));
    let source = FakeAegis::new();
    source.decide("ver-1", "job", "passed");
    let answer = source.get("ver-1").await.unwrap().unwrap();
    let served = answer.clone();
    let app = Router::new().route(
        "/v1/aegis/verification/{id}",
        get(move |Path(id): Path<String>, headers: HeaderMap| {
            let (verifier, served) = (verifier.clone(), served.clone());
            async move {
                let authorized = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| verifier.verify_authorization(v).ok())
                    .is_some_and(|c| c.has_scope("aegis:read"));
                if !authorized {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                let r: Response = match id.as_str() {
                    "ver-1" => Json(served).into_response(),
                    "ver-boom" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    "ver-junk" => Json(serde_json::json!({"verification": 5})).into_response(),
                    _ => (
                        StatusCode::NOT_FOUND,
                        Json(serde_json::json!({"error": {"code": "VERIFICATION_NOT_FOUND", "message": "no"}})),
                    )
                        .into_response(),
                };
                r
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let tokens = TokenSource::new(
        ring.identity("hydra").unwrap(),
        "aegis",
        ["aegis:read"],
        Duration::from_secs(300),
    )
    .unwrap();
    let client = HttpAegis::new(&format!("http://{addr}"), tokens.clone()).unwrap();
    let got: Option<aegis::GetVerificationResponse> = client.get("ver-1").await.unwrap();
    assert_eq!(got, Some(answer));
    assert_eq!(client.get("ver-unknown").await.unwrap(), None);
    let err = client.get("ver-boom").await.unwrap_err();
    assert_eq!(
        (err.code.as_ref(), err.retryable),
        ("AEGIS_UNAVAILABLE", true)
    );
    let err = client.get("ver-junk").await.unwrap_err();
    assert_eq!(err.code, "AEGIS_BAD_ANSWER");
    // A token without the scope is refused by Aegis; Hydra reports it without retrying.
    let unscoped = TokenSource::new(
        ring.identity("hydra").unwrap(),
        "aegis",
        ["wallet:read"],
        Duration::from_secs(300),
    )
    .unwrap();
    let err = HttpAegis::new(&format!("http://{addr}"), unscoped)
        .unwrap()
        .get("ver-1")
        .await
        .unwrap_err();
    assert_eq!((err.code.as_ref(), err.retryable), ("AEGIS_REFUSED", false));
    // Nothing listening: unavailable, retryable.
    let port = oa_testkit::free_port().unwrap();
    let err = HttpAegis::new(&format!("http://127.0.0.1:{port}"), tokens)
        .unwrap()
        .get("ver-1")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code.as_ref(), err.retryable),
        ("AEGIS_UNAVAILABLE", true)
    );
}
