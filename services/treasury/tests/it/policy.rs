//! Policy as versioned data: the sample policy's every rule fires, evaluate and pay agree on
//! every case, evaluate changes nothing, and the policy is replaced (admin, idempotent, typed
//! refusals) with its bundle id recorded on every decision.

use std::collections::BTreeSet;

use http::StatusCode;
use oa_invoice::Network;
use serde_json::{Value, json};
use treasury::risk::{RiskState, Subject};

use crate::harness::{HOUR, Opts, Treasury, invoice_from, payment_id};

pub const EXAMPLE: &str = include_str!("../../policy.example.toml");

/// One request of the agreement table: who, how much, and what should decide it.
struct Case {
    name: &'static str,
    agent: &'static str,
    amount: u64,
    signer: u8,
    host: Option<&'static str>,
    purpose: &'static str,
    l402: bool,
    outcome: &'static str,
    rule: &'static str,
    reason: Option<&'static str>,
}

fn request(c: &Case, key: Option<&str>) -> Value {
    let inv = invoice_from(c.signer, c.amount, Network::Regtest, HOUR);
    let mut b = json!({"agent_id": c.agent, "max_fee_msat": "100", "purpose": c.purpose});
    if c.l402 {
        b["l402_challenge"] =
            format!("L402 macaroon=\"AgEEbWFjYXJvb24=\", invoice=\"{inv}\"").into();
    } else {
        b["invoice"] = inv.into();
    }
    if let Some(h) = c.host {
        b["host"] = h.into();
    }
    if let Some(k) = key {
        b["idempotency_key"] = k.into();
    }
    b
}

async fn example() -> Treasury {
    let t = Treasury::with(Opts {
        default_budget_msat: 10_000_000,
        policy: Some(EXAMPLE.into()),
        ..Opts::default()
    })
    .await;
    // Aegis: "risky" is elevated (cap 1 000 000), "capped" exhausted (cap 0), "dark" unreadable.
    t.risk.set(
        Subject::Agent,
        "risky",
        RiskState::Elevated,
        Some(1_000_000),
    );
    t.risk.set(
        Subject::Agent,
        "risky2",
        RiskState::Elevated,
        Some(1_000_000),
    );
    t.risk
        .set(Subject::Agent, "capped", RiskState::Exhausted, Some(0));
    t.risk.fail(Subject::Agent, "dark");
    t.set_budget(
        "agent",
        "poor",
        json!({"idempotency_key": "poor", "limit_msat": "5000"}),
    )
    .await;
    t.set_budget(
        "agent",
        "risky2",
        json!({"idempotency_key": "r2", "limit_msat": "30000"}),
    )
    .await;
    t
}

fn cases() -> Vec<Case> {
    let c = |name, agent, amount, outcome, rule, reason| Case {
        name,
        agent,
        amount,
        signer: 9,
        host: None,
        purpose: "",
        l402: false,
        outcome,
        rule,
        reason,
    };
    vec![
        // Payee 9 becomes known by this first payment (so later ones are not "new payees").
        c("default rule", "plain", 10_000, "pay", "default", None),
        Case {
            host: Some("slots.casino.example"),
            ..c(
                "casino host",
                "plain",
                1_000,
                "deny",
                "block-casinos",
                Some("host_blocked"),
            )
        },
        c(
            "degraded: direct only",
            "risky",
            10_000,
            "pay",
            "degraded-direct-only",
            None,
        ),
        c(
            "risk unreadable is degraded",
            "dark",
            10_000,
            "pay",
            "degraded-direct-only",
            None,
        ),
        c(
            "degraded: approval above 50 000",
            "risky",
            60_000,
            "require_approval",
            "risk:degraded_approval",
            Some("risk_degraded"),
        ),
        c(
            "degraded: cap 200 000",
            "risky",
            300_000,
            "deny",
            "risk:degraded_cap",
            Some("risk_cap_exceeded"),
        ),
        c(
            "exhausted: Aegis's cap is 0",
            "capped",
            1_000,
            "deny",
            "risk:degraded_cap",
            Some("risk_cap_exceeded"),
        ),
        Case {
            signer: 7,
            ..c(
                "new payee, large",
                "plain",
                150_000,
                "require_approval",
                "new-payee-large",
                Some("policy_rule"),
            )
        },
        Case {
            purpose: "research: protein folding",
            ..c(
                "research on credit",
                "acme-1",
                10_000,
                "pay",
                "research-on-credit",
                None,
            )
        },
        Case {
            l402: true,
            ..c("an L402 API", "plain", 10_000, "pay", "l402-apis", None)
        },
        c(
            "acme: direct then credit",
            "acme-2",
            10_000,
            "pay",
            "acme-direct-then-credit",
            None,
        ),
        c(
            "above the approval threshold",
            "plain",
            600_000,
            "require_approval",
            "approvals:above_threshold",
            Some("above_threshold"),
        ),
        c(
            "budget without room",
            "poor",
            10_000,
            "deny",
            "budget:agent:poor:never",
            Some("agent_budget_exceeded"),
        ),
        c(
            "degraded: budget at half, first fits",
            "risky2",
            10_000,
            "pay",
            "degraded-direct-only",
            None,
        ),
        c(
            "degraded: budget at half, second does not",
            "risky2",
            10_000,
            "deny",
            "budget:agent:risky2:never",
            Some("agent_budget_exceeded"),
        ),
    ]
}

#[tokio::test]
async fn evaluate_and_pay_agree_on_every_case_of_the_sample_policy_and_every_rule_fires() {
    let t = example().await;
    let mut fired = BTreeSet::new();
    for (i, c) in cases().iter().enumerate() {
        let before = t.snapshot().await;
        let (status, eval) = t.evaluate(&request(c, None)).await;
        assert_eq!(status, StatusCode::OK, "{}: {eval}", c.name);
        assert_eq!(
            t.snapshot().await,
            before,
            "{}: evaluate changed nothing",
            c.name
        );
        let d = &eval["decision"];
        assert_eq!(
            (d["outcome"].as_str(), d["rule"].as_str()),
            (Some(c.outcome), Some(c.rule)),
            "{}: {eval}",
            c.name
        );
        assert_eq!(
            d["reason_code"].as_str().filter(|s| !s.is_empty()),
            c.reason,
            "{}",
            c.name
        );

        let (status, paid) = t.pay_with(&request(c, Some(&format!("case-{i}")))).await;
        let want_status = match c.outcome {
            "pay" => StatusCode::CREATED,
            "require_approval" => StatusCode::ACCEPTED,
            _ => StatusCode::FORBIDDEN,
        };
        assert_eq!(status, want_status, "{}: {paid}", c.name);
        let stored = t.get_payment(&payment_id(&paid)).await;
        assert_eq!(
            &stored["payment"]["decision"], d,
            "{}: evaluate and pay agree",
            c.name
        );
        let state = stored["payment"]["state"].as_str().unwrap();
        let want_state = match c.outcome {
            "pay" => "PAYMENT_STATE_SUCCEEDED",
            "require_approval" => "PAYMENT_STATE_PENDING_APPROVAL",
            _ => "PAYMENT_STATE_DENIED",
        };
        assert_eq!(state, want_state, "{}", c.name);
        if c.outcome == "deny" {
            assert_eq!(paid["error"]["details"]["rule"], c.rule);
            assert_eq!(
                paid["error"]["details"]["policy_bundle_id"],
                d["policy_bundle_id"]
            );
            // A denial has its receipt, naming the policy and the rule.
            let r = &stored["receipt"]["body"];
            assert_eq!(
                (r["decision_rule"].as_str(), r["state"].as_str()),
                (Some(c.rule), Some("denied"))
            );
            assert_eq!(r["policy_bundle_id"], d["policy_bundle_id"]);
        }
        fired.insert(c.rule.to_owned());
    }
    // Every rule of the sample policy fired in some case.
    let example = treasury::policy::Policy::from_toml(EXAMPLE).unwrap();
    for r in &example.rules {
        assert!(fired.contains(&r.id), "rule {} has no case", r.id);
    }
    // The degraded-risk decisions say so.
    let (_, eval) = t.evaluate(&request(&cases()[2], None)).await;
    assert_eq!(eval["decision"]["risk"], "degraded");
    assert_eq!(eval["decision"]["budget_cap_bps"], 5000);
    let (_, eval) = t.evaluate(&request(&cases()[3], None)).await;
    assert_eq!(eval["decision"]["risk"], "unavailable");
    // The research case scored its rails with Hydra and reserved the credit-fee allowance:
    // 10 100 + ceil(10 100 * 200 / 10 000) = 10 302.
    let (_, eval) = t.evaluate(&request(&cases()[8], None)).await;
    assert_eq!(eval["decision"]["reserve_msat"], "10302");
    assert_eq!(eval["decision"]["choose"], "score");
    assert_eq!(t.hydra.scores(), 1);
    t.ledger_conserved().await;
}

#[tokio::test]
async fn built_in_checks_fire_under_their_settings() {
    let t = Treasury::with(Opts {
        default_budget_msat: 10_000_000,
        ..Opts::default()
    })
    .await;
    let body = |key: &str, agent: &str, signer: u8| json!({"idempotency_key": key, "agent_id": agent, "invoice": invoice_from(signer, 1_000, Network::Regtest, HOUR), "max_fee_msat": "10"});
    let rule_of = |v: &Value| {
        v["payment"]["decision"]["rule"]
            .as_str()
            .or(v["error"]["details"]["rule"].as_str())
            .unwrap_or_else(|| panic!("no rule in {v}"))
            .to_owned()
    };
    // Unknown payees wait; a known one (listed) does not.
    let (status, v) = t
        .set_policy(
            "p1",
            &format!(
                "[approvals]\nunknown_payee = true\n[payees]\nknown = [\"{}\"]\n[[rules]]\nid = \"all\"\naction = \"pay\"\nrails = [\"direct_liquidity\"]",
                crate::harness::payee(8)
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = t.pay_with(&body("u1", "a", 9)).await;
    assert_eq!(
        (status, rule_of(&v).as_str()),
        (StatusCode::ACCEPTED, "approvals:unknown_payee")
    );
    let (status, v) = t.pay_with(&body("u2", "a", 8)).await;
    assert_eq!((status, rule_of(&v).as_str()), (StatusCode::CREATED, "all"));
    // No rule matches: denied.
    t.set_policy("p2", "[[rules]]\nid = \"only-b\"\nwhen = { agent = [\"b\"] }\naction = \"pay\"\nrails = [\"direct_liquidity\"]")
        .await;
    let (status, v) = t.pay_with(&body("n1", "a", 9)).await;
    assert_eq!(
        (status, rule_of(&v).as_str()),
        (StatusCode::FORBIDDEN, "no_rule_matched")
    );
    assert_eq!(v["error"]["code"], "POLICY_DENIED");
    // Risk unreadable with on_unavailable = deny; degraded with deny = true.
    t.risk.fail(Subject::Agent, "dark");
    t.risk.set(Subject::Org, "org1", RiskState::Elevated, None);
    t.set_policy(
        "p3",
        "[orgs]\norg1 = [\"member\"]\n[risk]\nsource = \"aegis\"\non_unavailable = \"deny\"\ncache_ms = 0\n[risk.degraded]\ndeny = true\n[[rules]]\nid = \"all\"\naction = \"pay\"\nrails = [\"direct_liquidity\"]",
    )
    .await;
    let (status, v) = t.pay_with(&body("r1", "dark", 9)).await;
    assert_eq!(
        (status, rule_of(&v).as_str()),
        (StatusCode::FORBIDDEN, "risk:unavailable")
    );
    // The org's state degrades its members.
    let (status, v) = t.pay_with(&body("r2", "member", 9)).await;
    assert_eq!(
        (status, rule_of(&v).as_str()),
        (StatusCode::FORBIDDEN, "risk:degraded")
    );
    let (status, v) = t.pay_with(&body("r3", "someone", 9)).await;
    assert_eq!((status, rule_of(&v).as_str()), (StatusCode::CREATED, "all"));
    // A deny rule without a reason code says policy_denied.
    t.set_policy("p4", "[[rules]]\nid = \"nope\"\naction = \"deny\"")
        .await;
    let (status, v) = t.pay_with(&body("d1", "a", 9)).await;
    assert_eq!(
        (status, v["error"]["reason_code"].as_str()),
        (StatusCode::FORBIDDEN, Some("policy_denied"))
    );
    // A payee paid before is known without being listed: 9 was paid above (r3), 7 never was.
    let (status, v) = t
        .set_policy(
            "p5",
            "[approvals]\nunknown_payee = true\n[[rules]]\nid = \"all\"\naction = \"pay\"\nrails = [\"direct_liquidity\"]",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = t.pay_with(&body("k9", "a", 9)).await;
    assert_eq!((status, rule_of(&v).as_str()), (StatusCode::CREATED, "all"));
    let (status, v) = t.pay_with(&body("k7", "a", 7)).await;
    assert_eq!(
        (status, rule_of(&v).as_str()),
        (StatusCode::ACCEPTED, "approvals:unknown_payee")
    );
}

#[tokio::test]
async fn the_policy_is_replaced_by_an_admin_idempotently_and_bad_policies_change_nothing() {
    let t = Treasury::start(100_000).await;
    let (_, first) = t
        .call("GET", "/v1/treasury/policy", Some(&t.token.clone()), None)
        .await;
    assert_eq!(first["activated_by"], "default");
    assert_eq!(first["rules"], json!(["default"]));

    let (status, v) = t.set_policy("p1", EXAMPLE).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let bundle = v["policy_bundle_id"].as_str().unwrap().to_owned();
    assert_ne!(bundle, first["policy_bundle_id"].as_str().unwrap());
    assert_eq!(v["version"], "2");
    assert_eq!(v["activated_by"], "operator");
    // The bundle id is the SHA-256 of the canonical JSON it answers.
    let canonical = v["canonical_json"].as_str().unwrap();
    assert_eq!(
        bundle,
        oa_receipts::Hash::of(canonical.as_bytes()).to_string()
    );
    // Replay, conflict.
    assert_eq!(t.set_policy("p1", EXAMPLE).await, (status, v.clone()));
    let (status, err) = t
        .set_policy("p1", "[[rules]]\nid = \"x\"\naction = \"deny\"")
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("IDEMPOTENCY_CONFLICT"))
    );
    // The same policy spelt differently has the same id.
    let respelt = format!(
        "# a comment\n{}",
        EXAMPLE.replace("ttl_secs = 3600", "ttl_secs   =   3_600")
    );
    let (_, v2) = t.set_policy("p2", &respelt).await;
    assert_eq!(v2["policy_bundle_id"], bundle.as_str());
    assert_eq!(v2["version"], "3");

    // Bad policies: typed 400, nothing changed.
    let before = t.snapshot().await;
    for (body, code) in [
        (
            json!({"idempotency_key": "b1", "policy_toml": "rules = ["}),
            "INVALID_POLICY",
        ),
        (
            json!({"idempotency_key": "b2", "policy_toml": "[[rules]]\nid = \"a\"\naction = \"pay\""}),
            "INVALID_POLICY",
        ),
        (
            json!({"idempotency_key": "b3", "policy_toml": "[[rules]]\nid = \"a\"\naction = \"deny\"\nsurprise = 1"}),
            "INVALID_POLICY",
        ),
        (
            json!({"idempotency_key": "b4", "policy_toml": "x".repeat(300 * 1024)}),
            "PAYLOAD_TOO_LARGE",
        ),
        (json!({"idempotency_key": "b5"}), "INVALID_POLICY"),
        (json!({"policy_toml": EXAMPLE}), "INVALID_IDEMPOTENCY_KEY"),
        (
            json!({"idempotency_key": "b6", "policy_toml": EXAMPLE, "extra": 1}),
            "INVALID_REQUEST",
        ),
    ] {
        let (status, err) = t
            .call(
                "PUT",
                "/v1/treasury/policy",
                Some(&t.token.clone()),
                Some(&body.to_string()),
            )
            .await;
        assert!(status.is_client_error(), "{body}: {status} {err}");
        assert_eq!(err["error"]["code"], code, "{err}");
    }
    assert_eq!(t.snapshot().await, before);
    let (_, now) = t
        .call("GET", "/v1/treasury/policy", Some(&t.token.clone()), None)
        .await;
    assert_eq!(now["policy_bundle_id"], bundle.as_str());

    // A payment records the active policy.
    let (status, paid) = t
        .pay(
            "k1",
            "agent-1",
            &invoice_from(9, 1_000, Network::Regtest, HOUR),
            100,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    assert_eq!(
        paid["payment"]["decision"]["policy_bundle_id"],
        bundle.as_str()
    );
    assert_eq!(paid["receipt"]["body"]["policy_bundle_id"], bundle.as_str());
    assert_eq!(paid["receipt"]["body"]["decision_rule"], "default");
}

#[tokio::test]
async fn evaluate_refuses_bad_input_with_typed_errors_and_changes_nothing() {
    let t = Treasury::start(100_000).await;
    let good = invoice_from(9, 1_000, Network::Regtest, HOUR);
    let before = t.snapshot().await;
    for (body, code) in [
        (
            json!({"agent_id": "a", "invoice": "lnbc1nope"}),
            "INVALID_INVOICE",
        ),
        (json!({"agent_id": "", "invoice": good}), "INVALID_REQUEST"),
        (
            json!({"agent_id": "a", "invoice": good, "host": "A B"}),
            "INVALID_REQUEST",
        ),
        (
            json!({"agent_id": "a", "l402_challenge": "L402 realm=\"x\""}),
            "INVALID_L402_CHALLENGE",
        ),
        (
            json!({"agent_id": "a", "invoice": good, "idempotency_key": "k"}),
            "INVALID_REQUEST",
        ),
        (
            json!({"agent_id": "a", "invoice": invoice_from(9, 1_000, Network::Testnet, HOUR)}),
            "WRONG_NETWORK",
        ),
    ] {
        let (status, err) = t.evaluate(&body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["error"]["code"], code, "{body}");
    }
    // A good one answers and still changes nothing (not even the default budget it would create).
    let (status, v) = t.evaluate(&json!({"agent_id": "a", "invoice": good})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["decision"]["outcome"], "pay");
    assert_eq!(v["budgets"][0]["budget"], "agent:a:never");
    assert_eq!(v["budgets"][0]["fits"], true);
    assert_eq!(t.snapshot().await, before);
}

#[tokio::test]
async fn risk_readings_are_reused_for_the_policy_cache_time_on_the_service_clock() {
    let clock = oa_service::ManualClock::new(crate::harness::ms("2025-06-01T00:00:00Z"));
    let t = Treasury::with(Opts {
        default_budget_msat: 1_000_000,
        policy: Some(
            "[risk]\nsource = \"aegis\"\ncache_ms = 5000\n[[rules]]\nid = \"all\"\naction = \"pay\"\nrails = [\"direct_liquidity\"]".into(),
        ),
        clock: Some(clock.clone()),
        ..Opts::default()
    })
    .await;
    let body = json!({"agent_id": "a", "invoice": invoice_from(9, 1_000, Network::Regtest, HOUR)});
    let calls = || *t.risk.calls.lock().unwrap();
    let (_, v) = t.evaluate(&body).await;
    assert_eq!(
        (v["decision"]["risk"].as_str(), calls()),
        (Some("normal"), 1)
    );
    t.risk
        .set(Subject::Agent, "a", RiskState::Elevated, Some(500));
    clock.advance(4_999);
    let (_, v) = t.evaluate(&body).await;
    assert_eq!(
        (v["decision"]["risk"].as_str(), calls()),
        (Some("normal"), 1),
        "cached"
    );
    clock.advance(1);
    let (_, v) = t.evaluate(&body).await;
    assert_eq!(
        (v["decision"]["risk"].as_str(), calls()),
        (Some("degraded"), 2)
    );
    // Aegis's cap (500) now bounds each payment while degraded.
    assert_eq!(v["decision"]["outcome"], "deny");
    assert_eq!(v["decision"]["rule"], "risk:degraded_cap");
}

/// A payee paid through one treasury process is known to another process on the same database,
/// which never saw that payment (it asks the database, not its own memory).
#[tokio::test]
async fn a_payee_paid_by_another_process_is_known() {
    let shared = tempfile::tempdir().unwrap();
    let opts = |policy: &str| Opts {
        default_budget_msat: 10_000_000,
        database_url: Some(format!(
            "sqlite://{}",
            shared.path().join("treasury.db").display()
        )),
        ring_dir: Some(shared.path().join("ring")),
        policy: Some(policy.into()),
        ..Opts::default()
    };
    let rule = "[[rules]]\nid = \"all\"\naction = \"pay\"\nrails = [\"direct_liquidity\"]";
    let body = |key: &str, signer: u8| json!({"idempotency_key": key, "agent_id": "a", "invoice": invoice_from(signer, 1_000, Network::Regtest, HOUR), "max_fee_msat": "10"});
    let first = Treasury::with(opts(rule)).await;
    let (status, v) = first.pay_with(&body("w1", 9)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    drop(first);

    let second = Treasury::with(opts(&format!("[approvals]\nunknown_payee = true\n{rule}"))).await;
    let (status, v) = second.pay_with(&body("w2", 9)).await;
    assert_eq!(
        (status, rule_of(&v)),
        (StatusCode::CREATED, "all".into()),
        "{v}"
    );
    let (status, v) = second.pay_with(&body("w3", 7)).await;
    assert_eq!(
        (status, rule_of(&v)),
        (StatusCode::ACCEPTED, "approvals:unknown_payee".into())
    );
}

/// The rule that decided a payment, from its answer.
fn rule_of(v: &Value) -> String {
    v["payment"]["decision"]["rule"]
        .as_str()
        .or(v["error"]["details"]["rule"].as_str())
        .unwrap_or_else(|| panic!("no rule in {v}"))
        .to_owned()
}
