//! A fake wallet-executor: pays invoices it issued, signs real receipts, counts sends, and can be
//! unavailable, hang in flight, or forge its receipt. It also issues invoices of "its node"
//! (deposits), settles them on demand with signed settlement receipts, streams the settlements
//! from any settle index (replay, then live; the test can cut every stream), and reports the
//! liquidity the test sets.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures::StreamExt;
use hydra::{
    aegis::Verifications,
    executor::{Executor, Settlements},
};
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
    /// Invoices of "our node", by idempotency key and by payment hash.
    issued_by_key: HashMap<String, wallet::InvoiceResponse>,
    issued: HashMap<String, wallet::Invoice>,
    settlements: Vec<wallet::InvoiceSettlement>,
    /// The `after_settle_index` of each subscription, in order.
    subscribed_from: Vec<u64>,
    local_balance_msat: u64,
    onchain_confirmed_msat: u64,
    create_invoice_calls: u32,
}

#[derive(Clone)]
pub struct FakeExecutor {
    state: Arc<Mutex<State>>,
    mode: Arc<Mutex<Mode>>,
    key: Arc<ReceiptKey>,
    signer: Arc<InvoiceSigner>,
    /// Bumped by each settlement, for live streams.
    settled: tokio::sync::watch::Sender<usize>,
    /// Bumped to end every open stream.
    cut: tokio::sync::watch::Sender<u64>,
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
            settled: tokio::sync::watch::channel(0).0,
            cut: tokio::sync::watch::channel(0).0,
        }
        .with_liquidity(1_000_000_000_000, 0)
    }

    /// Sets what `GetInfo` (channels' local balance) and `WalletBalance` (confirmed) report.
    pub fn with_liquidity(self, local_msat: u64, onchain_msat: u64) -> Self {
        self.set_liquidity(local_msat, onchain_msat);
        self
    }

    pub fn set_liquidity(&self, local_msat: u64, onchain_msat: u64) {
        let mut s = self.state.lock().unwrap();
        s.local_balance_msat = local_msat;
        s.onchain_confirmed_msat = onchain_msat;
    }

    /// Settles an invoice of our node (as a payer would), with a signed settlement receipt
    /// (forged in `Mode::Forge`). Returns the settle index.
    pub fn settle(&self, payment_hash: &str, amount_paid_msat: u64) -> u64 {
        let forge = *self.mode.lock().unwrap() == Mode::Forge;
        let mut s = self.state.lock().unwrap();
        let mut invoice = s
            .issued
            .get(payment_hash)
            .cloned()
            .unwrap_or_else(|| wallet::Invoice {
                payment_hash: payment_hash.to_owned(),
                ..Default::default()
            });
        let index = s.settlements.len() as u64 + 1;
        invoice.status = wallet::InvoiceStatus::Settled as i32;
        invoice.amount_paid_msat = amount_paid_msat;
        invoice.settle_index = index;
        invoice.settled_at_ms = 1_700_000_000_000;
        let mut body = serde_json::Map::new();
        body.insert("payment_hash".into(), payment_hash.into());
        body.insert("amount_msat".into(), invoice.amount_msat.to_string().into());
        body.insert(
            "amount_paid_msat".into(),
            amount_paid_msat.to_string().into(),
        );
        body.insert("add_index".into(), invoice.add_index.to_string().into());
        body.insert("settle_index".into(), index.to_string().into());
        body.insert("created_at_ms".into(), "1700000000000".into());
        body.insert("settled_at_ms".into(), "1700000000000".into());
        body.insert("backend".into(), "fake".into());
        let log_index = s.log.len() as u64;
        let prev = s.log.last().map_or(Hash::ZERO, |r| r.hash);
        let mut receipt = ReceiptDraft {
            schema: "oa.wallet_executor.invoice_settlement_receipt.v1".into(),
            receipt_id: format!("rcpt_fake_{log_index}"),
            idempotency_key: format!("invoice:{payment_hash}"),
            links: vec![],
            body,
        }
        .seal(
            &self.key,
            "wallet-executor",
            log_index,
            prev,
            1_700_000_000_000,
        )
        .unwrap();
        s.log.push(receipt.clone());
        if forge {
            receipt.signature = "00".repeat(64);
        }
        s.issued.insert(payment_hash.to_owned(), invoice.clone());
        s.settlements.push(wallet::InvoiceSettlement {
            invoice: Some(invoice),
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
        });
        let n = s.settlements.len();
        drop(s);
        self.settled.send_replace(n);
        index
    }

    /// Settles an invoice of our node that Hydra did not ask for (a rebalance's, another
    /// client's): only Hydra's cursor should move.
    pub fn settle_foreign(&self, amount_msat: u64) -> u64 {
        let hash = Preimage::random().payment_hash().to_string();
        self.settle(&hash, amount_msat)
    }

    /// Ends every open settlement stream (as an executor restart would).
    pub fn cut_streams(&self) {
        self.cut.send_modify(|g| *g += 1);
    }

    /// The `after_settle_index` of each subscription so far.
    pub fn subscribed_from(&self) -> Vec<u64> {
        self.state.lock().unwrap().subscribed_from.clone()
    }

    pub fn create_invoice_calls(&self) -> u32 {
        self.state.lock().unwrap().create_invoice_calls
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
            local_balance_msat: self.state.lock().unwrap().local_balance_msat,
            ..Default::default()
        })
    }

    async fn wallet_balance(&self) -> Result<wallet::WalletBalanceResponse, ApiError> {
        if *self.mode.lock().unwrap() == Mode::Unavailable {
            return Err(ApiError::unavailable("EXECUTOR_UNAVAILABLE", "down"));
        }
        Ok(wallet::WalletBalanceResponse {
            confirmed_balance_msat: self.state.lock().unwrap().onchain_confirmed_msat,
            unconfirmed_balance_msat: 0,
        })
    }

    async fn create_invoice(
        &self,
        req: wallet::CreateInvoiceRequest,
    ) -> Result<wallet::InvoiceResponse, ApiError> {
        if *self.mode.lock().unwrap() == Mode::Unavailable {
            return Err(ApiError::unavailable("EXECUTOR_UNAVAILABLE", "down"));
        }
        self.state.lock().unwrap().create_invoice_calls += 1;
        if let Some(done) = self
            .state
            .lock()
            .unwrap()
            .issued_by_key
            .get(&req.idempotency_key)
        {
            return Ok(done.clone());
        }
        let bolt11 = self.invoice(
            req.amount_msat,
            Network::Regtest,
            Duration::from_secs(u64::from(req.expiry_secs)),
        );
        let decoded = oa_invoice::decode(&bolt11).unwrap();
        let mut s = self.state.lock().unwrap();
        let invoice = wallet::Invoice {
            payment_hash: decoded.payment_hash.to_string(),
            bolt11,
            amount_msat: req.amount_msat,
            status: wallet::InvoiceStatus::Open as i32,
            add_index: s.issued.len() as u64 + 1,
            created_at_ms: decoded.created_at_ms,
            ..Default::default()
        };
        s.issued
            .insert(invoice.payment_hash.clone(), invoice.clone());
        let resp = wallet::InvoiceResponse {
            invoice: Some(invoice),
            receipt: None,
        };
        s.issued_by_key.insert(req.idempotency_key, resp.clone());
        Ok(resp)
    }

    async fn subscribe_settlements(&self, after: u64) -> Result<Settlements, ApiError> {
        if *self.mode.lock().unwrap() == Mode::Unavailable {
            return Err(ApiError::unavailable("EXECUTOR_UNAVAILABLE", "down"));
        }
        self.state.lock().unwrap().subscribed_from.push(after);
        let state = self.state.clone();
        let settled = self.settled.subscribe();
        let mut cut = self.cut.subscribe();
        cut.borrow_and_update();
        let start = (usize::try_from(after).unwrap(), settled, cut);
        Ok(
            futures::stream::unfold(start, move |(next, mut settled, mut cut)| {
                let state = state.clone();
                async move {
                    loop {
                        if cut.has_changed().unwrap_or(true) {
                            return None;
                        }
                        settled.borrow_and_update();
                        let item = state.lock().unwrap().settlements.get(next).cloned();
                        if let Some(item) = item {
                            return Some((Ok(item), (next + 1, settled, cut)));
                        }
                        tokio::select! {
                            r = settled.changed() => if r.is_err() { return None },
                            _ = cut.changed() => return None,
                        }
                    }
                }
            })
            .boxed(),
        )
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
