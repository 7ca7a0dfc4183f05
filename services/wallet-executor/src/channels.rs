//! Channel custody for lightning-ops: list channels (open and closed), change our forwarding
//! policy (with a signed receipt per change), read the forwarding history and the fee report.
//! Opening, closing and rebalancing channels are in `actions.rs`.
//!
//! A policy change is idempotent by key: the key is claimed, the node is changed, the receipt is
//! appended and the response stored in one transaction. If that transaction fails after the node
//! changed, a retry sets the same policy again, which is harmless.

use std::sync::Arc;

use oa_money::Msat;
use oa_proto::wallet;
use oa_service::Clock;
use oa_store::{
    Db,
    idempotency::{self, Claim},
    receipt_log::ReceiptLog,
};
use serde::Serialize;

use crate::{
    error::WalletError,
    node::{
        ChannelInfo, ChannelPolicy, ClosedChannel, ForwardingEvent, LightningNode, MAX_ROUTE_CLTV,
        MIN_CLTV_DELTA,
    },
};

pub const POLICY_RECEIPT_SCHEMA: &str = "oa.wallet_executor.channel_policy_receipt.v1";
/// Forwarding-history page when the caller asks for none.
pub const DEFAULT_FORWARDS_PAGE: u32 = 100;
/// Largest forwarding-history page: bounds the response (about 80 bytes an event).
pub const MAX_FORWARDS_PAGE: u32 = 1_000;
/// Highest fee rate accepted: 100% of the amount; anything above is surely a typo.
pub const MAX_FEE_RATE_PPM: u32 = 1_000_000;

pub struct Channels {
    pub db: Db,
    pub node: Arc<dyn LightningNode>,
    pub log: ReceiptLog,
    pub clock: Arc<dyn Clock>,
}

#[derive(Serialize)]
struct PolicyReceiptBody<'a> {
    /// A channel id (decimal) or "all".
    chan_id: String,
    base_fee_msat: Msat,
    #[serde(with = "oa_receipts::u64_string")]
    fee_rate_ppm: u64,
    min_htlc_msat: Msat,
    max_htlc_msat: Msat,
    #[serde(with = "oa_receipts::u64_string")]
    time_lock_delta: u64,
    /// Signed: a negative inbound fee is a discount.
    #[serde(serialize_with = "crate::receipt::signed_string")]
    inbound_base_fee_msat: i64,
    #[serde(serialize_with = "crate::receipt::signed_string")]
    inbound_fee_rate_ppm: i32,
    #[serde(with = "oa_receipts::u64_string")]
    updated_channels: u64,
    requested_by: &'a str,
    backend: &'a str,
}

fn invalid(m: impl Into<String>) -> WalletError {
    WalletError::InvalidRequest(m.into())
}

/// Checks a requested policy; every bad field is a typed 400.
pub fn validate_policy(p: Option<&wallet::ChannelPolicy>) -> Result<ChannelPolicy, WalletError> {
    let p = p.ok_or_else(|| invalid("policy is required"))?;
    let msat = |v: u64, name: &str| Msat::new(v).map_err(|e| invalid(format!("{name}: {e}")));
    let policy = ChannelPolicy {
        base_fee: msat(p.base_fee_msat, "base_fee_msat")?,
        fee_ppm: p.fee_rate_ppm,
        min_htlc: msat(p.min_htlc_msat, "min_htlc_msat")?,
        max_htlc: msat(p.max_htlc_msat, "max_htlc_msat")?,
        time_lock_delta: p.time_lock_delta,
        inbound_base_fee_msat: p.inbound_base_fee_msat,
        inbound_fee_ppm: p.inbound_fee_ppm,
    };
    if policy.fee_ppm > MAX_FEE_RATE_PPM {
        return Err(invalid(format!(
            "fee_rate_ppm must be at most {MAX_FEE_RATE_PPM}"
        )));
    }
    if policy.max_htlc.is_zero() || policy.min_htlc > policy.max_htlc {
        return Err(invalid(
            "max_htlc_msat must be positive and at least min_htlc_msat",
        ));
    }
    if policy.inbound_fee_ppm.unsigned_abs() > MAX_FEE_RATE_PPM {
        return Err(invalid(format!(
            "inbound_fee_ppm must be between -{MAX_FEE_RATE_PPM} and {MAX_FEE_RATE_PPM}"
        )));
    }
    if policy.inbound_base_fee_msat.unsigned_abs() > Msat::MAX.as_u64() {
        return Err(invalid(
            "inbound_base_fee_msat is beyond the bitcoin supply",
        ));
    }
    if !(MIN_CLTV_DELTA..=MAX_ROUTE_CLTV).contains(&policy.time_lock_delta) {
        return Err(invalid(format!(
            "time_lock_delta must be between {MIN_CLTV_DELTA} and {MAX_ROUTE_CLTV} blocks"
        )));
    }
    Ok(policy)
}

fn policy_to_proto(p: &ChannelPolicy) -> wallet::ChannelPolicy {
    wallet::ChannelPolicy {
        base_fee_msat: p.base_fee.as_u64(),
        fee_rate_ppm: p.fee_ppm,
        min_htlc_msat: p.min_htlc.as_u64(),
        max_htlc_msat: p.max_htlc.as_u64(),
        time_lock_delta: p.time_lock_delta,
        inbound_base_fee_msat: p.inbound_base_fee_msat,
        inbound_fee_ppm: p.inbound_fee_ppm,
    }
}

fn channel_to_proto(c: &ChannelInfo) -> wallet::Channel {
    wallet::Channel {
        chan_id: c.chan_id,
        remote_pubkey: c.remote_pubkey.clone(),
        capacity_msat: c.capacity.as_u64(),
        local_balance_msat: c.local_balance.as_u64(),
        remote_balance_msat: c.remote_balance.as_u64(),
        active: c.active,
        local_policy: Some(policy_to_proto(&c.local_policy)),
        remote_policy: Some(policy_to_proto(&c.remote_policy)),
    }
}

fn forward_to_proto(e: &ForwardingEvent) -> wallet::ForwardingEvent {
    wallet::ForwardingEvent {
        index: e.index,
        timestamp_ms: e.timestamp_ms,
        chan_id_in: e.chan_id_in,
        chan_id_out: e.chan_id_out,
        amt_in_msat: e.amt_in.as_u64(),
        amt_out_msat: e.amt_out.as_u64(),
        fee_msat: e.fee.as_u64(),
    }
}

fn closed_to_proto(c: &ClosedChannel) -> wallet::ClosedChannel {
    wallet::ClosedChannel {
        chan_id: c.chan_id,
        remote_pubkey: c.remote_pubkey.clone(),
        capacity_msat: c.capacity.as_u64(),
        settled_balance_msat: c.settled_balance.as_u64(),
        close_type: c.close_type.as_str().to_owned(),
        closing_txid: c.closing_txid.clone(),
        close_height: c.close_height,
    }
}

impl Channels {
    pub async fn list_closed(&self) -> Result<wallet::ListClosedChannelsResponse, WalletError> {
        let closed = self.node.closed_channels().await?;
        Ok(wallet::ListClosedChannelsResponse {
            channels: closed.iter().map(closed_to_proto).collect(),
        })
    }

    pub async fn fee_report(&self) -> Result<wallet::FeeReportResponse, WalletError> {
        let r = self.node.fee_report().await?;
        Ok(wallet::FeeReportResponse {
            channels: r
                .channels
                .iter()
                .map(|(chan_id, p)| wallet::ChannelFeeReport {
                    chan_id: *chan_id,
                    policy: Some(policy_to_proto(p)),
                })
                .collect(),
            day_fee_sum_msat: r.day_fee_sum.as_u64(),
            week_fee_sum_msat: r.week_fee_sum.as_u64(),
            month_fee_sum_msat: r.month_fee_sum.as_u64(),
        })
    }

    pub async fn list(&self) -> Result<wallet::ListChannelsResponse, WalletError> {
        let channels = self.node.list_channels().await?;
        Ok(wallet::ListChannelsResponse {
            channels: channels.iter().map(channel_to_proto).collect(),
        })
    }

    pub async fn forwarding_history(
        &self,
        req: &wallet::ForwardingHistoryRequest,
    ) -> Result<wallet::ForwardingHistoryResponse, WalletError> {
        let max = match req.max_events {
            0 => DEFAULT_FORWARDS_PAGE,
            n if n > MAX_FORWARDS_PAGE => {
                return Err(invalid(format!(
                    "max_events must be at most {MAX_FORWARDS_PAGE}"
                )));
            }
            n => n,
        };
        let page = self.node.forwarding_history(req.index_offset, max).await?;
        Ok(wallet::ForwardingHistoryResponse {
            events: page.events.iter().map(forward_to_proto).collect(),
            last_offset_index: page.last_offset_index,
        })
    }

    /// Changes our policy once per idempotency key, with a receipt.
    pub async fn update_policy(
        &self,
        caller: &str,
        req: wallet::UpdateChannelPolicyRequest,
    ) -> Result<wallet::UpdateChannelPolicyResponse, WalletError> {
        idempotency::validate_key(&req.idempotency_key)?;
        let policy = validate_policy(req.policy.as_ref())?;
        let chan_id = (req.chan_id != 0).then_some(req.chan_id);
        let now = self.clock.now_ms();
        let scope = format!("wallet.channel_policy/{caller}");
        let fingerprint = idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        match idempotency::claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await? {
            Claim::Conflict => return Err(WalletError::IdempotencyConflict),
            Claim::Replay { response, .. } => {
                tx.rollback().await?;
                return oa_service::parse_json(response.as_bytes()).map_err(|_| {
                    WalletError::Store(oa_store::StoreError::Corrupt("stored response".into()))
                });
            }
            Claim::InProgress { .. } => return Err(WalletError::IdempotencyInProgress),
            Claim::New => {}
        }
        let updated = self.node.update_channel_policy(chan_id, &policy).await?;
        let body = PolicyReceiptBody {
            chan_id: chan_id.map_or_else(|| "all".to_owned(), |id| id.to_string()),
            base_fee_msat: policy.base_fee,
            fee_rate_ppm: u64::from(policy.fee_ppm),
            min_htlc_msat: policy.min_htlc,
            max_htlc_msat: policy.max_htlc,
            time_lock_delta: u64::from(policy.time_lock_delta),
            inbound_base_fee_msat: policy.inbound_base_fee_msat,
            inbound_fee_rate_ppm: policy.inbound_fee_ppm,
            updated_channels: u64::from(updated),
            requested_by: caller,
            backend: self.node.backend(),
        };
        let draft = oa_receipts::ReceiptDraft {
            schema: POLICY_RECEIPT_SCHEMA.into(),
            receipt_id: format!("rcpt_{}", uuid::Uuid::now_v7().simple()),
            idempotency_key: req.idempotency_key.clone(),
            links: vec![],
            body: oa_receipts::body_from(&body)?,
        };
        let receipt = self.log.append(&mut tx, draft, now).await?;
        let response = wallet::UpdateChannelPolicyResponse {
            updated_channels: updated,
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
        };
        let json = serde_json::to_string(&response)
            .map_err(|e| WalletError::Store(oa_store::StoreError::Corrupt(e.to_string())))?;
        idempotency::complete(&mut tx, &scope, &req.idempotency_key, 200, &json, now).await?;
        tx.commit().await?;
        Ok(response)
    }
}
