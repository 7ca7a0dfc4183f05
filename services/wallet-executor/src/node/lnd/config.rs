//! How to reach LND: its URL, the macaroon, and the TLS material, loaded from files with size
//! bounds. `Debug` and every error redact the macaroon and the certificate.

use std::{fmt, path::Path};

/// Largest macaroon or certificate file we read.
pub(super) const MAX_CREDENTIAL_FILE_BYTES: u64 = 64 * 1024;

/// How to reach LND. `Debug` redacts the macaroon and the certificate.
#[derive(Clone)]
pub struct LndConfig {
    /// `https://host:port` (TLS, the production shape), or `http://host:port` (plaintext, only
    /// with `insecure_plaintext`, for tests and development).
    pub url: String,
    /// The macaroon, hex-encoded.
    pub macaroon_hex: String,
    /// LND's TLS certificate (PEM, usually its self-signed `tls.cert`), or the certificate of the
    /// CA that issued LND's certificate. Required for `https`.
    pub tls_cert_pem: Option<Vec<u8>>,
    /// The name to expect in LND's certificate (and to send as SNI) when it is not the URL's
    /// host, e.g. `localhost` when LND is reached by IP address through a tunnel.
    pub tls_domain: Option<String>,
    /// Allows an `http://` URL: no TLS, the macaroon in clear on the wire. Tests and
    /// development only.
    pub insecure_plaintext: bool,
}

impl fmt::Debug for LndConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LndConfig")
            .field("url", &self.url)
            .field("macaroon_hex", &"[redacted]")
            .field(
                "tls_cert_pem",
                &self.tls_cert_pem.as_ref().map(|_| "[redacted]"),
            )
            .field("tls_domain", &self.tls_domain)
            .field("insecure_plaintext", &self.insecure_plaintext)
            .finish()
    }
}

/// Why the LND configuration cannot be used. None of these carries credential material.
#[derive(Debug, thiserror::Error)]
pub enum LndConfigError {
    #[error("{what}: cannot read {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: {path} is larger than {MAX_CREDENTIAL_FILE_BYTES} bytes")]
    TooLarge { what: &'static str, path: String },
    #[error("the macaroon is empty or not valid hex")]
    BadMacaroon,
    #[error("invalid LND url {0:?}: {1}")]
    BadUrl(String, String),
    #[error(
        "an https:// LND url needs LND's TLS certificate (--lnd-tls-cert-file, usually LND's \
         tls.cert)"
    )]
    MissingTlsCert,
    #[error("the LND TLS certificate file holds no PEM certificate")]
    BadTlsCert,
    #[error("invalid --lnd-tls-domain {0:?}")]
    BadTlsDomain(String),
    #[error(
        "plaintext to LND (http:// url) sends the macaroon in clear: use https:// with \
         --lnd-tls-cert-file, or pass --lnd-insecure-plaintext (tests and development only)"
    )]
    PlaintextNotAllowed,
    #[error("cannot set up TLS to LND: {0}")]
    Tls(String),
}

fn read_bounded(what: &'static str, path: &Path) -> Result<Vec<u8>, LndConfigError> {
    use std::io::Read;
    let read_err = |source| LndConfigError::Read {
        what,
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut buf = Vec::new();
    file.take(MAX_CREDENTIAL_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    if buf.len() as u64 > MAX_CREDENTIAL_FILE_BYTES {
        return Err(LndConfigError::TooLarge {
            what,
            path: path.display().to_string(),
        });
    }
    Ok(buf)
}

impl LndConfig {
    /// Loads the credentials from files: the macaroon either as LND writes it (binary) or as hex
    /// text; the certificate as PEM. `tls_domain` and `insecure_plaintext` start unset.
    pub fn from_files(
        url: &str,
        macaroon_file: &Path,
        tls_cert_file: Option<&Path>,
    ) -> Result<LndConfig, LndConfigError> {
        let raw = read_bounded("--lnd-macaroon-file", macaroon_file)?;
        let text = std::str::from_utf8(&raw).ok().map(str::trim);
        let macaroon_hex = match text {
            Some(t) if !t.is_empty() && hex::decode(t).is_ok() => t.to_ascii_lowercase(),
            _ if raw.is_empty() => return Err(LndConfigError::BadMacaroon),
            _ => hex::encode(&raw),
        };
        let tls_cert_pem = tls_cert_file
            .map(|p| read_bounded("--lnd-tls-cert-file", p))
            .transpose()?;
        Ok(LndConfig {
            url: url.to_owned(),
            macaroon_hex,
            tls_cert_pem,
            tls_domain: None,
            insecure_plaintext: false,
        })
    }
}
