use std::{sync::Arc, time::Duration};

use axum::{Router, body::Body};
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use oa_invoice::{InvoiceRequest, InvoiceSigner, Network, Preimage, SecretKey};
use oa_money::Msat;
use oa_service::{Clock, SystemClock};
use oa_testkit::DevKeyring;
use tower::ServiceExt;

use crate::fake::FakeHydra;

pub struct Treasury {
    pub _dir: tempfile::TempDir,
    pub ring: DevKeyring,
    pub router: Router,
    pub db: oa_store::Db,
    pub hydra: FakeHydra,
    pub token: String,
}

pub fn invoice(amount_msat: u64, network: Network, expiry: Duration) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    InvoiceSigner::new(SecretKey::from_slice(&[9u8; 32]).unwrap())
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

impl Treasury {
    pub async fn start(default_budget_msat: u64) -> Treasury {
        let dir = tempfile::tempdir().unwrap();
        let ring = DevKeyring::ensure(dir.path()).unwrap();
        let hydra = FakeHydra::new();
        let config = treasury::Config::parse_from([
            "treasury".to_owned(),
            "--listen=127.0.0.1:0".into(),
            format!(
                "--database-url=sqlite://{}",
                dir.path().join("treasury.db").display()
            ),
            format!(
                "--receipt-key-file={}",
                ring.receipt_key_file("treasury").display()
            ),
            format!("--trust-file={}", ring.trust_file().display()),
            "--hydra-url=http://127.0.0.1:1".into(),
            format!("--default-agent-budget-msat={default_budget_msat}"),
        ]);
        let app = treasury::build(
            &config,
            Arc::new(SystemClock) as Arc<dyn Clock>,
            Some(Arc::new(hydra.clone())),
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
            token,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
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
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn pay(
        &self,
        key: &str,
        agent: &str,
        invoice: &str,
        max_fee: u64,
    ) -> (StatusCode, serde_json::Value) {
        let body = serde_json::json!({"idempotency_key": key, "agent_id": agent, "invoice": invoice, "max_fee_msat": max_fee.to_string(), "purpose": "test"});
        self.call(
            "POST",
            "/v1/treasury/payments",
            Some(&self.token.clone()),
            Some(&body.to_string()),
        )
        .await
    }

    pub async fn budget(&self, agent: &str) -> serde_json::Value {
        self.call(
            "GET",
            &format!("/v1/treasury/budgets/{agent}"),
            Some(&self.token.clone()),
            None,
        )
        .await
        .1
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
}
