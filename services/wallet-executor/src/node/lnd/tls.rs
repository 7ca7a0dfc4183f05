//! The transport to LND: TLS with the node's certificate (tonic's rustls, `ring` provider), or
//! plaintext behind an explicit flag.
//!
//! LND serves a self-signed certificate (`tls.cert`) that has the CA flag set, and rustls'
//! WebPKI verifier refuses a CA certificate presented as a server certificate
//! (`CaUsedAsEndEntity`, lnd#5450). So a plain `ca_certificate(tls.cert)` cannot connect to a
//! real LND. [`LndCertVerifier`] pins the configured certificate instead: the server's
//! certificate must be byte-for-byte one of the configured certificates, and the handshake
//! signature is still verified with it, so the server must hold its private key. When the
//! server's certificate is not pinned (an LND behind a certificate issued by a CA), the
//! configured certificates are used as trust anchors with full WebPKI verification, names
//! included (`--lnd-tls-domain` sets the name to expect).
//!
//! A pinned certificate is not checked for expiry or names, as `lncli` does not need to: it is
//! the exact certificate the operator copied from the node, and LND makes a new one (with new
//! bytes, which must be copied again) when it renews it.

use std::{fmt, sync::Arc, time::Duration};

use rustls::{
    CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tonic::transport::{ClientTlsConfig, Endpoint};

use super::config::{LndConfig, LndConfigError};

/// How long to wait for the TCP connection to LND.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the TLS handshake may take once connected.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings while a call is open, so a long-lived stream (invoice subscription, payment
/// tracking) over a silently dead connection fails instead of hanging. LND's gRPC server
/// refuses pings more often than every 5 s; we stay well above that, and ping only while a call
/// is open (LND does not accept pings on an idle connection by default).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection counts as dead.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Verifies LND's certificate: pinned (exact bytes), else chained to the configured
/// certificates (see the module docs). `Debug` shows no certificate.
pub(super) struct LndCertVerifier {
    pinned: Vec<CertificateDer<'static>>,
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for LndCertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LndCertVerifier")
            .field("pinned", &self.pinned.len())
            .finish_non_exhaustive()
    }
}

impl LndCertVerifier {
    pub(super) fn from_pem(pem: &[u8]) -> Result<LndCertVerifier, LndConfigError> {
        let pinned = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| LndConfigError::BadTlsCert)?;
        if pinned.is_empty() {
            return Err(LndConfigError::BadTlsCert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        let (added, _unusable) = roots.add_parsable_certificates(pinned.iter().cloned());
        // Without a usable trust anchor only the pin applies.
        let chain = if added > 0 {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .ok()
        } else {
            None
        };
        Ok(LndCertVerifier {
            pinned,
            chain,
            provider,
        })
    }
}

impl ServerCertVerifier for LndCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.chain {
            Some(chain) => {
                chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The transport a configuration asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transport {
    Tls,
    Plaintext,
}

/// Builds the endpoint for `config`: TLS for `https://` (which needs the certificate),
/// plaintext for `http://` only when explicitly allowed.
pub(super) fn endpoint(config: &LndConfig) -> Result<(Endpoint, Transport), LndConfigError> {
    let url = config.url.as_str();
    let transport = if url.starts_with("https://") {
        Transport::Tls
    } else if url.starts_with("http://") {
        Transport::Plaintext
    } else {
        return Err(LndConfigError::BadUrl(
            url.to_owned(),
            "expected https:// (or http:// with --lnd-insecure-plaintext)".into(),
        ));
    };
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| LndConfigError::BadUrl(url.to_owned(), e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(false);
    let endpoint = match transport {
        Transport::Plaintext if !config.insecure_plaintext => {
            return Err(LndConfigError::PlaintextNotAllowed);
        }
        Transport::Plaintext => endpoint,
        Transport::Tls => {
            let pem = config
                .tls_cert_pem
                .as_deref()
                .ok_or(LndConfigError::MissingTlsCert)?;
            let verifier = LndCertVerifier::from_pem(pem)?;
            let mut tls = ClientTlsConfig::new().timeout(TLS_HANDSHAKE_TIMEOUT);
            if let Some(domain) = &config.tls_domain {
                ServerName::try_from(domain.as_str())
                    .map_err(|_| LndConfigError::BadTlsDomain(domain.clone()))?;
                tls = tls.domain_name(domain.clone());
            }
            endpoint
                .tls_config_with_verifier(tls, Arc::new(verifier))
                .map_err(|e| LndConfigError::Tls(e.to_string()))?
        }
    };
    Ok((endpoint, transport))
}
