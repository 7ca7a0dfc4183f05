//! Aegis, Hydra and the wallet-executor together over loopback, as deployed: Aegis serves HTTP
//! and pays claims through a real Hydra (`--hydra-url`, its own identity); Hydra asks Aegis for
//! verifications over HTTP (`--aegis-url`) and pays through a real wallet-executor over gRPC; the
//! executor runs the simulated Lightning network in-process. Nothing is faked.
//!
//! - Warranty -> claim -> payout: the claimant's invoice (made by another node of the sim) is
//!   paid exactly once, coverage decreases, the provider's bond is drawn; a second claim beyond
//!   the coverage left is refused.
//! - Pay-after-verify: a Hydra credit envelope settles (pays the provider's invoice) only on
//!   Aegis's passed verification; a failed one defaults the envelope and pays nothing.
//!
//! After each, the three services' receipt logs are exported together and verified by the
//! offline auditor (every cross-service link rule of `oa_receipts::links` holds), and ledger
//! conservation holds on Aegis's and Hydra's books.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, body::Body};
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use oa_money::Msat;
use oa_service::{Clock, SystemClock};
use oa_testkit::DevKeyring;
use serde_json::{Value, json};
use tower::ServiceExt;
use wallet_executor::node::sim::{InvoiceState, SimNetwork};

use crate::{
    harness::{Aegis, code, objective_evidence, objective_work},
    underwriting::{open_claim, resolve, s},
};

/// The scopes treasury's token for Hydra carries in these scenarios.
const HYDRA_SCOPES: [&str; 2] = ["hydra:credit", "hydra:read"];
const HOUR: Duration = Duration::from_secs(3_600);

fn receipt_key_id(ring: &DevKeyring, service: &str) -> String {
    let secret = std::fs::read_to_string(ring.receipt_key_file(service)).unwrap();
    oa_receipts::ReceiptKey::from_secret_hex(secret.trim())
        .unwrap()
        .key_id()
        .to_owned()
}

/// Serves `router` on `listener` until the returned sender fires (or is dropped).
fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    (tx, task)
}

/// The wallet-executor on the simulated network, serving gRPC and HTTP on loopback.
struct Executor {
    sim: SimNetwork,
    grpc_addr: SocketAddr,
    db_url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Executor {
    async fn start(dir: &std::path::Path, ring: &DevKeyring) -> Executor {
        let db_url = format!("sqlite://{}", dir.join("wallet.db").display());
        let config = wallet_executor::Config::parse_from([
            "wallet-executor".to_owned(),
            "--listen=127.0.0.1:0".into(),
            "--grpc-listen=127.0.0.1:0".into(),
            format!("--database-url={db_url}"),
            format!(
                "--receipt-key-file={}",
                ring.receipt_key_file("wallet-executor").display()
            ),
            format!("--trust-file={}", ring.trust_file().display()),
        ]);
        let app = wallet_executor::build_with(&config, Arc::new(SystemClock), None)
            .await
            .unwrap();
        let sim = app.sim.clone().unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = grpc.local_addr().unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(wallet_executor::serve(app, http, grpc, async move {
            let _ = rx.await;
        }));
        Executor {
            sim,
            grpc_addr,
            db_url,
            stop,
            task,
        }
    }
}

/// The three services on loopback, sharing one dev keyring (so each trusts the others' tokens).
struct Suite {
    aegis: Aegis,
    exec: Executor,
    hydra: hydra::App,
    /// Treasury's token for Hydra's credit API.
    hydra_token: String,
    servers: Vec<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Suite {
    async fn start() -> Suite {
        let dir = tempfile::tempdir().unwrap();
        let ring = DevKeyring::ensure(dir.path()).unwrap();
        let exec = Executor::start(dir.path(), &ring).await;
        // Both HTTP ports first: each service is told the other's URL when it is built.
        let aegis_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hydra_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let aegis_url = format!("http://{}", aegis_listener.local_addr().unwrap());
        let hydra_url = format!("http://{}", hydra_listener.local_addr().unwrap());
        let hydra_db = format!("sqlite://{}", dir.path().join("hydra.db").display());
        let aegis_flags = [
            format!("--hydra-url={hydra_url}"),
            format!(
                "--identity-key-file={}",
                ring.identity_file("aegis").display()
            ),
            format!("--identity-kid={}", ring.kid("aegis")),
        ];
        let hydra_config = hydra::Config::try_parse_from([
            "hydra".to_owned(),
            "--listen=127.0.0.1:0".into(),
            format!("--database-url={hydra_db}"),
            format!(
                "--receipt-key-file={}",
                ring.receipt_key_file("hydra").display()
            ),
            format!("--trust-file={}", ring.trust_file().display()),
            format!(
                "--identity-key-file={}",
                ring.identity_file("hydra").display()
            ),
            format!("--identity-kid={}", ring.kid("hydra")),
            format!("--executor-url=http://{}", exec.grpc_addr),
            format!(
                "--executor-receipt-keys={}",
                receipt_key_id(&ring, "wallet-executor")
            ),
            format!("--aegis-url={aegis_url}"),
            format!("--aegis-receipt-keys={}", receipt_key_id(&ring, "aegis")),
        ])
        .unwrap();
        let flags: Vec<&str> = aegis_flags.iter().map(String::as_str).collect();
        let aegis = Aegis::start_full_in(dir, None, &flags, aegis::Deps::default()).await;
        let hydra = hydra::build(
            &hydra_config,
            Arc::new(SystemClock) as Arc<dyn Clock>,
            hydra::Deps::default(),
        )
        .await
        .unwrap();
        let servers = vec![
            serve(aegis_listener, aegis.router.clone()),
            serve(hydra_listener, hydra.http.clone()),
        ];
        let hydra_token = ring
            .identity("treasury")
            .unwrap()
            .mint("hydra", &HYDRA_SCOPES, Duration::from_secs(600))
            .unwrap();
        Suite {
            aegis,
            exec,
            hydra,
            hydra_token,
            servers,
        }
    }

    async fn hydra_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.hydra_token))
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let resp = self.hydra.http.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn hydra_ok(&self, path: &str, body: Value) -> Value {
        let (st, v) = self.hydra_call("POST", path, Some(body)).await;
        assert_eq!(st, StatusCode::OK, "{path}: {v}");
        v
    }

    /// A real invoice of sim node `alias`.
    fn invoice(
        &self,
        alias: &str,
        amount: Option<u64>,
    ) -> wallet_executor::node::sim::CreatedInvoice {
        self.exec
            .sim
            .create_invoice(alias, amount.map(|a| Msat::new(a).unwrap()), "e2e", HOUR)
            .unwrap()
    }

    /// Every receipt of one service's log, read from its database.
    async fn receipts_at(url: &str) -> Vec<oa_receipts::Receipt> {
        let db = oa_store::Db::connect(url, &oa_store::DbOptions::default())
            .await
            .unwrap();
        let rows =
            sqlx::query_scalar::<sqlx::Any, String>("SELECT json FROM receipts ORDER BY log_index")
                .fetch_all(db.pool())
                .await
                .unwrap();
        db.close().await;
        rows.iter()
            .map(|j| serde_json::from_str(j).unwrap())
            .collect()
    }

    async fn hydra_receipts(&self) -> Vec<oa_receipts::Receipt> {
        sqlx::query_scalar::<sqlx::Any, String>("SELECT json FROM receipts ORDER BY log_index")
            .fetch_all(self.hydra.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|j| serde_json::from_str(j).unwrap())
            .collect()
    }

    /// Exports Aegis's, Hydra's and the executor's logs as one file and verifies it offline:
    /// hashes, signatures, chains and every cross-service link rule. Returns the receipts.
    async fn audit(&self) -> Vec<oa_receipts::Receipt> {
        let mut receipts = self.aegis.all_receipts().await;
        receipts.extend(self.hydra_receipts().await);
        receipts.extend(Suite::receipts_at(&self.exec.db_url).await);
        let mut keys: Vec<oa_receipts::Issuer> =
            receipts.iter().map(|r| r.issuer.clone()).collect();
        keys.sort_by(|a, b| (&a.service, &a.key_id).cmp(&(&b.service, &b.key_id)));
        keys.dedup();
        let mut out = Vec::new();
        oa_receipts::write_export(&mut out, &keys, &receipts).unwrap();
        let report = oa_receipts::verify_export(std::io::BufReader::new(out.as_slice()));
        assert!(report.is_ok(), "{report:?}");
        let services: Vec<&str> = report
            .issuers
            .iter()
            .map(|i| i.issuer.service.as_str())
            .collect();
        for svc in ["aegis", "hydra", "wallet-executor"] {
            assert!(
                services.contains(&svc),
                "{svc} is missing from {services:?}"
            );
        }
        receipts
    }

    /// Debits equal credits and no limit is crossed, on Aegis's and on Hydra's ledger.
    async fn ledgers_ok(&self) {
        self.aegis.assert_ledger_ok().await;
        let mut conn = self.hydra.db.pool().acquire().await.unwrap();
        let v = oa_ledger::check_invariants(&mut conn).await.unwrap();
        assert!(v.is_empty(), "hydra's ledger: {v:?}");
    }

    async fn stop(self) {
        for (tx, task) in self.servers {
            let _ = tx.send(());
            task.await.unwrap();
        }
        self.hydra.stop();
        self.hydra.db.close().await;
        self.aegis.db.close().await;
        let _ = self.exec.stop.send(());
        self.exec.task.await.unwrap().unwrap();
    }
}

fn receipt(v: &Value) -> oa_receipts::Receipt {
    serde_json::from_value(v.clone()).unwrap()
}

const WORK_MSAT: u64 = 10_000_000;

#[tokio::test]
async fn a_warranty_claim_pays_the_claimants_real_invoice_once_through_hydra_and_draws_the_bond() {
    let suite = Suite::start().await;
    let a = &suite.aegis;
    // A passed verification of agent-w's work, a warranty on it and agent-w's bond.
    let v = crate::harness::verify(
        a,
        "v1",
        objective_work("agent-w", WORK_MSAT),
        objective_evidence(None),
    )
    .await;
    assert_eq!(
        s(&v, "/verification/verdict"),
        "VERIFICATION_VERDICT_PASSED"
    );
    let w = a
        .ok(
            "/v1/aegis/warranty/issue",
            json!({"idempotency_key": "w1", "verification_id": s(&v, "/verification/verification_id"),
                   "coverage_msat": "6000000",
                   "expires_at_ms": (a.clock.now_ms() + 30 * 86_400_000).to_string()}),
        )
        .await;
    let wid = s(&w, "/warranty/warranty_id");
    let b = a
        .ok(
            "/v1/aegis/bond/reserve",
            json!({"idempotency_key": "b1", "warranty_id": wid, "provider_id": "agent-w",
                   "amount_msat": "2500000"}),
        )
        .await;
    assert_eq!(s(&b, "/bond/state"), "reserved");

    // The claimant's invoice is carol's, on the sim.
    let inv = suite.invoice("carol", Some(4_000_000));
    let (st, c) = open_claim(a, "c1", &wid, 4_000_000, &inv.bolt11).await;
    assert_eq!(st, StatusCode::OK, "{c}");
    assert_eq!(s(&c, "/claim/state"), "open");
    let cid = s(&c, "/claim/claim_id");
    assert_eq!(suite.exec.sim.send_count(&inv.payment_hash), 0);

    // Resolved PAY with the provider at fault: Aegis -> Hydra -> executor -> carol.
    let (st, r) = resolve(a, "r1", &cid, "CLAIM_DECISION_PAY", true, "").await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(s(&r, "/claim/state"), "paid", "{r}");
    assert_eq!(s(&r, "/claim/payout_msat"), "4000000");
    assert_eq!(suite.exec.sim.send_count(&inv.payment_hash), 1);
    assert_eq!(
        suite.exec.sim.invoice_state(&inv.payment_hash),
        Some(InvoiceState::Settled)
    );
    // Hydra's receipt is the real one, linked by Aegis's resolution.
    let hydra_receipt = receipt(&r["hydra_receipt"]);
    hydra_receipt.verify().unwrap();
    assert_eq!(hydra_receipt.issuer.service, "hydra");
    assert_eq!(hydra_receipt.schema, "oa.hydra.invoice_pay_receipt.v1");
    let resolution = receipt(&r["receipt"]);
    assert_eq!(resolution.links, vec![hydra_receipt.hash]);
    assert_eq!(
        resolution.body["payment_hash"],
        hydra_receipt.body["payment_hash"]
    );
    let fee: u64 = s(&r, "/claim/fee_msat").parse().unwrap();
    assert_eq!(
        hydra_receipt.body["fee_msat"].as_str().unwrap(),
        fee.to_string()
    );
    // Coverage decreased; the bond was drawn for the payout, up to its stake.
    let w = a.get(&format!("/v1/aegis/warranty/{wid}")).await.1;
    assert_eq!(s(&w, "/warranty/remaining_msat"), "2000000");
    assert_eq!(s(&w, "/warranty/paid_out_msat"), "4000000");
    assert_eq!(s(&r, "/bond/state"), "drawn");
    assert_eq!(s(&r, "/bond/drawn_msat"), "2500000");
    let p = a.balances("provider:agent-w").await;
    assert_eq!(
        (p.debits_posted_msat, p.debits_pending_msat),
        (2_500_000, 0)
    );
    assert_eq!(
        a.balances("claims_paid").await.credits_posted_msat,
        4_000_000
    );
    assert_eq!(a.balances("routing_fees").await.credits_posted_msat, fee);

    // A replayed resolve pays nothing more.
    let (_, again) = resolve(a, "r1", &cid, "CLAIM_DECISION_PAY", true, "").await;
    assert_eq!(again["claim"], r["claim"]);
    assert_eq!(suite.exec.sim.send_count(&inv.payment_hash), 1);

    // A second claim beyond the coverage left is refused; nothing is sent for it.
    let inv2 = suite.invoice("carol", Some(2_000_001));
    let (st, err) = open_claim(a, "c2", &wid, 2_000_001, &inv2.bolt11).await;
    assert_eq!(
        (st, code(&err)),
        (StatusCode::CONFLICT, "COVERAGE_EXCEEDED")
    );
    assert_eq!(suite.exec.sim.send_count(&inv2.payment_hash), 0);
    assert_eq!(a.count("aegis_claims").await, 1);

    let receipts = suite.audit().await;
    let schemas: Vec<&str> = receipts.iter().map(|r| r.schema.as_str()).collect();
    for schema in [
        "oa.aegis.claim_resolution_receipt.v1",
        "oa.hydra.invoice_pay_receipt.v1",
        "oa.wallet_executor.payment_receipt.v1",
    ] {
        assert!(schemas.contains(&schema), "{schema} is missing");
    }
    suite.ledgers_ok().await;
    suite.stop().await;
}

/// A Hydra credit envelope of `cap` for agent `agent` whose intent names `invoice`, issued;
/// returns its id.
async fn issued_envelope(
    suite: &Suite,
    tag: &str,
    agent: &str,
    scope: &str,
    cap: u64,
    invoice: &str,
) -> String {
    let expires = SystemClock.now_ms() + 3_600_000;
    let e = suite
        .hydra_ok(
            "/v1/credit/intent",
            json!({"idempotency_key": format!("{tag}-i"), "agent_id": agent,
                   "provider": {"provider_id": "prov-1", "invoice": invoice},
                   "scope": scope, "cap_msat": cap.to_string(), "expires_at_ms": expires.to_string()}),
        )
        .await;
    let id = s(&e, "/envelope/envelope_id");
    let o = suite
        .hydra_ok(
            "/v1/credit/offer",
            json!({"idempotency_key": format!("{tag}-o"), "envelope_id": id}),
        )
        .await;
    let acc = suite
        .hydra_ok(
            "/v1/credit/envelope",
            json!({"idempotency_key": format!("{tag}-a"), "offer_id": s(&o, "/envelope/offer/offer_id")}),
        )
        .await;
    assert_eq!(s(&acc, "/envelope/state"), "ENVELOPE_STATE_ISSUED", "{acc}");
    id
}

#[tokio::test]
async fn pay_after_verify_settles_on_a_passed_verification_and_defaults_on_a_failed_one() {
    let suite = Suite::start().await;
    let a = &suite.aegis;

    // Passed: the envelope's scope is what Aegis verified; settle pays merchant's invoice.
    let scope = "job-1: extract the totals";
    let inv = suite.invoice("merchant", Some(5_000_000));
    let env = issued_envelope(&suite, "e1", "agent-p", scope, 6_000_000, &inv.bolt11).await;
    let v = a
        .ok(
            "/v1/aegis/verify",
            json!({"idempotency_key": "v1", "work": objective_work("agent-p", 5_000_000),
                   "evidence": objective_evidence(None), "scope": scope,
                   "subject_ref": format!("hydra:envelope:{env}")}),
        )
        .await;
    assert_eq!(
        s(&v, "/verification/verdict"),
        "VERIFICATION_VERDICT_PASSED"
    );
    let (st, settled) = suite
        .hydra_call(
            "POST",
            "/v1/credit/settle",
            Some(json!({"idempotency_key": "s1", "envelope_id": env,
                        "verification_id": s(&v, "/verification/verification_id"),
                        "verification_receipt_hash": s(&v, "/receipt/hash")})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{settled}");
    assert_eq!(
        s(&settled, "/envelope/state"),
        "ENVELOPE_STATE_SETTLED",
        "{settled}"
    );
    assert_eq!(s(&settled, "/envelope/paid_amount_msat"), "5000000");
    assert_eq!(suite.exec.sim.send_count(&inv.payment_hash), 1);
    assert_eq!(
        suite.exec.sim.invoice_state(&inv.payment_hash),
        Some(InvoiceState::Settled)
    );
    let settlement = receipt(&settled["receipt"]);
    assert_eq!(settlement.schema, "oa.hydra.envelope_settlement_receipt.v1");
    // The settlement links Aegis's own verification receipt (as Aegis stored it).
    let vr = receipt(&v["receipt"]);
    assert!(settlement.links.contains(&vr.hash), "{settlement:?}");
    assert_eq!(settlement.body["verification_verdict"], "passed");

    // Failed: a broken artifact fails the objective check; settle defaults, nothing is paid.
    let scope2 = "job-2: extract the totals";
    let inv2 = suite.invoice("merchant", Some(3_000_000));
    let env2 = issued_envelope(&suite, "e2", "agent-p", scope2, 4_000_000, &inv2.bolt11).await;
    let f = a
        .ok(
            "/v1/aegis/verify",
            json!({"idempotency_key": "v2", "work": objective_work("agent-p", 3_000_000),
                   "evidence": objective_evidence(Some("file")), "scope": scope2}),
        )
        .await;
    assert_eq!(
        s(&f, "/verification/verdict"),
        "VERIFICATION_VERDICT_FAILED"
    );
    let (st, defaulted) = suite
        .hydra_call(
            "POST",
            "/v1/credit/settle",
            Some(json!({"idempotency_key": "s2", "envelope_id": env2,
                        "verification_id": s(&f, "/verification/verification_id"),
                        "verification_receipt_hash": s(&f, "/receipt/hash")})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{defaulted}");
    assert_eq!(
        s(&defaulted, "/envelope/state"),
        "ENVELOPE_STATE_DEFAULTED",
        "{defaulted}"
    );
    assert_eq!(
        s(&defaulted, "/envelope/default_reason"),
        "verification_failed"
    );
    let default = receipt(&defaulted["receipt"]);
    assert_eq!(default.schema, "oa.hydra.envelope_default_receipt.v1");
    assert!(default.links.contains(&receipt(&f["receipt"]).hash));
    assert_eq!(suite.exec.sim.send_count(&inv2.payment_hash), 0);
    assert_eq!(
        suite.exec.sim.invoice_state(&inv2.payment_hash),
        Some(InvoiceState::Open)
    );
    // A passed verification of another scope cannot settle the defaulted envelope either.
    let (st, err) = suite
        .hydra_call(
            "POST",
            "/v1/credit/settle",
            Some(json!({"idempotency_key": "s3", "envelope_id": env2,
                        "verification_id": s(&v, "/verification/verification_id"),
                        "verification_receipt_hash": s(&v, "/receipt/hash")})),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{err}");
    assert_eq!(suite.exec.sim.send_count(&inv2.payment_hash), 0);

    let receipts = suite.audit().await;
    let schemas: Vec<&str> = receipts.iter().map(|r| r.schema.as_str()).collect();
    for schema in [
        "oa.aegis.verification_receipt.v1",
        "oa.hydra.envelope_settlement_receipt.v1",
        "oa.hydra.envelope_default_receipt.v1",
        "oa.wallet_executor.payment_receipt.v1",
    ] {
        assert!(schemas.contains(&schema), "{schema} is missing");
    }
    suite.ledgers_ok().await;
    suite.stop().await;
}
