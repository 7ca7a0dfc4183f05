//! Hydra's view of Aegis: reading a verification before settling a credit envelope. A trait (so
//! tests use a fake) and the HTTP client for `GET /v1/aegis/verification/{id}` (contract in
//! `proto/openagents/aegis/v1/aegis.proto`).
//!
//! Hydra never trusts the verdict field of the answer on its own: [`check`] verifies the receipt
//! Aegis signed (signature, trusted key, schema, the hash the caller named) and reads the verdict,
//! the verification id and the scope from its body.

use oa_service::peer::PeerClient;
use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use oa_auth::TokenSource;
use oa_proto::aegis;
use oa_receipts::{Hash, Receipt};
use oa_service::ApiError;

/// The receipt class of an Aegis verification.
pub const VERIFICATION_SCHEMA: &str = "oa.aegis.verification_receipt.v1";
/// Bound on one call to Aegis: a read of a stored verification.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from Aegis (a verification and one receipt are a few KiB).
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Aegis's verifications as Hydra reads them.
///
/// Implementors return `Ok(None)` only when Aegis says it has no such verification (404), and an
/// error with a retryable `AEGIS_UNAVAILABLE` when it could not be asked; they pass the answer on
/// unchanged (Hydra checks the receipt itself).
#[async_trait]
pub trait Verifications: Send + Sync + 'static {
    async fn get(
        &self,
        verification_id: &str,
    ) -> Result<Option<aegis::GetVerificationResponse>, ApiError>;
}

/// Aegis over HTTP, with Hydra's identity (scope `aegis:read`).
pub struct HttpAegis {
    peer: PeerClient,
}

impl HttpAegis {
    pub fn new(base: &str, tokens: TokenSource) -> anyhow::Result<Self> {
        Ok(Self {
            peer: PeerClient::new(base, tokens, CALL_TIMEOUT, MAX_RESPONSE_BYTES)?,
        })
    }
}

fn unavailable(what: &str) -> ApiError {
    tracing::warn!("aegis call failed: {what}");
    ApiError::unavailable("AEGIS_UNAVAILABLE", "aegis is unavailable; retry later")
}

#[async_trait]
impl Verifications for HttpAegis {
    async fn get(
        &self,
        verification_id: &str,
    ) -> Result<Option<aegis::GetVerificationResponse>, ApiError> {
        // Callers validate ids to [A-Za-z0-9._:-], so the id needs no escaping in the path.
        let (status, bytes) = self
            .peer
            .get(&format!("/v1/aegis/verification/{verification_id}"))
            .await
            .map_err(|e| unavailable(&e.to_string()))?;
        if status.as_u16() == StatusCode::NOT_FOUND.as_u16() {
            return Ok(None);
        }
        if status.is_success() {
            return oa_service::parse_json(&bytes).map(Some).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "AEGIS_BAD_ANSWER",
                    "aegis answered with a body that is not its contract",
                )
            });
        }
        if status.is_server_error() {
            return Err(unavailable(&format!("status {status}")));
        }
        let envelope: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        tracing::warn!(%status, code = ?envelope["error"]["code"], "aegis refused Hydra's read");
        Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "AEGIS_REFUSED",
            "aegis refused to show the verification to hydra",
        ))
    }
}

/// A verification's verdict, as its receipt states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
        }
    }
}

/// Why an answer from Aegis does not support a settlement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the verification has no verdict yet")]
    Pending,
    #[error("{0}")]
    Mismatch(String),
    #[error("aegis's receipt is not valid: {0}")]
    BadReceipt(String),
}

/// Checks Aegis's answer for verification `id` against what the caller named (`hash`) and what
/// the envelope needs (`scope`, and `subject_ref` if the verification names one). Returns the
/// verified receipt and its verdict.
pub fn check(
    answer: &aegis::GetVerificationResponse,
    id: &str,
    hash: &Hash,
    scope: &str,
    subject_ref: &str,
    trusted_keys: &[String],
) -> Result<(Receipt, Verdict), Problem> {
    let Some(proto) = answer.receipt.as_ref() else {
        return Err(Problem::Pending);
    };
    let receipt = oa_service::receipts::from_proto(proto).map_err(Problem::BadReceipt)?;
    receipt
        .verify()
        .map_err(|e| Problem::BadReceipt(e.to_string()))?;
    if !trusted_keys.is_empty() && !trusted_keys.contains(&receipt.issuer.key_id) {
        return Err(Problem::BadReceipt("signed by an untrusted key".into()));
    }
    if receipt.schema != VERIFICATION_SCHEMA {
        return Err(Problem::BadReceipt(format!(
            "schema {} is not {VERIFICATION_SCHEMA}",
            receipt.schema
        )));
    }
    if receipt.hash != *hash {
        return Err(Problem::Mismatch(format!(
            "aegis's receipt for {id} has hash {}, not the one named",
            receipt.hash
        )));
    }
    let field = |k: &str| receipt.body.get(k).and_then(|v| v.as_str()).unwrap_or("");
    if field("verification_id") != id {
        return Err(Problem::Mismatch(
            "the receipt is about another verification".into(),
        ));
    }
    if field("scope") != scope {
        return Err(Problem::Mismatch(
            "the verification is of another scope than the envelope's".into(),
        ));
    }
    let subject = field("subject_ref");
    if !subject.is_empty() && subject != subject_ref {
        return Err(Problem::Mismatch(
            "the verification gates another subject".into(),
        ));
    }
    let verdict = match field("verdict") {
        "passed" => Verdict::Passed,
        "failed" => Verdict::Failed,
        _ => return Err(Problem::Pending),
    };
    Ok((receipt, verdict))
}

#[cfg(test)]
mod tests {
    use oa_receipts::{ReceiptDraft, ReceiptKey};

    use super::*;

    fn answer(
        key: &ReceiptKey,
        schema: &str,
        fields: &[(&str, &str)],
    ) -> (aegis::GetVerificationResponse, Hash) {
        let body = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        let r = ReceiptDraft {
            schema: schema.into(),
            receipt_id: "rcpt_v".into(),
            idempotency_key: "verify-v1".into(),
            links: vec![],
            body,
        }
        .seal(key, "aegis", 0, Hash::ZERO, 1_700_000_000_000)
        .unwrap();
        let hash = r.hash;
        (
            aegis::GetVerificationResponse {
                verification: None,
                receipt: Some(oa_service::receipts::to_proto(&r)),
            },
            hash,
        )
    }

    #[test]
    fn only_a_trusted_receipt_of_this_verification_scope_and_subject_counts() {
        let key = ReceiptKey::generate();
        let trusted = vec![key.key_id().to_owned()];
        let ok = [
            ("verification_id", "v1"),
            ("scope", "job"),
            ("verdict", "passed"),
        ];
        let (a, h) = answer(&key, VERIFICATION_SCHEMA, &ok);
        let (_, verdict) = check(&a, "v1", &h, "job", "hydra:envelope:e1", &trusted).unwrap();
        assert_eq!(verdict, Verdict::Passed);
        let (a, h) = answer(
            &key,
            VERIFICATION_SCHEMA,
            &[
                ("verification_id", "v1"),
                ("scope", "job"),
                ("verdict", "failed"),
            ],
        );
        assert_eq!(
            check(&a, "v1", &h, "job", "s", &trusted).unwrap().1,
            Verdict::Failed
        );

        let (a, h) = answer(&key, VERIFICATION_SCHEMA, &ok);
        let mismatch =
            |r: Result<(Receipt, Verdict), Problem>| matches!(r, Err(Problem::Mismatch(_)));
        assert!(mismatch(check(&a, "v2", &h, "job", "s", &trusted)));
        assert!(mismatch(check(&a, "v1", &h, "other job", "s", &trusted)));
        assert!(mismatch(check(&a, "v1", &Hash::ZERO, "job", "s", &trusted)));
        let subject = [
            ("verification_id", "v1"),
            ("scope", "job"),
            ("verdict", "passed"),
            ("subject_ref", "hydra:envelope:e2"),
        ];
        let (a2, h2) = answer(&key, VERIFICATION_SCHEMA, &subject);
        assert!(mismatch(check(
            &a2,
            "v1",
            &h2,
            "job",
            "hydra:envelope:e1",
            &trusted
        )));
        assert!(check(&a2, "v1", &h2, "job", "hydra:envelope:e2", &trusted).is_ok());

        let bad = |r: Result<(Receipt, Verdict), Problem>| matches!(r, Err(Problem::BadReceipt(_)));
        assert!(bad(check(&a, "v1", &h, "job", "s", &["00".repeat(32)])));
        let (a3, h3) = answer(&key, "oa.aegis.other_receipt.v1", &ok);
        assert!(bad(check(&a3, "v1", &h3, "job", "s", &trusted)));
        let (a4, h4) = answer(
            &key,
            VERIFICATION_SCHEMA,
            &[
                ("verification_id", "v1"),
                ("scope", "job"),
                ("verdict", "maybe"),
            ],
        );
        assert_eq!(
            check(&a4, "v1", &h4, "job", "s", &trusted).unwrap_err(),
            Problem::Pending
        );
        let pending = aegis::GetVerificationResponse::default();
        assert_eq!(
            check(&pending, "v1", &h, "job", "s", &trusted).unwrap_err(),
            Problem::Pending
        );
    }
}
