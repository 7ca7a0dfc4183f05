//! A fake wallet-executor: pays invoices it issued, signs real receipts, counts sends, and can be
//! unavailable, hang in flight, or forge its receipt.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use hydra::{aegis::Verifications, executor::Executor};
use oa_invoice::{InvoiceRequest, InvoiceSigner, Network, PaymentHash, Preimage, SecretKey};
use oa_money::Msat;
use oa_proto::{aegis, wallet};
use oa_receipts::{Hash, Receipt, ReceiptDraft, ReceiptKey};
use oa_service::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pay,
    /// The network fails the payment (a terminal failure with a receipt).
    Fail,
    Unavailable,
    Hang,
    Forge,
}

#[derive(Default)]
struct State {
    preimages: HashMap<PaymentHash, Preimage>,
    results: HashMap<String, wallet::PaymentResponse>,
    sends: HashMap<String, u32>,
    log: Vec<Receipt>,
    fee_msat: u64,
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

    /// Routing fee of later successful payments (at most each payment's fee limit).
    pub fn set_fee(&self, fee_msat: u64) {
        self.state.lock().unwrap().fee_msat = fee_msat;
    }

    /// Every receipt the fake signed, in log order.
    pub fn receipts(&self) -> Vec<Receipt> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn total_sends(&self) -> u32 {
        self.state.lock().unwrap().sends.values().sum()
    }

    pub fn invoice(&self, amount_msat: u64, network: Network, expiry: Duration) -> String {
        self.invoice_by(&self.signer, amount_msat, network, expiry)
    }

    /// An invoice of another payee node (the fake pays it all the same).
    pub fn invoice_of_other_node(&self, amount_msat: u64) -> String {
        let other = InvoiceSigner::new(SecretKey::from_slice(&[8u8; 32]).unwrap());
        self.invoice_by(
            &other,
            amount_msat,
            Network::Regtest,
            Duration::from_secs(3600),
        )
    }

    fn invoice_by(
        &self,
        signer: &InvoiceSigner,
        amount_msat: u64,
        network: Network,
        expiry: Duration,
    ) -> String {
        let preimage = Preimage::random();
        let hash = preimage.payment_hash();
        self.state.lock().unwrap().preimages.insert(hash, preimage);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        signer
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
        let mut body = serde_json::Map::new();
        body.insert("payment_hash".into(), hash.clone().into());
        body.insert("amount_msat".into(), req.amount_msat.to_string().into());
        if mode == Mode::Fail {
            payment.status = wallet::PaymentStatus::Failed as i32;
            payment.failure_code = "NO_ROUTE".into();
            payment.failure_reason = "no route to the payee".into();
            body.insert("status".into(), "failed".into());
            body.insert("fee_msat".into(), "0".into());
            body.insert("failure_code".into(), "NO_ROUTE".into());
        } else {
            let preimage = s.preimages.get(&decoded.payment_hash).cloned().unwrap();
            payment.status = wallet::PaymentStatus::Succeeded as i32;
            payment.preimage = preimage.to_string();
            payment.fee_msat = s.fee_msat.min(req.fee_limit_msat);
            body.insert("preimage".into(), preimage.to_string().into());
            body.insert("status".into(), "succeeded".into());
            body.insert("fee_msat".into(), payment.fee_msat.to_string().into());
        }
        let index = s.log.len() as u64;
        let prev = s.log.last().map_or(Hash::ZERO, |r| r.hash);
        let mut receipt = ReceiptDraft {
            schema: "oa.wallet_executor.payment_receipt.v1".into(),
            receipt_id: format!("rcpt_fake_{index}"),
            idempotency_key: req.idempotency_key.clone(),
            links: vec![],
            body,
        }
        .seal(&self.key, "wallet-executor", index, prev, 1_700_000_000_000)
        .unwrap();
        s.log.push(receipt.clone());
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

/// A fake Aegis: verifications with real signed receipts, on demand; can be down.
#[derive(Clone)]
pub struct FakeAegis {
    answers: Arc<Mutex<HashMap<String, aegis::GetVerificationResponse>>>,
    down: Arc<Mutex<bool>>,
    calls: Arc<Mutex<u32>>,
    key: Arc<ReceiptKey>,
    log: Arc<Mutex<Vec<Receipt>>>,
}

impl FakeAegis {
    pub fn new() -> Self {
        Self {
            answers: Arc::default(),
            down: Arc::default(),
            calls: Arc::default(),
            key: Arc::new(ReceiptKey::generate()),
            log: Arc::default(),
        }
    }

    pub fn key_id(&self) -> String {
        self.key.key_id().to_owned()
    }

    pub fn set_down(&self, down: bool) {
        *self.down.lock().unwrap() = down;
    }

    /// Every receipt the fake signed, in log order.
    pub fn receipts(&self) -> Vec<Receipt> {
        self.log.lock().unwrap().clone()
    }

    pub fn calls(&self) -> u32 {
        *self.calls.lock().unwrap()
    }

    /// Records a decided verification of `scope` and returns its receipt.
    pub fn decide(&self, id: &str, scope: &str, verdict: &str) -> Receipt {
        self.decide_with(id, scope, verdict, &self.key.clone())
    }

    /// The same, signed with another key than the one Hydra trusts.
    pub fn decide_with(&self, id: &str, scope: &str, verdict: &str, key: &ReceiptKey) -> Receipt {
        let mut body = serde_json::Map::new();
        body.insert("verification_id".into(), id.into());
        body.insert("scope".into(), scope.into());
        body.insert("verdict".into(), verdict.into());
        body.insert("tier".into(), "objective".into());
        body.insert("decided_at_ms".into(), "1700000000000".into());
        let mut log = self.log.lock().unwrap();
        let index = log.len() as u64;
        let prev = log.last().map_or(Hash::ZERO, |r| r.hash);
        let receipt = ReceiptDraft {
            schema: "oa.aegis.verification_receipt.v1".into(),
            receipt_id: format!("rcpt_aegis_{index}"),
            idempotency_key: format!("verify-{id}"),
            links: vec![],
            body,
        }
        .seal(key, "aegis", index, prev, 1_700_000_000_000)
        .unwrap();
        log.push(receipt.clone());
        let v = match verdict {
            "passed" => aegis::VerificationVerdict::Passed,
            _ => aegis::VerificationVerdict::Failed,
        };
        self.answers.lock().unwrap().insert(
            id.to_owned(),
            aegis::GetVerificationResponse {
                verification: Some(aegis::Verification {
                    verification_id: id.into(),
                    scope: scope.into(),
                    verdict: v as i32,
                    tier: "objective".into(),
                    ..Default::default()
                }),
                receipt: Some(oa_service::receipts::to_proto(&receipt)),
            },
        );
        receipt
    }

    /// A verification still in progress (no receipt).
    pub fn pending(&self, id: &str, scope: &str) {
        self.answers.lock().unwrap().insert(
            id.to_owned(),
            aegis::GetVerificationResponse {
                verification: Some(aegis::Verification {
                    verification_id: id.into(),
                    scope: scope.into(),
                    verdict: aegis::VerificationVerdict::Pending as i32,
                    ..Default::default()
                }),
                receipt: None,
            },
        );
    }
}

#[async_trait]
impl Verifications for FakeAegis {
    async fn get(&self, id: &str) -> Result<Option<aegis::GetVerificationResponse>, ApiError> {
        *self.calls.lock().unwrap() += 1;
        if *self.down.lock().unwrap() {
            return Err(ApiError::unavailable("AEGIS_UNAVAILABLE", "down"));
        }
        Ok(self.answers.lock().unwrap().get(id).cloned())
    }
}
