//! Checkpoints and proofs through `Base`: the background checkpointer signs the log's Merkle
//! root, the history is public, proofs are scoped and verify, bad parameters are typed 400s.

use std::time::Duration;

use axum::{Router, body::Body};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use oa_receipts::{Checkpoint, ReceiptDraft, merkle};
use oa_service::{Base, CommonArgs, audit};
use oa_store::receipt_log::ReceiptLog;
use oa_testkit::DevKeyring;
use tower::ServiceExt;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

pub struct Kit {
    pub base: Base,
    pub router: Router,
    pub ring: DevKeyring,
    _dir: tempfile::TempDir,
}

/// A `Base` for `hydra` on a fresh SQLite file, with its full router.
pub async fn kit(extra: &[&str]) -> Kit {
    let dir = tempfile::tempdir().unwrap();
    let ring = DevKeyring::ensure(dir.path()).unwrap();
    let db = format!("sqlite://{}", dir.path().join("h.db").display());
    let key = ring.receipt_key_file("hydra");
    let trust = ring.trust_file();
    let mut argv = vec![
        "t".to_owned(),
        "--listen=127.0.0.1:0".to_owned(),
        format!("--database-url={db}"),
        format!("--receipt-key-file={}", key.display()),
        format!("--trust-file={}", trust.display()),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    let args = Args::try_parse_from(argv).unwrap();
    let base = Base::open("hydra", &args.common, &[]).await.unwrap();
    let router = base.router(Router::new(), &[], None);
    Kit {
        base,
        router,
        ring,
        _dir: dir,
    }
}

pub async fn get(
    router: &Router,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

fn d(s: &serde_json::Value) -> merkle::Digest {
    let b = B64.decode(s.as_str().unwrap()).unwrap();
    merkle::Digest::try_from(b.as_slice()).unwrap()
}

fn ds(v: &serde_json::Value) -> Vec<merkle::Digest> {
    v.as_array().unwrap().iter().map(d).collect()
}

#[tokio::test]
async fn checkpoints_are_signed_in_the_background_and_proofs_verify_against_them() {
    let kit = kit(&["--checkpoint-every=1", "--checkpoint-interval-ms=600000"]).await;
    let log = ReceiptLog::new("hydra", kit.base.keys.receipt_key.clone());
    let mut receipts = Vec::new();
    for i in 0..6 {
        let mut tx = kit.base.db.begin().await.unwrap();
        let draft = ReceiptDraft {
            schema: "oa.hydra.thing_receipt.v1".into(),
            receipt_id: format!("r{i}"),
            idempotency_key: format!("k{i}"),
            links: vec![],
            body: serde_json::Map::new(),
        };
        receipts.push(log.append(&mut tx, draft, 5).await.unwrap());
        tx.commit().await.unwrap();
    }
    // With every=1 the background task checkpoints whatever is new each time it looks, so a
    // checkpoint at 6 follows; the history is public.
    let cps = oa_testkit::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let router = kit.router.clone();
        async move {
            let (status, v) = get(&router, "/v1/receipts/checkpoints", None).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            let cps: audit::CheckpointsResponse = serde_json::from_value(v).unwrap();
            cps.checkpoints
                .last()
                .is_some_and(|c| c.tree_size == 6)
                .then_some(cps)
        }
    })
    .await
    .expect("a checkpoint of 6 receipts");
    let cp = cps.checkpoints.last().unwrap();
    let key_id = kit.base.keys.receipt_key.key_id();
    let checked = Checkpoint::verify(&cp.note, "hydra", key_id).unwrap();
    assert_eq!(checked.root, *cp.root_hash.as_bytes());

    let token = kit
        .ring
        .operator_token("hydra", &["receipts:read"], Duration::from_secs(60))
        .unwrap();
    let path = format!(
        "/v1/receipts/proofs/inclusion?hash={}&tree_size=6",
        receipts[4].hash
    );
    let (status, _) = get(&kit.router, &path, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, p) = get(&kit.router, &path, Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(
        (p["leafIdx"].as_u64(), p["treeSize"].as_u64()),
        (Some(4), Some(6))
    );
    assert_eq!(d(&p["root"]), checked.root);
    merkle::verify_inclusion(
        4,
        6,
        &merkle::leaf_hash(receipts[4].hash.as_bytes()),
        &ds(&p["proof"]),
        &checked.root,
    )
    .unwrap();

    let (status, c) = get(
        &kit.router,
        "/v1/receipts/proofs/consistency?first=3&second=6",
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    let leaves: Vec<_> = receipts
        .iter()
        .map(|r| merkle::leaf_hash(r.hash.as_bytes()))
        .collect();
    assert_eq!(d(&c["root1"]), merkle::root(&leaves[..3]));
    merkle::verify_consistency(3, 6, &ds(&c["proof"]), &d(&c["root1"]), &checked.root).unwrap();

    for (path, code) in [
        (
            "/v1/receipts/proofs/inclusion?hash=nope&tree_size=7",
            "INVALID_HASH",
        ),
        ("/v1/receipts/proofs/inclusion?tree_size=7", "INVALID_QUERY"),
        (
            &*format!(
                "/v1/receipts/proofs/inclusion?hash={}&tree_size=4",
                receipts[4].hash
            ),
            "INVALID_TREE_SIZE",
        ),
        (
            &*format!(
                "/v1/receipts/proofs/inclusion?hash={}&tree_size=8",
                receipts[4].hash
            ),
            "INVALID_TREE_SIZE",
        ),
        (
            &*format!(
                "/v1/receipts/proofs/inclusion?hash={}&tree_size=-1",
                receipts[4].hash
            ),
            "INVALID_QUERY",
        ),
        (
            "/v1/receipts/proofs/consistency?first=5&second=3",
            "INVALID_TREE_SIZE",
        ),
        (
            "/v1/receipts/proofs/consistency?first=1&second=99",
            "INVALID_TREE_SIZE",
        ),
        (
            "/v1/receipts/proofs/consistency?first=x&second=3",
            "INVALID_QUERY",
        ),
        (
            "/v1/receipts/proofs/consistency?first=1&second=3&extra=1",
            "INVALID_QUERY",
        ),
        ("/v1/receipts/checkpoints?after_size=x", "INVALID_QUERY"),
    ] {
        let (status, v) = get(&kit.router, path, Some(&token)).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{path}: {v}"
        );
    }
    let missing = format!(
        "/v1/receipts/proofs/inclusion?hash={}&tree_size=7",
        oa_receipts::Hash::of(b"none")
    );
    let (status, v) = get(&kit.router, &missing, Some(&token)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("RECEIPT_NOT_FOUND"))
    );

    // The triggers, on a log the background task does not watch (it only checkpoints its own
    // service's log), so nothing races the assertions.
    let other = ReceiptLog::new("other", kit.base.keys.receipt_key.clone());
    let policy = audit::CheckpointPolicy {
        every: 3,
        interval: Duration::from_secs(60),
    };
    let append = |i: usize| {
        let (db, other) = (kit.base.db.clone(), other.clone());
        async move {
            let mut tx = db.begin().await.unwrap();
            let draft = ReceiptDraft {
                schema: "oa.other.thing_receipt.v1".into(),
                receipt_id: format!("o{i}"),
                idempotency_key: format!("o{i}"),
                links: vec![],
                body: serde_json::Map::new(),
            };
            other.append(&mut tx, draft, 5).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    let due = |since: Duration| audit::checkpoint_if_due(&kit.base.db, &other, &policy, since);
    // Time: one new receipt is checkpointed only once the interval has passed.
    append(0).await;
    assert!(due(Duration::from_secs(1)).await.unwrap().is_none());
    let cp = due(Duration::from_secs(61))
        .await
        .unwrap()
        .expect("interval passed");
    assert_eq!(cp.tree_size, 1);
    // Count: two new receipts are not enough, three are, at once.
    append(1).await;
    append(2).await;
    assert!(due(Duration::ZERO).await.unwrap().is_none());
    append(3).await;
    let cp = due(Duration::ZERO)
        .await
        .unwrap()
        .expect("three new receipts");
    assert_eq!(cp.tree_size, 4);
    assert!(
        due(Duration::from_secs(61)).await.unwrap().is_none(),
        "nothing new"
    );

    // The export route: pages concatenated from 0 are a verifiable export.
    let mut text = Vec::new();
    let mut from = 0u64;
    loop {
        let req = Request::get(format!("/v1/receipts/export?from_log_index={from}&limit=4"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let resp = kit.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let next: u64 = resp.headers()[audit::NEXT_LOG_INDEX_HEADER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        text.extend_from_slice(&bytes);
        if next == from {
            break;
        }
        from = next;
    }
    let report = oa_receipts::verify_export(text.as_slice());
    assert!(report.is_ok(), "{report}");
    let hydra = report
        .issuers
        .iter()
        .find(|i| i.issuer.service == "hydra")
        .unwrap();
    assert_eq!(hydra.receipts, 6);
    assert!(
        hydra.checkpoints >= 1 && hydra.checkpointed_size == 6,
        "{report}"
    );
}
