//! LND's messages to ours and back. Money is integer msat with checked arithmetic: LND's
//! satoshi fields are multiplied by 1000 with overflow checks, and our amounts go to LND's
//! satoshi fields only when they are whole satoshis.

use oa_invoice::{PaymentHash, Preimage};
use oa_money::{MSAT_PER_SAT, Msat};
use oa_proto::lnrpc::{
    self, InvoiceState, PaymentFailureReason, RoutingPolicy, channel_close_summary::ClosureType,
    channel_point::FundingTxid, payment::PaymentStatus,
};

use crate::node::{
    ChannelPolicy, CloseType, ClosedChannel, FailureCode, InvoiceStatus, NodeError, NodeInvoice,
    PayState,
};

/// LND's default invoice expiry (24 hours).
const DEFAULT_INVOICE_EXPIRY_SECS: i64 = 86_400;

/// Our value into one of LND's int64 fields (a request we build): out of range is our caller's
/// mistake.
pub(super) fn req_i64(v: u64, what: &str) -> Result<i64, NodeError> {
    i64::try_from(v).map_err(|_| NodeError::Refused(format!("{what} {v} is out of range")))
}

/// An amount into one of LND's satoshi fields: it must be whole satoshis.
pub(super) fn whole_sat(amount: Msat, what: &str) -> Result<i64, NodeError> {
    let v = amount.as_u64();
    if !v.is_multiple_of(MSAT_PER_SAT) {
        return Err(NodeError::Refused(format!(
            "{what} must be whole satoshis (a multiple of 1000 msat), got {v} msat"
        )));
    }
    req_i64(v / MSAT_PER_SAT, what)
}

/// An amount into a satoshi field, rounded up (an estimate for slightly more is safe).
pub(super) fn sat_ceil(amount: Msat) -> Result<i64, NodeError> {
    let v = amount.as_u64();
    let sat = v / MSAT_PER_SAT + u64::from(!v.is_multiple_of(MSAT_PER_SAT));
    req_i64(sat, "amount")
}

pub(super) fn msat(v: u64) -> Result<Msat, NodeError> {
    Msat::new(v).map_err(|_| NodeError::Unavailable(format!("LND reported {v} msat, out of range")))
}

pub(super) fn msat_i64(v: i64) -> Result<Msat, NodeError> {
    msat(u64::try_from(v).map_err(|_| NodeError::Unavailable(format!("LND reported {v}")))?)
}

/// LND's satoshis (int64) as msat.
pub(super) fn sat(v: i64) -> Result<Msat, NodeError> {
    msat_i64(
        v.checked_mul(1000)
            .ok_or_else(|| NodeError::Unavailable(format!("LND reported {v} sat")))?,
    )
}

/// LND's satoshis (uint64) as msat.
pub(super) fn sat_u64(v: u64) -> Result<Msat, NodeError> {
    msat(
        v.checked_mul(MSAT_PER_SAT)
            .ok_or_else(|| NodeError::Unavailable(format!("LND reported {v} sat")))?,
    )
}

/// Seconds from LND as milliseconds (0 stays 0).
pub(super) fn secs_to_ms(v: i64) -> Result<u64, NodeError> {
    u64::try_from(v)
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .ok_or_else(|| NodeError::Unavailable(format!("LND reported a time of {v} s")))
}

/// A transaction id as LND's bytes fields carry it (Bitcoin's internal byte order) in its usual
/// hex form (reversed).
pub(super) fn txid_hex(bytes: &[u8]) -> Result<String, NodeError> {
    if bytes.len() != 32 {
        return Err(NodeError::Unavailable(format!(
            "LND reported a txid of {} bytes",
            bytes.len()
        )));
    }
    let mut b = bytes.to_vec();
    b.reverse();
    Ok(hex::encode(b))
}

/// A funding outpoint `txid:index` as LND's `ChannelPoint` message.
pub(super) fn chan_point(cp: &str) -> Option<lnrpc::ChannelPoint> {
    let (txid, index) = cp.rsplit_once(':')?;
    Some(lnrpc::ChannelPoint {
        funding_txid: Some(FundingTxid::FundingTxidStr(txid.to_owned())),
        output_index: index.parse().ok()?,
    })
}

/// LND's `ChannelPoint` as ours.
pub(super) fn channel_point(
    cp: &lnrpc::ChannelPoint,
) -> Result<crate::node::ChannelPoint, NodeError> {
    let funding_txid = match &cp.funding_txid {
        Some(FundingTxid::FundingTxidStr(s)) => s.clone(),
        Some(FundingTxid::FundingTxidBytes(b)) => txid_hex(b)?,
        None => {
            return Err(NodeError::Unavailable(
                "LND reported a channel point without a txid".into(),
            ));
        }
    };
    Ok(crate::node::ChannelPoint {
        funding_txid,
        output_index: cp.output_index,
    })
}

/// A hex public key (33 bytes compressed) as LND's bytes.
pub(super) fn pubkey_bytes(hex_key: &str) -> Result<Vec<u8>, NodeError> {
    let bytes = hex::decode(hex_key)
        .ok()
        .filter(|b| b.len() == 33 && matches!(b[0], 2 | 3))
        .ok_or_else(|| NodeError::Refused(format!("{hex_key:?} is not a node public key")))?;
    Ok(bytes)
}

/// Maps LND's view of a payment to ours.
pub(super) fn payment_state(hash: &PaymentHash, p: &lnrpc::Payment) -> Result<PayState, NodeError> {
    match PaymentStatus::try_from(p.status).unwrap_or(PaymentStatus::Unknown) {
        PaymentStatus::Succeeded => {
            let preimage: Preimage = p
                .payment_preimage
                .parse()
                .map_err(|_| NodeError::Unavailable("LND reported a malformed preimage".into()))?;
            if !preimage.matches(hash) {
                return Err(NodeError::Unavailable(
                    "LND reported a preimage that does not match the payment hash".into(),
                ));
            }
            Ok(PayState::Succeeded {
                preimage,
                fee: msat_i64(p.fee_msat)?,
            })
        }
        PaymentStatus::Failed => {
            let reason = PaymentFailureReason::try_from(p.failure_reason)
                .unwrap_or(PaymentFailureReason::FailureReasonError);
            Ok(PayState::Failed {
                code: failure_code(reason),
                reason: format!("lnd: {}", reason.as_str_name()),
            })
        }
        PaymentStatus::InFlight | PaymentStatus::Initiated | PaymentStatus::Unknown => {
            Ok(PayState::InFlight)
        }
    }
}

pub(super) fn failure_code(reason: PaymentFailureReason) -> FailureCode {
    match reason {
        PaymentFailureReason::FailureReasonTimeout => FailureCode::Timeout,
        PaymentFailureReason::FailureReasonNoRoute => FailureCode::NoRoute,
        PaymentFailureReason::FailureReasonIncorrectPaymentDetails => {
            FailureCode::IncorrectPaymentDetails
        }
        PaymentFailureReason::FailureReasonInsufficientBalance => FailureCode::InsufficientBalance,
        PaymentFailureReason::FailureReasonNone
        | PaymentFailureReason::FailureReasonError
        | PaymentFailureReason::FailureReasonCanceled => FailureCode::Error,
    }
}

/// One direction's routing policy, inbound fees included.
pub(super) fn policy(p: Option<&RoutingPolicy>) -> Result<ChannelPolicy, NodeError> {
    let d = RoutingPolicy::default();
    let p = p.unwrap_or(&d);
    Ok(ChannelPolicy {
        base_fee: msat_i64(p.fee_base_msat)?,
        fee_ppm: u32::try_from(p.fee_rate_milli_msat)
            .map_err(|_| NodeError::Unavailable("LND reported a fee rate out of range".into()))?,
        min_htlc: msat_i64(p.min_htlc)?,
        max_htlc: msat(p.max_htlc_msat)?,
        time_lock_delta: p.time_lock_delta,
        inbound_base_fee_msat: i64::from(p.inbound_fee_base_msat),
        inbound_fee_ppm: p.inbound_fee_rate_milli_msat,
    })
}

/// LND's invoice as ours; `now_ms` decides whether an open invoice has expired.
pub(super) fn invoice(inv: &lnrpc::Invoice, now_ms: u64) -> Result<NodeInvoice, NodeError> {
    let hash: [u8; 32] = inv.r_hash.as_slice().try_into().map_err(|_| {
        NodeError::Unavailable("LND reported an invoice hash not of 32 bytes".into())
    })?;
    let amount = if inv.value_msat != 0 {
        msat_i64(inv.value_msat)?
    } else {
        sat(inv.value)?
    };
    let created_at_ms = secs_to_ms(inv.creation_date)?;
    // LND stores its default expiry when none was asked for; 0 would mean the same.
    let expiry_secs = if inv.expiry == 0 {
        DEFAULT_INVOICE_EXPIRY_SECS
    } else {
        inv.expiry
    };
    let expires_at_ms = secs_to_ms(expiry_secs)?
        .checked_add(created_at_ms)
        .ok_or_else(|| NodeError::Unavailable("LND reported an expiry out of range".into()))?;
    let status = match InvoiceState::try_from(inv.state) {
        Ok(InvoiceState::Settled) => InvoiceStatus::Settled,
        Ok(InvoiceState::Canceled) => InvoiceStatus::Cancelled,
        // An accepted (held) HTLC keeps the invoice open, whatever its expiry.
        Ok(InvoiceState::Accepted) => InvoiceStatus::Open,
        Ok(InvoiceState::Open) if now_ms >= expires_at_ms => InvoiceStatus::Expired,
        Ok(InvoiceState::Open) => InvoiceStatus::Open,
        Err(_) => {
            return Err(NodeError::Unavailable(format!(
                "LND reported an unknown invoice state {}",
                inv.state
            )));
        }
    };
    let settled = status == InvoiceStatus::Settled;
    Ok(NodeInvoice {
        bolt11: inv.payment_request.clone(),
        payment_hash: PaymentHash(hash),
        amount,
        amount_paid: msat_i64(inv.amt_paid_msat)?,
        status,
        add_index: inv.add_index,
        settle_index: if settled { inv.settle_index } else { 0 },
        created_at_ms,
        settled_at_ms: if settled {
            secs_to_ms(inv.settle_date)?
        } else {
            0
        },
    })
}

pub(super) fn closed_channel(c: &lnrpc::ChannelCloseSummary) -> Result<ClosedChannel, NodeError> {
    let close_type = match ClosureType::try_from(c.close_type) {
        Ok(ClosureType::CooperativeClose) => CloseType::Cooperative,
        Ok(ClosureType::LocalForceClose) => CloseType::LocalForce,
        Ok(ClosureType::RemoteForceClose) => CloseType::RemoteForce,
        Ok(ClosureType::BreachClose) => CloseType::Breach,
        Ok(ClosureType::FundingCanceled) => CloseType::FundingCanceled,
        Ok(ClosureType::Abandoned) => CloseType::Abandoned,
        Err(_) => {
            return Err(NodeError::Unavailable(format!(
                "LND reported an unknown close type {}",
                c.close_type
            )));
        }
    };
    Ok(ClosedChannel {
        chan_id: c.chan_id,
        remote_pubkey: c.remote_pubkey.clone(),
        capacity: sat(c.capacity)?,
        settled_balance: sat(c.settled_balance)?,
        close_type,
        closing_txid: c.closing_tx_hash.clone(),
        close_height: c.close_height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txids_in_bytes_are_reversed_into_hex() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[31] = 0x01;
        let hex = txid_hex(&bytes).unwrap_or_default();
        assert!(hex.starts_with("01"), "{hex}");
        assert!(hex.ends_with("ab"), "{hex}");
        assert!(txid_hex(&[0u8; 31]).is_err());
    }

    #[test]
    fn satoshi_fields_need_whole_satoshis_and_overflow_is_an_error() {
        let ok = Msat::new(21_000).unwrap_or(Msat::ZERO);
        assert_eq!(whole_sat(ok, "amount").ok(), Some(21));
        let odd = Msat::new(21_001).unwrap_or(Msat::ZERO);
        assert!(matches!(
            whole_sat(odd, "amount"),
            Err(NodeError::Refused(_))
        ));
        assert_eq!(sat_ceil(odd).ok(), Some(22));
        assert!(sat(i64::MAX).is_err());
        assert!(sat_u64(u64::MAX).is_err());
        assert!(sat(-1).is_err());
    }
}
