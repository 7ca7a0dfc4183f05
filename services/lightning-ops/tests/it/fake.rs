//! A scripted custody channel: channels, a forwarding log and policy changes the test controls,
//! with every call recorded and failures on demand.

use std::sync::{Arc, Mutex};

use lightning_ops::{
    apply::EXECUTOR_POLICY_SCHEMA,
    executor::{Channels, Forward, ForwardPage},
    plan::{Fees, Observed},
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

    fn receipt(&self, key: &str, chan_id: u64, fees: &Fees) -> Receipt {
        let body = serde_json::json!({
            "chan_id": chan_id.to_string(),
            "base_fee_msat": fees.base_fee_msat.to_string(),
            "fee_rate_ppm": fees.fee_rate_ppm.to_string(),
            "min_htlc_msat": fees.min_htlc_msat.to_string(),
            "max_htlc_msat": fees.max_htlc_msat.to_string(),
            "time_lock_delta": fees.time_lock_delta.to_string(),
            "updated_channels": "1",
            "requested_by": "lightning-ops",
            "backend": "fake",
        });
        ReceiptDraft {
            schema: EXECUTOR_POLICY_SCHEMA.into(),
            receipt_id: format!("rcpt_fake_{key}"),
            idempotency_key: key.into(),
            links: vec![],
            body: body.as_object().unwrap().clone(),
        }
        .seal(&self.key, "wallet-executor", 0, Hash::ZERO, 1)
        .unwrap()
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
}
