use std::{sync::Arc, time::Duration};

use axum::{Router, body::Body};
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use oa_service::{Clock, ManualClock};
use oa_testkit::DevKeyring;
use tower::ServiceExt;

use crate::fake::{FakeAegis, FakeExecutor};

/// Every scope of Hydra's API, for the default test token.
pub const ALL_SCOPES: [&str; 5] = [
    "hydra:liquidity",
    "hydra:credit",
    "hydra:routing",
    "hydra:fx",
    "hydra:read",
];

pub struct Hydra {
    pub _dir: Arc<tempfile::TempDir>,
    pub ring: DevKeyring,
    pub router: Router,
    pub app_db: oa_store::Db,
    pub app: std::sync::Arc<hydra::credit::Credit>,
    /// The whole app (deposits, withdrawals, stop, recover).
    pub hydra: hydra::App,
    pub fake: FakeExecutor,
    pub aegis: FakeAegis,
    pub clock: ManualClock,
    pub token: String,
    /// The database URL and flags it was started with, for a restart or a replica.
    url: String,
    args: Vec<String>,
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
        Hydra::start_with(&[]).await
    }

    /// Hydra on SQLite with extra flags.
    pub async fn start_with(args: &[&str]) -> Hydra {
        Hydra::start_on(None, args).await
    }

    /// Hydra on `database_url` (a fresh SQLite file when `None`) with extra flags.
    pub async fn start_on(database_url: Option<&str>, args: &[&str]) -> Hydra {
        Hydra::try_start_on(database_url, args).await.unwrap()
    }

    /// Hydra on SQLite with extra flags, or why it refused to start.
    pub async fn try_start_with(args: &[&str]) -> anyhow::Result<Hydra> {
        Hydra::try_start_on(None, args).await
    }

    pub async fn try_start_on(database_url: Option<&str>, args: &[&str]) -> anyhow::Result<Hydra> {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let ring = DevKeyring::ensure(dir.path()).unwrap();
        let url = database_url.map_or_else(
            || format!("sqlite://{}", dir.path().join("hydra.db").display()),
            str::to_owned,
        );
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        Hydra::build_in(
            dir,
            ring,
            FakeExecutor::new(),
            FakeAegis::new(),
            ManualClock::new(now_ms()),
            url,
            args,
        )
        .await
    }

    async fn build_in(
        dir: Arc<tempfile::TempDir>,
        ring: DevKeyring,
        fake: FakeExecutor,
        aegis: FakeAegis,
        clock: ManualClock,
        url: String,
        args: Vec<String>,
    ) -> anyhow::Result<Hydra> {
        let mut flags = vec![
            "hydra".to_owned(),
            "--listen=127.0.0.1:0".into(),
            format!("--database-url={url}"),
            format!(
                "--receipt-key-file={}",
                ring.receipt_key_file("hydra").display()
            ),
            format!("--trust-file={}", ring.trust_file().display()),
            "--executor-url=http://127.0.0.1:1".into(),
            format!("--executor-receipt-keys={}", fake.key_id()),
            format!("--aegis-receipt-keys={}", aegis.key_id()),
            "--quote-ttl-secs=60".into(),
            "--sweep-interval-ms=20".into(),
        ];
        flags.extend(args.iter().cloned());
        let config = hydra::Config::try_parse_from(flags)?;
        let app = hydra::build(
            &config,
            Arc::new(clock.clone()) as Arc<dyn Clock>,
            hydra::Deps {
                executor: Some(Arc::new(fake.clone())),
                verifications: Some(Arc::new(aegis.clone())),
            },
        )
        .await?;
        let token = ring
            .identity("treasury")
            .unwrap()
            .mint("hydra", &ALL_SCOPES, Duration::from_secs(600))
            .unwrap();
        Ok(Hydra {
            _dir: dir,
            ring,
            router: app.http.clone(),
            app_db: app.db.clone(),
            app: app.credit.clone(),
            hydra: app,
            fake,
            aegis,
            clock,
            token,
            url,
            args,
        })
    }

    /// Another Hydra on the same database, executor, Aegis and clock (a replica, or the same
    /// service after a restart when the first one is stopped).
    pub async fn replica(&self) -> Hydra {
        Hydra::build_in(
            self._dir.clone(),
            self.ring.clone(),
            self.fake.clone(),
            self.aegis.clone(),
            self.clock.clone(),
            self.url.clone(),
            self.args.clone(),
        )
        .await
        .unwrap()
    }

    /// Stops this Hydra's background work and closes its database, then starts it again on the
    /// same data and re-drives what was in flight (a crash and restart).
    pub async fn restart(self) -> Hydra {
        self.hydra.stop();
        self.app_db.close().await;
        let next = self.replica().await;
        next.hydra.recover().await.unwrap();
        next
    }

    pub fn clock_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A token from treasury's identity with only `scopes`.
    pub fn token_with(&self, scopes: &[&str]) -> String {
        self.ring
            .identity("treasury")
            .unwrap()
            .mint("hydra", scopes, Duration::from_secs(600))
            .unwrap()
    }

    /// Debits equal credits per asset and no account crosses its limit.
    pub async fn ledger_conserved(&self) {
        let mut conn = self.app_db.pool().acquire().await.unwrap();
        let violations = oa_ledger::check_invariants(&mut conn).await.unwrap();
        assert!(violations.is_empty(), "{violations:?}");
        // What the throttle counts as owed to agents equals the sum of their balances.
        let scanned =
            hydra::store::funds::sum_agent_balances(&mut conn, hydra::book::ACCOUNT_AGENT_BALANCE)
                .await
                .unwrap();
        let owed = hydra::book::agent_liabilities(&mut conn).await.unwrap();
        assert_eq!(owed.as_u64(), scanned);
    }

    pub async fn account(&self, id: &str) -> oa_ledger::Balances {
        let mut conn = self.app_db.pool().acquire().await.unwrap();
        oa_ledger::get_account(&mut conn, id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no account {id}"))
            .balances
    }

    pub async fn count(&self, table: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"));
        sqlx::query_scalar::<sqlx::Any, i64>(sql)
            .fetch_one(self.app_db.pool())
            .await
            .unwrap()
    }

    /// Receipts of one class in Hydra's log.
    pub async fn receipts_of(&self, schema: &str) -> Vec<oa_receipts::Receipt> {
        sqlx::query_scalar::<sqlx::Any, String>(
            "SELECT json FROM receipts WHERE schema_name = $1 ORDER BY log_index",
        )
        .bind(schema)
        .fetch_all(self.app_db.pool())
        .await
        .unwrap()
        .iter()
        .map(|j| serde_json::from_str(j).unwrap())
        .collect()
    }

    /// Every receipt in Hydra's log, in order.
    pub async fn all_receipts(&self) -> Vec<oa_receipts::Receipt> {
        sqlx::query_scalar::<sqlx::Any, String>("SELECT json FROM receipts ORDER BY log_index")
            .fetch_all(self.app_db.pool())
            .await
            .unwrap()
            .iter()
            .map(|j| serde_json::from_str(j).unwrap())
            .collect()
    }

    /// Verifies an export of Hydra's, the executor's and Aegis's logs with the offline auditor
    /// (hashes, signatures, chains, links, the cross-service rules). `leave_out` drops one
    /// issuer's receipts (to see the rules catch a missing link).
    pub async fn audit(&self, leave_out: Option<&str>) -> oa_receipts::VerifyReport {
        let mut receipts = self.all_receipts().await;
        receipts.extend(self.fake.receipts());
        receipts.extend(self.aegis.receipts());
        receipts.retain(|r| Some(r.issuer.service.as_str()) != leave_out);
        let mut keys: Vec<oa_receipts::Issuer> =
            receipts.iter().map(|r| r.issuer.clone()).collect();
        keys.sort_by(|a, b| (&a.service, &a.key_id).cmp(&(&b.service, &b.key_id)));
        keys.dedup();
        let mut out = Vec::new();
        oa_receipts::write_export(&mut out, &keys, &receipts).unwrap();
        oa_receipts::verify_export(std::io::BufReader::new(out.as_slice()))
    }

    /// An envelope's state as stored.
    pub async fn envelope_state(&self, envelope_id: &str) -> String {
        sqlx::query_scalar::<sqlx::Any, String>(
            "SELECT state FROM hydra_envelopes WHERE envelope_id = $1",
        )
        .bind(envelope_id)
        .fetch_one(self.app_db.pool())
        .await
        .unwrap()
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
