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
    for r in a.receipt_chain().await {
        assert_eq!(r.schema, "oa.treasury.payment_attempt_receipt.v1");
    }
    drop((a, b));
    pg.cleanup().await.unwrap();
}

/// A treasury binary running as its own OS process; killed (and reaped) on drop, so a failing
/// test leaves nothing behind.
struct Proc {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `hydra` over a real TCP listener with the routes treasury's HTTP client calls.
async fn serve_hydra(hydra: FakeHydra) -> std::net::SocketAddr {
    use axum::{
        Json,
        extract::State,
        routing::{get, post},
    };
    use oa_proto::hydra as h;
    use treasury::hydra_client::Hydra;
    let app = axum::Router::new()
        .route(
            "/v1/liquidity/quote_pay",
            post(
                |State(f): State<FakeHydra>, Json(r): Json<h::QuotePayRequest>| async move {
                    f.quote_pay(r).await.map(Json)
                },
            ),
        )
        .route(
            "/v1/liquidity/pay",
            post(
                |State(f): State<FakeHydra>, Json(r): Json<h::PayRequest>| async move {
                    f.pay(r).await.map(Json)
                },
            ),
        )
        .route(
            "/v1/liquidity/status",
            get(|State(f): State<FakeHydra>| async move { f.liquidity_status().await.map(Json) }),
        )
        .route(
            "/v1/routing/score",
            post(
                |State(f): State<FakeHydra>, Json(r): Json<h::RoutingScoreRequest>| async move {
                    f.routing_score(r).await.map(Json)
                },
            ),
        )
        .with_state(hydra);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn spawn_treasury(
    dir: &std::path::Path,
    ring: &oa_testkit::DevKeyring,
    name: &str,
    database_url: &str,
    hydra: std::net::SocketAddr,
) -> Proc {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], oa_testkit::free_port().unwrap()));
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[[rules]]\nid = \"default\"\naction = \"pay\"\nrails = [\"direct_liquidity\"]\n",
    )
    .unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_treasury"))
        .arg(format!("--listen={addr}"))
        .arg(format!("--database-url={database_url}"))
        .arg("--database-max-connections=8")
        .arg(format!(
            "--receipt-key-file={}",
            ring.receipt_key_file("treasury").display()
        ))
        .arg(format!("--trust-file={}", ring.trust_file().display()))
        .arg(format!(
            "--identity-key-file={}",
            ring.identity_file("treasury").display()
        ))
        .arg(format!("--identity-kid={}", ring.kid("treasury")))
        .arg(format!("--hydra-url=http://{hydra}"))
        .arg(format!("--policy-file={}", policy.display()))
        .arg("--default-agent-budget-msat=0")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc { child, addr }
}

async fn ready(client: &reqwest::Client, p: &mut Proc) {
    let url = format!("http://{}/readyz", p.addr);
    let ok = oa_testkit::wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let ok = client.get(&url).send().await.ok()?.status().is_success();
            ok.then_some(())
        }
    })
    .await;
    assert!(
        ok.is_some(),
        "treasury at {} never became ready (exited: {:?})",
        p.addr,
        p.child.try_wait()
    );
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = client.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The same race as above, but between two real treasury OS processes (the binary), each with
/// its own pool, talking to a fake Hydra over HTTP: 64 concurrent payments, 32 keys each sent to
/// both processes, against one agent budget that fits six of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_os_processes_never_overspend_one_budget_and_pay_each_key_once_on_postgres() {
    let Some(pg) = TestDb::postgres(&[&treasury::MIGRATIONS, &oa_ledger::MIGRATIONS])
        .await
        .unwrap()
    else {
        eprintln!("OA_TEST_POSTGRES_URL is not set: skipping the two-OS-process PostgreSQL test");
        return;
    };
    const LIMIT: u64 = 60_000;
    let hydra = FakeHydra::new();
    let hydra_addr = serve_hydra(hydra.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ring = oa_testkit::DevKeyring::ensure(dir.path()).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut a = spawn_treasury(dir.path(), &ring, "a", &pg.url, hydra_addr);
    let mut b = spawn_treasury(dir.path(), &ring, "b", &pg.url, hydra_addr);
    ready(&client, &mut a).await;
    ready(&client, &mut b).await;
    let token = ring
        .operator_token(
            "treasury",
            &["treasury:pay", "treasury:admin"],
            Duration::from_secs(600),
        )
        .unwrap();
    let (status, v) = call(
        &client,
        reqwest::Method::PUT,
        format!("http://{}/v1/treasury/budgets/agent-1", a.addr),
        &token,
        Some(json!({"idempotency_key": "b", "limit_msat": LIMIT.to_string()})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");

    // 32 keys, each sent to both processes at once: 64 concurrent requests, each reserving
    // 9 000 + 100 of the agent's 60 000.
    let addrs = [a.addr, b.addr];
    let mut tasks = Vec::new();
    for i in 0..32u32 {
        let body = json!({"idempotency_key": format!("k{i}"), "agent_id": "agent-1", "invoice": invoice(9_000, Network::Regtest, HOUR), "max_fee_msat": "100", "purpose": "race"});
        for addr in addrs {
            let (client, token, body) = (client.clone(), token.clone(), body.clone());
            let url = format!("http://{addr}/v1/treasury/payments");
            tasks.push(tokio::spawn(async move {
                (
                    i,
                    call(&client, reqwest::Method::POST, url, &token, Some(body)).await,
                )
            }));
        }
    }
    let mut by_key: BTreeMap<u32, Vec<(StatusCode, Value)>> = BTreeMap::new();
    for task in tasks {
        let (i, answer) = task.await.unwrap();
        by_key.entry(i).or_default().push(answer);
    }
    let mut ids = BTreeMap::new();
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
        let got: Vec<String> = answers
            .iter()
            .map(|(_, v)| crate::harness::payment_id(v))
            .collect();
        assert_eq!(got.len(), 2, "k{i}: {answers:?}");
        assert_eq!(
            got[0], got[1],
            "k{i}: one attempt per key, whichever process"
        );
        ids.insert(*i, got[0].clone());
    }

    // Bounded polling, alternating processes, until every attempt is terminal; the budget is
    // sampled on the way and must never be past its limit.
    let terminal = ["succeeded", "failed", "denied"];
    let mut states: BTreeMap<u32, String> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut round = 0usize;
    loop {
        for (i, id) in &ids {
            if states
                .get(i)
                .is_some_and(|s| terminal.contains(&s.as_str()))
            {
                continue;
            }
            let addr = addrs[(round + *i as usize) % 2];
            let (status, v) = call(
                &client,
                reqwest::Method::GET,
                format!("http://{addr}/v1/treasury/payments/{id}"),
                &token,
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "k{i}: {v}");
            let state = v["payment"]["state"]
                .as_str()
                .or(v["state"].as_str())
                .unwrap_or_else(|| panic!("k{i}: no state in {v}"));
            // The wire form is the contract's enum name (`PAYMENT_STATE_SUCCEEDED`).
            let state = state
                .strip_prefix("PAYMENT_STATE_")
                .unwrap_or(state)
                .to_ascii_lowercase();
            states.insert(*i, state);
        }
        let (status, budget) = call(
            &client,
            reqwest::Method::GET,
            format!("http://{}/v1/treasury/budgets/agent-1", addrs[round % 2]),
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{budget}");
        let spent: u64 = budget["spent_msat"].as_str().unwrap().parse().unwrap();
        let reserved: u64 = budget["reserved_msat"].as_str().unwrap().parse().unwrap();
        assert!(spent + reserved <= LIMIT, "past the budget: {budget}");
        if states.len() == ids.len() && states.values().all(|s| terminal.contains(&s.as_str())) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "payments never finished: {states:?}"
        );
        round += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let succeeded = states.values().filter(|s| *s == "succeeded").count() as u64;
    assert!(
        states.values().all(|s| s == "succeeded" || s == "denied"),
        "{states:?}"
    );
    let (_, budget) = call(
        &client,
        reqwest::Method::GET,
        format!("http://{}/v1/treasury/budgets/agent-1", b.addr),
        &token,
        None,
    )
    .await;
    let spent: u64 = budget["spent_msat"].as_str().unwrap().parse().unwrap();
    assert_eq!(budget["reserved_msat"], "0", "{budget}");
    assert!(spent <= LIMIT, "never past the budget: {spent}");
    // Six reservations of 9 100 fit in 60 000; settled to 9 007 each, a seventh still does not.
    assert_eq!(succeeded, 6, "exactly what fits: {states:?}");
    assert_eq!(spent, 6 * 9_007);
    // Each key paid at most once: one Hydra pay per succeeded attempt, none per hash twice.
    assert_eq!(u64::from(hydra.pays()), succeeded);
    assert!(hydra.max_pays_per_hash() <= 1, "a payment hash paid twice");
    let db = &pg.db;
    let attempts: i64 =
        sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM treasury_payments")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(attempts, 32, "one attempt per key");
    {
        let mut conn = db.pool().acquire().await.unwrap();
        let violations = oa_ledger::check_invariants(&mut conn).await.unwrap();
        assert!(violations.is_empty(), "{violations:?}");
    }
    drop((a, b));
    pg.cleanup().await.unwrap();
}
