use std::{net::SocketAddr, sync::Arc, time::Duration};

use clap::Parser;
use oa_proto::wallet::{self, wallet_executor_client::WalletExecutorClient};
use oa_service::{Clock, SystemClock};
use oa_testkit::DevKeyring;
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use wallet_executor::{App, Config, node::sim::SimNetwork};

pub type Client =
    WalletExecutorClient<InterceptedService<Channel, oa_auth::grpc::BearerInterceptor>>;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub ring: DevKeyring,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub sim: SimNetwork,
    pub config: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Like [`config`], on database `db_url` (a SQLite file in `dir` when `None`).
pub fn config_on(
    dir: &std::path::Path,
    ring: &DevKeyring,
    db_url: Option<&str>,
    extra: &[&str],
) -> Config {
    let db = db_url.map_or_else(
        || format!("sqlite://{}", dir.join("wallet.db").display()),
        str::to_owned,
    );
    let mut args = vec![
        "wallet-executor".to_owned(),
        "--listen=127.0.0.1:0".into(),
        "--grpc-listen=127.0.0.1:0".into(),
        format!("--database-url={db}"),
        format!(
            "--receipt-key-file={}",
            ring.receipt_key_file("wallet-executor").display()
        ),
        format!("--trust-file={}", ring.trust_file().display()),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Config::parse_from(args)
}

impl Harness {
    pub async fn start(extra: &[&str]) -> Harness {
        Self::start_on(None, extra).await
    }

    /// Starts the executor on database `db_url` (a fresh SQLite file when `None`).
    pub async fn start_on(db_url: Option<&str>, extra: &[&str]) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let ring = DevKeyring::ensure(dir.path()).unwrap();
        let config = config_on(dir.path(), &ring, db_url, extra);
        Self::start_with(dir, ring, config, None).await
    }

    /// Starts (or restarts) the executor; `sim` carries the simulated network across a restart,
    /// as a real node outlives the executor process.
    pub async fn start_with(
        dir: tempfile::TempDir,
        ring: DevKeyring,
        config: Config,
        sim: Option<SimNetwork>,
    ) -> Harness {
        Self::start_clocked(dir, ring, config, sim, Arc::new(SystemClock)).await
    }

    /// Like [`Harness::start_with`], with the executor's (and a new sim's) clock given.
    pub async fn start_clocked(
        dir: tempfile::TempDir,
        ring: DevKeyring,
        config: Config,
        sim: Option<SimNetwork>,
        clock: Arc<dyn Clock>,
    ) -> Harness {
        let app: App = wallet_executor::build_with(&config, clock, sim)
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
        Harness {
            dir,
            ring,
            grpc_addr,
            http_addr,
            sim,
            config,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) -> (tempfile::TempDir, DevKeyring, Config, SimNetwork) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
        (self.dir, self.ring, self.config, self.sim)
    }

    pub async fn client_as(&self, identity: &str, audience: &str, scopes: &[&str]) -> Client {
        let channel = Channel::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let id = self.ring.identity(identity).unwrap();
        let bearer = oa_auth::grpc::BearerInterceptor::new(
            id,
            audience,
            scopes.iter().copied(),
            Duration::from_secs(300),
        )
        .unwrap();
        WalletExecutorClient::with_interceptor(channel, bearer)
    }

    /// Hydra's view: its own identity with the pay scope.
    pub async fn hydra(&self) -> Client {
        self.client_as("hydra", "wallet-executor", &["wallet:pay"])
            .await
    }

    /// Hydra receiving: invoices and their settlements.
    pub async fn receiver(&self) -> Client {
        self.client_as(
            "hydra",
            "wallet-executor",
            &["wallet:receive", "wallet:read"],
        )
        .await
    }

    /// lightning-ops: reads and channel actions.
    pub async fn ops(&self) -> Client {
        self.client_as(
            "lightning-ops",
            "wallet-executor",
            &["wallet:read", "wallet:channels"],
        )
        .await
    }

    /// An operator with the on-chain send scope (no service key may grant it).
    pub async fn treasurer(&self) -> Client {
        self.client_as(
            "operator",
            "wallet-executor",
            &["wallet:send_onchain", "wallet:read", "wallet:receive"],
        )
        .await
    }

    /// Every receipt the executor has logged, in log order (read over HTTP as an auditor would).
    pub async fn receipts(&self) -> Vec<oa_receipts::Receipt> {
        let token = self
            .ring
            .operator_token(
                "wallet-executor",
                &["receipts:read"],
                Duration::from_secs(600),
            )
            .unwrap();
        let mut out = Vec::new();
        let mut from = 0u64;
        loop {
            let page: oa_proto::common::ListReceiptsResponse = reqwest::Client::new()
                .get(format!(
                    "http://{}/v1/receipts?from_log_index={from}&limit=1000",
                    self.http_addr
                ))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if page.receipts.is_empty() {
                return out;
            }
            for r in &page.receipts {
                out.push(oa_service::receipts::from_proto(r).unwrap());
            }
            from = page.next_log_index;
        }
    }

    /// Receipts of one schema.
    pub async fn receipts_of(&self, schema: &str) -> Vec<oa_receipts::Receipt> {
        self.receipts()
            .await
            .into_iter()
            .filter(|r| r.schema == schema)
            .collect()
    }

    /// POSTs a JSON body to the sim's HTTP levers with `token`; the status and the JSON answer.
    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let mut req = reqwest::Client::new()
            .post(format!("http://{}{path}", self.http_addr))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (
            status,
            resp.json::<serde_json::Value>().await.unwrap_or_default(),
        )
    }

    pub fn invoice(&self, node: &str, amount_msat: u64) -> String {
        self.sim
            .create_invoice(
                node,
                oa_money::Msat::new(amount_msat)
                    .ok()
                    .filter(|m| !m.is_zero()),
                "test",
                Duration::from_secs(600),
            )
            .unwrap()
            .bolt11
    }
}

pub fn pay_req(key: &str, invoice: &str, fee_limit_msat: u64) -> wallet::PayInvoiceRequest {
    wallet::PayInvoiceRequest {
        idempotency_key: key.into(),
        invoice: invoice.into(),
        amount_msat: 0,
        fee_limit_msat,
        timeout_ms: 5_000,
    }
}

pub fn error_code(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("oa-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}
