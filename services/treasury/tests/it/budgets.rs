//! Budgets per org, agent and host: a payment reserves in every one that applies, all or
//! nothing; lists and per-payment maxima deny with their own reason; bad budgets change nothing.

use http::StatusCode;
use oa_invoice::Network;
use serde_json::{Value, json};

use crate::harness::{HOUR, Opts, Treasury, invoice, invoice_from, payee};

const ORGS: &str = r#"
[orgs]
acme = ["acme-*"]

[[rules]]
id = "default"
action = "pay"
rails = ["direct_liquidity"]
"#;

async fn treasury() -> Treasury {
    Treasury::with(Opts {
        default_budget_msat: 0,
        policy: Some(ORGS.into()),
        ..Opts::default()
    })
    .await
}

fn pay_body(key: &str, agent: &str, amount: u64, host: Option<&str>) -> Value {
    let mut b = json!({"idempotency_key": key, "agent_id": agent, "invoice": invoice(amount, Network::Regtest, HOUR), "max_fee_msat": "100"});
    if let Some(h) = host {
        b["host"] = h.into();
    }
    b
}

async fn available(t: &Treasury, kind: &str, subject: &str, period: &str) -> String {
    t.budget_of(kind, subject, period).await["available_msat"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_payment_reserves_in_every_applicable_budget_all_or_nothing() {
    let t = treasury().await;
    t.set_budget(
        "org",
        "acme",
        json!({"idempotency_key": "o", "limit_msat": "20000"}),
    )
    .await;
    for a in ["acme-1", "acme-2"] {
        t.set_budget(
            "agent",
            a,
            json!({"idempotency_key": a, "limit_msat": "100000"}),
        )
        .await;
    }
    t.set_budget(
        "host",
        "api.example.com",
        json!({"idempotency_key": "h", "limit_msat": "15000", "period": "daily"}),
    )
    .await;

    let (status, body) = t
        .pay_with(&pay_body("k1", "acme-1", 9_000, Some("api.example.com")))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["payment"]["org_id"], "acme");
    assert_eq!(available(&t, "org", "acme", "never").await, "10993");
    assert_eq!(available(&t, "agent", "acme-1", "never").await, "90993");
    assert_eq!(
        available(&t, "host", "api.example.com", "daily").await,
        "5993"
    );

    // The host budget has no room: refused, and neither the org nor the agent budget moved.
    let (status, err) = t
        .pay_with(&pay_body("k2", "acme-1", 9_000, Some("api.example.com")))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(
        (
            err["error"]["code"].as_str(),
            err["error"]["reason_code"].as_str()
        ),
        (Some("BUDGET_EXCEEDED"), Some("host_budget_exceeded"))
    );
    assert_eq!(
        err["error"]["details"]["rule"],
        "budget:host:api.example.com:daily"
    );
    assert_eq!(available(&t, "org", "acme", "never").await, "10993");
    assert_eq!(available(&t, "agent", "acme-1", "never").await, "90993");
    let reserved = t.budget_of("org", "acme", "never").await["reserved_msat"].clone();
    assert_eq!(reserved, "0");

    // Without the host, org and agent have room.
    let (status, _) = t.pay_with(&pay_body("k3", "acme-1", 9_000, None)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(available(&t, "org", "acme", "never").await, "1986");
    // Another agent of the org is held by the org budget, its own untouched.
    let (status, err) = t.pay_with(&pay_body("k4", "acme-2", 5_000, None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["error"]["reason_code"], "org_budget_exceeded");
    assert_eq!(available(&t, "agent", "acme-2", "never").await, "100000");
    // An agent outside any org, with no budget: no_budget.
    let (status, err) = t.pay_with(&pay_body("k5", "loner", 1_000, None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        (
            err["error"]["reason_code"].as_str(),
            err["error"]["details"]["rule"].as_str()
        ),
        (Some("no_budget"), Some("budget:none"))
    );
    assert_eq!(t.hydra.pays(), 2);
    t.ledger_conserved().await;
}

#[tokio::test]
async fn lists_and_per_payment_maxima_deny_with_their_reason_and_reserve_nothing() {
    let t = treasury().await;
    let good = payee(9);
    let other = payee(8);
    t.set_budget(
        "agent",
        "deny-payee",
        json!({"idempotency_key": "1", "limit_msat": "100000", "payee_deny": [good]}),
    )
    .await;
    t.set_budget(
        "agent",
        "allow-payee",
        json!({"idempotency_key": "2", "limit_msat": "100000", "payee_allow": [other]}),
    )
    .await;
    t.set_budget(
        "agent",
        "hosts",
        json!({"idempotency_key": "3", "limit_msat": "100000", "host_allow": ["*.example.com"], "host_deny": ["bad.example.com"]}),
    )
    .await;
    t.set_budget(
        "agent",
        "small",
        json!({"idempotency_key": "4", "limit_msat": "100000", "period": "weekly", "per_payment_max_msat": "5000"}),
    )
    .await;
    for (i, (agent, host, signer, amount, reason)) in [
        ("deny-payee", None, 9, 1_000, "payee_denied"),
        ("allow-payee", None, 9, 1_000, "payee_not_allowed"),
        ("hosts", Some("bad.example.com"), 9, 1_000, "host_denied"),
        ("hosts", Some("api.other.org"), 9, 1_000, "host_not_allowed"),
        ("hosts", None, 9, 1_000, "host_not_allowed"),
        ("small", None, 9, 4_901, "per_payment_max_exceeded"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = json!({"idempotency_key": format!("deny-{i}"), "agent_id": agent, "invoice": invoice_from(signer, amount, Network::Regtest, HOUR), "max_fee_msat": "100"});
        if let Some(h) = host {
            body["host"] = h.into();
        }
        let (status, err) = t.pay_with(&body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{agent} {reason}: {err}");
        assert_eq!(err["error"]["code"], "POLICY_DENIED", "{err}");
        assert_eq!(err["error"]["reason_code"], reason, "{err}");
        assert!(
            err["error"]["details"]["rule"]
                .as_str()
                .unwrap()
                .starts_with(&format!("budget:agent:{agent}:")),
            "{err}"
        );
    }
    for agent in ["deny-payee", "allow-payee", "hosts"] {
        assert_eq!(available(&t, "agent", agent, "never").await, "100000");
    }
    assert_eq!(available(&t, "agent", "small", "weekly").await, "100000");
    assert_eq!(t.hydra.quote_calls(), 0);
    // And what the lists allow is paid.
    for (agent, host, signer, amount) in [
        ("deny-payee", None, 8, 1_000),
        ("allow-payee", None, 8, 1_000),
        ("hosts", Some("api.example.com"), 9, 1_000),
        ("small", None, 9, 4_900),
    ] {
        let mut body = json!({"idempotency_key": format!("ok-{agent}"), "agent_id": agent, "invoice": invoice_from(signer, amount, Network::Regtest, HOUR), "max_fee_msat": "100"});
        if let Some(h) = host {
            body["host"] = h.into();
        }
        let (status, v) = t.pay_with(&body).await;
        assert_eq!(status, StatusCode::CREATED, "{agent}: {v}");
    }
    assert_eq!(t.hydra.pays(), 4);
    t.ledger_conserved().await;
}

#[tokio::test]
async fn bad_budgets_are_a_typed_4xx_and_change_nothing() {
    let t = treasury().await;
    let pk = payee(9);
    let ok = |extra: Value| {
        let mut b = json!({"idempotency_key": "k", "limit_msat": "1000"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let long_list: Vec<String> = (0..257).map(|i| format!("h{i}.example.com")).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/v1/treasury/budgets/team/x",
            ok(json!({})),
            "INVALID_REQUEST",
        ),
        (
            "/v1/treasury/budgets/agent/a%20b",
            ok(json!({})),
            "INVALID_REQUEST",
        ),
        (
            "/v1/treasury/budgets/host/API.example.com",
            ok(json!({})),
            "INVALID_REQUEST",
        ),
        (
            "/v1/treasury/budgets/agent/a",
            ok(json!({"period": "hourly"})),
            "INVALID_REQUEST",
        ),
        (
            "/v1/treasury/budgets/agent/a",
            ok(json!({"time_zone": "Mars/Olympus"})),
            "INVALID_TIME_ZONE",
        ),
        (
            "/v1/treasury/budgets/agent/a",
            ok(json!({"time_zone": "../../etc/passwd"})),
            "INVALID_TIME_ZONE",
        ),
        (
            "/v1/treasury/budgets/agent/a",
            ok(json!({"week_start": "Monday"})),
            "INVALID_REQUEST",
        ),
        (
            "/v1/treasury/budgets/agent/a",
            ok(json!({"limit_msat": "-1"})),
            "INVALID_REQUEST",
        ),
        (
            "/v1/treasury/budgets/agent/a",
            ok(json!({"limit_msat": "2100000000000000001"})),
            "INVALID_REQUEST",
        ),
        (
            "/v1/treasury/budgets/agent/a",
            ok(json!({"per_payment_max_msat": "2100000000000000001"})),
            "INVALID_REQUEST",
        ),
        (
            "/v1/treasury/budgets/agent/a",
            ok(json!({"payee_allow": ["02abc"]})),
            "INVALID_REQUEST",
        ),
        (
            "/v1/treasury/budgets/agent/a",
            ok(json!({"payee_deny": [pk.to_uppercase()]})),
            "INVALID_REQUEST",
        ),
        (
            "/v1/treasury/budgets/agent/a",
            ok(json!({"host_allow": ["*example.com"]})),
            "INVALID_REQUEST",
        ),
        (
            "/v1/treasury/budgets/agent/a",
            ok(json!({"host_deny": long_list})),
            "INVALID_REQUEST",
        ),
        (
            "/v1/treasury/budgets/agent/a",
            ok(json!({"colour": "red"})),
            "INVALID_REQUEST",
        ),
        (
            "/v1/treasury/budgets/agent/a",
            json!({"limit_msat": "5"}),
            "INVALID_IDEMPOTENCY_KEY",
        ),
        (
            "/v1/treasury/budgets/a%20b",
            ok(json!({})),
            "INVALID_REQUEST",
        ),
    ];
    let before = t.snapshot().await;
    for (path, body, code) in &cases {
        let (status, err) = t
            .call("PUT", path, Some(&t.token.clone()), Some(&body.to_string()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {err}");
        assert_eq!(err["error"]["code"], *code, "{path} {body}");
    }
    let (status, err) = t
        .call(
            "GET",
            "/v1/treasury/budgets/team/x",
            Some(&t.token.clone()),
            None,
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST"))
    );
    let (status, err) = t
        .call(
            "GET",
            "/v1/treasury/budgets/nobody",
            Some(&t.token.clone()),
            None,
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("BUDGET_NOT_FOUND"))
    );
    assert_eq!(t.snapshot().await, before);
}

#[tokio::test]
async fn a_budget_is_replaced_idempotently_and_shows_its_settings() {
    let t = treasury().await;
    let body = json!({"idempotency_key": "b1", "limit_msat": "5000", "period": "monthly", "time_zone": "Europe/Paris", "payee_allow": [payee(9), payee(9)], "host_deny": ["x.example.com"]});
    let first = t.set_budget("agent", "a", body.clone()).await;
    assert_eq!(first["payee_allow"], json!([payee(9)]), "deduplicated");
    assert_eq!(
        (
            first["time_zone"].as_str(),
            first["week_start"].as_str(),
            first["kind"].as_str()
        ),
        (Some("Europe/Paris"), Some("monday"), Some("agent"))
    );
    let again = t.set_budget("agent", "a", body.clone()).await;
    assert_eq!(again, first);
    let mut other = body;
    other["limit_msat"] = "6000".into();
    let (status, err) = t
        .call(
            "PUT",
            "/v1/treasury/budgets/agent/a",
            Some(&t.token.clone()),
            Some(&other.to_string()),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("IDEMPOTENCY_CONFLICT"))
    );
    // One budget per period: a daily one sits beside the monthly one.
    t.set_budget(
        "agent",
        "a",
        json!({"idempotency_key": "b2", "limit_msat": "100", "period": "daily"}),
    )
    .await;
    let periods: Vec<Value> = t
        .budgets("agent", "a")
        .await
        .iter()
        .map(|b| b["period"].clone())
        .collect();
    assert_eq!(periods, vec![json!("daily"), json!("monthly")]);
}

/// The budgets of many payers read in one statement are each payer's own, in the order they
/// apply: org, agent, host, and by period within each.
#[tokio::test]
async fn the_budgets_of_many_payers_read_at_once_are_each_payers_own() {
    let t = treasury().await;
    let budget = |key: &str, limit: &str, period: &str| json!({"idempotency_key": key, "limit_msat": limit, "period": period});
    t.set_budget("org", "acme", budget("o1", "50000", "daily"))
        .await;
    t.set_budget("org", "acme", budget("o2", "90000", "never"))
        .await;
    t.set_budget("agent", "acme-1", budget("a1", "10000", "never"))
        .await;
    t.set_budget("agent", "solo", budget("a2", "10000", "never"))
        .await;
    t.set_budget("host", "api.example.com", budget("h", "5000", "daily"))
        .await;
    let payers = [
        ("acme-1", Some("acme"), Some("api.example.com")),
        ("solo", None, None),
        ("acme-2", Some("acme"), None),
        ("nobody", None, Some("other.example.com")),
        ("acme-1", Some("acme"), Some("api.example.com")),
    ];
    let mut conn = t.db.pool().acquire().await.unwrap();
    let many = treasury::budget::applicable_many(&mut conn, &payers)
        .await
        .unwrap();
    let labels: Vec<Vec<String>> = many
        .iter()
        .map(|budgets| budgets.iter().map(|b| b.label()).collect())
        .collect();
    let acme_1 = [
        "org:acme:daily",
        "org:acme:never",
        "agent:acme-1:never",
        "host:api.example.com:daily",
    ];
    let expected: [&[&str]; 5] = [
        &acme_1,
        &["agent:solo:never"],
        &["org:acme:daily", "org:acme:never"],
        &[],
        &acme_1,
    ];
    assert_eq!(labels, expected);
    let none = treasury::budget::applicable_many(&mut conn, &[]).await;
    assert!(none.unwrap().is_empty());
}
