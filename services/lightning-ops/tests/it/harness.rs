//! Test harness: a real wallet-executor (simulated network) served in-process on loopback, and
//! lightning-ops apps built on a shared data folder, driven in-process through their router.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use axum::body::Body;
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use lightning_ops::{App, executor::Channels, plan::Fees};
use oa_proto::wallet::{self, wallet_executor_client::WalletExecutorClient};
use oa_service::{Clock, ManualClock, SystemClock};
use oa_testkit::DevKeyring;
use serde_json::Value;
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use tower::ServiceExt;
use wallet_executor::node::sim::SimNetwork;

pub type ExecClient =
    WalletExecutorClient<InterceptedService<Channel, oa_auth::grpc::BearerInterceptor>>;

/// A time on an hour boundary (uptime is counted per hour), in November 2023.
pub const T0: u64 = 1_699_999_200_000;
pub const HOUR_MS: u64 = 3_600_000;

/// A data folder with the development keyring, shared by the executor and lightning-ops.
pub struct Folder {
    pub dir: tempfile::TempDir,
    pub ring: DevKeyring,
}

impl Folder {
    pub fn new() -> Folder {
        let dir = tempfile::tempdir().unwrap();
        let ring = DevKeyring::ensure(dir.path()).unwrap();
        Folder { dir, ring }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// An operator token for lightning-ops with `scopes`.
    pub fn token(&self, scopes: &[&str]) -> String {
        self.ring
            .operator_token("lightning-ops", scopes, Duration::from_secs(600))
            .unwrap()
    }

    /// lightning-ops's configuration on `ops.db` in this folder, plus `extra` flags.
    pub fn config(&self, extra: &[String]) -> lightning_ops::Config {
        let mut args = vec![
            "lightning-ops".to_owned(),
            "--listen=127.0.0.1:0".into(),
            format!(
                "--database-url=sqlite://{}",
                self.path().join("ops.db").display()
            ),
            format!(
                "--receipt-key-file={}",
                self.ring.receipt_key_file("lightning-ops").display()
            ),
            format!("--trust-file={}", self.ring.trust_file().display()),
            format!(
                "--identity-key-file={}",
                self.ring.identity_file("lightning-ops").display()
            ),
            format!("--identity-kid={}", self.ring.kid("lightning-ops")),
        ];
        args.extend(extra.iter().cloned());
        lightning_ops::Config::parse_from(args)
    }

    /// Builds lightning-ops on this folder's database with a manual clock.
    pub async fn ops(
        &self,
        extra: &[String],
        clock: &ManualClock,
        channels: Option<Arc<dyn Channels>>,
    ) -> App {
        lightning_ops::build_with(
            &self.config(extra),
            Arc::new(clock.clone()) as Arc<dyn Clock>,
            channels,
        )
        .await
        .unwrap()
    }
}

/// A wallet-executor on the simulated network, serving gRPC and HTTP on loopback.
pub struct Executor {
    pub sim: SimNetwork,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Executor {
    pub async fn start(folder: &Folder) -> Executor {
        let ring = &folder.ring;
        let config = wallet_executor::Config::parse_from([
            "wallet-executor".to_owned(),
            "--listen=127.0.0.1:0".into(),
            "--grpc-listen=127.0.0.1:0".into(),
            format!(
                "--database-url=sqlite://{}",
                folder.path().join("wallet.db").display()
            ),
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
        let (http_addr, grpc_addr) = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(wallet_executor::serve(app, http, grpc, async move {
            let _ = rx.await;
        }));
        Executor {
            sim,
            grpc_addr,
            http_addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// The flag that points lightning-ops at this executor.
    pub fn url_flag(&self) -> String {
        format!("--executor-url=http://{}", self.grpc_addr)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    /// A custody-channel client with lightning-ops's identity and scopes (what an operator with
    /// shell access to lightning-ops's keys could do by hand, e.g. in a fee war).
    pub async fn client(&self, folder: &Folder) -> ExecClient {
        let channel = Channel::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let bearer = oa_auth::grpc::BearerInterceptor::new(
            folder.ring.identity("lightning-ops").unwrap(),
            "wallet-executor",
            ["wallet:read", "wallet:channels"],
            Duration::from_secs(300),
        )
        .unwrap();
        WalletExecutorClient::with_interceptor(channel, bearer)
    }

    /// Node id of a sim node.
    pub fn pubkey(&self, alias: &str) -> String {
        self.sim
            .create_invoice(alias, None, "pk", Duration::from_secs(60))
            .unwrap()
            .node_pubkey
    }

    /// Our channels as the executor lists them.
    pub async fn channels(&self, folder: &Folder) -> Vec<wallet::Channel> {
        self.client(folder)
            .await
            .list_channels(wallet::ListChannelsRequest {})
            .await
            .unwrap()
            .into_inner()
            .channels
    }

    /// Our local policy on each channel, by `BLOCKxTXxOUT`.
    pub async fn policies(&self, folder: &Folder) -> Vec<(String, Fees)> {
        let mut out: Vec<(String, Fees)> = self
            .channels(folder)
            .await
            .iter()
            .map(|c| {
                let p = c.local_policy.unwrap();
                (
                    lightning_ops::plan::channel_id(c.chan_id),
                    Fees {
                        base_fee_msat: p.base_fee_msat,
                        fee_rate_ppm: p.fee_rate_ppm,
                        min_htlc_msat: p.min_htlc_msat,
                        max_htlc_msat: p.max_htlc_msat,
                        time_lock_delta: p.time_lock_delta,
                        inbound_base_fee_msat: p.inbound_base_fee_msat,
                        inbound_fee_ppm: p.inbound_fee_ppm,
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// `hub` pays an invoice of `alias` through our node, leaving a forwarding event with us.
    pub fn forward(&self, to_alias: &str, amount_msat: u64) {
        let inv = self
            .sim
            .create_invoice(
                to_alias,
                Some(oa_money::Msat::new(amount_msat).unwrap()),
                "forward",
                Duration::from_secs(600),
            )
            .unwrap()
            .bolt11;
        let st = self
            .sim
            .pay_from("hub", &inv, oa_money::Msat::new(1_000_000).unwrap())
            .unwrap();
        assert!(
            matches!(st, wallet_executor::node::PayState::Succeeded { .. }),
            "{st:?}"
        );
    }
}

/// One request to a router; the JSON answer (or `Null`).
pub async fn call(
    router: &axum::Router,
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
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Row count of one of lightning-ops's tables (compile-time names only).
pub async fn count(db: &oa_store::Db, table: &'static str) -> i64 {
    sqlx::query_scalar::<sqlx::Any, i64>(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM {table}"
    )))
    .fetch_one(db.pool())
    .await
    .unwrap()
}

/// Events of a journal topic, as `(kind, payload)`.
pub async fn events(db: &oa_store::Db, topic: &str) -> Vec<(String, Value)> {
    let mut conn = db.pool().acquire().await.unwrap();
    oa_store::journal::read(&mut conn, topic, 0, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.payload))
        .collect()
}

/// The policy the sim tests apply: a fixed default, and a proportional group for `hub`.
///
/// Our sim channels: 100x1x0 to router (all local), 102x1x0 to carol (all local), 103x1x0 to
/// hub (half local). Desired: 2000 msat + 250 ppm everywhere, except hub's group:
/// 1100 - floor(1000 * 1/2) = 600 ppm with base 0. 100x1x0 has a 30-70% band (it is at 100%:
/// a rebalance, but no other channel has room below half its capacity, so it has no move), and
/// an open intent to dave (no channel yet: executed, from the sim's on-chain wallet).
pub fn sim_policy(hub: &str, dave: &str) -> String {
    format!(
        r#"version = 1
[fees.default]
strategy = "fixed"
base_fee_msat = 2000
fee_ppm = 250
min_htlc_msat = 1000
max_htlc_msat = 50000000
time_lock_delta = 40

[[fees.groups]]
name = "hubs"
peers = ["{hub}"]
strategy = "proportional"
base_fee_msat = 0
min_ppm = 100
max_ppm = 1100
min_htlc_msat = 1000
max_htlc_msat = 50000000
time_lock_delta = 40

[[channels]]
channel_id = "100x1x0"
local_balance_min_pct = 30
local_balance_max_pct = 70

[[intents.open]]
peer = "{dave}"
capacity_sat = 1000000
"#
    )
}

pub const DEFAULT_FEES: Fees = Fees {
    base_fee_msat: 2000,
    fee_rate_ppm: 250,
    min_htlc_msat: 1000,
    max_htlc_msat: 50_000_000,
    time_lock_delta: 40,
    inbound_base_fee_msat: 0,
    inbound_fee_ppm: 0,
};

pub const HUB_FEES: Fees = Fees {
    base_fee_msat: 0,
    fee_rate_ppm: 600,
    ..DEFAULT_FEES
};

/// What the sim's policies look like once converged to [`sim_policy`].
pub fn converged() -> Vec<(String, Fees)> {
    vec![
        ("100x1x0".into(), DEFAULT_FEES),
        ("102x1x0".into(), DEFAULT_FEES),
        ("103x1x0".into(), HUB_FEES),
    ]
}

/// A folder, an executor and the sim policy file.
pub async fn sim_setup() -> (Folder, Executor, std::path::PathBuf) {
    let folder = Folder::new();
    let exec = Executor::start(&folder).await;
    let policy = folder.write(
        "policy.toml",
        &sim_policy(&exec.pubkey("hub"), &exec.pubkey("dave")),
    );
    (folder, exec, policy)
}

pub fn flag(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

/// Every receipt the executor issued, from its `/v1/receipts`.
pub async fn executor_receipts(exec: &Executor, folder: &Folder) -> Vec<oa_receipts::Receipt> {
    let token = folder
        .ring
        .operator_token(
            "wallet-executor",
            &["receipts:read"],
            Duration::from_secs(60),
        )
        .unwrap();
    let v: Value = reqwest::Client::new()
        .get(format!("http://{}/v1/receipts?limit=1000", exec.http_addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_value(r.clone()).unwrap())
        .collect()
}

/// Every receipt lightning-ops issued.
pub async fn ops_receipts(db: &oa_store::Db) -> Vec<oa_receipts::Receipt> {
    let mut conn = db.pool().acquire().await.unwrap();
    oa_store::receipt_log::list(&mut conn, "lightning-ops", 0, 1_000)
        .await
        .unwrap()
}

/// What an auditor does with both logs: export them together and verify the export offline
/// (signatures, hash chains, and every cross-service link rule).
pub fn audit(theirs: &[oa_receipts::Receipt], ours: &[oa_receipts::Receipt]) {
    let issuers = [theirs[0].issuer.clone(), ours[0].issuer.clone()];
    let mut export = Vec::new();
    oa_receipts::write_export(&mut export, &issuers, &[theirs, ours].concat()).unwrap();
    let report = oa_receipts::verify_export(export.as_slice());
    assert!(report.is_ok(), "{report}");
}

/// The one receipt of `schema` in `receipts`.
pub fn only<'a>(receipts: &'a [oa_receipts::Receipt], schema: &str) -> &'a oa_receipts::Receipt {
    let found: Vec<&oa_receipts::Receipt> =
        receipts.iter().filter(|r| r.schema == schema).collect();
    assert_eq!(found.len(), 1, "one {schema}: {found:?}");
    found[0]
}

/// A sim channel's id by `BLOCKxTXxOUTPUT`.
pub async fn chan_id(exec: &Executor, folder: &Folder, id: &str) -> u64 {
    exec.channels(folder)
        .await
        .iter()
        .find(|c| lightning_ops::plan::channel_id(c.chan_id) == id)
        .unwrap_or_else(|| panic!("no channel {id}"))
        .chan_id
}

/// `(action, channel_id, status)` of each result.
pub fn statuses(results: &[oa_proto::ops::ActionResult]) -> Vec<(String, String, String)> {
    results
        .iter()
        .map(|r| (r.action.clone(), r.channel_id.clone(), r.status.clone()))
        .collect()
}

pub fn triples(v: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    v.iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect()
}
