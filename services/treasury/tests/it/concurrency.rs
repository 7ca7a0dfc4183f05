//! Two treasury processes (two apps sharing only a PostgreSQL database) take 64 concurrent
//! payments against one agent budget and one org's daily budget, right after the day turned:
//! spending never exceeds either, the new window is funded once, and every idempotency key pays
//! at most once, whichever process each request reaches.

use std::{collections::BTreeMap, time::Duration};

use http::StatusCode;
use oa_invoice::Network;
use oa_store::testing::TestDb;
use serde_json::{Value, json};

use oa_service::ManualClock;

use crate::{
    fake::FakeHydra,
    harness::{HOUR, Opts, Treasury, invoice, ms},
};

async fn send(router: axum::Router, token: String, body: Value) -> (StatusCode, Value) {
    let req = http::Request::builder()
        .method("POST")
        .uri("/v1/treasury/payments")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(router, req).await.unwrap();
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_never_overspend_one_budget_and_pay_each_key_once_on_postgres() {
    let Some(pg) = TestDb::postgres(&[&treasury::MIGRATIONS, &oa_ledger::MIGRATIONS])
        .await
        .unwrap()
    else {
        eprintln!("OA_TEST_POSTGRES_URL is not set: skipping the two-process PostgreSQL test");
        return;
    };
    let hydra = FakeHydra::new();
    let ring = tempfile::tempdir().unwrap();
    // Both processes read one clock, so they cross the day boundary together.
    let clock = ManualClock::new(ms("2025-06-01T12:00:00Z"));
    let opts = Opts {
        default_budget_msat: 0,
        database_url: Some(pg.url.clone()),
        hydra: Some(hydra.clone()),
        ring_dir: Some(ring.path().into()),
        clock: Some(clock.clone()),
        policy: Some(
            "[orgs]\nacme = [\"agent-*\"]\n[[rules]]\nid = \"default\"\naction = \"pay\"\nrails = [\"direct_liquidity\"]".into(),
        ),
        ..Opts::default()
    };
    let a = Treasury::with(opts.clone()).await;
    let b = Treasury::with(opts).await;
    let (status, _) = a
        .call(
            "PUT",
            "/v1/treasury/budgets/agent-1",
            Some(&a.token.clone()),
            Some(&json!({"idempotency_key": "b", "limit_msat": "100000"}).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = a
        .call(
            "PUT",
            "/v1/treasury/budgets/org/acme",
            Some(&a.token.clone()),
            Some(
                &json!({"idempotency_key": "o", "limit_msat": "60000", "period": "daily"})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The next day: both processes race to open (and fund) the org's new window.
    clock.set(ms("2025-06-02T00:00:00Z"));

    // 32 keys, each sent to both processes at once: 64 concurrent requests. Each reserves
    // 9 000 + 100 in the agent's budget (100 000) and the org's daily one (60 000).
    let mut tasks = Vec::new();
    for i in 0..32 {
        let body = json!({"idempotency_key": format!("k{i}"), "agent_id": "agent-1", "invoice": invoice(9_000, Network::Regtest, HOUR), "max_fee_msat": "100"});
        for t in [&a, &b] {
            let (router, token, body) = (t.router.clone(), t.token.clone(), body.clone());
            tasks.push(tokio::spawn(
                async move { (i, send(router, token, body).await) },
            ));
        }
    }
    let mut by_key: BTreeMap<u32, Vec<(StatusCode, Value)>> = BTreeMap::new();
    for task in tasks {
        let (i, answer) = task.await.unwrap();
        by_key.entry(i).or_default().push(answer);
    }
    let mut paid_keys: u64 = 0;
    for (i, answers) in &by_key {
        for (status, body) in answers {
            assert!(
                [
                    StatusCode::CREATED,
                    StatusCode::ACCEPTED,
                    StatusCode::FORBIDDEN
                ]
                .contains(status),
                "k{i}: {status} {body}"
            );
        }
        // Both processes answer about the same attempt.
        let ids: Vec<&str> = answers
            .iter()
            .filter_map(|(_, v)| {
                v["payment"]["payment_id"]
                    .as_str()
                    .or(v["error"]["details"]["payment_id"].as_str())
            })
            .collect();
        assert_eq!(ids.len(), 2, "k{i}: {answers:?}");
        assert_eq!(ids[0], ids[1], "k{i}: one attempt per key");
        if answers.iter().any(|(s, _)| *s != StatusCode::FORBIDDEN) {
            paid_keys += 1;
        }
    }
    // Everything in flight ends (a duplicate may have answered 202 while the other process paid).
    let settled = oa_testkit::wait_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let b = a.budget("agent-1").await;
            (b["reserved_msat"] == "0").then_some(b)
        },
    )
    .await
    .expect("every reservation ends");
    let spent: u64 = settled["spent_msat"].as_str().unwrap().parse().unwrap();
    let org = a.budget_of("org", "acme", "daily").await;
    let org_spent: u64 = org["spent_msat"].as_str().unwrap().parse().unwrap();
    assert_eq!(org["reserved_msat"], "0");
    assert!(org_spent <= 60_000, "never past the org's day: {org_spent}");
    // Six reservations of 9 100 fit in 60 000; settled to 9 007 each, a seventh still does not.
    assert_eq!(paid_keys, 6, "exactly what fits");
    assert_eq!((spent, org_spent), (6 * 9_007, 6 * 9_007));
    // The new window was funded once, whoever opened it.
    let funded: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM ledger_transfers WHERE id = 'fund:org-budget:acme@d2025-06-02'",
    )
    .fetch_one(a.db.pool())
    .await
    .unwrap();
    assert_eq!(funded, 1);
    assert_eq!(u64::from(hydra.pays()), paid_keys);
    assert_eq!(hydra.max_pays_per_hash(), 1, "every key paid at most once");
    assert_eq!(a.count("treasury_payments").await, 32);
    assert_eq!(a.count("receipts").await, 32, "one receipt per attempt");
    a.ledger_conserved().await;
    // The receipt log both processes appended to is one valid chain.
    let (status, export) = a
        .call(
            "GET",
            "/v1/receipts?from_log_index=0&limit=1000",
            Some(
                &a.ring
                    .operator_token("treasury", &["receipts:read"], Duration::from_secs(60))
                    .unwrap(),
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{export}");
    {
        let receipts: Vec<oa_receipts::Receipt> = export["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| serde_json::from_value(r.clone()).unwrap())
            .collect();
        for (i, r) in receipts.iter().enumerate() {
            r.verify().unwrap();
            assert_eq!(r.log_index, i as u64);
            assert_eq!(r.schema, "oa.treasury.payment_attempt_receipt.v1");
            if i > 0 {
                assert_eq!(r.prev_hash, receipts[i - 1].hash);
            }
        }
    }
    drop((a, b));
    pg.cleanup().await.unwrap();
}
