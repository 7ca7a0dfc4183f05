//! Classification over HTTP (failure history and risk state raise the tier), risk budgets
//! (degrade, cap, recover with the window, readable by Hydra and treasury), warranty quotes.

use http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    Aegis, code, low_work, objective_evidence, objective_work, state, subjective_work, verify,
};

async fn classify(a: &Aegis, work: Value) -> Value {
    a.ok("/v1/aegis/classify", json!({"work": work})).await
}

async fn status(a: &Aegis, token: &str, subject: &str, id: &str) -> Value {
    let (s, v) = a
        .call(
            "GET",
            &format!("/v1/aegis/risk_budget/status?subject_type={subject}&subject_id={id}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["status"].clone()
}

/// Classification of each class, then raised by failures and by the risk state.
pub async fn classification(a: &Aegis) {
    let c = classify(a, objective_work("agent-c", 1_000)).await;
    assert_eq!(
        (
            c["verifiability_class"].as_str(),
            c["base_tier"].as_str(),
            c["tier"].as_str()
        ),
        (
            Some("VERIFIABILITY_CLASS_OBJECTIVE"),
            Some("INDEPENDENCE_TIER_OBJECTIVE"),
            Some("INDEPENDENCE_TIER_OBJECTIVE")
        )
    );
    assert_eq!(c["raise_reasons"], json!([]));
    let c = classify(a, subjective_work("agent-c", 1_000)).await;
    assert_eq!(c["tier"], "INDEPENDENCE_TIER_HETEROGENEOUS");
    let c = classify(a, low_work("agent-c", 1_000)).await;
    assert_eq!(c["tier"], "INDEPENDENCE_TIER_ADJUDICATED");
    // A bare objective hash is an objective artifact; no outputs at all is low.
    let bare = json!({"kind": "k", "agent_id": "agent-c", "amount_msat": "1",
                      "objective_hash": crate::harness::sha(b"x")});
    assert_eq!(
        classify(a, bare).await["verifiability_class"],
        "VERIFIABILITY_CLASS_OBJECTIVE"
    );
    let none = json!({"kind": "k", "agent_id": "agent-c", "amount_msat": "1"});
    assert_eq!(
        classify(a, none).await["verifiability_class"],
        "VERIFIABILITY_CLASS_LOW"
    );
    // High stakes: +1.
    let c = classify(a, objective_work("agent-c", 100_000_000)).await;
    assert_eq!(
        (c["tier"].as_str(), &c["raise_reasons"]),
        (
            Some("INDEPENDENCE_TIER_HETEROGENEOUS"),
            &json!(["AMOUNT_HIGH"])
        )
    );

    // Three failed verifications (a short record): the agent's objective work now needs
    // heterogeneous verifiers.
    for i in 0..3 {
        let v = verify(
            a,
            &format!("df-{i}"),
            objective_work("agent-d", 1_000),
            objective_evidence(Some("file")),
        )
        .await;
        assert_eq!(state(&v), "VERIFICATION_VERDICT_FAILED");
    }
    let c = classify(a, objective_work("agent-d", 1_000)).await;
    assert_eq!(
        (c["tier"].as_str(), &c["raise_reasons"]),
        (
            Some("INDEPENDENCE_TIER_HETEROGENEOUS"),
            &json!(["HISTORY_FAILURES"])
        )
    );
    assert_eq!(
        (
            c["inputs"]["decided_count"].as_str(),
            c["inputs"]["failed_count"].as_str(),
            c["inputs"]["kind_failed_count"].as_str()
        ),
        (Some("3"), Some("3"), Some("3"))
    );
    // Another agent is not affected.
    let c = classify(a, objective_work("agent-other", 1_000)).await;
    assert_eq!(c["tier"], "INDEPENDENCE_TIER_OBJECTIVE");
    // Two passes then three failures: 3 of 5 failed = 600 000 ppm: +2.
    for i in 0..2 {
        let v = verify(
            a,
            &format!("cp-{i}"),
            objective_work("agent-c", 1_000),
            objective_evidence(None),
        )
        .await;
        assert_eq!(state(&v), "VERIFICATION_VERDICT_PASSED");
    }
    for i in 0..3 {
        verify(
            a,
            &format!("cf-{i}"),
            objective_work("agent-c", 1_000),
            objective_evidence(Some("summary")),
        )
        .await;
    }
    let c = classify(a, objective_work("agent-c", 1_000)).await;
    assert_eq!(
        (c["tier"].as_str(), &c["raise_reasons"]),
        (
            Some("INDEPENDENCE_TIER_ADJUDICATED"),
            &json!(["HISTORY_FAILURE_RATE"])
        )
    );
    // A verification now takes that tier: it waits for a decider although every check passed.
    let v = verify(
        a,
        "cp-x",
        objective_work("agent-c", 1_000),
        objective_evidence(None),
    )
    .await;
    assert_eq!(
        (state(&v), v["verification"]["tier"].as_str()),
        ("VERIFICATION_VERDICT_PENDING", Some("adjudicated"))
    );
}

#[tokio::test]
async fn classification_is_raised_by_failure_history() {
    classification(&Aegis::start().await).await;
}

/// normal -> elevated -> exhausted, caps lowered, tiers raised; failures age out of the window.
pub async fn budgets(a: &Aegis) {
    let set = json!({"idempotency_key": "b-1", "subject_type": "RISK_SUBJECT_TYPE_AGENT",
                     "subject_id": "agent-r", "tolerated_msat": "1000", "window_ms": "60000",
                     "cap_msat": "800"});
    let r = a.ok("/v1/aegis/risk_budget/set", set.clone()).await;
    assert_eq!(r["status"]["state"], "RISK_STATE_NORMAL");
    assert_eq!(a.ok("/v1/aegis/risk_budget/set", set.clone()).await, r);
    let mut other = set.clone();
    other["cap_msat"] = json!("900");
    let (s, err) = a.post("/v1/aegis/risk_budget/set", other).await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::CONFLICT, "IDEMPOTENCY_CONFLICT")
    );

    // Hydra (aegis:read only) reads it.
    let hydra = a.token_of("hydra", &["aegis:read"]);
    let st = status(a, &hydra, "agent", "agent-r").await;
    assert_eq!(
        (
            st["state"].as_str(),
            st["effective_cap_msat"].as_str(),
            st["tier_raise"].as_u64()
        ),
        (Some("RISK_STATE_NORMAL"), Some("800"), Some(0))
    );
    // An unbudgeted subject.
    let st = status(a, &hydra, "org", "org-none").await;
    assert_eq!(st["state"], "RISK_STATE_UNBUDGETED");

    // Above the cap: +1 even while normal.
    let c = a
        .ok(
            "/v1/aegis/classify",
            json!({"work": objective_work("agent-r", 801)}),
        )
        .await;
    assert_eq!(c["raise_reasons"], json!(["ABOVE_RISK_CAP"]));

    // A failed verification of 500: half the tolerance -> elevated, cap 400, tiers +1.
    verify(
        a,
        "r-1",
        objective_work("agent-r", 500),
        objective_evidence(Some("tests")),
    )
    .await;
    let st = status(a, &a.token, "agent", "agent-r").await;
    assert_eq!(
        (
            st["state"].as_str(),
            st["failed_msat"].as_str(),
            st["spent_msat"].as_str(),
            st["remaining_msat"].as_str(),
            st["effective_cap_msat"].as_str(),
            st["tier_raise"].as_u64()
        ),
        (
            Some("RISK_STATE_ELEVATED"),
            Some("500"),
            Some("500"),
            Some("500"),
            Some("400"),
            Some(1)
        )
    );
    let c = a
        .ok(
            "/v1/aegis/classify",
            json!({"work": objective_work("agent-r", 10)}),
        )
        .await;
    assert_eq!(
        (c["tier"].as_str(), &c["raise_reasons"]),
        (
            Some("INDEPENDENCE_TIER_HETEROGENEOUS"),
            &json!(["RISK_ELEVATED"])
        )
    );
    // A pending (unverified) verification of 600: exhausted, cap 0, tiers +2.
    let p = verify(a, "r-2", subjective_work("agent-r", 600), json!([])).await;
    assert_eq!(p["verification"]["tier"], "human");
    let st = status(a, &a.token, "agent", "agent-r").await;
    assert_eq!(
        (
            st["state"].as_str(),
            st["unverified_msat"].as_str(),
            st["effective_cap_msat"].as_str(),
            st["tier_raise"].as_u64()
        ),
        (
            Some("RISK_STATE_EXHAUSTED"),
            Some("600"),
            Some("0"),
            Some(2)
        )
    );
    let c = a
        .ok(
            "/v1/aegis/classify",
            json!({"work": objective_work("agent-r", 10)}),
        )
        .await;
    assert_eq!(
        (c["tier"].as_str(), &c["raise_reasons"]),
        (
            Some("INDEPENDENCE_TIER_ADJUDICATED"),
            &json!(["RISK_EXHAUSTED"])
        )
    );
    // The failure ages out of the 60 s window; the pending one still counts: elevated.
    a.clock.advance(60_001);
    let st = status(a, &a.token, "agent", "agent-r").await;
    assert_eq!(
        (st["state"].as_str(), st["failed_msat"].as_str()),
        (Some("RISK_STATE_ELEVATED"), Some("0"))
    );

    // An org budget applies to every agent of the org.
    a.ok(
        "/v1/aegis/risk_budget/set",
        json!({"idempotency_key": "b-org", "subject_type": "RISK_SUBJECT_TYPE_ORG",
               "subject_id": "org-1", "tolerated_msat": "100", "window_ms": "60000",
               "cap_msat": "1000"}),
    )
    .await;
    let mut w = objective_work("agent-o1", 100);
    w["org_id"] = json!("org-1");
    verify(a, "o-1", w, objective_evidence(Some("summary"))).await;
    let mut w2 = objective_work("agent-o2", 10);
    w2["org_id"] = json!("org-1");
    let c = a.ok("/v1/aegis/classify", json!({"work": w2})).await;
    assert_eq!(
        (
            c["tier"].as_str(),
            c["inputs"]["org_risk_state"].as_str(),
            c["inputs"]["agent_risk_state"].as_str()
        ),
        (
            Some("INDEPENDENCE_TIER_ADJUDICATED"),
            Some("RISK_STATE_EXHAUSTED"),
            Some("RISK_STATE_UNBUDGETED")
        )
    );
}

#[tokio::test]
async fn risk_budgets_degrade_raise_tiers_lower_caps_and_recover() {
    budgets(&Aegis::start().await).await;
}

/// Quotes price from class, tier and the agent's record (hand-worked numbers).
pub async fn quotes(a: &Aegis) {
    let quote = |work: Value, coverage: &str| {
        let body = json!({"work": work, "coverage_msat": coverage});
        async move { a.ok("/v1/aegis/warranty/quote", body).await["quote"].clone() }
    };
    // New agent, objective work of 10 000 000: fee 1 000 + 10e6 * 100 / 1e6 = 2 000;
    // bps ceil(50 * 1.25) = 63; premium 10e6 * 63 / 1e4 = 63 000.
    let q = quote(objective_work("agent-q", 10_000_000), "0").await;
    assert_eq!(
        (
            q["verification_fee_msat"].as_str(),
            q["liability_premium_msat"].as_str(),
            q["total_msat"].as_str(),
            q["premium_bps"].as_u64(),
            q["experience_factor_ppm"].as_u64(),
            q["coverage_msat"].as_str()
        ),
        (
            Some("2000"),
            Some("63000"),
            Some("65000"),
            Some(63),
            Some(1_250_000),
            Some("10000000")
        )
    );
    // Subjective work, half covered: fee 10 000 + 10 000 = 20 000; bps ceil(300 * 1.25) = 375;
    // premium 5e6 * 375 / 1e4 = 187 500.
    let q = quote(subjective_work("agent-q", 10_000_000), "5000000").await;
    assert_eq!(
        (
            q["tier"].as_str(),
            q["verification_fee_msat"].as_str(),
            q["liability_premium_msat"].as_str()
        ),
        (
            Some("INDEPENDENCE_TIER_HETEROGENEOUS"),
            Some("20000"),
            Some("187500")
        )
    );
    // Five passed verifications: share 1e6, experience 1.0: bps 50, premium 50 000.
    for i in 0..5 {
        verify(
            a,
            &format!("q-{i}"),
            objective_work("agent-q", 1),
            objective_evidence(None),
        )
        .await;
    }
    let q = quote(objective_work("agent-q", 10_000_000), "0").await;
    assert_eq!(
        (
            q["verified_share_ppm"].as_u64(),
            q["decided_count"].as_str(),
            q["premium_bps"].as_u64(),
            q["liability_premium_msat"].as_str()
        ),
        (Some(1_000_000), Some("5"), Some(50), Some("50000"))
    );
    let (s, err) = a
        .post(
            "/v1/aegis/warranty/quote",
            json!({"work": objective_work("agent-q", 10), "coverage_msat": "11"}),
        )
        .await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::BAD_REQUEST, "INVALID_COVERAGE")
    );
}

#[tokio::test]
async fn warranty_quotes_separate_fee_and_premium_and_follow_the_record() {
    quotes(&Aegis::start().await).await;
}
