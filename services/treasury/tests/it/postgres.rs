//! The same SQL on PostgreSQL: policy replacement, budgets of every kind with a period, the
//! all-or-nothing refusal, approvals (approve, deny, expiry), a credit envelope settled, and a
//! window rollover, on a database of its own.

use http::StatusCode;
use oa_invoice::Network;
use oa_service::ManualClock;
use oa_store::testing::TestDb;
use serde_json::json;

use crate::harness::{HOUR, Opts, Treasury, invoice, ms, payment_id};

const POLICY: &str = r#"
[orgs]
acme = ["acme-*"]

[approvals]
above_msat = 50000
ttl_secs = 60

[[rules]]
id = "credit"
when = { purpose_prefix = "credit:" }
action = "pay"
rails = ["credit_envelope"]

[[rules]]
id = "default"
action = "pay"
rails = ["direct_liquidity"]
"#;

#[tokio::test]
async fn the_whole_flow_runs_on_postgres() {
    let Some(pg) = TestDb::postgres(&[&treasury::MIGRATIONS, &oa_ledger::MIGRATIONS])
        .await
        .unwrap()
    else {
        eprintln!("OA_TEST_POSTGRES_URL is not set: skipping the PostgreSQL flow");
        return;
    };
    let clock = ManualClock::new(ms("2025-06-01T21:00:00Z"));
    let t = Treasury::with(Opts {
        default_budget_msat: 0,
        database_url: Some(pg.url.clone()),
        clock: Some(clock.clone()),
        ..Opts::default()
    })
    .await;
    let (status, v) = t.set_policy("p", POLICY).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    t.set_budget("org", "acme", json!({"idempotency_key": "o", "limit_msat": "300000", "period": "daily", "time_zone": "Europe/Berlin"}))
        .await;
    t.set_budget(
        "agent",
        "acme-1",
        json!({"idempotency_key": "a", "limit_msat": "1000000"}),
    )
    .await;
    t.set_budget(
        "host",
        "api.example.com",
        json!({"idempotency_key": "h", "limit_msat": "20000", "period": "weekly"}),
    )
    .await;
    let pay = |key: &str, amount: u64, host: Option<&str>, purpose: &str| {
        let mut b = json!({"idempotency_key": key, "agent_id": "acme-1", "invoice": invoice(amount, Network::Regtest, HOUR), "max_fee_msat": "100", "purpose": purpose});
        if let Some(h) = host {
            b["host"] = h.into();
        }
        b
    };
    let (status, v) = t
        .pay_with(&pay("k1", 15_000, Some("api.example.com"), ""))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = t
        .pay_with(&pay("k2", 15_000, Some("api.example.com"), ""))
        .await;
    assert_eq!(
        (status, v["error"]["reason_code"].as_str()),
        (StatusCode::FORBIDDEN, Some("host_budget_exceeded"))
    );
    assert_eq!(
        t.budget_of("org", "acme", "daily").await["reserved_msat"],
        "0"
    );

    // Approvals: approve one, deny one, let one expire.
    let mut ids = Vec::new();
    for key in ["w1", "w2", "w3"] {
        let (status, v) = t.pay_with(&pay(key, 60_000, None, "")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        ids.push(payment_id(&v));
    }
    let approver = t.approver();
    let (status, v) = t
        .post(
            &format!("/v1/treasury/approvals/{}/approve", ids[0]),
            &approver,
            &json!({"idempotency_key": "a1"}),
        )
        .await;
    assert_eq!(
        (status, v["payment"]["state"].as_str()),
        (StatusCode::OK, Some("PAYMENT_STATE_SUCCEEDED")),
        "{v}"
    );
    let (status, v) = t
        .post(
            &format!("/v1/treasury/approvals/{}/deny", ids[1]),
            &approver,
            &json!({"idempotency_key": "d1"}),
        )
        .await;
    assert_eq!(
        (status, v["payment"]["state"].as_str()),
        (StatusCode::OK, Some("PAYMENT_STATE_DENIED")),
        "{v}"
    );
    clock.advance(60_000);
    assert_eq!(t.payments.sweep().await.unwrap(), 1);

    // A credit envelope, settled.
    let (status, v) = t.pay_with(&pay("c1", 10_000, None, "credit: report")).await;
    assert_eq!(
        (status, v["payment"]["stage"].as_str()),
        (StatusCode::ACCEPTED, Some("envelope_issued")),
        "{v}"
    );
    let (status, v) = t
        .post(
            &format!("/v1/treasury/payments/{}/settle", payment_id(&v)),
            &t.token.clone(),
            &json!({"idempotency_key": "s1", "verification_id": "ver-1", "verification_receipt_hash": format!("sha256:{}", "ab".repeat(32))}),
        )
        .await;
    assert_eq!(
        (status, v["payment"]["state"].as_str()),
        (StatusCode::CREATED, Some("PAYMENT_STATE_SUCCEEDED")),
        "{v}"
    );

    // 15 007 + 60 007 + 10 000 + 3 + 101 (1% credit fee of 10 100) spent today in Berlin.
    let org = t.budget_of("org", "acme", "daily").await;
    assert_eq!(
        (org["spent_msat"].as_str(), org["reserved_msat"].as_str()),
        (Some("85118"), Some("0"))
    );
    // Midnight in Berlin (22:00 UTC in summer): a new day for the org.
    clock.set(ms("2025-06-01T22:00:00Z"));
    let org = t.budget_of("org", "acme", "daily").await;
    assert_eq!(org["available_msat"], "300000");
    let (status, _) = t.pay_with(&pay("k3", 1_000, None, "")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        t.budget_of("org", "acme", "daily").await["spent_msat"],
        "1007"
    );
    t.ledger_conserved().await;
    drop(t);
    pg.cleanup().await.unwrap();
}
