use std::{sync::Arc, time::Duration};

use axum::{Router, body::Body};
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use oa_service::{Clock, ManualClock};
use oa_testkit::DevKeyring;
use tower::ServiceExt;

use crate::fake::FakeExecutor;

pub struct Hydra {
    pub _dir: tempfile::TempDir,
    pub ring: DevKeyring,
    pub router: Router,
    pub app_db: oa_store::Db,
    pub fake: FakeExecutor,
    pub clock: ManualClock,
    pub token: String,
}

pub fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

impl Hydra {
    pub async fn start() -> Hydra {
        let dir = tempfile::tempdir().unwrap();
        let ring = DevKeyring::ensure(dir.path()).unwrap();
        let fake = FakeExecutor::new();
        let config = hydra::Config::parse_from([
            "hydra".to_owned(),
            "--listen=127.0.0.1:0".into(),
            format!(
                "--database-url=sqlite://{}",
                dir.path().join("hydra.db").display()
            ),
            format!(
                "--receipt-key-file={}",
                ring.receipt_key_file("hydra").display()
            ),
            format!("--trust-file={}", ring.trust_file().display()),
            "--executor-url=http://127.0.0.1:1".into(),
            format!("--executor-receipt-keys={}", fake.key_id()),
            "--quote-ttl-secs=60".into(),
        ]);
        let clock = ManualClock::new(now_ms());
        let app = hydra::build(
            &config,
            Arc::new(clock.clone()) as Arc<dyn Clock>,
            Some(Arc::new(fake.clone())),
        )
        .await
        .unwrap();
        let token = ring
            .identity("treasury")
            .unwrap()
            .mint("hydra", &["hydra:liquidity"], Duration::from_secs(600))
            .unwrap();
        Hydra {
            _dir: dir,
            ring,
            router: app.http,
            app_db: app.db,
            fake,
            clock,
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
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
        };
        (status, json)
    }

    pub async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        self.call(
            "POST",
            path,
            Some(&self.token.clone()),
            Some(&body.to_string()),
        )
        .await
    }

    pub async fn quote_count(&self) -> i64 {
        sqlx::query_scalar::<sqlx::Any, i64>("SELECT CAST(COUNT(*) AS BIGINT) FROM hydra_quotes")
            .fetch_one(self.app_db.pool())
            .await
            .unwrap()
    }

    pub async fn receipt_count(&self) -> i64 {
        sqlx::query_scalar::<sqlx::Any, i64>("SELECT CAST(COUNT(*) AS BIGINT) FROM receipts")
            .fetch_one(self.app_db.pool())
            .await
            .unwrap()
    }
}
