//! wallet-executor: the custody boundary.
//!
//! The only process that holds Lightning node credentials and signs payments. Hydra pays and
//! receives through its gRPC custody channel; lightning-ops reads and changes channel policy,
//! opens, closes and rebalances channels through it; operators send on-chain. It pays each
//! payment hash at most once, sends each on-chain request at most once, enforces hard caps that
//! hold even if a caller is compromised, and issues a signed receipt for every terminal payment,
//! invoice settlement, on-chain send and channel action.

pub mod actions;
pub mod channels;
pub mod error;
pub mod grpc;
pub mod http;
pub mod invoices;
pub mod node;
pub mod onchain;
pub mod payments;
pub mod receipt;
pub mod store;
pub mod validate;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use oa_invoice::Network;
use oa_money::Msat;
use oa_proto::wallet::wallet_executor_server::WalletExecutorServer;
use oa_service::{Base, Clock, CommonArgs, SystemClock, base::count_by};
use oa_store::{Db, MigrationSet, receipt_log::ReceiptLog};
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;

use crate::{
    actions::ChannelActions,
    channels::Channels,
    invoices::Invoices,
    node::{LightningNode, sim::SimNetwork},
    onchain::Onchain,
    payments::{Caps, Payments},
};

pub const SERVICE: &str = "wallet-executor";

pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: SERVICE,
    migrations: &[
        (
            1,
            "payments",
            include_str!("../migrations/0001_payments.sql"),
        ),
        (
            2,
            "receive_onchain_channel_actions",
            include_str!("../migrations/0002_receive_onchain_channel_actions.sql"),
        ),
    ],
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The embedded simulated Lightning network.
    Sim,
    /// LND over gRPC (`--lnd-url`, `--lnd-macaroon-file`, `--lnd-tls-cert-file`).
    Lnd,
}

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "wallet-executor",
    about = "The custody boundary: pays Lightning invoices exactly once"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Address of the gRPC custody channel.
    #[arg(long, env = "OA_GRPC_LISTEN")]
    pub grpc_listen: SocketAddr,
    #[arg(long, env = "OA_BACKEND", value_enum, default_value = "sim")]
    pub backend: Backend,
    /// bitcoin, testnet, signet or regtest.
    #[arg(long, env = "OA_NETWORK", default_value = "regtest")]
    pub network: Network,
    /// Seed of the simulated network (same seed, same node keys).
    #[arg(long, env = "OA_SIM_SEED", default_value_t = 1)]
    pub sim_seed: u64,
    /// Journal of the simulated network: replayed at start-up and appended to, so the sim (which
    /// lives in this process) survives a restart or a kill, as a real node would.
    #[arg(long, env = "OA_SIM_STATE_FILE")]
    pub sim_state_file: Option<std::path::PathBuf>,
    /// Hard cap: amount plus fee limit of one payment.
    #[arg(long, env = "OA_MAX_PAYMENT_MSAT", default_value_t = 100_000_000)]
    pub max_payment_msat: u64,
    /// Hard cap: amount plus fee limit committed in the rolling window.
    #[arg(long, env = "OA_WINDOW_MAX_MSAT", default_value_t = 10_000_000_000)]
    pub window_max_msat: u64,
    /// Length of the rolling window.
    #[arg(long, env = "OA_WINDOW_SECS", default_value_t = 3600)]
    pub window_secs: u64,
    /// Payee node ids (hex) allowed; none means any payee.
    #[arg(long, env = "OA_PAYEE_ALLOWLIST", value_delimiter = ',')]
    pub payee_allowlist: Vec<String>,
    /// LND's gRPC address for `--backend lnd`: `https://host:port` (TLS with
    /// `--lnd-tls-cert-file`), or `http://host:port` with `--lnd-insecure-plaintext`.
    #[arg(long, env = "OA_LND_URL")]
    pub lnd_url: Option<String>,
    /// LND's macaroon (binary as LND writes it, or hex text), for `--backend lnd`.
    #[arg(long, env = "OA_LND_MACAROON_FILE")]
    pub lnd_macaroon_file: Option<std::path::PathBuf>,
    /// LND's TLS certificate (PEM: LND's `tls.cert`, or the CA that issued LND's certificate),
    /// required for an `https://` `--lnd-url`.
    #[arg(long, env = "OA_LND_TLS_CERT_FILE")]
    pub lnd_tls_cert_file: Option<std::path::PathBuf>,
    /// The name to expect in LND's certificate (and to send as SNI) when it is not the host of
    /// `--lnd-url` (e.g. `localhost` when reaching LND by IP address through a tunnel).
    #[arg(long, env = "OA_LND_TLS_DOMAIN")]
    pub lnd_tls_domain: Option<String>,
    /// Allows an `http://` `--lnd-url`: no TLS, the macaroon in clear on the wire. Tests and
    /// development only.
    #[arg(long, env = "OA_LND_INSECURE_PLAINTEXT")]
    pub lnd_insecure_plaintext: bool,
}

/// A built executor, not yet serving.
pub struct App {
    pub http: Router,
    pub grpc: InterceptedService<
        WalletExecutorServer<grpc::ExecutorGrpc>,
        oa_auth::grpc::AuthInterceptor,
    >,
    pub payments: Arc<Payments>,
    pub invoices: Arc<Invoices>,
    pub onchain: Arc<Onchain>,
    pub actions: Arc<ChannelActions>,
    pub sim: Option<SimNetwork>,
    pub db: Db,
}

fn caps(config: &Config) -> anyhow::Result<Caps> {
    Ok(Caps {
        max_payment: Msat::new(config.max_payment_msat).context("--max-payment-msat")?,
        window_max: Msat::new(config.window_max_msat).context("--window-max-msat")?,
        window: Duration::from_secs(config.window_secs.max(1)),
        payee_allowlist: config.payee_allowlist.clone(),
    })
}

/// Builds the executor from its configuration.
pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
    build_with(config, clock, None).await
}

/// Like [`build`], on an existing simulated network (tests restart the executor against the same
/// network, as a real node outlives the executor process).
pub async fn build_with(
    config: &Config,
    clock: Arc<dyn Clock>,
    sim: Option<SimNetwork>,
) -> anyhow::Result<App> {
    let base = Base::open(SERVICE, &config.common, &[&MIGRATIONS]).await?;
    let (keys, db) = (&base.keys, base.db.clone());
    let (node, sim): (Arc<dyn LightningNode>, Option<SimNetwork>) = match config.backend {
        Backend::Sim => {
            let sim = match (sim, &config.sim_state_file) {
                (Some(sim), _) => sim,
                (None, Some(path)) => {
                    SimNetwork::open_journaled(config.sim_seed, config.network, clock.clone(), path)
                        .context("--sim-state-file")?
                }
                (None, None) => {
                    SimNetwork::default_topology(config.sim_seed, config.network, clock.clone())
                }
            };
            (Arc::new(sim.clone()), Some(sim))
        }
        Backend::Lnd => {
            let url = config
                .lnd_url
                .as_deref()
                .context("--backend lnd needs --lnd-url")?;
            let macaroon = config
                .lnd_macaroon_file
                .as_deref()
                .context("--backend lnd needs --lnd-macaroon-file")?;
            let mut lnd = node::lnd::LndConfig::from_files(
                url,
                macaroon,
                config.lnd_tls_cert_file.as_deref(),
            )?;
            lnd.tls_domain = config.lnd_tls_domain.clone();
            lnd.insecure_plaintext = config.lnd_insecure_plaintext;
            let node = node::lnd::LndNode::connect(&lnd)?;
            // A wrong certificate, macaroon or transport is a configuration error: refuse to
            // start. An LND that is unreachable or not ready (wallet locked, still starting) is
            // not: it may come up after us, and the calls fail as unavailable until it does.
            match node.check().await {
                Ok(()) => {}
                Err(
                    e @ (node::lnd::LndConnectError::Unreachable(_)
                    | node::lnd::LndConnectError::NotReady(_)),
                ) => {
                    tracing::warn!(error = %e, "LND is not ready yet; starting anyway");
                }
                Err(e) => return Err(anyhow::Error::new(e).context("connecting to LND")),
            }
            (Arc::new(node), None)
        }
    };
    let log = ReceiptLog::new(SERVICE, keys.receipt_key.clone());
    let channels = Arc::new(Channels {
        db: db.clone(),
        node: node.clone(),
        log: ReceiptLog::new(SERVICE, keys.receipt_key.clone()),
        clock: clock.clone(),
    });
    let caps = caps(config)?;
    let invoices = Arc::new(Invoices::new(
        db.clone(),
        node.clone(),
        log.clone(),
        clock.clone(),
    ));
    let onchain = Arc::new(Onchain::new(
        db.clone(),
        node.clone(),
        log.clone(),
        clock.clone(),
        caps.clone(),
        config.network,
    ));
    let actions = Arc::new(ChannelActions::new(
        db.clone(),
        node.clone(),
        log.clone(),
        clock.clone(),
        caps.clone(),
    ));
    let payments = Arc::new(Payments::new(
        db.clone(),
        node.clone(),
        log,
        clock,
        caps,
        config.network,
    ));
    let grpc = InterceptedService::new(
        WalletExecutorServer::new(grpc::ExecutorGrpc {
            payments: payments.clone(),
            node,
            channels,
            invoices: invoices.clone(),
            onchain: onchain.clone(),
            actions: actions.clone(),
        })
        .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES),
        oa_auth::grpc::interceptor(keys.verifier.clone()),
    );

    let api = http::router(http::SimState {
        sim: sim.clone(),
        verifier: keys.verifier.clone(),
    });
    let http = base.router(
        api,
        &http::ROUTES,
        Some(count_by(&db, "wallet_payments", "status")),
    );
    Ok(App {
        http,
        grpc,
        payments,
        invoices,
        onchain,
        actions,
        sim,
        db,
    })
}

/// Serves a built executor on the given listeners until `shutdown` resolves.
pub async fn serve(
    app: App,
    http: TcpListener,
    grpc: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let recovered = app.payments.recover().await?;
    if recovered > 0 {
        tracing::info!(
            recovered,
            "tracking payments that were in flight before the restart"
        );
    }
    let payments = app.payments.clone();
    oa_service::tracker::spawn_resweep(
        "payments",
        move |before| {
            let payments = payments.clone();
            async move { payments.recover_before(before).await }
        },
        app.payments.clock.clone(),
    );
    let sends = app.onchain.recover().await?;
    if sends > 0 {
        tracing::info!(
            sends,
            "re-driving on-chain sends left pending before the restart"
        );
    }
    let actions = app.actions.recover().await?;
    if actions > 0 {
        tracing::info!(
            actions,
            "resuming channel actions left open before the restart"
        );
    }
    let follower = tokio::spawn(app.invoices.clone().follow());
    let invoices = app.invoices.clone();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let grpc_shutdown = {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            // A pay whose caller goes away still records its outcome (oa_service::DetachLayer).
            .layer(oa_service::DetachLayer)
            .add_service(app.grpc)
            .serve_with_incoming_shutdown(
                // Small unary calls: without TCP_NODELAY, Nagle's algorithm and delayed ACKs add
                // ~40 ms to every response.
                tokio_stream::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(grpc),
                    |conn| {
                        if let Ok(c) = &conn {
                            let _ = c.set_nodelay(true);
                        }
                        conn
                    },
                ),
                grpc_shutdown,
            ),
    );
    let http_shutdown = {
        let mut rx = rx;
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    tokio::spawn(async move {
        shutdown.await;
        // Ends the settlement follower and every settlement stream first, so the gRPC server's
        // graceful shutdown does not wait on streams that never end.
        invoices.close();
        let _ = tx.send(true);
    });
    oa_service::serve(http, app.http, http_shutdown).await?;
    grpc_task.await??;
    let _ = follower.await;
    app.db.close().await;
    Ok(())
}

/// Runs the executor as a process: binds, serves, stops on SIGINT/SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    oa_service::init_tracing(config.common.log_json);
    config.common.pin_cpus()?;
    let app = build(&config, Arc::new(SystemClock)).await?;
    let http = TcpListener::bind(config.common.listen)
        .await
        .context("bind HTTP")?;
    let grpc = TcpListener::bind(config.grpc_listen)
        .await
        .context("bind gRPC")?;
    tracing::info!(http = %config.common.listen, grpc = %config.grpc_listen, backend = ?config.backend, "wallet-executor listening");
    serve(app, http, grpc, oa_service::shutdown_signal()).await
}
