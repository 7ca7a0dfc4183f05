//! The sim's journal: one JSON line per change, replayed in order at start-up.
//!
//! Invoices, sends and policy changes are written before they run (the existing contract for
//! sends: on disk before the executor can act on the result). The later kinds (blocks, deposits,
//! addresses, on-chain sends, channel opens and closes, rebalances) are written after they ran
//! and before the call returns, under the sim's lock, so a change is either journaled or was
//! never reported to anyone; a change that was refused is not journaled at all. Replay runs each
//! entry through the same code as the live call, so it rebuilds the same state.

use std::time::Duration;

use oa_money::Msat;
use serde::{Deserialize, Serialize};

use super::{SimError, SimNetwork, index_of, set_policy};
use crate::node::{
    ChannelPolicy, OpenChannelRequest, RebalanceRequest, SendCoinsRequest, SendRequest,
};

/// One line of the journal.
#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Entry {
    Invoice {
        alias: String,
        amount_msat: Option<u64>,
        description: String,
        expiry_ms: u64,
        now_ms: u64,
    },
    Send {
        from: String,
        payment_hash: String,
        bolt11: String,
        amount_msat: u64,
        fee_limit_msat: u64,
        now_ms: u64,
    },
    Policy {
        chan_id: Option<u64>,
        base_fee_msat: u64,
        fee_ppm: u32,
        min_htlc_msat: u64,
        max_htlc_msat: u64,
        time_lock_delta: u32,
        #[serde(default)]
        inbound_base_fee_msat: i64,
        #[serde(default)]
        inbound_fee_ppm: i32,
    },
    Mine {
        blocks: u32,
    },
    Fund {
        amount_msat: u64,
    },
    NewAddress {},
    SendCoins {
        address: String,
        amount_msat: u64,
        sat_per_vbyte: u64,
        label: String,
    },
    OpenChannel {
        remote_pubkey: String,
        local_funding_msat: u64,
        push_msat: u64,
        private: bool,
    },
    CloseChannel {
        chan_id: u64,
        force: bool,
    },
    Rebalance {
        out_chan_id: u64,
        in_chan_id: u64,
        amount_msat: u64,
        fee_limit_msat: u64,
        now_ms: u64,
    },
}

pub(super) fn send_entry(from: &str, req: &SendRequest, now_ms: u64) -> Entry {
    Entry::Send {
        from: from.to_owned(),
        payment_hash: req.payment_hash.to_string(),
        bolt11: req.bolt11.clone(),
        amount_msat: req.amount.as_u64(),
        fee_limit_msat: req.fee_limit.as_u64(),
        now_ms,
    }
}

pub(super) fn policy_entry(chan_id: Option<u64>, policy: &ChannelPolicy) -> Entry {
    Entry::Policy {
        chan_id,
        base_fee_msat: policy.base_fee.as_u64(),
        fee_ppm: policy.fee_ppm,
        min_htlc_msat: policy.min_htlc.as_u64(),
        max_htlc_msat: policy.max_htlc.as_u64(),
        time_lock_delta: policy.time_lock_delta,
        inbound_base_fee_msat: policy.inbound_base_fee_msat,
        inbound_fee_ppm: policy.inbound_fee_ppm,
    }
}

fn msat(v: u64) -> Result<Msat, SimError> {
    Msat::new(v).map_err(|e| SimError::Journal(e.to_string()))
}

fn replayed<T>(what: &str, r: Result<T, crate::node::NodeError>) -> Result<T, SimError> {
    r.map_err(|e| SimError::Journal(format!("replaying {what}: {e}")))
}

impl SimNetwork {
    pub(super) fn replay(&self, entry: Entry) -> Result<(), SimError> {
        match entry {
            Entry::Invoice {
                alias,
                amount_msat,
                description,
                expiry_ms,
                now_ms,
            } => {
                let amount = amount_msat.map(msat).transpose()?;
                let mut s = self.lock();
                self.create_invoice_at(
                    &mut s,
                    &alias,
                    amount,
                    &description,
                    Duration::from_millis(expiry_ms),
                    now_ms,
                )?;
            }
            Entry::Send {
                from,
                payment_hash,
                bolt11,
                amount_msat,
                fee_limit_msat,
                now_ms,
            } => {
                let req = SendRequest {
                    bolt11,
                    payment_hash: payment_hash
                        .parse()
                        .map_err(|_| SimError::Journal("payment hash".into()))?,
                    amount: msat(amount_msat)?,
                    fee_limit: msat(fee_limit_msat)?,
                    timeout: Duration::ZERO,
                };
                let mut s = self.lock();
                let src = index_of(&s, &from)?;
                self.send_at(&mut s, src, &req, now_ms);
            }
            Entry::Policy {
                chan_id,
                base_fee_msat,
                fee_ppm,
                min_htlc_msat,
                max_htlc_msat,
                time_lock_delta,
                inbound_base_fee_msat,
                inbound_fee_ppm,
            } => {
                let policy = ChannelPolicy {
                    base_fee: msat(base_fee_msat)?,
                    fee_ppm,
                    min_htlc: msat(min_htlc_msat)?,
                    max_htlc: msat(max_htlc_msat)?,
                    time_lock_delta,
                    inbound_base_fee_msat,
                    inbound_fee_ppm,
                };
                let mut s = self.lock();
                // A journaled change was valid when made; replaying it cannot fail.
                let _ = set_policy(&mut s, chan_id, &policy);
            }
            Entry::Mine { blocks } => {
                let mut s = self.lock();
                Self::mine_at(&mut s, blocks);
            }
            Entry::Fund { amount_msat } => {
                let mut s = self.lock();
                Self::fund_at(&mut s, msat(amount_msat)?)?;
            }
            Entry::NewAddress {} => {
                self.lock().chain.new_address();
            }
            Entry::SendCoins {
                address,
                amount_msat,
                sat_per_vbyte,
                label,
            } => {
                let req = SendCoinsRequest {
                    address,
                    amount: msat(amount_msat)?,
                    sat_per_vbyte,
                    label,
                };
                let mut s = self.lock();
                replayed("send_coins", Self::send_coins_at(&mut s, &req))?;
            }
            Entry::OpenChannel {
                remote_pubkey,
                local_funding_msat,
                push_msat,
                private,
            } => {
                let req = OpenChannelRequest {
                    remote_pubkey,
                    local_funding: msat(local_funding_msat)?,
                    push: msat(push_msat)?,
                    private,
                };
                let mut s = self.lock();
                replayed("open_channel", super::channels::open(&mut s, &req))?;
            }
            Entry::CloseChannel { chan_id, force } => {
                let mut s = self.lock();
                replayed(
                    "close_channel",
                    super::channels::close(&mut s, chan_id, force),
                )?;
            }
            Entry::Rebalance {
                out_chan_id,
                in_chan_id,
                amount_msat,
                fee_limit_msat,
                now_ms,
            } => {
                let req = RebalanceRequest {
                    out_chan_id,
                    in_chan_id,
                    amount: msat(amount_msat)?,
                    fee_limit: msat(fee_limit_msat)?,
                    timeout: Duration::ZERO,
                };
                let mut s = self.lock();
                replayed("rebalance", self.rebalance_at(&mut s, &req, now_ms))?;
                self.publish(&s);
            }
        }
        Ok(())
    }
}
