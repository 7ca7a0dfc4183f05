//! Rails: Hydra's routing score picks direct liquidity or a credit envelope; fallback passes a
//! refused rail to the next; an envelope is settled after verification, defaults, or expires;
//! Hydra down reserves nothing; L402 challenges are paid; events follow each attempt.

use http::StatusCode;
use oa_invoice::Network;
use oa_service::ManualClock;
use serde_json::{Value, json};

use crate::{
    fake::{Mode, Settle},
    harness::{HOUR, Opts, Treasury, invoice, ms, payment_id},
};

fn policy(rails: &str, choose: &str, fallback: bool) -> String {
    format!(
        "[envelope]\nmax_credit_fee_bps = 100\nttl_secs = 600\n[[rules]]\nid = \"r\"\naction = \"pay\"\nrails = {rails}\nchoose = \"{choose}\"\nfallback = {fallback}\n"
    )
}

async fn with_policy(policy: String) -> Treasury {
    Treasury::with(Opts {
        default_budget_msat: 1_000_000,
        policy: Some(policy),
        ..Opts::default()
    })
    .await
}

const BOTH: &str = "[\"direct_liquidity\", \"credit_envelope\"]";
const ENVELOPE_FIRST: &str = "[\"credit_envelope\", \"direct_liquidity\"]";

fn verification() -> Value {
    json!({"idempotency_key": "s1", "verification_id": "ver-1", "verification_receipt_hash": format!("sha256:{}", "ab".repeat(32))})
}

async fn settle(t: &Treasury, id: &str, body: &Value) -> (StatusCode, Value) {
    t.post(
        &format!("/v1/treasury/payments/{id}/settle"),
        &t.token.clone(),
        body,
    )
    .await
}

fn budget_figures(b: &Value) -> (String, String, String) {
    (
        b["reserved_msat"].as_str().unwrap().to_owned(),
        b["spent_msat"].as_str().unwrap().to_owned(),
        b["available_msat"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn the_routing_score_picks_the_envelope_which_pays_after_verification() {
    let t = with_policy(policy(BOTH, "score", false)).await;
    t.hydra.prefer_envelope(true);
    let (status, body) = t
        .pay(
            "k1",
            "agent-1",
            &invoice(50_000, Network::Regtest, HOUR),
            1_000,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let p = &body["payment"];
    assert_eq!(
        (p["state"].as_str(), p["stage"].as_str(), p["rail"].as_str()),
        (
            Some("PAYMENT_STATE_IN_FLIGHT"),
            Some("envelope_issued"),
            Some("credit_envelope")
        )
    );
    assert_eq!(p["envelope_id"], "env1");
    // The credit fee the offer asks (1% of the 51 000 cap) and the allowance reserved:
    // 51 000 + ceil(51 000 * 100 / 10 000) = 51 510.
    assert_eq!(p["credit_fee_msat"], "510");
    assert_eq!(p["reserved_msat"], "51510");
    assert_eq!(
        budget_figures(&t.budget("agent-1").await),
        ("51510".into(), "0".into(), "948490".into())
    );
    assert_eq!(
        (t.hydra.scores(), t.hydra.issued(), t.hydra.pays()),
        (1, 1, 0)
    );
    let id = payment_id(&body);

    let (status, done) = settle(&t, &id, &verification()).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(done["payment"]["state"], "PAYMENT_STATE_SUCCEEDED");
    assert_eq!(done["payment"]["fee_msat"], "3");
    // Spent: 50 000 paid + 3 routing fee + 510 credit fee; the rest of the reservation returns.
    assert_eq!(
        budget_figures(&t.budget("agent-1").await),
        ("0".into(), "50513".into(), "949487".into())
    );
    let receipt: oa_receipts::Receipt = serde_json::from_value(done["receipt"].clone()).unwrap();
    receipt.verify().unwrap();
    assert_eq!(receipt.schema, "oa.treasury.envelope_attempt_receipt.v1");
    let hydra: Vec<_> = t
        .hydra
        .receipts()
        .iter()
        .map(|r| (r.schema.clone(), r.hash))
        .collect();
    assert_eq!(
        hydra.len(),
        3,
        "routing decision, envelope issue, settlement"
    );
    assert_eq!(receipt.links[0], hydra[2].1, "the settlement receipt first");
    assert!(receipt.links.contains(&hydra[0].1) && receipt.links.contains(&hydra[1].1));
    assert_eq!(receipt.body["envelope_id"], "env1");
    assert_eq!(receipt.body["credit_fee_msat"], "510");
    assert_eq!(receipt.body["verification_id"], "ver-1");
    assert_eq!(
        t.events_of(&id).await,
        [
            "payment.in_flight",
            "payment.rail_chosen",
            "payment.envelope_issued",
            "payment.settling",
            "payment.succeeded"
        ]
    );
    // Replays, and a second settlement is refused.
    assert_eq!(
        settle(&t, &id, &verification()).await,
        (status, done.clone())
    );
    let mut again = verification();
    again["idempotency_key"] = "s2".into();
    let (status, err) = settle(&t, &id, &again).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("PAYMENT_NOT_SETTLEABLE"))
    );
    let (status, replay) = t
        .pay(
            "k1",
            "agent-1",
            &invoice(50_000, Network::Regtest, HOUR),
            1_000,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "another invoice under the same key: {replay}"
    );
    assert_eq!(t.hydra.settles(), 1);
    t.ledger_conserved().await;
}

#[tokio::test]
async fn a_failed_verification_defaults_the_envelope_and_releases_the_budget() {
    let t = with_policy(policy("[\"credit_envelope\"]", "order", false)).await;
    t.hydra.set_settle(Settle::Defaulted);
    let (status, body) = t
        .pay(
            "k1",
            "agent-1",
            &invoice(20_000, Network::Regtest, HOUR),
            500,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, done) = settle(&t, &payment_id(&body), &verification()).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(
        (
            done["payment"]["state"].as_str(),
            done["payment"]["failure_code"].as_str()
        ),
        (Some("PAYMENT_STATE_FAILED"), Some("VERIFICATION_FAILED"))
    );
    assert_eq!(
        budget_figures(&t.budget("agent-1").await),
        ("0".into(), "0".into(), "1000000".into())
    );
    t.ledger_conserved().await;
}

#[tokio::test]
async fn a_refused_or_pending_settlement_keeps_the_envelope_for_another_try() {
    let t = with_policy(policy("[\"credit_envelope\"]", "order", false)).await;
    let (_, body) = t
        .pay(
            "k1",
            "agent-1",
            &invoice(20_000, Network::Regtest, HOUR),
            500,
        )
        .await;
    let id = payment_id(&body);
    let mut bad = verification();
    bad["verification_id"] = "bad-verification".into();
    let (status, err) = settle(&t, &id, &bad).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("VERIFICATION_MISMATCH"))
    );
    assert_eq!(
        t.get_payment(&id).await["payment"]["stage"],
        "envelope_issued"
    );
    // Bad settle input: typed, nothing changed.
    for (body, code) in [
        (
            json!({"idempotency_key": "x", "verification_id": "a b", "verification_receipt_hash": format!("sha256:{}", "ab".repeat(32))}),
            "INVALID_REQUEST",
        ),
        (
            json!({"idempotency_key": "x", "verification_id": "v", "verification_receipt_hash": "sha256:zz"}),
            "INVALID_REQUEST",
        ),
        (
            json!({"verification_id": "v", "verification_receipt_hash": format!("sha256:{}", "ab".repeat(32))}),
            "INVALID_IDEMPOTENCY_KEY",
        ),
    ] {
        let (status, err) = settle(&t, &id, &body).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{body}"
        );
    }
    let (status, err) = settle(&t, "pay_nope", &verification()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("PAYMENT_NOT_FOUND"))
    );
    // Still pending at Aegis: the attempt waits settling (202), then settles once it is decided.
    t.hydra.set_settle(Settle::Pending);
    let (status, v) = settle(&t, &id, &verification()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["payment"]["stage"], "envelope_settling");
    t.hydra.set_settle(Settle::Settled);
    let done = oa_testkit::wait_until(
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(50),
        || async {
            let v = t.get_payment(&id).await;
            (v["payment"]["state"] == "PAYMENT_STATE_SUCCEEDED").then_some(v)
        },
    )
    .await;
    assert!(done.is_some(), "the tracker settles it");
    t.ledger_conserved().await;
}

#[tokio::test]
async fn an_unsettled_envelope_expires_on_the_sweeper_and_its_reservation_ends() {
    let clock = ManualClock::new(ms("2025-06-01T12:00:00Z"));
    let t = Treasury::with(Opts {
        default_budget_msat: 1_000_000,
        policy: Some(policy("[\"credit_envelope\"]", "order", false)),
        clock: Some(clock.clone()),
        ..Opts::default()
    })
    .await;
    let (_, body) = t
        .pay(
            "k1",
            "agent-1",
            &invoice(20_000, Network::Regtest, HOUR),
            500,
        )
        .await;
    let id = payment_id(&body);
    assert_eq!(
        body["payment"]["envelope_expires_at_ms"],
        (ms("2025-06-01T12:00:00Z") + 600_000).to_string()
    );
    clock.advance(599_999);
    assert_eq!(t.payments.sweep().await.unwrap(), 0);
    clock.advance(1);
    assert_eq!(t.payments.sweep().await.unwrap(), 1);
    let v = t.get_payment(&id).await;
    assert_eq!(
        (
            v["payment"]["state"].as_str(),
            v["payment"]["failure_code"].as_str()
        ),
        (Some("PAYMENT_STATE_FAILED"), Some("ENVELOPE_EXPIRED"))
    );
    assert_eq!(t.budget("agent-1").await["reserved_msat"], "0");
    let (status, err) = settle(&t, &id, &verification()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("PAYMENT_NOT_SETTLEABLE"))
    );
    t.ledger_conserved().await;
}

#[tokio::test]
async fn a_refused_quote_falls_back_to_the_envelope_where_the_rule_allows() {
    let t = with_policy(policy(BOTH, "order", true)).await;
    t.hydra.set_mode(Mode::RefuseQuote);
    let (status, body) = t
        .pay(
            "k1",
            "agent-1",
            &invoice(20_000, Network::Regtest, HOUR),
            500,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["payment"]["rail"], "credit_envelope");
    assert_eq!(body["payment"]["stage"], "envelope_issued");
    assert_eq!(body["payment"]["rails"], json!(["credit_envelope"]));
    assert_eq!(
        (t.hydra.quote_calls(), t.hydra.pays(), t.hydra.issued()),
        (1, 0, 1)
    );
    assert_eq!(
        t.events_of(&payment_id(&body)).await,
        [
            "payment.in_flight",
            "payment.fallback",
            "payment.envelope_issued"
        ]
    );

    // Without fallback, the same refusal fails the attempt and releases its budget.
    let t = with_policy(policy(BOTH, "order", false)).await;
    t.hydra.set_mode(Mode::RefuseQuote);
    let (status, body) = t
        .pay(
            "k1",
            "agent-1",
            &invoice(20_000, Network::Regtest, HOUR),
            500,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (
            body["payment"]["state"].as_str(),
            body["payment"]["failure_code"].as_str()
        ),
        (Some("PAYMENT_STATE_FAILED"), Some("INSUFFICIENT_LIQUIDITY"))
    );
    assert_eq!(t.hydra.intents(), 0);
    assert_eq!(t.budget("agent-1").await["reserved_msat"], "0");
}

#[tokio::test]
async fn a_payment_hydra_attempted_and_failed_is_final_even_with_fallback() {
    let t = with_policy(policy(BOTH, "order", true)).await;
    t.hydra.set_mode(Mode::FailPayment);
    let (status, body) = t
        .pay(
            "k1",
            "agent-1",
            &invoice(20_000, Network::Regtest, HOUR),
            500,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["payment"]["state"], "PAYMENT_STATE_FAILED");
    assert_eq!(body["payment"]["failure_code"], "NO_ROUTE");
    assert_eq!(
        t.hydra.intents(),
        0,
        "the payment hash was sent once; no second rail"
    );
}

#[tokio::test]
async fn credit_terms_above_the_allowance_fall_back_to_direct() {
    let t = with_policy(policy(ENVELOPE_FIRST, "order", true)).await;
    t.hydra.set_credit_fee_bps(500);
    let (status, body) = t
        .pay(
            "k1",
            "agent-1",
            &invoice(20_000, Network::Regtest, HOUR),
            500,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["payment"]["state"], "PAYMENT_STATE_SUCCEEDED");
    assert_eq!(body["payment"]["rail"], "direct_liquidity");
    assert_eq!(
        (t.hydra.intents(), t.hydra.issued(), t.hydra.pays()),
        (1, 0, 1)
    );
    let kinds = t.events_of(&payment_id(&body)).await;
    assert_eq!(
        kinds,
        ["payment.in_flight", "payment.fallback", "payment.succeeded"]
    );
    // A refused credit intent falls back too.
    t.hydra.refuse_credit(true);
    let (status, body) = t
        .pay(
            "k2",
            "agent-1",
            &invoice(20_000, Network::Regtest, HOUR),
            500,
        )
        .await;
    assert_eq!(
        (status, body["payment"]["rail"].as_str()),
        (StatusCode::CREATED, Some("direct_liquidity"))
    );
    t.ledger_conserved().await;
}

#[tokio::test]
async fn hydra_down_fails_retryably_on_every_rail_and_reserves_nothing() {
    for (rails, choose) in [
        (BOTH, "score"),
        (ENVELOPE_FIRST, "order"),
        ("[\"direct_liquidity\"]", "order"),
    ] {
        let t = with_policy(policy(rails, choose, rails != "[\"direct_liquidity\"]")).await;
        t.hydra.set_mode(Mode::Down);
        let inv = invoice(20_000, Network::Regtest, HOUR);
        let (status, err) = t.pay("k1", "agent-1", &inv, 500).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{rails}: {err}");
        assert_eq!(
            (
                err["error"]["code"].as_str(),
                err["error"]["retryable"].as_bool()
            ),
            (Some("HYDRA_UNAVAILABLE"), Some(true))
        );
        assert_eq!(
            budget_figures(&t.budget("agent-1").await),
            ("0".into(), "0".into(), "1000000".into()),
            "{rails}"
        );
        assert_eq!(t.count("treasury_payments").await, 0);
        assert_eq!(t.count("receipts").await, 0);
        t.ledger_conserved().await;
        // The same key pays once Hydra is back.
        t.hydra.set_mode(Mode::Pay);
        let (status, body) = t.pay("k1", "agent-1", &inv, 500).await;
        assert!(
            status == StatusCode::CREATED || status == StatusCode::ACCEPTED,
            "{rails}: {body}"
        );
        assert_eq!(
            t.events_of(&payment_id(&body)).await[0],
            "payment.in_flight"
        );
    }
}

#[tokio::test]
async fn an_l402_challenge_is_paid_and_its_macaroon_kept_nowhere() {
    let t = Treasury::start(100_000).await;
    let inv = invoice(2_000, Network::Regtest, HOUR);
    let challenge = format!("L402 macaroon=\"U0VDUkVUTUFDQVJPT04=\", invoice=\"{inv}\"");
    let body = json!({"idempotency_key": "l1", "agent_id": "agent-1", "l402_challenge": challenge, "max_fee_msat": "50", "host": "api.example.com"});
    let (status, paid) = t.pay_with(&body).await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    let p = &paid["payment"];
    assert_eq!(
        (p["source"].as_str(), p["host"].as_str()),
        (Some("l402"), Some("api.example.com"))
    );
    let decoded = oa_invoice::decode(&inv).unwrap();
    assert_eq!(p["payment_hash"], decoded.payment_hash.to_string());
    assert_eq!(p["preimage"], "11".repeat(32));
    assert_eq!(paid["receipt"]["body"]["source"], "l402");
    // The macaroon is in no table.
    for (table, column) in [
        ("treasury_payments", "invoice"),
        ("receipts", "json"),
        ("events", "payload"),
    ] {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM {table} WHERE {column} LIKE '%U0VDUkVUTUFDQVJPT04%'"
        ));
        let n: i64 = sqlx::query_scalar(sql)
            .fetch_one(t.db.pool())
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    let stored: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM idempotency_keys WHERE response LIKE '%U0VDUkVUTUFDQVJPT04%'",
    )
    .fetch_one(t.db.pool())
    .await
    .unwrap();
    assert_eq!(stored, 0);
}
