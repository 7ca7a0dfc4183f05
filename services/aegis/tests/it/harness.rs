use std::{sync::Arc, time::Duration};

use axum::{Router, body::Body};
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use oa_receipts::ReceiptKey;
use oa_service::{Clock, ManualClock};
use oa_testkit::DevKeyring;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The scopes a runtime caller (treasury's identity) gets in tests.
pub const CALLER_SCOPES: [&str; 6] = [
    "aegis:verify",
    "aegis:read",
    "aegis:admin",
    "aegis:verdict",
    "aegis:underwrite",
    "aegis:claim",
];

pub struct Aegis {
    pub _dir: tempfile::TempDir,
    pub ring: DevKeyring,
    pub router: Router,
    /// The service core (its sweeps, called directly by tests).
    pub aegis: Arc<aegis::service::Aegis>,
    pub db: oa_store::Db,
    pub clock: ManualClock,
    /// treasury's identity: verify, read, admin, verdict.
    pub token: String,
    /// The operator's identity with aegis:decide (another identity than the requester).
    pub decider: String,
    /// The operator with aegis:decide_human.
    pub human: String,
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

impl Aegis {
    pub async fn start() -> Aegis {
        Aegis::start_on(None, &[]).await
    }

    pub async fn start_with(args: &[&str]) -> Aegis {
        Aegis::start_on(None, args).await
    }

    /// Aegis on `database_url` (a fresh SQLite file when `None`) with extra flags.
    pub async fn start_on(database_url: Option<&str>, args: &[&str]) -> Aegis {
        Aegis::start_full(database_url, args, aegis::Deps::default()).await
    }

    /// Aegis paying claims through `payer`.
    pub async fn start_paying(payer: Arc<dyn aegis::payer::Payer>) -> Aegis {
        Aegis::start_full(None, &[], aegis::Deps { payer: Some(payer) }).await
    }

    pub async fn start_full(database_url: Option<&str>, args: &[&str], deps: aegis::Deps) -> Aegis {
        Aegis::start_full_in(tempfile::tempdir().unwrap(), database_url, args, deps).await
    }

    /// Aegis with its keyring (and its SQLite file, when `database_url` is `None`) in `dir`, so
    /// other services of a suite can share the keyring.
    pub async fn start_full_in(
        dir: tempfile::TempDir,
        database_url: Option<&str>,
        args: &[&str],
        deps: aegis::Deps,
    ) -> Aegis {
        let ring = DevKeyring::ensure(dir.path()).unwrap();
        let url = database_url.map_or_else(
            || format!("sqlite://{}", dir.path().join("aegis.db").display()),
            str::to_owned,
        );
        let mut flags = vec![
            "aegis".to_owned(),
            "--listen=127.0.0.1:0".into(),
            format!("--database-url={url}"),
            format!(
                "--receipt-key-file={}",
                ring.receipt_key_file("aegis").display()
            ),
            format!("--trust-file={}", ring.trust_file().display()),
            // The dispute sweeper ticks fast so tests that move the clock see it act promptly.
            "--sweep-interval-ms=20".into(),
        ];
        flags.extend(args.iter().map(|a| (*a).to_owned()));
        let config = aegis::Config::try_parse_from(flags).unwrap();
        let clock = ManualClock::new(now_ms());
        let app = aegis::build_with(&config, Arc::new(clock.clone()) as Arc<dyn Clock>, deps)
            .await
            .unwrap();
        let mint = |who: &str, scopes: &[&str]| {
            ring.identity(who)
                .unwrap()
                .mint("aegis", scopes, Duration::from_secs(3600))
                .unwrap()
        };
        let token = mint("treasury", &CALLER_SCOPES);
        let decider = mint("operator", &["aegis:decide", "aegis:read"]);
        let human = mint("operator", &["aegis:decide_human"]);
        Aegis {
            _dir: dir,
            aegis: app.aegis,
            router: app.http,
            db: app.db,
            clock,
            token,
            decider,
            human,
            ring,
        }
    }

    /// A token for subject `sub` with `scopes`, signed by the operator's key (the operator stands
    /// in for the organisation's identity provider, which issues tokens for many people).
    pub fn token_for(&self, sub: &str, scopes: &[&str]) -> String {
        oa_auth::SigningIdentity::load_pem(
            self.ring.kid("operator"),
            "oa-dev",
            sub,
            self.ring.identity_file("operator"),
        )
        .unwrap()
        .mint("aegis", scopes, Duration::from_secs(3600))
        .unwrap()
    }

    /// Ledger conservation and limits hold.
    pub async fn assert_ledger_ok(&self) {
        let mut conn = self.db.pool().acquire().await.unwrap();
        let v = oa_ledger::check_invariants(&mut conn).await.unwrap();
        assert!(v.is_empty(), "ledger violations: {v:?}");
    }

    /// An account's balances (zeros when it does not exist).
    pub async fn balances(&self, account: &str) -> oa_ledger::Balances {
        let mut conn = self.db.pool().acquire().await.unwrap();
        oa_ledger::get_account(&mut conn, account)
            .await
            .unwrap()
            .map(|a| a.balances)
            .unwrap_or_default()
    }

    /// A token of `who` (an identity of the dev keyring) with `scopes`.
    pub fn token_of(&self, who: &str, scopes: &[&str]) -> String {
        self.ring
            .identity(who)
            .unwrap()
            .mint("aegis", scopes, Duration::from_secs(3600))
            .unwrap()
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
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, json)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.post_as(&self.token, path, body).await
    }

    pub async fn post_as(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(token), Some(&body.to_string()))
            .await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, Some(&self.token.clone()), None)
            .await
    }

    /// POST that must succeed.
    pub async fn ok(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.post(path, body).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        v
    }

    pub async fn count(&self, table: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"));
        sqlx::query_scalar::<sqlx::Any, i64>(sql)
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }

    /// Receipts of one class in Aegis's log, in order.
    pub async fn receipts_of(&self, schema: &str) -> Vec<oa_receipts::Receipt> {
        sqlx::query_scalar::<sqlx::Any, String>(
            "SELECT json FROM receipts WHERE schema_name = $1 ORDER BY log_index",
        )
        .bind(schema)
        .fetch_all(self.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|j| serde_json::from_str(j).unwrap())
        .collect()
    }

    pub async fn all_receipts(&self) -> Vec<oa_receipts::Receipt> {
        sqlx::query_scalar::<sqlx::Any, String>("SELECT json FROM receipts ORDER BY log_index")
            .fetch_all(self.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|j| serde_json::from_str(j).unwrap())
            .collect()
    }

    /// Verifies an export of Aegis's log with the offline auditor.
    pub async fn audit(&self) -> oa_receipts::VerifyReport {
        let receipts = self.all_receipts().await;
        let mut keys: Vec<oa_receipts::Issuer> =
            receipts.iter().map(|r| r.issuer.clone()).collect();
        keys.dedup();
        let mut out = Vec::new();
        oa_receipts::write_export(&mut out, &keys, &receipts).unwrap();
        oa_receipts::verify_export(std::io::BufReader::new(out.as_slice()))
    }

    /// Registers a verifier with a fresh key; returns the key.
    pub async fn verifier(&self, id: &str, family: &str, sim: Option<Value>) -> ReceiptKey {
        let key = ReceiptKey::generate();
        let mut body = json!({"idempotency_key": format!("reg-{id}"), "verifier_id": id,
                              "public_key": key.key_id(), "family": family});
        if let Some(s) = sim {
            body["sim"] = s;
        }
        self.ok("/v1/aegis/verifiers", body).await;
        key
    }

    /// Submits `key`'s signed verdict ("passed"/"failed") on a verification.
    pub async fn verdict(
        &self,
        verification: &Value,
        verifier_id: &str,
        key: &ReceiptKey,
        verdict: &str,
    ) -> (StatusCode, Value) {
        let (path, body) = verdict_request(verification, verifier_id, key, verdict);
        self.post(&path, body).await
    }
}

/// The path and body of `key`'s signed verdict on a verification. BIP340 signing uses fresh
/// randomness, so each call signs anew: replay a request by sending the same body again.
pub fn verdict_request(
    verification: &Value,
    verifier_id: &str,
    key: &ReceiptKey,
    verdict: &str,
) -> (String, Value) {
    let id = verification["verification"]["verification_id"]
        .as_str()
        .unwrap();
    let work_hash = verification["detail"]["work_hash"].as_str().unwrap();
    let v = if verdict == "passed" {
        aegis::model::Verdict::Passed
    } else {
        aegis::model::Verdict::Failed
    };
    let hash = aegis::quorum::statement_hash(id, work_hash, verifier_id, v).unwrap();
    (
        format!("/v1/aegis/verification/{id}/verdict"),
        json!({"idempotency_key": format!("verdict-{id}-{verifier_id}"),
               "verifier_id": verifier_id, "verdict": verdict_enum(verdict),
               "signature": key.sign(&hash)}),
    )
}

pub fn verdict_enum(v: &str) -> &'static str {
    match v {
        "passed" => "VERIFICATION_VERDICT_PASSED",
        "failed" => "VERIFICATION_VERDICT_FAILED",
        "pending" => "VERIFICATION_VERDICT_PENDING",
        _ => "VERIFICATION_VERDICT_UNSPECIFIED",
    }
}

pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// `sha256:<hex>` of bytes.
pub fn sha(bytes: &[u8]) -> String {
    aegis::work::sha256_of(bytes)
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub const SCHEMA: &str = r#"{"type":"object","required":["total"],"properties":{"total":{"type":"integer","minimum":0}},"additionalProperties":false}"#;

/// An objective work unit: an artifact with its hash, a JSON document with a schema, a test
/// report; `agent` and `amount` vary.
pub fn objective_work(agent: &str, amount: u64) -> Value {
    json!({
        "kind": "data.extract", "agent_id": agent, "amount_msat": amount.to_string(),
        "outputs": [
            {"name": "file", "type": "OUTPUT_TYPE_ARTIFACT", "expected_sha256": sha(b"the artifact")},
            {"name": "summary", "type": "OUTPUT_TYPE_JSON", "json_schema": SCHEMA},
            {"name": "tests", "type": "OUTPUT_TYPE_TEST_REPORT",
             "test_threshold": {"min_pass_ppm": 900000, "min_tests": "10"}}
        ]
    })
}

/// Evidence for [`objective_work`]: good, or with one output broken (`"file"`, `"summary"`,
/// `"tests"`).
pub fn objective_evidence(broken: Option<&str>) -> Value {
    let artifact: &[u8] = if broken == Some("file") {
        b"another artifact"
    } else {
        b"the artifact"
    };
    let summary = if broken == Some("summary") {
        r#"{"total": -1}"#
    } else {
        r#"{"total": 12}"#
    };
    let failed = if broken == Some("tests") { "2" } else { "1" };
    json!([
        {"name": "file", "artifact": b64(artifact)},
        {"name": "summary", "json": summary},
        {"name": "tests", "test_report": {"passed": "9", "failed": failed, "skipped": "3"}}
    ])
}

/// A subjective work unit (one TEXT output).
pub fn subjective_work(agent: &str, amount: u64) -> Value {
    json!({
        "kind": "writing.review", "agent_id": agent, "amount_msat": amount.to_string(),
        "outputs": [{"name": "essay", "type": "OUTPUT_TYPE_TEXT"}]
    })
}

/// A low-verifiability work unit (one ACTION output).
pub fn low_work(agent: &str, amount: u64) -> Value {
    json!({
        "kind": "ops.deploy", "agent_id": agent, "amount_msat": amount.to_string(),
        "outputs": [{"name": "deploy", "type": "OUTPUT_TYPE_ACTION"}]
    })
}

/// POST /v1/aegis/verify with `key`, work and evidence; must succeed.
pub async fn verify(a: &Aegis, key: &str, work: Value, evidence: Value) -> Value {
    a.ok(
        "/v1/aegis/verify",
        json!({"idempotency_key": key, "work": work, "evidence": evidence, "scope": format!("job:{key}")}),
    )
    .await
}

pub fn state(v: &Value) -> &str {
    v["verification"]["verdict"].as_str().unwrap_or("")
}
