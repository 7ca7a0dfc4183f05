//! LND's errors, mapped to what the caller can do.
//!
//! LND gives few gRPC codes: most of its refusals are Go errors that arrive as `UNKNOWN` with a
//! message, so some well-known messages are matched (macaroon problems, missing funds). A
//! status that tonic made itself from a transport failure carries the failure as its
//! `source()`; one that came from LND over the wire has none. That tells "LND said no" from
//! "we could not talk to LND", and the transport failure is classified further
//! ([`LndConnectError`]) so that a wrong certificate or a plaintext client facing a TLS port
//! is named as such.

use std::error::Error as StdError;

use tonic::{Code, Status};

use super::tls::Transport;
use crate::node::NodeError;

/// Why a call could not reach LND (or LND refused to serve it at all). Carries no credential
/// material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LndConnectError {
    /// LND's certificate is neither the configured one nor issued by it.
    #[error(
        "LND's TLS certificate is not the configured one (nor issued by it): check \
         --lnd-tls-cert-file"
    )]
    UntrustedCertificate,
    /// The certificate chains to the configured CA but does not name the host.
    #[error(
        "LND's TLS certificate does not name the host we connect to: set --lnd-tls-domain to a \
         name it holds"
    )]
    CertificateNameMismatch,
    /// Another TLS failure (no common protocol version, no HTTP/2, a plaintext server...).
    #[error("TLS with LND failed: {0}")]
    TlsHandshake(String),
    /// The server did not speak plaintext HTTP/2 gRPC (typically: an `http://` url pointing at
    /// LND's TLS port).
    #[error(
        "LND did not answer plaintext gRPC on this address (is it its TLS port? use https:// \
         with --lnd-tls-cert-file)"
    )]
    NotPlaintext,
    /// No connection could be made (refused, timed out, no route).
    #[error("cannot reach LND: {0}")]
    Unreachable(String),
    /// The connection failed after it was made (reset, closed by the other end).
    #[error("the connection to LND broke: {0}")]
    ConnectionLost(String),
    /// LND refused the macaroon.
    #[error("LND refused our macaroon")]
    Auth,
    /// LND answered but cannot serve us yet (wallet locked, still starting, sub-server off).
    #[error("LND is not ready: {0}")]
    NotReady(String),
}

/// Each error in the chain of `err`, including the error inside an `io::Error` (whose
/// `source()` skips it).
fn chain<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(err);
    // A bounded walk: error chains are short, and a cycle must not hang us.
    for _ in 0..32 {
        let Some(e) = next else { break };
        out.push(e);
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            out.push(inner);
            next = inner.source();
        } else {
            next = e.source();
        }
    }
    out
}

/// Classifies a status tonic made from a transport failure; `None` for a status from LND.
pub(super) fn transport_failure(s: &Status, transport: Transport) -> Option<LndConnectError> {
    let source = s.source()?;
    let errors = chain(source);
    for e in &errors {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(match tls {
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
                ) => LndConnectError::CertificateNameMismatch,
                rustls::Error::InvalidCertificate(_) => LndConnectError::UntrustedCertificate,
                other => LndConnectError::TlsHandshake(other.to_string()),
            });
        }
    }
    for e in &errors {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused
                    | TimedOut
                    | NotFound
                    | AddrNotAvailable
                    | HostUnreachable
                    | NetworkUnreachable
            ) {
                return Some(LndConnectError::Unreachable(io.to_string()));
            }
        }
    }
    let innermost = errors
        .last()
        .map_or_else(|| s.message().to_owned(), |e| e.to_string());
    if errors
        .iter()
        .any(|e| e.downcast_ref::<tonic::TimeoutExpired>().is_some())
    {
        return Some(LndConnectError::Unreachable(innermost));
    }
    Some(match transport {
        // Connected, then the TLS layer failed without a rustls error of its own (the server
        // closed the connection during the handshake, or did not negotiate HTTP/2).
        Transport::Tls if mentions_tls(&innermost) => LndConnectError::TlsHandshake(innermost),
        Transport::Tls => LndConnectError::ConnectionLost(innermost),
        // Connected, then no HTTP/2 answer: what a TLS server does to a plaintext client (it
        // drops the connection on the first bytes that are not a TLS handshake).
        Transport::Plaintext => LndConnectError::NotPlaintext,
    })
}

fn mentions_tls(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("tls") || m.contains("handshake") || m.contains("http/2 was not negotiated")
}

/// Whether LND refused our credentials (a status from LND itself).
pub(super) fn is_auth(s: &Status) -> bool {
    if s.source().is_some() {
        return false;
    }
    match s.code() {
        Code::Unauthenticated | Code::PermissionDenied => true,
        // LND reports macaroon problems with code Unknown.
        Code::Unknown => {
            let m = s.message();
            m.contains("macaroon") || m.contains("verification failed")
        }
        _ => false,
    }
}

pub(super) fn is_already_exists(s: &Status) -> bool {
    let m = s.message();
    s.code() == Code::AlreadyExists
        || m.contains("invoice is already paid")
        || m.contains("payment is in transition")
        || m.contains("already exists")
}

/// LND answered and refused the request itself: the payment was not started.
pub(super) fn is_definitive_refusal(s: &Status) -> bool {
    is_auth(s)
        || (s.source().is_none()
            && matches!(
                s.code(),
                Code::InvalidArgument
                    | Code::FailedPrecondition
                    | Code::OutOfRange
                    | Code::Unimplemented
                    | Code::NotFound
            ))
}

pub(super) fn is_unknown_payment(s: &Status) -> bool {
    s.source().is_none()
        && (s.code() == Code::NotFound || s.message().contains("payment isn't initiated"))
}

/// LND's own words for "not enough confirmed on-chain funds" (btcwallet's coin selection, and
/// the channel funding's coin selection).
fn is_insufficient_funds(s: &Status) -> bool {
    let m = s.message();
    m.contains("insufficient funds") || m.contains("not enough witness outputs")
}

/// The payment paths (`pay`, `track`): anything but a credential refusal leaves the payment's
/// fate open, so it is `Unavailable` (the executor then tracks; it never records a failure).
pub(super) fn payment_error(s: &Status, transport: Transport) -> NodeError {
    if is_auth(s) {
        return NodeError::Auth;
    }
    match transport_failure(s, transport) {
        Some(e) => NodeError::Unavailable(e.to_string()),
        None => NodeError::Unavailable(format!("lnd: {:?}: {}", s.code(), s.message())),
    }
}

/// A stream that broke after it started (LND answered before): the connection was fine, so the
/// failure is not classified as a connection problem.
pub(super) fn broken_stream(s: &Status) -> NodeError {
    if is_auth(s) {
        return NodeError::Auth;
    }
    NodeError::Unavailable(format!(
        "the stream from LND broke: {:?}: {}",
        s.code(),
        s.message()
    ))
}

/// Every other call: LND's refusals are `Refused` (or more precise), transport failures
/// `Unavailable`.
pub(super) fn rpc_error(s: &Status, transport: Transport) -> NodeError {
    if is_auth(s) {
        return NodeError::Auth;
    }
    if let Some(e) = transport_failure(s, transport) {
        return NodeError::Unavailable(e.to_string());
    }
    if is_insufficient_funds(s) {
        return NodeError::InsufficientFunds;
    }
    match s.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::AlreadyExists
        | Code::NotFound
        // LND's plain Go errors: it answered and said no.
        | Code::Unknown => NodeError::Refused(format!("lnd: {}", s.message())),
        Code::Unimplemented => NodeError::NotSupported("this RPC is not enabled on the LND node"),
        _ => NodeError::Unavailable(format!("lnd: {:?}: {}", s.code(), s.message())),
    }
}

/// What a failed `GetInfo` says about the connection, for [`super::LndNode::check`].
pub(super) fn connect_error(s: &Status, transport: Transport) -> LndConnectError {
    if is_auth(s) {
        return LndConnectError::Auth;
    }
    transport_failure(s, transport)
        .unwrap_or_else(|| LndConnectError::NotReady(format!("{:?}: {}", s.code(), s.message())))
}
