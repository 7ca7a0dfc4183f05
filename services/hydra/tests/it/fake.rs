//! A fake wallet-executor: pays invoices it issued, signs real receipts, counts sends, and can be
//! unavailable, hang in flight, or forge its receipt.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use hydra::executor::Executor;
use oa_invoice::{InvoiceRequest, InvoiceSigner, Network, PaymentHash, Preimage, SecretKey};
use oa_money::Msat;
use oa_proto::wallet;
use oa_receipts::{Hash, ReceiptDraft, ReceiptKey};
use oa_service::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pay,
    Unavailable,
    Hang,
    Forge,
}

#[derive(Default)]
struct State {
    preimages: HashMap<PaymentHash, Preimage>,
    results: HashMap<String, wallet::PaymentResponse>,
    sends: HashMap<String, u32>,
    log: Vec<Hash>,
}

#[derive(Clone)]
pub struct FakeExecutor {
    state: Arc<Mutex<State>>,
    mode: Arc<Mutex<Mode>>,
    key: Arc<ReceiptKey>,
    signer: Arc<InvoiceSigner>,
}

impl FakeExecutor {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Pay)),
            key: Arc::new(ReceiptKey::generate()),
            signer: Arc::new(InvoiceSigner::new(
                SecretKey::from_slice(&[7u8; 32]).unwrap(),
            )),
        }
    }

    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    pub fn key_id(&self) -> String {
        self.key.key_id().to_owned()
    }

    /// Sends per payment hash (the real executor guarantees at most one).
    pub fn sends(&self, hash: &str) -> u32 {
        self.state
            .lock()
            .unwrap()
            .sends
            .get(hash)
            .copied()
            .unwrap_or(0)
    }

    pub fn total_sends(&self) -> u32 {
        self.state.lock().unwrap().sends.values().sum()
    }

    pub fn invoice(&self, amount_msat: u64, network: Network, expiry: Duration) -> String {
        let preimage = Preimage::random();
        let hash = preimage.payment_hash();
        self.state.lock().unwrap().preimages.insert(hash, preimage);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        self.signer
            .create_invoice(&InvoiceRequest {
                network,
                amount: Msat::new(amount_msat).ok().filter(|m| !m.is_zero()),
                payment_hash: hash,
                payment_secret: [1; 32],
                description: "fake".into(),
                created_at: now,
                expiry,
                min_final_cltv_expiry_delta: 18,
            })
            .unwrap()
    }
}

#[async_trait]
impl Executor for FakeExecutor {
    async fn pay(
        &self,
        req: wallet::PayInvoiceRequest,
    ) -> Result<wallet::PaymentResponse, ApiError> {
        let mode = *self.mode.lock().unwrap();
        if mode == Mode::Unavailable {
            return Err(ApiError::unavailable("EXECUTOR_UNAVAILABLE", "down"));
        }
        let decoded = oa_invoice::decode(&req.invoice).unwrap();
        let hash = decoded.payment_hash.to_string();
        let mut s = self.state.lock().unwrap();
        if let Some(done) = s.results.get(&req.idempotency_key) {
            return Ok(done.clone());
        }
        *s.sends.entry(hash.clone()).or_insert(0) += 1;
        let mut payment = wallet::WalletPayment {
            payment_hash: hash.clone(),
            amount_msat: req.amount_msat,
            fee_limit_msat: req.fee_limit_msat,
            idempotency_key: req.idempotency_key.clone(),
            ..Default::default()
        };
        if mode == Mode::Hang {
            payment.status = wallet::PaymentStatus::InFlight as i32;
            s.sends.entry(hash).and_modify(|n| *n -= 1);
            return Ok(wallet::PaymentResponse {
                payment: Some(payment),
                receipt: None,
            });
        }
        let preimage = s.preimages.get(&decoded.payment_hash).cloned().unwrap();
        payment.status = wallet::PaymentStatus::Succeeded as i32;
        payment.preimage = preimage.to_string();
        let mut body = serde_json::Map::new();
        body.insert("payment_hash".into(), hash.clone().into());
        body.insert("amount_msat".into(), req.amount_msat.to_string().into());
        body.insert("preimage".into(), preimage.to_string().into());
        body.insert("status".into(), "succeeded".into());
        let index = s.log.len() as u64;
        let prev = s.log.last().copied().unwrap_or(Hash::ZERO);
        let mut receipt = ReceiptDraft {
            schema: "oa.wallet_executor.payment_receipt.v1".into(),
            receipt_id: format!("rcpt_fake_{index}"),
            idempotency_key: req.idempotency_key.clone(),
            links: vec![],
            body,
        }
        .seal(&self.key, "wallet-executor", index, prev, 1_700_000_000_000)
        .unwrap();
        s.log.push(receipt.hash);
        if mode == Mode::Forge {
            receipt.signature = "00".repeat(64);
        }
        let resp = wallet::PaymentResponse {
            payment: Some(payment),
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
        };
        s.results.insert(req.idempotency_key, resp.clone());
        Ok(resp)
    }

    async fn get_payment(&self, payment_hash: &str) -> Result<wallet::PaymentResponse, ApiError> {
        let s = self.state.lock().unwrap();
        s.results
            .values()
            .find(|r| {
                r.payment
                    .as_ref()
                    .is_some_and(|p| p.payment_hash == payment_hash)
            })
            .cloned()
            .ok_or_else(|| ApiError::not_found("payment"))
    }

    async fn info(&self) -> Result<wallet::GetInfoResponse, ApiError> {
        if *self.mode.lock().unwrap() == Mode::Unavailable {
            return Err(ApiError::unavailable("EXECUTOR_UNAVAILABLE", "down"));
        }
        Ok(wallet::GetInfoResponse {
            node_pubkey: "fake".into(),
            network: "regtest".into(),
            backend: "fake".into(),
            ..Default::default()
        })
    }
}
