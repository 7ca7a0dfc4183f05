//! Fault drills on the real suite: services are SIGKILLed at random moments while callers pay
//! through treasury, `oa up --restart` starts them again, and afterwards nothing may be wrong:
//! every attempt terminal in every service, no invoice paid twice, every success backed by the
//! executor's payment and receipt (and no failure by one), the ledgers balanced, the money the
//! same in treasury, Hydra and the executor, and every receipt log verifying.
//!
//! `OA_FAULT_PAYMENTS` and `OA_FAULT_KILLS` make a longer drill by hand; `OA_FAULT_SEED` replays
//! a kill schedule.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sqlx::AnyPool;

use crate::suite::{Up, invoice, oa};

const SERVICES: [&str; 5] = [
    "treasury",
    "hydra",
    "aegis",
    "wallet-executor",
    "lightning-ops",
];
const CALLERS: usize = 8;
/// How long one payment may take to reach a terminal state, kills and restarts included.
const PAYMENT_DEADLINE: Duration = Duration::from_secs(90);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: a reproducible kill schedule from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    }
}

fn pid_of(dir: &Path, svc: &str) -> Option<u32> {
    let suite: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("suite.json")).ok()?).ok()?;
    u32::try_from(suite["services"][svc]["pid"].as_u64()?).ok()
}

/// SIGKILLs `svc` and waits (bounded) until `oa up` has started it again.
async fn kill_and_wait_for_restart(dir: &Path, svc: &str) {
    let pid = pid_of(dir, svc).expect("suite.json names every service's pid");
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {pid} ({svc})");
    let restarted = oa_testkit::wait_until(
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async { pid_of(dir, svc).filter(|p| *p != pid) },
    )
    .await;
    assert!(restarted.is_some(), "oa up did not restart {svc}");
}

/// Pays through treasury until the payment is terminal, whatever is killed meanwhile: the same
/// idempotency key is replayed after a transport error or a 5xx, and a payment still in flight is
/// polled. Returns the terminal payment.
async fn pay_until_terminal(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: &Value,
) -> Value {
    let deadline = Instant::now() + PAYMENT_DEADLINE;
    let key = body["idempotency_key"].as_str().unwrap();
    let mut payment_id: Option<String> = None;
    let mut last = String::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "{key} not terminal within {PAYMENT_DEADLINE:?}; last answer: {last}"
        );
        let request = match &payment_id {
            Some(id) => client.get(format!("{base}/v1/treasury/payments/{id}")),
            None => client
                .post(format!("{base}/v1/treasury/payments"))
                .json(body),
        };
        match request.bearer_auth(token).send().await {
            Err(e) => last = format!("transport: {e}"),
            Ok(resp) => {
                let status = resp.status();
                let v = resp.json::<Value>().await.unwrap_or(Value::Null);
                last = format!("{status} {v}");
                if status.is_success() {
                    let payment = &v["payment"];
                    payment_id = payment["payment_id"].as_str().map(str::to_owned);
                    if matches!(
                        payment["state"].as_str(),
                        Some("PAYMENT_STATE_SUCCEEDED" | "PAYMENT_STATE_FAILED")
                    ) {
                        return payment.clone();
                    }
                } else {
                    // Unavailable dependencies are 5xx (retry); anything else is a bug here.
                    assert!(
                        status.is_server_error() || status.as_u16() == 429,
                        "{key}: {last}"
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The databases of the paying services, SQLite or PostgreSQL.
pub(crate) struct Dbs {
    treasury: AnyPool,
    hydra: AnyPool,
    executor: AnyPool,
}

impl Dbs {
    pub(crate) async fn open(urls: [String; 3]) -> Dbs {
        sqlx::any::install_default_drivers();
        let open = |url: String| async move {
            sqlx::pool::PoolOptions::<sqlx::Any>::new()
                .max_connections(2)
                .connect(&url)
                .await
                .unwrap()
        };
        let [t, h, w] = urls;
        Dbs {
            treasury: open(t).await,
            hydra: open(h).await,
            executor: open(w).await,
        }
    }

    fn sqlite(dir: &Path) -> [String; 3] {
        ["treasury", "hydra", "wallet-executor"].map(|svc| {
            format!(
                "sqlite://{}?mode=ro",
                dir.join("db").join(format!("{svc}.db")).display()
            )
        })
    }
}

async fn count(db: &AnyPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

/// `(payment_hash, amount_msat + fee_msat)` of every row `sql` selects.
async fn paid(db: &AnyPool, sql: &'static str) -> BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(db).await.unwrap();
    let n = rows.len();
    let map: BTreeMap<_, _> = rows.into_iter().collect();
    assert_eq!(map.len(), n, "a payment hash paid twice: {sql}");
    map
}

async fn receipt_hashes(db: &AnyPool, sql: &'static str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(db).await.unwrap()
}

/// The sum of a ledger statement's closing balances (zero when it balances).
fn statement_sum(dir: &str, svc: &str) -> i128 {
    let (ok, csv) = oa(&["ledger", "statement", "--data-dir", dir, "--service", svc]);
    assert!(ok, "{csv}");
    csv.lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse::<i128>().unwrap())
        .sum()
}

/// Callers pay through treasury (spread over its replicas) while `disrupt` runs, and on until
/// `min_payments` are done after it ends; returns every payment, terminal.
pub(crate) async fn pay_through<F: std::future::Future<Output = ()>>(
    up: &Up,
    min_payments: usize,
    disrupt: F,
) -> Vec<Value> {
    // Invoices first (the sim lives in the executor, which may be killed), with room for the
    // load to run on until the disruption is over.
    let capacity = min_payments * 6;
    let mut invoices = Vec::with_capacity(capacity);
    for i in 0..capacity {
        invoices.push(invoice(up, 1_000 + i as u64, 3600).await);
    }
    let invoices = Arc::new(invoices);
    let mut urls: Vec<String> = up.suite["services"]["treasury"]["replicas"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| r["url"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    if urls.is_empty() {
        urls.push(up.url("treasury"));
    }

    let disrupting = Arc::new(AtomicBool::new(true));
    let next = Arc::new(AtomicUsize::new(0));
    let token = up.token("treasury");
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (invoices, disrupting, next, token) = (
                invoices.clone(),
                disrupting.clone(),
                next.clone(),
                token.clone(),
            );
            let base = urls[caller % urls.len()].clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= invoices.len()
                        || (i >= min_payments && !disrupting.load(Ordering::Relaxed))
                    {
                        return done;
                    }
                    let body = json!({
                        "idempotency_key": format!("fault-{i}"),
                        "agent_id": format!("fault-agent-{caller}"),
                        "invoice": invoices[i],
                        "max_fee_msat": "5000",
                    });
                    done.push(pay_until_terminal(&client, &base, &token, &body).await);
                }
            })
        })
        .collect();
    disrupt.await;
    let started_by_then = next.load(Ordering::Relaxed);
    disrupting.store(false, Ordering::Relaxed);
    let mut payments = Vec::new();
    for c in callers {
        payments.extend(c.await.unwrap());
    }
    assert!(
        started_by_then < invoices.len(),
        "the load ran out of invoices before the disruption was over; raise the capacity"
    );
    assert!(payments.len() >= min_payments);
    payments
}

/// What must hold after any drill: every attempt terminal in every service, nothing paid twice,
/// the same money in treasury, Hydra and the executor as the callers were told, the ledgers
/// balanced, every receipt log verifying and holding every success's receipts.
pub(crate) async fn check_after_faults(up: &Up, dbs: &Dbs, payments: &[Value]) {
    let succeeded: BTreeMap<String, i64> = payments
        .iter()
        .filter(|p| p["state"] == "PAYMENT_STATE_SUCCEEDED")
        .map(|p| {
            let amount: i64 = p["amount_msat"].as_str().unwrap().parse().unwrap();
            let fee: i64 = p["fee_msat"].as_str().unwrap().parse().unwrap();
            (p["payment_hash"].as_str().unwrap().to_owned(), amount + fee)
        })
        .collect();
    eprintln!(
        "{} payments, {} succeeded, failures: {:?}",
        payments.len(),
        succeeded.len(),
        payments
            .iter()
            .filter_map(|p| p["failure_code"].as_str().filter(|c| !c.is_empty()))
            .collect::<Vec<_>>()
    );
    assert!(
        succeeded.len() * 2 > payments.len(),
        "most payments succeed despite the faults"
    );

    // Every attempt terminal everywhere (recovery may still be finishing: bounded wait).
    let settled = oa_testkit::wait_until(Duration::from_secs(30), Duration::from_millis(100), || async {
        let open = count(&dbs.treasury, "SELECT COUNT(*) FROM treasury_payments WHERE state NOT IN ('succeeded', 'failed', 'denied')").await
            + count(&dbs.hydra, "SELECT COUNT(*) FROM hydra_quotes WHERE state = 'paying'").await
            + count(&dbs.executor, "SELECT COUNT(*) FROM wallet_payments WHERE status = 'in_flight'").await;
        (open == 0).then_some(())
    })
    .await;
    assert!(settled.is_some(), "attempts left in flight after recovery");

    // Nothing paid twice, nothing paid without being recorded, the same money in every service.
    let t_paid = paid(&dbs.treasury, "SELECT payment_hash, amount_msat + fee_msat FROM treasury_payments WHERE state = 'succeeded'").await;
    let h_paid = paid(
        &dbs.hydra,
        "SELECT payment_hash, amount_msat + fee_msat FROM hydra_quotes WHERE state = 'paid'",
    )
    .await;
    let w_paid = paid(&dbs.executor, "SELECT payment_hash, amount_msat + fee_msat FROM wallet_payments WHERE status = 'succeeded'").await;
    assert_eq!(
        t_paid, succeeded,
        "treasury's records are what the callers were told"
    );
    assert_eq!(
        h_paid, succeeded,
        "Hydra paid exactly what treasury says succeeded"
    );
    assert_eq!(
        w_paid, succeeded,
        "the executor paid exactly what treasury says succeeded"
    );
    let dir = up.dir.path();
    let journal = std::fs::read_to_string(dir.join("wallet-executor-sim.jsonl")).unwrap();
    let mut sends = BTreeSet::new();
    for line in journal.lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        if entry["t"] == "send" {
            let hash = entry["payment_hash"].as_str().unwrap().to_owned();
            assert!(
                sends.insert(hash.clone()),
                "the node was asked twice to pay {hash}"
            );
        }
    }
    assert!(succeeded.keys().all(|h| sends.contains(h)));

    // Ledgers balance; every receipt log verifies and holds each success's receipts.
    let d = dir.to_str().unwrap();
    assert_eq!(statement_sum(d, "treasury"), 0);
    assert_eq!(statement_sum(d, "hydra"), 0);
    let export = dir.join("export.jsonl");
    let (ok, out) = oa(&[
        "receipts",
        "export",
        "--data-dir",
        d,
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = oa(&["receipts", "verify", export.to_str().unwrap()]);
    assert!(ok && out.contains("0 failures"), "{out}");
    let exported = std::fs::read_to_string(&export).unwrap();
    let mut backing = receipt_hashes(
        &dbs.treasury,
        "SELECT receipt_hash FROM treasury_payments WHERE state = 'succeeded'",
    )
    .await;
    backing.extend(
        receipt_hashes(
            &dbs.hydra,
            "SELECT receipt_hash FROM hydra_quotes WHERE state = 'paid'",
        )
        .await,
    );
    backing.extend(
        receipt_hashes(
            &dbs.executor,
            "SELECT receipt_hash FROM wallet_payments WHERE status = 'succeeded'",
        )
        .await,
    );
    assert_eq!(backing.len(), succeeded.len() * 3);
    for hash in backing {
        assert!(
            exported.contains(&format!("\"{hash}\"")),
            "receipt {hash} missing from the export"
        );
    }
}

fn seed() -> u64 {
    let seed = env_or(
        "OA_FAULT_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    eprintln!("fault drill: seed {seed} (OA_FAULT_SEED replays it)");
    seed
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_any_service_under_load_loses_nothing_and_pays_nothing_twice() {
    let min_payments = usize::try_from(env_or("OA_FAULT_PAYMENTS", 150)).unwrap();
    let kills = env_or("OA_FAULT_KILLS", 8);
    let mut rng = Rng(seed());
    let up = Up::start_with(&["--restart"]);
    let dir = up.dir.path().to_owned();
    // Every service is killed at least once (in a shuffled order), then random ones.
    let mut order = SERVICES.to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.next(i as u64 + 1) as usize);
    }
    let kill = async {
        let mut killed = Vec::new();
        for k in 0..kills {
            tokio::time::sleep(Duration::from_millis(100 + rng.next(400))).await;
            let svc = order
                .get(k as usize)
                .copied()
                .unwrap_or_else(|| SERVICES[rng.next(SERVICES.len() as u64) as usize]);
            kill_and_wait_for_restart(&dir, svc).await;
            killed.push(svc);
        }
        eprintln!("killed: {killed:?}");
    };
    let payments = pay_through(&up, min_payments, kill).await;
    let dbs = Dbs::open(Dbs::sqlite(&dir)).await;
    check_after_faults(&up, &dbs, &payments).await;
    let status = up.stop();
    assert!(status.success(), "{status}");
}
