use std::time::Duration;

use axum::body::Body;
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use lightning_ops::{aperture, policy};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

const EXAMPLE: &str = include_str!("../../policy.example.toml");
const GOLDEN: &str = include_str!("../../testdata/aperture.golden.yaml");

fn example_gateway() -> policy::Aperture {
    policy::parse(EXAMPLE).unwrap().aperture.unwrap()
}

#[test]
fn the_example_compiles_to_the_golden_aperture_config() {
    let compiled = aperture::compile(&example_gateway()).unwrap();
    assert_eq!(compiled.config_yaml, GOLDEN);
    // The hash is SHA-256 of exactly those bytes, computed here independently.
    assert_eq!(
        compiled.config_hash,
        format!("sha256:{}", hex::encode(Sha256::digest(GOLDEN.as_bytes())))
    );
    // Route order in the policy does not matter.
    let mut reordered = example_gateway();
    reordered.routes.reverse();
    assert_eq!(aperture::compile(&reordered).unwrap(), compiled);
}

fn route(name: &str, host: &str, path: &str, upstream: &str, price: i64) -> policy::PaywalledRoute {
    policy::PaywalledRoute {
        name: name.into(),
        host: host.into(),
        path: path.into(),
        upstream: upstream.into(),
        protocol: None,
        price_sat: price,
    }
}

#[test]
fn every_invalid_route_gets_a_clear_coded_error() {
    let ok = route("a", "api.example.com", "/a/", "http://127.0.0.1:9000", 1);
    let mut mismatch = route("m", "api.example.com", "/m/", "http://127.0.0.1:9000", 1);
    mismatch.protocol = Some("https".into());
    let cases: Vec<(policy::PaywalledRoute, &str)> = vec![
        (
            route("b", "api.example.com", "/a/", "http://127.0.0.1:9001", 1),
            "DUPLICATE_ROUTE",
        ),
        (
            route("a", "other.example.com", "/x/", "http://127.0.0.1:9000", 1),
            "DUPLICATE_NAME",
        ),
        (
            route("z", "api.example.com", "/z/", "http://127.0.0.1:9000", 0),
            "NON_POSITIVE_PRICE",
        ),
        (
            route("n", "api.example.com", "/n/", "http://127.0.0.1:9000", -5),
            "NON_POSITIVE_PRICE",
        ),
        (mismatch, "UPSTREAM_SCHEME_MISMATCH"),
        (
            route("u", "api.example.com", "/u/", "ftp://127.0.0.1:21", 1),
            "INVALID_UPSTREAM",
        ),
        (
            route("v", "api.example.com", "/v/", "http://127.0.0.1", 1),
            "INVALID_UPSTREAM",
        ),
        (
            route(
                "w",
                "api.example.com",
                "/w/",
                "http://127.0.0.1:9000/path",
                1,
            ),
            "INVALID_UPSTREAM",
        ),
        (
            route("h", "API.example.com", "/h/", "http://127.0.0.1:9000", 1),
            "INVALID_HOST",
        ),
        (
            route(
                "p",
                "api.example.com",
                "no-slash",
                "http://127.0.0.1:9000",
                1,
            ),
            "INVALID_PATH",
        ),
        (
            route(
                "bad name",
                "api.example.com",
                "/q/",
                "http://127.0.0.1:9000",
                1,
            ),
            "INVALID_NAME",
        ),
    ];
    for (bad, code) in cases {
        let gateway = policy::Aperture {
            listen: "127.0.0.1:8700".into(),
            network: "regtest".into(),
            routes: vec![ok.clone(), bad.clone()],
        };
        let problems = aperture::compile(&gateway).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.code == code && p.at == "aperture.routes[1]"),
            "{code}: {problems:?}"
        );
        assert!(
            !problems.iter().any(|p| p.at == "aperture.routes[0]"),
            "the valid route is not blamed: {problems:?}"
        );
    }
    let gateway = policy::Aperture {
        listen: "nowhere".into(),
        network: "moon".into(),
        routes: vec![],
    };
    let codes: Vec<&str> = aperture::compile(&gateway)
        .unwrap_err()
        .iter()
        .map(|p| p.code)
        .collect();
    assert_eq!(codes, ["INVALID_LISTEN", "INVALID_NETWORK"]);
}

#[tokio::test]
async fn the_service_serves_the_compiled_config_to_readers_only() {
    let dir = tempfile::tempdir().unwrap();
    let ring = oa_testkit::DevKeyring::ensure(dir.path()).unwrap();
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, EXAMPLE).unwrap();
    let args = |policy: &std::path::Path| {
        lightning_ops::Config::parse_from([
            "lightning-ops".to_owned(),
            "--listen=127.0.0.1:0".into(),
            format!(
                "--database-url=sqlite://{}",
                dir.path().join("ops.db").display()
            ),
            format!(
                "--receipt-key-file={}",
                ring.receipt_key_file("lightning-ops").display()
            ),
            format!("--trust-file={}", ring.trust_file().display()),
            format!("--policy-file={}", policy.display()),
        ])
    };
    let router = lightning_ops::build(&args(&policy_file))
        .await
        .unwrap()
        .router;
    let get = |token: Option<String>| {
        let mut req = Request::get("/v1/ops/aperture/config");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        router.clone().oneshot(req.body(Body::empty()).unwrap())
    };
    let reader = ring
        .operator_token("lightning-ops", &["ops:read"], Duration::from_secs(60))
        .unwrap();
    let resp = get(Some(reader)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["config_yaml"], GOLDEN);
    assert!(v["config_hash"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(get(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let other = ring
        .operator_token("lightning-ops", &["receipts:read"], Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        get(Some(other)).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    // An invalid policy refuses to start, naming the problems.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, EXAMPLE.replace("price_sat = 10", "price_sat = 0")).unwrap();
    let err = lightning_ops::build(&args(&bad))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("NON_POSITIVE_PRICE"), "{err}");
}
