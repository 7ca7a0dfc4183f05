use std::time::Duration;

use http::StatusCode;
use oa_invoice::Network;
use oa_service::{Clock, ManualClock, SystemClock};
use serde_json::json;

use crate::{
    fake::Mode,
    harness::{HOUR, Opts, Treasury, invoice},
};

#[tokio::test]
async fn pays_within_budget_and_settles_to_the_actual_amount() {
    let t = Treasury::start(100_000).await;
    let inv = invoice(50_000, Network::Regtest, HOUR);
    let (status, body) = t.pay("k1", "agent-1", &inv, 1_000).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let p = &body["payment"];
    assert_eq!(p["state"], "PAYMENT_STATE_SUCCEEDED");
    assert_eq!(p["fee_msat"], "7");
    let receipt: oa_receipts::Receipt = serde_json::from_value(body["receipt"].clone()).unwrap();
    receipt.verify().unwrap();
    assert_eq!(receipt.schema, "oa.treasury.payment_attempt_receipt.v1");
    assert_eq!(receipt.links.len(), 1, "links hydra's receipt");
    assert_eq!(receipt.body["hydra_receipt"], receipt.links[0].to_string());
    // The built-in default policy decided, and the receipt says which policy and rule.
    assert_eq!(receipt.body["decision_rule"], "default");
    let (_, policy) = t
        .call("GET", "/v1/treasury/policy", Some(&t.token.clone()), None)
        .await;
    assert_eq!(receipt.body["policy_bundle_id"], policy["policy_bundle_id"]);
    assert_eq!(
        p["decision"]["policy_bundle_id"],
        policy["policy_bundle_id"]
    );
    assert_eq!(p["decision"]["rule"], "default");
    // Reserved 51_000, spent 50_007, released the rest.
    let b = t.budget("agent-1").await;
    assert_eq!(
        (
            b["spent_msat"].as_str(),
            b["reserved_msat"].as_str(),
            b["available_msat"].as_str()
        ),
        (Some("50007"), Some("0"), Some("49993"))
    );

    let (status2, again) = t.pay("k1", "agent-1", &inv, 1_000).await;
    assert_eq!((status2, &again), (status, &body));
    let (status, err) = t.pay("k1", "agent-1", &inv, 2_000).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("IDEMPOTENCY_CONFLICT"))
    );
    // A conflict changes nothing, not even the default budget a new agent would get.
    let (status, _) = t.pay("k1", "agent-new", &inv, 1_000).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(t.budgets("agent", "agent-new").await.is_empty());
    // Nor do a replay and conflicts (after the first request has answered) ask Hydra for
    // anything.
    assert_eq!((t.hydra.quote_calls(), t.hydra.pays()), (1, 1));
    let id = p["payment_id"].as_str().unwrap();
    let (status, got) = t
        .call(
            "GET",
            &format!("/v1/treasury/payments/{id}"),
            Some(&t.token.clone()),
            None,
        )
        .await;
    assert_eq!((status, &got), (StatusCode::OK, &body));
}

/// A payment the policy sends straight to Hydra's liquidity asks for its quote before its
/// transaction and is created with it: it writes twice, once to start and once to end.
#[tokio::test]
async fn a_direct_payment_is_created_with_its_quote_and_writes_twice() {
    let t = Treasury::start(100_000).await;
    // The first payment also creates the agent's default budget and its window.
    let (status, _) = t
        .pay("k0", "agent-1", &invoice(1_000, Network::Regtest, HOUR), 10)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let before = t.payments.db.writer_use().loans;
    let (status, body) = t
        .pay("k1", "agent-1", &invoice(2_000, Network::Regtest, HOUR), 10)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["payment"]["state"], "PAYMENT_STATE_SUCCEEDED");
    assert_eq!(t.payments.db.writer_use().loans - before, 2);
    assert_eq!((t.hydra.quote_calls(), t.hydra.pays()), (2, 2));
    // Under a key of its own: were the attempt to reach the direct rail later (after an
    // approval, or by fallback), its step would get a fresh quote, not this one.
    let id = body["payment"]["payment_id"].as_str().unwrap();
    assert!(t.hydra.answered_key(&format!("treasury:{id}:first-quote")));
    assert!(!t.hydra.answered_key(&format!("treasury:{id}:quote")));
}

/// With `--group-creates=on` (the default on PostgreSQL), requests that arrive while the writer
/// is busy are recorded together: one transaction for all of them, each with its own answer, and
/// the budget checked as if they had come one by one.
#[tokio::test]
async fn requests_arriving_together_are_recorded_together_within_their_budget() {
    let t = Treasury::with(Opts {
        group_creates: Some("on"),
        ..Opts::default()
    })
    .await;
    let first = invoice(1_000, Network::Regtest, HOUR);
    let (status, answer) = t.pay("k0", "agent-1", &first, 10).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let before = t.payments.create_transactions();
    // Six of 30 000 (+ 10 fee) each: three fit in what is left of 100 000. With them, a replay of
    // k0 and a conflicting reuse of it.
    let mut requests: Vec<(String, String)> = (1..=6)
        .map(|i| (format!("k{i}"), invoice(30_000, Network::Regtest, HOUR)))
        .collect();
    requests.push(("k0".into(), first.clone()));
    requests.push(("k0".into(), invoice(2_000, Network::Regtest, HOUR)));
    let held = t.payments.db.begin().await.unwrap();
    let calls = futures::future::join_all(
        requests
            .iter()
            .map(|(key, inv)| t.pay(key, "agent-1", inv, 10)),
    );
    let release = async {
        // Bounded wait until every request waits to be recorded, then let them through.
        for _ in 0..2_000 {
            if t.payments.creates_pending() == requests.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(t.payments.creates_pending(), requests.len());
        held.rollback().await.unwrap();
    };
    let (answers, ()) = tokio::join!(calls, release);
    // The first to arrive may have been taken alone, before the rest queued up.
    let transactions = t.payments.create_transactions() - before;
    assert!(
        (1..=2).contains(&transactions),
        "{transactions} transactions"
    );
    let mut paid = 0;
    let mut denied = Vec::new();
    for (status, body) in &answers[..6] {
        match *status {
            StatusCode::CREATED => {
                assert_eq!(body["payment"]["state"], "PAYMENT_STATE_SUCCEEDED");
                paid += 1;
            }
            StatusCode::FORBIDDEN => {
                assert_eq!(
                    body["error"]["reason_code"], "agent_budget_exceeded",
                    "{body}"
                );
                denied.push(body["error"]["details"]["payment_id"].clone());
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!((paid, denied.len()), (3, 3));
    assert_eq!(answers[6], (status, answer), "the replay");
    assert_eq!(answers[7].0, StatusCode::CONFLICT, "{}", answers[7].1);
    assert_eq!(answers[7].1["error"]["code"], "IDEMPOTENCY_CONFLICT");
    assert_eq!(t.hydra.pays(), 4);
    let budget = t.budget("agent-1").await;
    assert_eq!(budget["reserved_msat"], "0");
    assert_eq!(t.count("treasury_payments").await, 7);
    // One receipt per attempt, the denials' included, in one valid chain.
    let receipts = t.receipt_chain().await;
    assert_eq!(receipts.len(), 7);
    for id in &denied {
        let got = t.get_payment(id.as_str().unwrap()).await;
        assert_eq!(got["payment"]["state"], "PAYMENT_STATE_DENIED");
        assert_eq!(t.events_of(id.as_str().unwrap()).await, ["payment.denied"]);
    }
    t.ledger_conserved().await;
}

/// A caller that goes away while its request waits to be recorded does not strand the attempt
/// (requests run on tasks of their own, `oa_service::DetachLayer`): it is recorded and paid all
/// the same, and a replay of its key gets the end.
#[tokio::test]
async fn a_request_whose_caller_goes_away_is_still_driven_to_its_end() {
    let t = Treasury::with(Opts {
        group_creates: Some("on"),
        ..Opts::default()
    })
    .await;
    let (status, _) = t
        .pay("k0", "agent-1", &invoice(1_000, Network::Regtest, HOUR), 10)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let inv = invoice(2_000, Network::Regtest, HOUR);
    let held = t.payments.db.begin().await.unwrap();
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        let call = t.pay("k1", "agent-1", &inv, 10);
        let wait = async {
            while t.payments.creates_pending() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        // The caller gives up as soon as its request is queued.
        tokio::select! {
            _ = call => panic!("answered while the writer was held"),
            () = wait => {}
        }
    })
    .await;
    assert!(gone.is_ok(), "the request never reached the queue");
    held.rollback().await.unwrap();
    let mut replay = None;
    for _ in 0..500 {
        let (status, body) = t.pay("k1", "agent-1", &inv, 10).await;
        if status == StatusCode::CREATED {
            replay = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let body = replay.expect("the abandoned request ends");
    assert_eq!(body["payment"]["state"], "PAYMENT_STATE_SUCCEEDED");
    assert_eq!(t.hydra.pays(), 2);
    assert_eq!(t.budget("agent-1").await["reserved_msat"], "0");
}

/// Two requests with one key recorded in one batch, the first denied: both get the denial, as a
/// replay would.
#[tokio::test]
async fn one_key_twice_in_a_batch_gets_one_denial() {
    let t = Treasury::with(Opts {
        default_budget_msat: 10_000,
        group_creates: Some("on"),
        ..Opts::default()
    })
    .await;
    let (status, _) = t
        .pay("k0", "agent-1", &invoice(1_000, Network::Regtest, HOUR), 10)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let inv = invoice(20_000, Network::Regtest, HOUR);
    let t = &t;
    let pending = |n| async move {
        for _ in 0..2_000 {
            if t.payments.creates_pending() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(t.payments.creates_pending(), n);
    };
    let held = t.payments.db.begin().await.unwrap();
    // A first request holds the batch that waits for the writer; the two behind it queue up
    // together, for the next batch.
    let small = invoice(1_000, Network::Regtest, HOUR);
    let first = t.pay("k2", "agent-1", &small, 10);
    let twice = async {
        pending(1).await;
        futures::future::join_all([
            t.pay("k1", "agent-1", &inv, 10),
            t.pay("k1", "agent-1", &inv, 10),
        ])
        .await
    };
    let release = async {
        pending(3).await;
        held.rollback().await.unwrap();
    };
    let (first, answers, ()) = tokio::join!(first, twice, release);
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.1);
    let (status, body) = &answers[0];
    assert_eq!(*status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["reason_code"], "agent_budget_exceeded");
    assert_eq!(answers[1], answers[0]);
    assert_eq!(t.pay("k1", "agent-1", &inv, 10).await, answers[0]);
    assert_eq!(t.count("treasury_payments").await, 3);
}

#[tokio::test]
async fn a_payment_over_budget_is_denied_with_a_receipt_and_replayed() {
    let t = Treasury::start(10_000).await;
    let inv = invoice(9_500, Network::Regtest, HOUR);
    let (status, err) = t.pay("k1", "agent-1", &inv, 1_000).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["error"]["code"], "BUDGET_EXCEEDED");
    assert_eq!(err["error"]["reason_code"], "agent_budget_exceeded");
    let id = err["error"]["details"]["payment_id"].as_str().unwrap();
    let (_, got) = t
        .call(
            "GET",
            &format!("/v1/treasury/payments/{id}"),
            Some(&t.token.clone()),
            None,
        )
        .await;
    assert_eq!(got["payment"]["state"], "PAYMENT_STATE_DENIED");
    let receipt: oa_receipts::Receipt = serde_json::from_value(got["receipt"].clone()).unwrap();
    receipt.verify().unwrap();
    assert_eq!(receipt.body["state"], "denied");
    assert_eq!(t.pay("k1", "agent-1", &inv, 1_000).await, (status, err));
    assert_eq!(t.hydra.pays(), 0);
    assert_eq!(t.budget("agent-1").await["reserved_msat"], "0");

    // No budget at all: denied with its own reason.
    let t = Treasury::start(0).await;
    let (_, err) = t
        .pay("k1", "nobody", &invoice(1_000, Network::Regtest, HOUR), 0)
        .await;
    assert_eq!(err["error"]["reason_code"], "no_budget");
}

#[tokio::test]
async fn a_failed_payment_releases_its_reservation() {
    let t = Treasury::start(100_000).await;
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
    let b = t.budget("agent-1").await;
    assert_eq!(
        (b["spent_msat"].as_str(), b["reserved_msat"].as_str()),
        (Some("0"), Some("0"))
    );
}

#[tokio::test]
async fn hydra_down_is_retryable_and_reserves_nothing() {
    let t = Treasury::start(100_000).await;
    t.hydra.set_mode(Mode::Down);
    let inv = invoice(20_000, Network::Regtest, HOUR);
    let (status, err) = t.pay("k1", "agent-1", &inv, 500).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err["error"]["code"], "HYDRA_UNAVAILABLE");
    assert_eq!(err["error"]["retryable"], true);
    assert_eq!(t.budget("agent-1").await["reserved_msat"], "0");
    assert_eq!(t.count("treasury_payments").await, 0);
    assert_eq!(t.count("receipts").await, 0);
    // The same key works once Hydra is back.
    t.hydra.set_mode(Mode::Pay);
    let (status, body) = t.pay("k1", "agent-1", &inv, 500).await;
    assert_eq!(
        (status, body["payment"]["state"].as_str()),
        (StatusCode::CREATED, Some("PAYMENT_STATE_SUCCEEDED"))
    );
}

/// The resweep's selection: attempts in flight unchanged since the cutoff, and only those; once
/// Hydra answers again the tracker finishes the attempt.
#[tokio::test]
async fn attempts_in_flight_are_found_for_re_driving_by_when_they_last_changed() {
    let clock = ManualClock::new(SystemClock.now_ms());
    let t = Treasury::with(Opts {
        clock: Some(clock.clone()),
        ..Opts::default()
    })
    .await;
    t.hydra.set_mode(Mode::PayDown);
    let (status, body) = t
        .pay(
            "k1",
            "agent-1",
            &invoice(20_000, Network::Regtest, HOUR),
            500,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let changed = clock.now_ms();
    assert_eq!(t.payments.recover_before(changed - 1).await.unwrap(), 0);
    assert_eq!(t.payments.recover_before(changed).await.unwrap(), 1);
    t.hydra.set_mode(Mode::Pay);
    let id = body["payment"]["payment_id"].as_str().unwrap().to_owned();
    let done = oa_testkit::wait_until(
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async {
            let p = t.get_payment(&id).await;
            (p["payment"]["state"] == "PAYMENT_STATE_SUCCEEDED").then_some(())
        },
    )
    .await;
    assert!(done.is_some());
    assert_eq!(t.payments.recover_before(u64::MAX >> 1).await.unwrap(), 0);
    // A tracked attempt that no longer exists (withdrawn meanwhile) ends its tracker.
    t.payments.spawn_tracker("pay_withdrawn".into());
    let ended = oa_testkit::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async { (t.payments.tracked() == 0).then_some(()) },
    )
    .await;
    assert!(ended.is_some(), "still tracking {}", t.payments.tracked());
}

#[tokio::test]
async fn concurrent_payments_never_exceed_the_budget() {
    let t = Treasury::start(100_000).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let inv = invoice(9_000, Network::Regtest, HOUR);
        let (router, token) = (t.router.clone(), t.token.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"idempotency_key": format!("k{i}"), "agent_id": "agent-1", "invoice": inv, "max_fee_msat": "100"});
            let req = http::Request::builder()
                .method("POST")
                .uri("/v1/treasury/payments")
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap();
            tower::ServiceExt::oneshot(router, req).await.unwrap().status()
        }));
    }
    let mut ok: u64 = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::CREATED => ok += 1,
            StatusCode::FORBIDDEN => {}
            other => panic!("unexpected {other}"),
        }
    }
    // 9_100 reserved each: 10 fit in 100_000 at once; once they settled to 9_007 each an 11th
    // may fit (90_070 + 9_100 <= 100_000), a 12th never.
    assert!((10..=11).contains(&ok), "{ok}");
    let b = t.budget("agent-1").await;
    let spent: u64 = b["spent_msat"].as_str().unwrap().parse().unwrap();
    assert_eq!(spent, ok * 9_007);
    assert!(spent <= 100_000);
    assert_eq!(b["reserved_msat"], "0");
    assert_eq!(u64::from(t.hydra.pays()), ok);
    t.ledger_conserved().await;
}

#[tokio::test]
async fn bad_input_is_a_typed_4xx_and_changes_nothing() {
    let t = Treasury::start(100_000).await;
    let good = invoice(1_000, Network::Regtest, HOUR);
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(vectors().join("bolt11/invalid.json")).unwrap(),
    )
    .unwrap();
    let mut cases: Vec<(String, &str)> = vectors["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                json!({"idempotency_key": "k", "agent_id": "a", "invoice": c["invoice"]})
                    .to_string(),
                "INVALID_INVOICE",
            )
        })
        .collect();
    cases.extend([
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": invoice(1_000, Network::Regtest, Duration::from_secs(5))}).to_string(), "INVOICE_EXPIRED"),
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": invoice(1_000, Network::Testnet, HOUR)}).to_string(), "WRONG_NETWORK"),
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": invoice(0, Network::Regtest, HOUR)}).to_string(), "AMOUNT_REQUIRED"),
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": good, "amount_msat": "-5"}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": good, "max_fee_msat": "99999999999999999999"}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": good, "max_fee_msat": "18000000000000000000"}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": good, "tip": "1"}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k", "agent_id": "", "invoice": good}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k", "agent_id": "a b", "invoice": good}).to_string(), "INVALID_REQUEST"),
        (json!({"agent_id": "a", "invoice": good}).to_string(), "INVALID_IDEMPOTENCY_KEY"),
        ("not json".to_owned(), "MALFORMED_JSON"),
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": good, "l402_challenge": format!("L402 macaroon=\"AgEE\", invoice=\"{good}\"")}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k", "agent_id": "a", "l402_challenge": "Bearer realm=\"x\""}).to_string(), "INVALID_L402_CHALLENGE"),
        (json!({"idempotency_key": "k", "agent_id": "a", "l402_challenge": format!("L402 invoice=\"{good}\"")}).to_string(), "INVALID_L402_CHALLENGE"),
        (json!({"idempotency_key": "k", "agent_id": "a", "l402_challenge": "L402 macaroon=\"AgEE\", invoice=\"lnbc1garbage\""}).to_string(), "INVALID_INVOICE"),
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": good, "host": "Api.Example.com"}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k", "agent_id": "a", "invoice": good, "purpose": "x".repeat(257)}).to_string(), "INVALID_REQUEST"),
        (json!({"idempotency_key": "k".repeat(129), "agent_id": "a", "invoice": good}).to_string(), "INVALID_IDEMPOTENCY_KEY"),
    ]);
    for (body, code) in &cases {
        let (status, err) = t
            .call(
                "POST",
                "/v1/treasury/payments",
                Some(&t.token.clone()),
                Some(body),
            )
            .await;
        assert!(status.is_client_error(), "{body}: {status}");
        assert_eq!(err["error"]["code"], *code, "{body}");
    }
    for table in [
        "treasury_payments",
        "receipts",
        "treasury_budget_configs",
        "treasury_budget_windows",
        "idempotency_keys",
        "ledger_transfers",
    ] {
        assert_eq!(t.count(table).await, 0, "{table}");
    }
    assert_eq!(t.hydra.pays(), 0);
}

#[tokio::test]
async fn every_route_refuses_missing_expired_misaddressed_and_underscoped_tokens() {
    let t = Treasury::start(100_000).await;
    let op = t.ring.identity("operator").unwrap();
    let all = [
        "treasury:pay",
        "treasury:admin",
        "treasury:approve",
        "treasury:read",
    ];
    let expired = op
        .mint_at(
            "treasury",
            &all,
            Duration::from_secs(60),
            oa_auth::unix_now_secs() - 3_600,
        )
        .unwrap();
    let wrong_aud = op.mint("hydra", &all, Duration::from_secs(60)).unwrap();
    let mint = |scopes: &[&str]| {
        op.mint("treasury", scopes, Duration::from_secs(60))
            .unwrap()
    };
    let pay = "treasury:pay";
    let admin = "treasury:admin";
    let approve = "treasury:approve";
    let read = "treasury:read";
    let k = json!({"idempotency_key": "k"});
    // (method, path, body, the scope it needs, a token with every other treasury scope)
    let routes: Vec<(&str, &str, Option<serde_json::Value>, &str, String)> = vec![
        (
            "POST",
            "/v1/treasury/payments",
            Some(k.clone()),
            pay,
            mint(&[admin, approve, read]),
        ),
        (
            "POST",
            "/v1/treasury/payments/pay_x/settle",
            Some(k.clone()),
            pay,
            mint(&[admin, approve, read]),
        ),
        (
            "PUT",
            "/v1/treasury/budgets/agent-1",
            Some(json!({"idempotency_key": "k", "limit_msat": "5"})),
            admin,
            mint(&[pay, approve, read]),
        ),
        (
            "PUT",
            "/v1/treasury/budgets/org/acme",
            Some(json!({"idempotency_key": "k", "limit_msat": "5"})),
            admin,
            mint(&[pay, approve, read]),
        ),
        (
            "POST",
            "/v1/treasury/approvals/pay_x/approve",
            Some(k.clone()),
            approve,
            mint(&[pay, admin, read]),
        ),
        (
            "POST",
            "/v1/treasury/approvals/pay_x/deny",
            Some(k.clone()),
            approve,
            mint(&[pay, admin, read]),
        ),
        (
            "PUT",
            "/v1/treasury/policy",
            Some(json!({"idempotency_key": "k", "policy_toml": ""})),
            admin,
            mint(&[pay, approve, read]),
        ),
        (
            "POST",
            "/v1/treasury/policy/evaluate",
            Some(json!({})),
            read,
            mint(&["events:read"]),
        ),
        (
            "GET",
            "/v1/treasury/payments/pay_x",
            None,
            read,
            mint(&["events:read"]),
        ),
        (
            "GET",
            "/v1/treasury/budgets/agent-1",
            None,
            read,
            mint(&["events:read"]),
        ),
        (
            "GET",
            "/v1/treasury/budgets/org/acme",
            None,
            read,
            mint(&["events:read"]),
        ),
        (
            "GET",
            "/v1/treasury/approvals",
            None,
            read,
            mint(&["events:read"]),
        ),
        (
            "GET",
            "/v1/treasury/policy",
            None,
            read,
            mint(&["events:read"]),
        ),
    ];
    let before = t.snapshot().await;
    for (method, path, body, scope, underscoped) in &routes {
        // Hydra's key may not grant treasury scopes at all.
        let overreach = t
            .ring
            .identity("hydra")
            .unwrap()
            .mint("treasury", &[*scope], Duration::from_secs(60))
            .unwrap();
        for (token, want) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some(expired.as_str()), StatusCode::UNAUTHORIZED),
            (Some(wrong_aud.as_str()), StatusCode::UNAUTHORIZED),
            (Some(underscoped.as_str()), StatusCode::FORBIDDEN),
            (Some(overreach.as_str()), StatusCode::FORBIDDEN),
        ] {
            let b = body.as_ref().map(|b| b.to_string());
            let (status, err) = t.call(method, path, token, b.as_deref()).await;
            assert_eq!(status, want, "{method} {path}: {err}");
            assert!(err["error"]["code"].is_string(), "{method} {path}: {err}");
        }
    }
    assert_eq!(t.snapshot().await, before, "refusals change nothing");
}

#[tokio::test]
async fn budgets_are_set_idempotently() {
    let t = Treasury::start(0).await;
    let body = json!({"idempotency_key": "b1", "limit_msat": "5000"}).to_string();
    let (status, b) = t
        .call(
            "PUT",
            "/v1/treasury/budgets/agent-9",
            Some(&t.token.clone()),
            Some(&body),
        )
        .await;
    assert_eq!(
        (status, b["available_msat"].as_str()),
        (StatusCode::OK, Some("5000"))
    );
    let other = json!({"idempotency_key": "b1", "limit_msat": "6000"}).to_string();
    let (status, _) = t
        .call(
            "PUT",
            "/v1/treasury/budgets/agent-9",
            Some(&t.token.clone()),
            Some(&other),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_limit_cannot_go_below_what_is_spent() {
    let t = Treasury::start(0).await;
    let put =
        |key: &str, limit: &str| json!({"idempotency_key": key, "limit_msat": limit}).to_string();
    let url = "/v1/treasury/budgets/agent-1";
    let (status, _) = t
        .call(
            "PUT",
            url,
            Some(&t.token.clone()),
            Some(&put("b1", "100000")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = t
        .pay(
            "k1",
            "agent-1",
            &invoice(60_000, Network::Regtest, HOUR),
            1_000,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // 60_007 spent: a 50_000 limit is refused, 70_000 is fine, and the figures stay consistent.
    let (status, err) = t
        .call(
            "PUT",
            url,
            Some(&t.token.clone()),
            Some(&put("b2", "50000")),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("BUDGET_IN_USE"))
    );
    let (status, b) = t
        .call(
            "PUT",
            url,
            Some(&t.token.clone()),
            Some(&put("b3", "70000")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let figures = (
        b["limit_msat"].as_str(),
        b["spent_msat"].as_str(),
        b["available_msat"].as_str(),
    );
    assert_eq!(figures, (Some("70000"), Some("60007"), Some("9993")));
    t.ledger_conserved().await;
}

#[tokio::test]
async fn the_ledger_statement_shows_budgets_and_spending_and_balances_to_zero() {
    let t = Treasury::start(100_000).await;
    let (status, _) = t
        .pay(
            "k1",
            "agent-1",
            &invoice(40_000, Network::Regtest, HOUR),
            1_000,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let url = format!("/v1/ledger/statement?from_ms=0&to_ms={}", u64::MAX / 4);
    let token = t
        .ring
        .operator_token("treasury", &["ledger:read"], Duration::from_secs(60))
        .unwrap();
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
    let csv = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        csv.contains("\"budget:agent-1\",1,1,0,40007,100000,59993"),
        "{csv}"
    );
    assert!(
        csv.contains("\"spent:agent-1\",1,2,0,0,40007,40007"),
        "{csv}"
    );
    let closing: i128 = csv
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse::<i128>().unwrap())
        .sum();
    assert_eq!(closing, 0, "double entry");
    // Scope and parameters.
    let (status, _) = t.call("GET", &url, Some(&t.token.clone()), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, err) = t
        .call(
            "GET",
            "/v1/ledger/statement?from_ms=5&to_ms=1",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_PERIOD"))
    );
    let (status, err) = t
        .call("GET", "/v1/ledger/statement?from_ms=x", Some(&token), None)
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_QUERY"))
    );
}

fn vectors() -> std::path::PathBuf {
    oa_testkit::vectors_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
}

#[tokio::test]
async fn the_openapi_document_lists_every_treasury_route_with_its_messages() {
    let t = Treasury::start(0).await;
    let (status, doc) = t.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = doc.to_string();
    for path in [
        "/v1/treasury/payments",
        "/v1/treasury/payments/{id}/settle",
        "/v1/treasury/budgets/{kind}/{subject}",
        "/v1/treasury/approvals",
        "/v1/treasury/approvals/{id}/approve",
        "/v1/treasury/approvals/{id}/deny",
        "/v1/treasury/policy/evaluate",
        "/v1/treasury/policy",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    for message in [
        "EvaluateRequest",
        "PolicyDecision",
        "SettlePaymentRequest",
        "ListApprovalsResponse",
    ] {
        assert!(text.contains(message), "{message} missing");
    }
    assert!(
        !text.contains("NOT_SUPPORTED"),
        "every treasury route is built"
    );
}

/// Attempts that end together (their Hydra payments finished at once, picked up by trackers
/// and by recovery racing each other) are committed in shared transactions: each still ends
/// once, with its own receipt in one valid chain, its event carrying that receipt's hash, its
/// budget settled to what it spent, and a replay answering what GET answers.
#[tokio::test]
async fn attempts_ending_together_each_end_once_with_their_own_receipt() {
    const N: usize = 24;
    let t = Treasury::start(100_000).await;
    t.hydra.set_mode(Mode::PayDown);
    let inv: Vec<String> = (0..N)
        .map(|_| invoice(20_000, Network::Regtest, HOUR))
        .collect();
    let mut ids = Vec::new();
    for (i, inv) in inv.iter().enumerate() {
        let (status, body) = t
            .pay(&format!("k{i}"), &format!("agent-{i}"), inv, 500)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(body["payment"]["payment_id"].as_str().unwrap().to_owned());
    }
    t.hydra.set_mode(Mode::Pay);
    // Trackers are already retrying; recovery drives every attempt once more alongside them.
    let (a, b) = tokio::join!(
        t.payments.recover_before(u64::MAX >> 1),
        t.payments.recover_before(u64::MAX >> 1)
    );
    assert_eq!((a.unwrap(), b.unwrap()), (N, N));
    let ended = oa_testkit::wait_until(
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async { (t.count("receipts").await == N as i64).then_some(()) },
    )
    .await;
    assert!(ended.is_some(), "receipts: {}", t.count("receipts").await);
    assert_eq!(t.hydra.pays(), N as u32);
    assert_eq!(t.hydra.max_pays_per_hash(), 1);

    let receipts = t.receipt_chain().await;
    assert_eq!(receipts.len(), N);
    let events = t.events().await;
    for (n, seq) in events.iter().map(|e| &e["seq"]).enumerate() {
        assert_eq!(seq.as_str(), Some((n + 1).to_string().as_str()), "gapless");
    }
    for (i, id) in ids.iter().enumerate() {
        let got = t.get_payment(id).await;
        let p = &got["payment"];
        assert_eq!(p["state"], "PAYMENT_STATE_SUCCEEDED", "{got}");
        let hash = p["receipt_hash"].as_str().unwrap();
        let receipt = receipts
            .iter()
            .find(|r| r.body["payment_id"] == id.as_str())
            .unwrap();
        assert_eq!(receipt.hash.to_string(), hash);
        assert_eq!(got["receipt"]["hash"], hash);
        let succeeded: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["payload"]["payment_id"] == id.as_str())
            .filter(|e| e["kind"] == "payment.succeeded")
            .collect();
        assert_eq!(succeeded.len(), 1, "{id} ends once");
        assert_eq!(succeeded[0]["payload"]["receipt_hash"], hash);
        let (status, replay) = t
            .pay(&format!("k{i}"), &format!("agent-{i}"), &inv[i], 500)
            .await;
        assert_eq!((status, &replay), (StatusCode::CREATED, &got));
        let b = t.budget(&format!("agent-{i}")).await;
        assert_eq!(
            (b["spent_msat"].as_str(), b["reserved_msat"].as_str()),
            (Some("20007"), Some("0"))
        );
    }
    t.ledger_conserved().await;
}
