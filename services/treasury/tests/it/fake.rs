//! A fake Hydra: quotes and pays, signs real receipts, can be down or refuse.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use oa_proto::hydra;
use oa_receipts::{Hash, ReceiptDraft, ReceiptKey};
use oa_service::ApiError;
use treasury::hydra_client::Hydra;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pay,
    Down,
    FailPayment,
}

#[derive(Default)]
struct State {
    quotes: HashMap<String, hydra::Quote>,
    by_key: HashMap<String, hydra::QuotePayResponse>,
    paid: HashMap<String, hydra::PayResponse>,
    pays: u32,
    log: Vec<Hash>,
}

#[derive(Clone)]
pub struct FakeHydra {
    state: Arc<Mutex<State>>,
    mode: Arc<Mutex<Mode>>,
    key: Arc<ReceiptKey>,
    pub fee_msat: u64,
}

impl FakeHydra {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Pay)),
            key: Arc::new(ReceiptKey::generate()),
            fee_msat: 7,
        }
    }
    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
    pub fn pays(&self) -> u32 {
        self.state.lock().unwrap().pays
    }
}

#[async_trait]
impl Hydra for FakeHydra {
    async fn quote_pay(
        &self,
        req: hydra::QuotePayRequest,
    ) -> Result<hydra::QuotePayResponse, ApiError> {
        if *self.mode.lock().unwrap() == Mode::Down {
            return Err(ApiError::unavailable("HYDRA_UNAVAILABLE", "down"));
        }
        let mut s = self.state.lock().unwrap();
        if let Some(r) = s.by_key.get(&req.idempotency_key) {
            return Ok(r.clone());
        }
        let inv = oa_invoice::decode(&req.invoice).unwrap();
        let q = hydra::Quote {
            quote_id: format!("q{}", s.quotes.len()),
            payment_hash: inv.payment_hash.to_string(),
            amount_msat: req.amount_msat,
            fee_limit_msat: req.max_fee_msat,
            state: hydra::QuoteState::Open as i32,
            ..Default::default()
        };
        s.quotes.insert(q.quote_id.clone(), q.clone());
        let r = hydra::QuotePayResponse { quote: Some(q) };
        s.by_key.insert(req.idempotency_key, r.clone());
        Ok(r)
    }

    async fn pay(&self, req: hydra::PayRequest) -> Result<hydra::PayResponse, ApiError> {
        let mode = *self.mode.lock().unwrap();
        if mode == Mode::Down {
            return Err(ApiError::unavailable("HYDRA_UNAVAILABLE", "down"));
        }
        let mut s = self.state.lock().unwrap();
        if let Some(r) = s.paid.get(&req.quote_id) {
            return Ok(r.clone());
        }
        s.pays += 1;
        let mut q = s.quotes.get(&req.quote_id).cloned().unwrap();
        let ok = mode == Mode::Pay;
        q.state = if ok {
            hydra::QuoteState::Paid
        } else {
            hydra::QuoteState::Failed
        } as i32;
        let mut body = serde_json::Map::new();
        body.insert("payment_hash".into(), q.payment_hash.clone().into());
        body.insert(
            "status".into(),
            (if ok { "succeeded" } else { "failed" }).into(),
        );
        let index = s.log.len() as u64;
        let prev = s.log.last().copied().unwrap_or(Hash::ZERO);
        let receipt = ReceiptDraft {
            schema: "oa.hydra.invoice_pay_receipt.v1".into(),
            receipt_id: format!("rcpt_h{index}"),
            idempotency_key: req.idempotency_key.clone(),
            links: vec![],
            body,
        }
        .seal(&self.key, "hydra", index, prev, 1_700_000_000_000)
        .unwrap();
        s.log.push(receipt.hash);
        let r = hydra::PayResponse {
            quote: Some(q),
            preimage: if ok { "11".repeat(32) } else { String::new() },
            fee_msat: if ok { self.fee_msat } else { 0 },
            failure_code: if ok { String::new() } else { "NO_ROUTE".into() },
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
            ..Default::default()
        };
        s.paid.insert(req.quote_id, r.clone());
        Ok(r)
    }
}
