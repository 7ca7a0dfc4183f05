//! Configuration every service shares (flags with environment fallbacks), and loading the keys it
//! names. Key material is read from files; it is never logged and never appears in `Debug`.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use oa_auth::{SigningIdentity, TrustStore, Verifier};
use oa_receipts::ReceiptKey;
use oa_store::{Db, DbOptions, MigrationSet};

use crate::cpus::{CpuError, CpuList};

/// How far token clocks may disagree. Kept small: a stolen token is useful for `exp + leeway`.
pub const TOKEN_LEEWAY: Duration = Duration::from_secs(30);
/// Largest key file accepted, so a wrong path cannot make us read a huge file.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Address of the HTTP API.
    #[arg(long, env = "OA_LISTEN")]
    pub listen: SocketAddr,
    /// `sqlite://path/to/file.db` (embedded) or `postgres://user@host/db`.
    #[arg(long, env = "OA_DATABASE_URL")]
    pub database_url: String,
    /// PostgreSQL pool size (SQLite always uses one connection).
    #[arg(long, env = "OA_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// File holding this service's receipt signing key (64 hex chars, secp256k1).
    #[arg(long, env = "OA_RECEIPT_KEY_FILE")]
    pub receipt_key_file: PathBuf,
    /// JSON trust store: which token signing keys are accepted, with the scopes each may grant.
    #[arg(long, env = "OA_TRUST_FILE")]
    pub trust_file: PathBuf,
    /// This service's own token signing key (PKCS#8 PEM, Ed25519), for calls to other services.
    #[arg(long, env = "OA_IDENTITY_KEY_FILE")]
    pub identity_key_file: Option<PathBuf>,
    /// The `kid` of the identity key, as listed in the other services' trust stores.
    #[arg(long, env = "OA_IDENTITY_KID")]
    pub identity_kid: Option<String>,
    /// Log JSON lines instead of text.
    #[arg(long, env = "OA_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
    /// Bound on one HTTP request's handling time, in milliseconds.
    #[arg(long, env = "OA_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Sign a checkpoint of the receipt log after this many new receipts.
    #[arg(long, env = "OA_CHECKPOINT_EVERY", default_value_t = 100)]
    pub checkpoint_every: u64,
    /// ... or when this many milliseconds have passed since the last one and a receipt is new.
    #[arg(long, env = "OA_CHECKPOINT_INTERVAL_MS", default_value_t = 10_000)]
    pub checkpoint_interval_ms: u64,
    /// Keep journal events this many milliseconds, then prune them (raising the topic's
    /// retention floor, below which cursors are stale). 0 keeps events forever.
    #[arg(long, env = "OA_EVENT_RETENTION_MS", default_value_t = 0)]
    pub event_retention_ms: u64,
    /// Run this process's threads only on these CPUs, e.g. `0` or `0,2-3` (Linux). An embedded
    /// (SQLite) service hands each statement to its connection's thread; on one CPU that
    /// hand-off wakes no other core. `oa up` pins each service of the embedded suite.
    #[arg(long, env = "OA_CPUS")]
    pub cpus: Option<CpuList>,
    /// Threads that run the service's tasks (default: one per CPU). `1` runs every task on the
    /// main thread, so none is handed between threads: the cheapest when the service has one
    /// CPU or shares the machine, as in `oa up`.
    #[arg(long, env = "OA_WORKER_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=i64::from(crate::runtime::MAX_WORKER_THREADS)))]
    pub worker_threads: Option<u16>,
}

/// The key material a service runs with.
pub struct ServiceKeys {
    pub receipt_key: Arc<ReceiptKey>,
    pub verifier: Arc<Verifier>,
    pub identity: Option<Arc<SigningIdentity>>,
}

impl std::fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceKeys")
            .field("receipt_key_id", &self.receipt_key.key_id())
            .field(
                "identity_kid",
                &self.identity.as_ref().map(|i| i.kid().to_owned()),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("bad key in {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl CommonArgs {
    /// Pins the process to `--cpus`, if given. Call it before connecting to the database.
    pub fn pin_cpus(&self) -> Result<(), CpuError> {
        if let Some(cpus) = &self.cpus {
            crate::cpus::pin_process(cpus)?;
            tracing::info!(%cpus, "pinned to CPUs");
        }
        Ok(())
    }

    /// Loads the receipt key, the trust store (verifying tokens for `audience`) and, if
    /// configured, the identity used to call other services.
    pub fn load_keys(&self, service: &str, audience: &str) -> Result<ServiceKeys, ConfigError> {
        let receipt_key = read_small(&self.receipt_key_file).and_then(|hex| {
            ReceiptKey::from_secret_hex(hex.trim()).map_err(|e| ConfigError::Key {
                path: self.receipt_key_file.clone(),
                reason: e.to_string(),
            })
        })?;
        let trust = TrustStore::load(&self.trust_file).map_err(|e| ConfigError::Key {
            path: self.trust_file.clone(),
            reason: e.to_string(),
        })?;
        let identity = match (&self.identity_key_file, &self.identity_kid) {
            (Some(path), Some(kid)) => Some(Arc::new(
                SigningIdentity::load_pem(kid.clone(), service, service, path).map_err(|e| {
                    ConfigError::Key {
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                })?,
            )),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "--identity-key-file and --identity-kid go together".into(),
                ));
            }
        };
        Ok(ServiceKeys {
            receipt_key: Arc::new(receipt_key),
            verifier: Arc::new(Verifier::new(trust, audience, TOKEN_LEEWAY)),
            identity,
        })
    }

    pub fn db_options(&self) -> DbOptions {
        DbOptions {
            max_connections: self.database_max_connections,
            ..DbOptions::default()
        }
    }

    /// Connects to the database and applies `sets` (plus the store's core tables).
    pub async fn open_db(&self, sets: &[&MigrationSet]) -> Result<Db, oa_store::StoreError> {
        if let Some(path) = self.database_url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if let Some(parent) = std::path::Path::new(path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent)
                    .map_err(|e| oa_store::StoreError::InvalidUrl(e.to_string()))?;
            }
        }
        Db::connect_and_migrate(&self.database_url, &self.db_options(), sets).await
    }

    pub fn checkpoint_policy(&self) -> crate::audit::CheckpointPolicy {
        crate::audit::CheckpointPolicy {
            every: self.checkpoint_every.max(1),
            interval: Duration::from_millis(self.checkpoint_interval_ms.max(1)),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

fn read_small(path: &PathBuf) -> Result<String, ConfigError> {
    use std::io::Read;
    let err = |reason: String| ConfigError::Read {
        path: path.clone(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut s = String::new();
    file.take(MAX_KEY_FILE_BYTES)
        .read_to_string(&mut s)
        .map_err(|e| err(e.to_string()))?;
    Ok(s)
}
