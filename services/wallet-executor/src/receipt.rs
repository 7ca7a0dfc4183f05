//! The receipt classes this service issues besides payments and policy changes, and the small
//! helpers every issuing module shares. Each class is specified in `docs/receipts.md`.

use oa_receipts::ReceiptDraft;
use serde::Serialize;

use crate::error::WalletError;

/// One per settled invoice of ours (`invoices.rs`).
pub const INVOICE_SETTLEMENT_SCHEMA: &str = "oa.wallet_executor.invoice_settlement_receipt.v1";
/// One per on-chain send (`onchain.rs`).
pub const ONCHAIN_SEND_SCHEMA: &str = "oa.wallet_executor.onchain_send_receipt.v1";
/// One per channel open or close (`actions.rs`).
pub const CHANNEL_ACTION_SCHEMA: &str = "oa.wallet_executor.channel_action_receipt.v1";
/// One per rebalance that ended (`actions.rs`).
pub const REBALANCE_SCHEMA: &str = "oa.wallet_executor.rebalance_receipt.v1";

/// A receipt draft of `schema` for the operation under `idempotency_key`.
pub fn draft<B: Serialize>(
    schema: &str,
    idempotency_key: &str,
    body: &B,
) -> Result<ReceiptDraft, WalletError> {
    Ok(ReceiptDraft {
        schema: schema.into(),
        receipt_id: format!("rcpt_{}", uuid::Uuid::now_v7().simple()),
        idempotency_key: idempotency_key.to_owned(),
        links: vec![],
        body: oa_receipts::body_from(body)?,
    })
}

/// A response as stored for idempotent replay.
pub fn to_json<T: Serialize>(response: &T) -> Result<String, WalletError> {
    serde_json::to_string(response)
        .map_err(|e| WalletError::Store(oa_store::StoreError::Corrupt(e.to_string())))
}

/// A stored response read back.
pub fn from_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, WalletError> {
    oa_service::parse_json(json.as_bytes())
        .map_err(|_| WalletError::Store(oa_store::StoreError::Corrupt("stored response".into())))
}

/// Serializes a signed integer as a decimal string (receipts hold no JSON numbers).
pub fn signed_string<S: serde::Serializer, T: std::fmt::Display>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}
