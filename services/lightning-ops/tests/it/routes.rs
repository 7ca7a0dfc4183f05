//! The routes' contract: scopes, typed 4xx for bad input, and nothing changed by a refusal.

use lightning_ops::plan::{Fees, Observed};
use oa_service::ManualClock;

use crate::{
    fake::{Fake, scid},
    harness::*,
};

const POLICY: &str = r#"version = 1
[fees.default]
strategy = "fixed"
base_fee_msat = 2000
fee_ppm = 250
min_htlc_msat = 1000
max_htlc_msat = 50000000
time_lock_delta = 40
"#;

fn one_channel() -> Vec<Observed> {
    vec![Observed {
        chan_id: scid(1, 1, 0),
        remote_pubkey: format!("02{}", "a".repeat(64)),
        local_balance_msat: 500_000,
        remote_balance_msat: 500_000,
        active: true,
        local_policy: Fees {
            base_fee_msat: 1_000,
            fee_rate_ppm: 1,
            min_htlc_msat: 1_000,
            max_htlc_msat: 50_000_000,
            time_lock_delta: 40,
            ..Fees::default()
        },
    }]
}

async fn assert_nothing_changed(app: &lightning_ops::App, fake: &Fake) {
    assert!(fake.with(|s| s.calls.is_empty()), "no policy call");
    for table in [
        "ops_actions",
        "ops_deferred",
        "ops_forwards",
        "ops_channels",
        "idempotency_keys",
        "receipts",
    ] {
        assert_eq!(count(&app.db, table).await, 0, "{table}");
    }
}

#[tokio::test]
async fn bad_input_gets_a_typed_4xx_and_changes_nothing() {
    let folder = Folder::new();
    let policy = folder.write("policy.toml", POLICY);
    let fake = Fake::new(one_channel());
    let clock = ManualClock::new(T0);
    let app = folder
        .ops(
            &[flag("policy-file", policy.display())],
            &clock,
            Some(fake.dyn_channels()),
        )
        .await;
    let applier = folder.token(&["ops:apply"]);
    let reader = folder.token(&["ops:read"]);
    let cases: [(&str, &str, u16, &str); 7] = [
        ("{", "application/json", 400, "MALFORMED_JSON"),
        (
            r#"{"idempotency_key":"k","force":true}"#,
            "application/json",
            400,
            "INVALID_REQUEST",
        ),
        (
            r#"{"idempotency_key":"k","dry_run":"yes"}"#,
            "application/json",
            400,
            "INVALID_REQUEST",
        ),
        ("{}", "application/json", 400, "INVALID_IDEMPOTENCY_KEY"),
        (
            r#"{"idempotency_key":"has space"}"#,
            "application/json",
            400,
            "INVALID_IDEMPOTENCY_KEY",
        ),
        (
            r#"{"idempotency_key":"k","dry_run":true,"x":1}"#,
            "application/json",
            400,
            "INVALID_REQUEST",
        ),
        (
            r#"{"idempotency_key":"k"}"#,
            "text/plain",
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
    ];
    for (body, content_type, status, code) in cases {
        let req = http::Request::post("/v1/ops/apply")
            .header("authorization", format!("Bearer {applier}"))
            .header("content-type", content_type)
            .body(axum::body::Body::from(body))
            .unwrap();
        let resp = tower::ServiceExt::oneshot(app.router.clone(), req)
            .await
            .unwrap();
        let got = resp.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            (got, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {v}"
        );
    }
    for query in [
        "from_ms=abc",
        "from_ms=-1",
        "from_ms=10&to_ms=5",
        "from_ms=5&to_ms=5",
        "window=30d",
        "to_ms=99999999999999999999",
    ] {
        for route in ["report", "channels"] {
            let (status, v) = call(
                &app.router,
                "GET",
                &format!("/v1/ops/{route}?{query}"),
                Some(&reader),
                None,
            )
            .await;
            assert_eq!(
                (status.as_u16(), v["error"]["code"].as_str()),
                (400, Some("INVALID_REQUEST")),
                "{route}?{query}: {v}"
            );
        }
    }
    assert_eq!(
        fake.with(|s| s.list_calls),
        0,
        "refused before asking the node"
    );
    assert_nothing_changed(&app, &fake).await;
}

#[tokio::test]
async fn apply_needs_the_apply_scope_and_reads_need_the_read_scope() {
    let folder = Folder::new();
    let policy = folder.write("policy.toml", POLICY);
    let fake = Fake::new(one_channel());
    let clock = ManualClock::new(T0);
    let app = folder
        .ops(
            &[flag("policy-file", policy.display())],
            &clock,
            Some(fake.dyn_channels()),
        )
        .await;
    let body = Some(r#"{"idempotency_key":"k1"}"#);
    let reader = folder.token(&["ops:read"]);
    let applier = folder.token(&["ops:apply"]);
    let (status, _) = call(&app.router, "POST", "/v1/ops/apply", None, body).await;
    assert_eq!(status, 401);
    let (status, _) = call(&app.router, "POST", "/v1/ops/apply", Some(&reader), body).await;
    assert_eq!(status, 403);
    // A bad body from a caller without the scope is still a 403: the scope is checked first.
    let (status, _) = call(
        &app.router,
        "POST",
        "/v1/ops/apply",
        Some(&reader),
        Some("{"),
    )
    .await;
    assert_eq!(status, 403);
    for path in ["/v1/ops/report", "/v1/ops/channels"] {
        let (status, _) = call(&app.router, "GET", path, None, None).await;
        assert_eq!(status, 401, "{path}");
        let (status, _) = call(&app.router, "GET", path, Some(&applier), None).await;
        assert_eq!(status, 403, "{path}: ops:apply alone does not read");
    }
    assert_nothing_changed(&app, &fake).await;
    // With the scope it works.
    let (status, v) = call(&app.router, "POST", "/v1/ops/apply", Some(&applier), body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["status"], "applied");
}

#[tokio::test]
async fn apply_without_a_policy_or_an_executor_is_not_configured_and_changes_nothing() {
    let folder = Folder::new();
    let fake = Fake::new(one_channel());
    let clock = ManualClock::new(T0);
    let app = folder.ops(&[], &clock, Some(fake.dyn_channels())).await;
    let applier = folder.token(&["ops:apply"]);
    for body in [r#"{"idempotency_key":"k1"}"#, r#"{"dry_run":true}"#] {
        let (status, v) = call(
            &app.router,
            "POST",
            "/v1/ops/apply",
            Some(&applier),
            Some(body),
        )
        .await;
        assert_eq!(
            (status.as_u16(), v["error"]["code"].as_str()),
            (404, Some("NOT_CONFIGURED")),
            "{v}"
        );
    }
    assert_nothing_changed(&app, &fake).await;
    // Without an executor, the report still answers from what is stored, and says so.
    let bare = Folder::new();
    let app = bare.ops(&[], &clock, None).await;
    let (status, v) = call(
        &app.router,
        "GET",
        "/v1/ops/report",
        Some(&bare.token(&["ops:read"])),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["sync_error"].as_str().unwrap().contains("--executor-url"),
        "{v}"
    );
    assert_eq!(v["channels"], serde_json::json!([]));
}

#[tokio::test]
async fn the_route_table_lists_every_ops_route_as_built_with_its_scope() {
    let built: Vec<(&str, &str, Option<&str>)> = lightning_ops::ROUTES
        .iter()
        .map(|r| (r.method, r.path, r.scope))
        .collect();
    assert_eq!(
        built,
        [
            ("GET", "/v1/ops/aperture/config", Some("ops:read")),
            ("POST", "/v1/ops/plan", Some("ops:read")),
            ("POST", "/v1/ops/apply", Some("ops:apply")),
            ("GET", "/v1/ops/channels", Some("ops:read")),
            ("GET", "/v1/ops/report", Some("ops:read")),
        ]
    );
    assert!(
        lightning_ops::ROUTES
            .iter()
            .all(|r| r.status == oa_service::RouteStatus::Built)
    );
    // The OpenAPI document names every route with its messages.
    let folder = Folder::new();
    let app = folder.ops(&[], &ManualClock::new(T0), None).await;
    let (status, v) = call(&app.router, "GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let doc = v.to_string();
    for name in [
        "/v1/ops/apply",
        "/v1/ops/report",
        "/v1/ops/channels",
        "ApplyRequest",
        "ReportResponse",
    ] {
        assert!(doc.contains(name), "{name} missing from /openapi.json");
    }
}
