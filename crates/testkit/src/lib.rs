//! Development and test kit.
//!
//! - [`DevKeyring`]: the keys a local suite runs with, made on first start: a receipt signing key
//!   per service, a token identity per calling service plus an operator identity, and the trust
//!   store that says which scopes each identity may grant (least privilege per caller).
//! - [`free_port`] and [`wait_until`]: loopback ports for spawned processes, and bounded polling.

use std::{
    future::Future,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use oa_auth::{SigningIdentity, TrustStore};
use oa_receipts::ReceiptKey;

/// The five services.
pub const SERVICES: [&str; 5] = [
    "treasury",
    "hydra",
    "aegis",
    "wallet-executor",
    "lightning-ops",
];

/// Identities and the scopes their keys may grant. The operator may grant anything (it stands in
/// for the organisation's identity provider); each service may only call what the call graph
/// allows: treasury -> hydra, aegis; hydra -> wallet-executor, aegis; aegis -> hydra;
/// lightning-ops -> wallet-executor.
pub const IDENTITIES: [(&str, &[&str]); 5] = [
    ("operator", &["*"]),
    ("treasury", &["hydra:*", "aegis:*"]),
    (
        "hydra",
        &["wallet:pay", "wallet:read", "wallet:receive", "aegis:read"],
    ),
    ("aegis", &["hydra:*"]),
    ("lightning-ops", &["wallet:read", "wallet:channels"]),
];

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("auth: {0}")]
    Auth(#[from] oa_auth::AuthError),
    #[error("receipt key: {0}")]
    Receipt(#[from] oa_receipts::ReceiptError),
    #[error("unknown identity {0}")]
    UnknownIdentity(String),
}

/// Development keys under one directory.
#[derive(Clone, Debug)]
pub struct DevKeyring {
    dir: PathBuf,
}

impl DevKeyring {
    /// Opens the keyring in `dir`, creating any key that is missing (existing keys are kept, so
    /// restarting the suite keeps its receipt logs verifiable).
    pub fn ensure(dir: impl AsRef<Path>) -> Result<DevKeyring, KitError> {
        let ring = DevKeyring {
            dir: dir.as_ref().to_owned(),
        };
        std::fs::create_dir_all(ring.dir.join("keys"))?;
        for svc in SERVICES {
            let path = ring.receipt_key_file(svc);
            if !path.exists() {
                write_secret(&path, &ReceiptKey::generate().secret_hex())?;
            }
        }
        let mut trust = TrustStore::new();
        for (name, scopes) in IDENTITIES {
            let path = ring.identity_file(name);
            let identity = if path.exists() {
                SigningIdentity::load_pem(kid(name), "oa-dev", name, &path)?
            } else {
                let id = SigningIdentity::generate(kid(name), "oa-dev", name)?;
                id.save_pem(&path)?;
                id
            };
            trust.insert(identity.trust_entry(scopes.iter().copied()).with_name(name))?;
        }
        trust.save(ring.trust_file())?;
        Ok(ring)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn receipt_key_file(&self, service: &str) -> PathBuf {
        self.dir.join("keys").join(format!("{service}.receipt.hex"))
    }

    pub fn identity_file(&self, name: &str) -> PathBuf {
        self.dir.join("keys").join(format!("{name}.identity.pem"))
    }

    pub fn trust_file(&self) -> PathBuf {
        self.dir.join("trust.json")
    }

    /// The key id of an identity.
    pub fn kid(&self, name: &str) -> String {
        kid(name)
    }

    /// Loads an identity (`operator` or a service name).
    pub fn identity(&self, name: &str) -> Result<Arc<SigningIdentity>, KitError> {
        if !IDENTITIES.iter().any(|(n, _)| *n == name) {
            return Err(KitError::UnknownIdentity(name.to_owned()));
        }
        Ok(Arc::new(SigningIdentity::load_pem(
            kid(name),
            "oa-dev",
            name,
            self.identity_file(name),
        )?))
    }

    /// A token from the operator identity for `audience` with `scopes`.
    pub fn operator_token(
        &self,
        audience: &str,
        scopes: &[&str],
        ttl: Duration,
    ) -> Result<String, KitError> {
        Ok(self.identity("operator")?.mint(audience, scopes, ttl)?)
    }
}

fn kid(name: &str) -> String {
    format!("{name}-dev")
}

fn write_secret(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// A loopback port that was free a moment ago (the OS picks it). For processes that must be told
/// their port; in-process servers should bind `127.0.0.1:0` themselves instead.
pub fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub fn free_addr() -> std::io::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

/// A peer that accepts connections and never answers (not even a handshake), holding them open:
/// for tests of what a caller does when a dependency hangs. Its address.
pub async fn silent_peer() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    Ok(addr)
}

/// Polls `check` every `interval` until it returns `Some`, or gives up after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, interval: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}

/// The shared conformance vectors (`shared/vectors`): `OA_VECTORS_DIR` if set, else the first
/// `shared/vectors` found walking up from `start` (CI checks the repository out with `shared/`
/// beside it). Panics with a clear message if there is none: a test without its vectors must fail.
pub fn vectors_dir(start: &Path) -> PathBuf {
    if let Ok(dir) = std::env::var("OA_VECTORS_DIR") {
        return dir.into();
    }
    let mut dir = start.to_owned();
    loop {
        let candidate = dir.join("shared/vectors");
        if candidate.is_dir() {
            return candidate;
        }
        assert!(
            dir.pop(),
            "shared/vectors not found above {}; set OA_VECTORS_DIR",
            start.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = DevKeyring::ensure(dir.path()).unwrap();
        let key1 = std::fs::read_to_string(a.receipt_key_file("hydra")).unwrap();
        let b = DevKeyring::ensure(dir.path()).unwrap();
        assert_eq!(
            key1,
            std::fs::read_to_string(b.receipt_key_file("hydra")).unwrap()
        );
        let trust = TrustStore::load(b.trust_file()).unwrap();
        assert_eq!(trust.len(), IDENTITIES.len());
        // Least privilege: treasury's key may not grant wallet scopes.
        assert!(!trust.get("treasury-dev").unwrap().allows("wallet:pay"));
        assert!(trust.get("hydra-dev").unwrap().allows("wallet:pay"));
    }
}
