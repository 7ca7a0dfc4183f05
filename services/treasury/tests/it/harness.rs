use std::{sync::Arc, time::Duration};

use axum::{Router, body::Body};
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use oa_auth::SigningIdentity;
use oa_invoice::{InvoiceRequest, InvoiceSigner, Network, Preimage, SecretKey};
use oa_money::Msat;
use oa_service::{Clock, ManualClock, SystemClock};
use oa_testkit::DevKeyring;
use serde_json::{Value, json};
use tower::ServiceExt;
use treasury::payments::Payments;

use crate::fake::{FakeHydra, FakeRisk};

pub const HOUR: Duration = Duration::from_secs(3600);

/// An invoice from the node with secret `[signer; 32]` (so tests can have several payees).
pub fn invoice_from(signer: u8, amount_msat: u64, network: Network, expiry: Duration) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    InvoiceSigner::new(SecretKey::from_slice(&[signer; 32]).unwrap())
        .create_invoice(&InvoiceRequest {
            network,
            amount: Msat::new(amount_msat).ok().filter(|m| !m.is_zero()),
            payment_hash: Preimage::random().payment_hash(),
            payment_secret: [2; 32],
            description: "test".into(),
            created_at: now,
            expiry,
            min_final_cltv_expiry_delta: 18,
        })
        .unwrap()
}

pub fn invoice(amount_msat: u64, network: Network, expiry: Duration) -> String {
    invoice_from(9, amount_msat, network, expiry)
}

/// The node public key of `invoice_from(signer, ..)`.
pub fn payee(signer: u8) -> String {
    InvoiceSigner::new(SecretKey::from_slice(&[signer; 32]).unwrap())
        .node_id()
        .to_string()
}

/// How a test treasury is built.
#[derive(Clone)]
pub struct Opts {
    pub default_budget_msat: u64,
    pub policy: Option<String>,
    pub clock: Option<ManualClock>,
    pub database_url: Option<String>,
    pub hydra: Option<FakeHydra>,
    pub risk: Option<FakeRisk>,
    /// Reuse this keyring directory (a second process of the same deployment).
    pub ring_dir: Option<std::path::PathBuf>,
    /// `--group-creates` (`auto` if unset).
    pub group_creates: Option<&'static str>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            default_budget_msat: 100_000,
            policy: None,
            clock: None,
            database_url: None,
            hydra: None,
            risk: None,
            ring_dir: None,
            group_creates: None,
        }
    }
}

pub struct Treasury {
    pub _dir: tempfile::TempDir,
    pub ring: DevKeyring,
    pub router: Router,
    pub db: oa_store::Db,
    pub hydra: FakeHydra,
    pub risk: FakeRisk,
    pub payments: Arc<Payments>,
    pub token: String,
    pub clock: Option<ManualClock>,
}

impl Treasury {
    pub async fn start(default_budget_msat: u64) -> Treasury {
        Self::with(Opts {
            default_budget_msat,
            ..Opts::default()
        })
        .await
    }

    pub async fn with(opts: Opts) -> Treasury {
        let dir = tempfile::tempdir().unwrap();
        let ring_dir = opts.ring_dir.clone().unwrap_or_else(|| dir.path().into());
        let ring = DevKeyring::ensure(&ring_dir).unwrap();
        let hydra = opts.hydra.clone().unwrap_or_else(FakeHydra::new);
        let risk = opts.risk.clone().unwrap_or_default();
        let db_url = opts
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("treasury.db").display()));
        let mut args = vec![
            "treasury".to_owned(),
            "--listen=127.0.0.1:0".into(),
            format!("--database-url={db_url}"),
            format!(
                "--receipt-key-file={}",
                ring.receipt_key_file("treasury").display()
            ),
            format!("--trust-file={}", ring.trust_file().display()),
            "--hydra-url=http://127.0.0.1:1".into(),
            format!("--default-agent-budget-msat={}", opts.default_budget_msat),
        ];
        if let Some(g) = opts.group_creates {
            args.push(format!("--group-creates={g}"));
        }
        if let Some(p) = &opts.policy {
            let path = dir.path().join("policy.toml");
            std::fs::write(&path, p).unwrap();
            args.push(format!("--policy-file={}", path.display()));
        }
        let config = treasury::Config::parse_from(args);
        let clock: Arc<dyn Clock> = match &opts.clock {
            Some(c) => Arc::new(c.clone()),
            None => Arc::new(SystemClock),
        };
        let app = treasury::build(
            &config,
            clock,
            treasury::Deps {
                hydra: Some(Arc::new(hydra.clone())),
                risk: Some(Arc::new(risk.clone())),
            },
        )
        .await
        .unwrap();
        let token = ring
            .operator_token(
                "treasury",
                &["treasury:pay", "treasury:admin"],
                Duration::from_secs(600),
            )
            .unwrap();
        Treasury {
            _dir: dir,
            ring,
            router: app.http,
            db: app.db,
            hydra,
            risk,
            payments: app.payments,
            token,
            clock: opts.clock,
        }
    }

    /// A token for `sub` (signed by the operator's key, which may grant any scope).
    pub fn token_as(&self, sub: &str, scopes: &[&str]) -> String {
        SigningIdentity::load_pem(
            self.ring.kid("operator"),
            "oa-dev",
            sub,
            self.ring.identity_file("operator"),
        )
        .unwrap()
        .mint("treasury", scopes, Duration::from_secs(600))
        .unwrap()
    }

    pub fn approver(&self) -> String {
        self.token_as("alice", &["treasury:approve"])
    }

    pub fn clock(&self) -> &ManualClock {
        self.clock.as_ref().expect("a test with a manual clock")
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_owned())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(token), Some(&body.to_string()))
            .await
    }

    pub async fn pay(
        &self,
        key: &str,
        agent: &str,
        invoice: &str,
        max_fee: u64,
    ) -> (StatusCode, Value) {
        let body = json!({"idempotency_key": key, "agent_id": agent, "invoice": invoice, "max_fee_msat": max_fee.to_string(), "purpose": "test"});
        self.pay_with(&body).await
    }

    pub async fn pay_with(&self, body: &Value) -> (StatusCode, Value) {
        self.post("/v1/treasury/payments", &self.token.clone(), body)
            .await
    }

    pub async fn evaluate(&self, body: &Value) -> (StatusCode, Value) {
        self.post("/v1/treasury/policy/evaluate", &self.token.clone(), body)
            .await
    }

    pub async fn get_payment(&self, id: &str) -> Value {
        let (status, v) = self
            .call(
                "GET",
                &format!("/v1/treasury/payments/{id}"),
                Some(&self.token.clone()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    pub async fn budget(&self, agent: &str) -> Value {
        self.call(
            "GET",
            &format!("/v1/treasury/budgets/{agent}"),
            Some(&self.token.clone()),
            None,
        )
        .await
        .1
    }

    /// Every budget of a subject, by period.
    pub async fn budgets(&self, kind: &str, subject: &str) -> Vec<Value> {
        let (status, v) = self
            .call(
                "GET",
                &format!("/v1/treasury/budgets/{kind}/{subject}"),
                Some(&self.token.clone()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["budgets"].as_array().unwrap().clone()
    }

    /// The budget of `subject` with `period`.
    pub async fn budget_of(&self, kind: &str, subject: &str, period: &str) -> Value {
        self.budgets(kind, subject)
            .await
            .into_iter()
            .find(|b| b["period"] == period)
            .unwrap_or_else(|| panic!("no {period} budget of {kind} {subject}"))
    }

    pub async fn set_budget(&self, kind: &str, subject: &str, body: Value) -> Value {
        let (status, v) = self
            .call(
                "PUT",
                &format!("/v1/treasury/budgets/{kind}/{subject}"),
                Some(&self.token.clone()),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    pub async fn set_policy(&self, key: &str, toml: &str) -> (StatusCode, Value) {
        self.call(
            "PUT",
            "/v1/treasury/policy",
            Some(&self.token.clone()),
            Some(&json!({"idempotency_key": key, "policy_toml": toml}).to_string()),
        )
        .await
    }

    /// Debits equal credits and no account crosses its limit.
    pub async fn ledger_conserved(&self) {
        let mut conn = self.db.pool().acquire().await.unwrap();
        let violations = oa_ledger::check_invariants(&mut conn).await.unwrap();
        assert!(violations.is_empty(), "{violations:?}");
    }

    pub async fn count(&self, table: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"));
        sqlx::query_scalar::<sqlx::Any, i64>(sql)
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }

    /// GET `path` with an operator token holding `scope`; the body of its 200 answer.
    async fn get_ok(&self, scope: &str, path: &str) -> Value {
        let token = self
            .ring
            .operator_token("treasury", &[scope], Duration::from_secs(60))
            .unwrap();
        let (status, v) = self.call("GET", path, Some(&token), None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    /// Every event of treasury's payment topic, in order.
    pub async fn events(&self) -> Vec<Value> {
        let v = self
            .get_ok(
                "events:read",
                "/v1/events?topic=treasury.payments&after_seq=0&limit=1000",
            )
            .await;
        v["events"].as_array().unwrap().clone()
    }

    /// Event kinds of `payment_id` on the journal, in order.
    pub async fn events_of(&self, payment_id: &str) -> Vec<String> {
        self.events()
            .await
            .iter()
            .filter(|e| e["payload"]["payment_id"] == payment_id)
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Treasury's receipt log as exported, checked to be one valid chain from index 0.
    pub async fn receipt_chain(&self) -> Vec<oa_receipts::Receipt> {
        let export = self
            .get_ok("receipts:read", "/v1/receipts?from_log_index=0&limit=1000")
            .await;
        let receipts: Vec<oa_receipts::Receipt> = export["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| serde_json::from_value(r.clone()).unwrap())
            .collect();
        for (i, r) in receipts.iter().enumerate() {
            r.verify().unwrap();
            assert_eq!(r.log_index, i as u64);
            if i > 0 {
                assert_eq!(r.prev_hash, receipts[i - 1].hash);
            }
        }
        receipts
    }

    /// A snapshot of every table a read-only call must not change.
    pub async fn snapshot(&self) -> Vec<i64> {
        let mut v = Vec::new();
        for t in [
            "treasury_payments",
            "treasury_budget_configs",
            "treasury_budget_windows",
            "treasury_policies",
            "treasury_known_payees",
            "receipts",
            "idempotency_keys",
            "ledger_transfers",
            "ledger_accounts",
            "events",
        ] {
            v.push(self.count(t).await);
        }
        v
    }
}

/// The payment id of an answer (a payment, or a denial's details).
pub fn payment_id(v: &Value) -> String {
    v["payment"]["payment_id"]
        .as_str()
        .or(v["error"]["details"]["payment_id"].as_str())
        .unwrap_or_else(|| panic!("no payment id in {v}"))
        .to_owned()
}

/// Milliseconds of an RFC 3339 instant.
pub fn ms(s: &str) -> u64 {
    u64::try_from(s.parse::<jiff::Timestamp>().unwrap().as_millisecond()).unwrap()
}
