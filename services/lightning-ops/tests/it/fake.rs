//! A scripted custody channel: channels, a forwarding log and policy changes the test controls,
//! with every call recorded and failures on demand.

use std::sync::{Arc, Mutex};

use lightning_ops::{
    apply::EXECUTOR_POLICY_SCHEMA,
    executor::{
        Channels, ClosedChannel, Closing, Forward, ForwardPage, Opened, RebalanceAsk,
        RebalanceState, Rebalanced,
    },
    lifecycle::EXECUTOR_CHANNEL_ACTION_SCHEMA,
    plan::{Fees, Observed},
    rebalance::EXECUTOR_REBALANCE_SCHEMA,
};
use oa_receipts::{Hash, Receipt, ReceiptDraft, ReceiptKey};
use oa_service::ApiError;

/// How the next policy changes are answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Change the channel, answer a genuine receipt.
    Apply,
    /// Change the channel, then fail as if the connection dropped (the caller cannot know).
    ApplyThenUnavailable,
    /// Refuse for good (a 400 from the executor).
    Refuse,
    /// Answer a receipt about another channel.
    WrongReceipt,
}

#[derive(Default)]
pub struct State {
    pub channels: Vec<Observed>,
    pub forwards: Vec<Forward>,
    /// Every policy call: (idempotency key, chan_id, fees).
    pub calls: Vec<(String, u64, Fees)>,
    /// Keys the "executor" has acted on, with its answer (replayed for the same key).
    pub done: Vec<(String, Receipt)>,
    pub answer: Option<Answer>,
    /// Make the next forwarding page skip an index.
    pub gap: bool,
    pub list_calls: u32,
    pub closed: Vec<ClosedChannel>,
    /// Opens, closes and rebalances asked: (kind, idempotency key).
    pub channel_calls: Vec<(String, String)>,
    /// Opens and rebalances answer `IDEMPOTENCY_IN_PROGRESS` (the executor's outcome is in
    /// doubt) while this is set.
    pub in_doubt: bool,
    /// The routing fee a rebalance pays.
    pub rebalance_fee_msat: u64,
    /// Rebalances answer "in flight" (no receipt yet) while this is set.
    pub in_flight: bool,
}

pub struct Fake {
    pub state: Mutex<State>,
    key: ReceiptKey,
}

impl Fake {
    pub fn new(channels: Vec<Observed>) -> Arc<Fake> {
        Arc::new(Fake {
            state: Mutex::new(State {
                channels,
                ..State::default()
            }),
            key: ReceiptKey::generate(),
        })
    }

    pub fn dyn_channels(self: &Arc<Self>) -> Arc<dyn Channels> {
        self.clone()
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn set_answer(&self, a: Answer) {
        self.with(|s| s.answer = Some(a));
    }

    fn seal(&self, schema: &str, key: &str, body: serde_json::Value) -> Receipt {
        ReceiptDraft {
            schema: schema.into(),
            receipt_id: format!("rcpt_fake_{key}"),
            idempotency_key: key.into(),
            links: vec![],
            body: body.as_object().unwrap().clone(),
        }
        .seal(&self.key, "wallet-executor", 0, Hash::ZERO, 1)
        .unwrap()
    }

    fn receipt(&self, key: &str, chan_id: u64, fees: &Fees) -> Receipt {
        let body = serde_json::json!({
            "chan_id": chan_id.to_string(),
            "base_fee_msat": fees.base_fee_msat.to_string(),
            "fee_rate_ppm": fees.fee_rate_ppm.to_string(),
            "min_htlc_msat": fees.min_htlc_msat.to_string(),
            "max_htlc_msat": fees.max_htlc_msat.to_string(),
            "time_lock_delta": fees.time_lock_delta.to_string(),
            "inbound_base_fee_msat": fees.inbound_base_fee_msat.to_string(),
            "inbound_fee_rate_ppm": fees.inbound_fee_ppm.to_string(),
            "updated_channels": "1",
            "requested_by": "lightning-ops",
            "backend": "fake",
        });
        self.seal(EXECUTOR_POLICY_SCHEMA, key, body)
    }

    /// The executor's answer for a key it handled before, or for a first attempt in doubt.
    fn channel_call(&self, kind: &str, key: &str) -> Result<(), ApiError> {
        let in_doubt = self.with(|s| {
            s.channel_calls.push((kind.to_owned(), key.to_owned()));
            s.in_doubt
        });
        if in_doubt {
            return Err(ApiError::conflict(
                "IDEMPOTENCY_IN_PROGRESS",
                "this idempotency key's first request is still being processed",
            ));
        }
        Ok(())
    }
}

pub fn scid(block: u64, tx: u64, out: u64) -> u64 {
    block << 40 | tx << 16 | out
}

#[async_trait::async_trait]
impl Channels for Fake {
    async fn list(&self) -> Result<Vec<Observed>, ApiError> {
        self.with(|s| {
            s.list_calls += 1;
            Ok(s.channels.clone())
        })
    }

    async fn update_policy(
        &self,
        idempotency_key: &str,
        chan_id: u64,
        fees: &Fees,
    ) -> Result<Receipt, ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push((idempotency_key.to_owned(), chan_id, *fees));
        if let Some((_, r)) = s.done.iter().find(|(k, _)| k == idempotency_key) {
            return Ok(r.clone());
        }
        let answer = s.answer.clone().unwrap_or(Answer::Apply);
        if answer == Answer::Refuse {
            return Err(ApiError::bad_request(
                "INVALID_REQUEST",
                "refused by the fake",
            ));
        }
        let c = s
            .channels
            .iter_mut()
            .find(|c| c.chan_id == chan_id)
            .ok_or_else(|| ApiError::not_found("channel"))?;
        c.local_policy = *fees;
        let receipt = if answer == Answer::WrongReceipt {
            self.receipt(idempotency_key, chan_id + 1, fees)
        } else {
            self.receipt(idempotency_key, chan_id, fees)
        };
        s.done.push((idempotency_key.to_owned(), receipt.clone()));
        if answer == Answer::ApplyThenUnavailable {
            s.answer = Some(Answer::Apply);
            return Err(ApiError::unavailable(
                "EXECUTOR_UNAVAILABLE",
                "connection reset",
            ));
        }
        Ok(receipt)
    }

    async fn forwarding_history(
        &self,
        index_offset: u64,
        max_events: u32,
    ) -> Result<ForwardPage, ApiError> {
        let mut s = self.state.lock().unwrap();
        let start = usize::try_from(index_offset).unwrap().min(s.forwards.len());
        let mut events: Vec<Forward> = s.forwards[start..]
            .iter()
            .take(max_events as usize)
            .cloned()
            .collect();
        if s.gap && events.len() > 1 {
            events.remove(0);
            s.gap = false;
        }
        let last_offset_index = events.last().map_or(index_offset, |e| e.index + 1);
        Ok(ForwardPage {
            events,
            last_offset_index,
        })
    }

    async fn list_closed(&self) -> Result<Vec<ClosedChannel>, ApiError> {
        Ok(self.with(|s| s.closed.clone()))
    }

    async fn open_channel(
        &self,
        idempotency_key: &str,
        remote_pubkey: &str,
        local_funding_msat: u64,
    ) -> Result<Opened, ApiError> {
        self.channel_call("open", idempotency_key)?;
        let funding_txid = "ab".repeat(32);
        let receipt = self.seal(
            EXECUTOR_CHANNEL_ACTION_SCHEMA,
            idempotency_key,
            serde_json::json!({
                "action": "open",
                "remote_pubkey": remote_pubkey,
                "capacity_msat": local_funding_msat.to_string(),
                "local_funding_msat": local_funding_msat.to_string(),
                "push_msat": "0",
                "private": false,
                "funding_txid": funding_txid,
                "funding_output_index": "0",
                "requested_by": "lightning-ops",
                "backend": "fake",
            }),
        );
        Ok(Opened {
            funding_txid,
            output_index: 0,
            receipt,
        })
    }

    async fn close_channel(
        &self,
        idempotency_key: &str,
        chan_id: u64,
        force: bool,
    ) -> Result<Closing, ApiError> {
        self.channel_call("close", idempotency_key)?;
        let closing_txid = "cd".repeat(32);
        let receipt = self.seal(
            EXECUTOR_CHANNEL_ACTION_SCHEMA,
            idempotency_key,
            serde_json::json!({
                "action": "close",
                "chan_id": chan_id.to_string(),
                "force": force,
                "closing_txid": closing_txid,
                "requested_by": "lightning-ops",
                "backend": "fake",
            }),
        );
        self.with(|s| s.channels.retain(|c| c.chan_id != chan_id));
        Ok(Closing {
            closing_txid,
            receipt,
        })
    }

    /// Moves the amount between the channels and pays `rebalance_fee_msat` out of the first.
    async fn rebalance(
        &self,
        idempotency_key: &str,
        ask: &RebalanceAsk,
    ) -> Result<Rebalanced, ApiError> {
        self.channel_call("rebalance", idempotency_key)?;
        let payment_hash = "ef".repeat(32);
        if self.with(|s| s.in_flight) {
            return Ok(Rebalanced {
                payment_hash,
                state: RebalanceState::InFlight,
                amount_msat: ask.amount_msat,
                fee_msat: 0,
                fee_limit_msat: ask.fee_limit_msat,
                failure_code: String::new(),
                failure_reason: String::new(),
                receipt: None,
            });
        }
        let fee = self.with(|s| {
            let fee = s.rebalance_fee_msat;
            for c in &mut s.channels {
                if c.chan_id == ask.out_chan_id {
                    c.local_balance_msat -= ask.amount_msat + fee;
                    c.remote_balance_msat += ask.amount_msat + fee;
                } else if c.chan_id == ask.in_chan_id {
                    c.local_balance_msat += ask.amount_msat;
                    c.remote_balance_msat -= ask.amount_msat;
                }
            }
            fee
        });
        let receipt = self.seal(
            EXECUTOR_REBALANCE_SCHEMA,
            idempotency_key,
            serde_json::json!({
                "out_chan_id": ask.out_chan_id.to_string(),
                "in_chan_id": ask.in_chan_id.to_string(),
                "payment_hash": payment_hash,
                "status": "succeeded",
                "amount_msat": ask.amount_msat.to_string(),
                "fee_msat": fee.to_string(),
                "fee_limit_msat": ask.fee_limit_msat.to_string(),
                "requested_by": "lightning-ops",
                "backend": "fake",
            }),
        );
        Ok(Rebalanced {
            payment_hash,
            state: RebalanceState::Succeeded,
            amount_msat: ask.amount_msat,
            fee_msat: fee,
            fee_limit_msat: ask.fee_limit_msat,
            failure_code: String::new(),
            failure_reason: String::new(),
            receipt: Some(receipt),
        })
    }
}
