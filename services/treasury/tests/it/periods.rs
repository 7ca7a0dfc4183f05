//! Budget periods at their boundaries, on a controlled clock: a day ends at local midnight of the
//! budget's time zone (also on a daylight-saving day), a week starts on its week-start day, a
//! month ends on its last day (29 February included), a year on 31 December.

use http::StatusCode;
use oa_invoice::Network;
use oa_service::ManualClock;
use serde_json::json;

use crate::harness::{HOUR, Opts, Treasury, invoice, ms};

async fn at(instant: &str) -> Treasury {
    Treasury::with(Opts {
        default_budget_msat: 0,
        clock: Some(ManualClock::new(ms(instant))),
        ..Opts::default()
    })
    .await
}

/// Pays `amount` with a max fee of 100 (so it reserves amount + 100 and spends amount + 7).
async fn pay(t: &Treasury, key: &str, agent: &str, amount: u64) -> StatusCode {
    let (status, body) = t
        .pay(key, agent, &invoice(amount, Network::Regtest, HOUR), 100)
        .await;
    assert!(
        status == StatusCode::CREATED || status == StatusCode::FORBIDDEN,
        "{body}"
    );
    if status == StatusCode::FORBIDDEN {
        assert_eq!(
            body["error"]["reason_code"], "agent_budget_exceeded",
            "{body}"
        );
    }
    status
}

#[tokio::test]
async fn a_daily_budget_resets_at_local_midnight_and_a_dst_day_has_23_hours() {
    // 23:30 in Berlin (CET, +01) on Saturday 30 March 2024; clocks spring forward that night.
    let t = at("2024-03-30T22:30:00Z").await;
    let b = t
        .set_budget(
            "agent",
            "a1",
            json!({"idempotency_key": "b", "limit_msat": "10000", "period": "daily", "time_zone": "Europe/Berlin"}),
        )
        .await;
    assert_eq!(b["period_start_ms"], ms("2024-03-29T23:00:00Z").to_string());
    assert_eq!(b["period_end_ms"], ms("2024-03-30T23:00:00Z").to_string());
    assert_eq!(pay(&t, "k1", "a1", 6_000).await, StatusCode::CREATED);
    assert_eq!(pay(&t, "k2", "a1", 5_000).await, StatusCode::FORBIDDEN);
    // The last millisecond of the local day is still the same window.
    t.clock().set(ms("2024-03-30T22:59:59.999Z"));
    assert_eq!(pay(&t, "k3", "a1", 5_000).await, StatusCode::FORBIDDEN);
    // Local midnight: a fresh window, funded with the limit.
    t.clock().set(ms("2024-03-30T23:00:00Z"));
    let b = t.budget_of("agent", "a1", "daily").await;
    assert_eq!(
        (b["available_msat"].as_str(), b["spent_msat"].as_str()),
        (Some("10000"), Some("0"))
    );
    let (start, end): (u64, u64) = (
        b["period_start_ms"].as_str().unwrap().parse().unwrap(),
        b["period_end_ms"].as_str().unwrap().parse().unwrap(),
    );
    assert_eq!(
        end - start,
        23 * 3_600_000,
        "31 March 2024 is 23 hours in Berlin"
    );
    assert_eq!(pay(&t, "k4", "a1", 5_000).await, StatusCode::CREATED);
    t.clock().set(ms("2024-03-31T21:59:59.999Z"));
    assert_eq!(pay(&t, "k5", "a1", 5_000).await, StatusCode::FORBIDDEN);
    t.clock().set(ms("2024-03-31T22:00:00Z"));
    assert_eq!(pay(&t, "k6", "a1", 5_000).await, StatusCode::CREATED);
    // Each day kept its own account: 6_007, 5_007 and 5_007 spent.
    let csv = statement(&t).await;
    for (account, spent) in [
        ("budget:a1@d2024-03-30", "6007"),
        ("budget:a1@d2024-03-31", "5007"),
        ("budget:a1@d2024-04-01", "5007"),
    ] {
        let line = csv
            .lines()
            .find(|l| l.starts_with(&format!("\"{account}\"")))
            .unwrap_or_else(|| panic!("{account} missing: {csv}"));
        assert!(line.contains(&format!(",{spent},10000,")), "{line}");
    }
    t.ledger_conserved().await;
}

#[tokio::test]
async fn a_weekly_budget_starts_on_its_week_start_day_in_its_zone() {
    // Saturday 9 March 2024, 23:00 in New York (EST, -05).
    let t = at("2024-03-10T04:00:00Z").await;
    for (agent, week_start) in [("sun", "sunday"), ("mon", "monday")] {
        t.set_budget(
            "agent",
            agent,
            json!({"idempotency_key": agent, "limit_msat": "10000", "period": "weekly", "time_zone": "America/New_York", "week_start": week_start}),
        )
        .await;
        assert_eq!(
            pay(&t, &format!("{agent}1"), agent, 9_000).await,
            StatusCode::CREATED
        );
    }
    assert_eq!(
        t.budget_of("agent", "sun", "weekly").await["week_start"],
        "sunday"
    );
    // Sunday 00:00 local: the Sunday week is fresh, the Monday week is not.
    t.clock().set(ms("2024-03-10T05:00:00Z"));
    assert_eq!(pay(&t, "sun2", "sun", 9_000).await, StatusCode::CREATED);
    assert_eq!(pay(&t, "mon2", "mon", 9_000).await, StatusCode::FORBIDDEN);
    let sun = t.budget_of("agent", "sun", "weekly").await;
    assert_eq!(
        sun["period_start_ms"],
        ms("2024-03-10T05:00:00Z").to_string()
    );
    // Clocks sprang forward on 10 March: the week ends at 00:00 EDT (-04) on the 17th.
    assert_eq!(sun["period_end_ms"], ms("2024-03-17T04:00:00Z").to_string());
    // Monday 00:00 EDT: now the Monday week turns.
    t.clock().set(ms("2024-03-11T03:59:59.999Z"));
    assert_eq!(pay(&t, "mon3", "mon", 9_000).await, StatusCode::FORBIDDEN);
    t.clock().set(ms("2024-03-11T04:00:00Z"));
    assert_eq!(pay(&t, "mon4", "mon", 9_000).await, StatusCode::CREATED);
    t.ledger_conserved().await;
}

#[tokio::test]
async fn a_month_ends_on_its_last_day_and_the_leap_day_belongs_to_february() {
    // 31 January 2024, 23:59 in Tokyo (+09).
    let t = at("2024-01-31T14:59:00Z").await;
    t.set_budget(
        "agent",
        "m",
        json!({"idempotency_key": "m", "limit_msat": "10000", "period": "monthly", "time_zone": "Asia/Tokyo"}),
    )
    .await;
    t.set_budget(
        "agent",
        "d",
        json!({"idempotency_key": "d", "limit_msat": "10000", "period": "daily", "time_zone": "Asia/Tokyo"}),
    )
    .await;
    assert_eq!(pay(&t, "m1", "m", 9_000).await, StatusCode::CREATED);
    t.clock().set(ms("2024-01-31T15:00:00Z"));
    assert_eq!(
        pay(&t, "m2", "m", 9_000).await,
        StatusCode::CREATED,
        "February"
    );
    // Leap day, 23:59:59.999 in Tokyo: still February, and still 29 February for the daily one.
    t.clock().set(ms("2024-02-29T14:59:59.999Z"));
    assert_eq!(pay(&t, "m3", "m", 9_000).await, StatusCode::FORBIDDEN);
    assert_eq!(pay(&t, "d1", "d", 9_000).await, StatusCode::CREATED);
    let feb = t.budget_of("agent", "m", "monthly").await;
    let (start, end): (u64, u64) = (
        feb["period_start_ms"].as_str().unwrap().parse().unwrap(),
        feb["period_end_ms"].as_str().unwrap().parse().unwrap(),
    );
    assert_eq!(end - start, 29 * 86_400_000, "February 2024 has 29 days");
    t.clock().set(ms("2024-02-29T15:00:00Z"));
    assert_eq!(
        pay(&t, "m4", "m", 9_000).await,
        StatusCode::CREATED,
        "March"
    );
    assert_eq!(
        pay(&t, "d2", "d", 9_000).await,
        StatusCode::CREATED,
        "1 March"
    );
    let csv = statement(&t).await;
    assert!(csv.contains("\"budget:d@d2024-02-29\""), "{csv}");
    assert!(csv.contains("\"budget:m@m2024-02\""), "{csv}");
    t.ledger_conserved().await;
}

#[tokio::test]
async fn a_year_ends_on_the_last_millisecond_of_december_and_never_never_resets() {
    let t = at("2024-12-31T23:59:59.999Z").await;
    t.set_budget(
        "agent",
        "y",
        json!({"idempotency_key": "y", "limit_msat": "10000", "period": "yearly"}),
    )
    .await;
    t.set_budget(
        "agent",
        "n",
        json!({"idempotency_key": "n", "limit_msat": "10000"}),
    )
    .await;
    assert_eq!(pay(&t, "y1", "y", 9_000).await, StatusCode::CREATED);
    assert_eq!(pay(&t, "n1", "n", 9_000).await, StatusCode::CREATED);
    t.clock().set(ms("2025-01-01T00:00:00Z"));
    assert_eq!(pay(&t, "y2", "y", 9_000).await, StatusCode::CREATED);
    t.clock().set(ms("2025-09-01T00:00:00Z"));
    assert_eq!(pay(&t, "n2", "n", 9_000).await, StatusCode::FORBIDDEN);
    let n = t.budget_of("agent", "n", "never").await;
    assert_eq!(
        (n["period_start_ms"].as_str(), n["period_end_ms"].as_str()),
        (Some("0"), Some("0"))
    );
}

#[tokio::test]
async fn a_new_limit_applies_to_the_current_window_and_cannot_go_below_its_spending() {
    let t = at("2024-06-10T12:00:00Z").await;
    let put = |key: &str, limit: &str| {
        json!({"idempotency_key": key, "limit_msat": limit, "period": "daily"}).to_string()
    };
    let url = "/v1/treasury/budgets/agent/a1";
    let tok = t.token.clone();
    assert_eq!(
        t.call("PUT", url, Some(&tok), Some(&put("b1", "10000")))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(pay(&t, "k1", "a1", 6_000).await, StatusCode::CREATED);
    let (status, err) = t
        .call("PUT", url, Some(&tok), Some(&put("b2", "5000")))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("BUDGET_IN_USE"))
    );
    let (status, b) = t
        .call("PUT", url, Some(&tok), Some(&put("b3", "20000")))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (b["funded_msat"].as_str(), b["available_msat"].as_str()),
        (Some("20000"), Some("13993"))
    );
    // The next day is funded with the limit in force; lowering it there is fine.
    t.clock().set(ms("2024-06-11T00:00:00Z"));
    let (status, b) = t
        .call("PUT", url, Some(&tok), Some(&put("b4", "5000")))
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["available_msat"], "5000");
    t.ledger_conserved().await;
}

async fn statement(t: &Treasury) -> String {
    let token = t
        .ring
        .operator_token(
            "treasury",
            &["ledger:read"],
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let url = format!("/v1/ledger/statement?from_ms=0&to_ms={}", u64::MAX / 4);
    let req = http::Request::get(&url)
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(t.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}
