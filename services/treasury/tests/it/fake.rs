//! Fakes: a Hydra that quotes, pays, scores and issues credit envelopes with real signed
//! receipts, and can be down or refuse; an Aegis risk source whose answers tests set.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use http::StatusCode;
use oa_proto::hydra;
use oa_receipts::{Hash, Receipt, ReceiptDraft, ReceiptKey};
use oa_service::ApiError;
use treasury::{
    hydra_client::Hydra,
    risk::{RiskError, RiskSource, RiskState, RiskStatus, Subject},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pay,
    /// Every call fails as if Hydra could not be reached.
    Down,
    /// Payments are attempted and fail (NO_ROUTE).
    FailPayment,
    /// `quote_pay` is refused (INSUFFICIENT_LIQUIDITY): nothing is sent.
    RefuseQuote,
    /// Quotes are issued, then `pay` cannot be reached (the payment's outcome is unknown).
    PayDown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    Settled,
    Defaulted,
    /// The verification is still pending: a retryable refusal.
    Pending,
}

#[derive(Default)]
struct State {
    quotes: HashMap<String, hydra::Quote>,
    by_key: HashMap<String, serde_json::Value>,
    paid: HashMap<String, hydra::PayResponse>,
    envelopes: HashMap<String, hydra::Envelope>,
    pays: u32,
    pays_by_hash: HashMap<String, u32>,
    quote_calls: u32,
    scores: u32,
    intents: u32,
    issued: u32,
    settles: u32,
    log: Vec<Hash>,
    receipts: Vec<Receipt>,
}

#[derive(Clone)]
pub struct FakeHydra {
    state: Arc<Mutex<State>>,
    mode: Arc<Mutex<Mode>>,
    settle: Arc<Mutex<Settle>>,
    /// The routing score ranks the envelope first.
    prefer_envelope: Arc<Mutex<bool>>,
    /// The credit fee Hydra's offers ask, in basis points of the cap.
    credit_fee_bps: Arc<Mutex<u64>>,
    refuse_credit: Arc<Mutex<bool>>,
    key: Arc<ReceiptKey>,
    pub fee_msat: u64,
}

fn down() -> ApiError {
    ApiError::unavailable("HYDRA_UNAVAILABLE", "down")
}

impl FakeHydra {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Pay)),
            settle: Arc::new(Mutex::new(Settle::Settled)),
            prefer_envelope: Arc::new(Mutex::new(false)),
            credit_fee_bps: Arc::new(Mutex::new(100)),
            refuse_credit: Arc::new(Mutex::new(false)),
            key: Arc::new(ReceiptKey::generate()),
            fee_msat: 7,
        }
    }
    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
    pub fn set_settle(&self, s: Settle) {
        *self.settle.lock().unwrap() = s;
    }
    pub fn prefer_envelope(&self, yes: bool) {
        *self.prefer_envelope.lock().unwrap() = yes;
    }
    pub fn set_credit_fee_bps(&self, bps: u64) {
        *self.credit_fee_bps.lock().unwrap() = bps;
    }
    pub fn refuse_credit(&self, yes: bool) {
        *self.refuse_credit.lock().unwrap() = yes;
    }
    pub fn pays(&self) -> u32 {
        self.state.lock().unwrap().pays
    }
    /// The most times any one payment hash was paid.
    pub fn max_pays_per_hash(&self) -> u32 {
        self.state
            .lock()
            .unwrap()
            .pays_by_hash
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }
    /// Whether a call was answered under idempotency key `key`.
    pub fn answered_key(&self, key: &str) -> bool {
        self.state.lock().unwrap().by_key.contains_key(key)
    }
    pub fn quote_calls(&self) -> u32 {
        self.state.lock().unwrap().quote_calls
    }
    pub fn scores(&self) -> u32 {
        self.state.lock().unwrap().scores
    }
    pub fn intents(&self) -> u32 {
        self.state.lock().unwrap().intents
    }
    pub fn issued(&self) -> u32 {
        self.state.lock().unwrap().issued
    }
    pub fn settles(&self) -> u32 {
        self.state.lock().unwrap().settles
    }
    /// Every receipt this Hydra signed, in order.
    pub fn receipts(&self) -> Vec<Receipt> {
        self.state.lock().unwrap().receipts.clone()
    }
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap()
    }

    fn seal(&self, s: &mut State, schema: &str, key: &str, body: serde_json::Value) -> Receipt {
        let index = s.log.len() as u64;
        let prev = s.log.last().copied().unwrap_or(Hash::ZERO);
        let receipt = ReceiptDraft {
            schema: schema.into(),
            receipt_id: format!("rcpt_h{index}"),
            idempotency_key: key.into(),
            links: vec![],
            body: body.as_object().unwrap().clone(),
        }
        .seal(&self.key, "hydra", index, prev, 1_700_000_000_000)
        .unwrap();
        s.log.push(receipt.hash);
        s.receipts.push(receipt.clone());
        receipt
    }

    /// Replays an answer stored under `key`, as Hydra's idempotency does.
    fn replay<T: serde::de::DeserializeOwned>(s: &State, key: &str) -> Option<T> {
        s.by_key
            .get(key)
            .map(|v| serde_json::from_value(v.clone()).unwrap())
    }

    fn store<T: serde::Serialize>(s: &mut State, key: &str, v: &T) {
        s.by_key
            .insert(key.to_owned(), serde_json::to_value(v).unwrap());
    }
}

#[async_trait]
impl Hydra for FakeHydra {
    async fn quote_pay(
        &self,
        req: hydra::QuotePayRequest,
    ) -> Result<hydra::QuotePayResponse, ApiError> {
        let mode = self.mode();
        let mut s = self.state.lock().unwrap();
        s.quote_calls += 1;
        match mode {
            Mode::Down => return Err(down()),
            Mode::RefuseQuote => {
                return Err(ApiError::conflict(
                    "INSUFFICIENT_LIQUIDITY",
                    "the pool cannot pay this",
                ));
            }
            _ => {}
        }
        if let Some(r) = Self::replay(&s, &req.idempotency_key) {
            return Ok(r);
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
        Self::store(&mut s, &req.idempotency_key, &r);
        Ok(r)
    }

    async fn pay(&self, req: hydra::PayRequest) -> Result<hydra::PayResponse, ApiError> {
        let mode = self.mode();
        if matches!(mode, Mode::Down | Mode::PayDown) {
            return Err(down());
        }
        let mut s = self.state.lock().unwrap();
        if let Some(r) = s.paid.get(&req.quote_id) {
            return Ok(r.clone());
        }
        s.pays += 1;
        let mut q = s.quotes.get(&req.quote_id).cloned().unwrap();
        *s.pays_by_hash.entry(q.payment_hash.clone()).or_default() += 1;
        let ok = mode == Mode::Pay;
        q.state = if ok {
            hydra::QuoteState::Paid
        } else {
            hydra::QuoteState::Failed
        } as i32;
        // Hydra never pays more than the quote's fee limit.
        let fee = if ok {
            self.fee_msat.min(q.fee_limit_msat)
        } else {
            0
        };
        let receipt = self.seal(
            &mut s,
            "oa.hydra.invoice_pay_receipt.v1",
            &req.idempotency_key,
            serde_json::json!({
                "payment_hash": q.payment_hash,
                "status": if ok { "succeeded" } else { "failed" },
                "amount_msat": q.amount_msat.to_string(),
                "fee_msat": fee.to_string(),
            }),
        );
        let r = hydra::PayResponse {
            quote: Some(q),
            preimage: if ok { "11".repeat(32) } else { String::new() },
            fee_msat: fee,
            failure_code: if ok { String::new() } else { "NO_ROUTE".into() },
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
            ..Default::default()
        };
        s.paid.insert(req.quote_id, r.clone());
        Ok(r)
    }

    async fn liquidity_status(&self) -> Result<hydra::LiquidityStatusResponse, ApiError> {
        if self.mode() == Mode::Down {
            return Err(down());
        }
        Ok(hydra::LiquidityStatusResponse {
            executor_reachable: true,
            local_balance_msat: 10_000_000_000,
            ..Default::default()
        })
    }

    async fn routing_score(
        &self,
        req: hydra::RoutingScoreRequest,
    ) -> Result<hydra::RoutingScoreResponse, ApiError> {
        if self.mode() == Mode::Down {
            return Err(down());
        }
        let mut s = self.state.lock().unwrap();
        if let Some(r) = Self::replay(&s, &req.idempotency_key) {
            return Ok(r);
        }
        s.scores += 1;
        assert_eq!(req.routes.len(), 1, "one candidate for the pool");
        assert!(
            req.payment_hash.is_empty(),
            "no learning from the synthetic route"
        );
        let env = req.envelope_rail.clone().unwrap();
        let mut ids = [req.routes[0].candidate_id.clone(), env.candidate_id.clone()];
        if *self.prefer_envelope.lock().unwrap() {
            ids.reverse();
        }
        let receipt = self.seal(
            &mut s,
            "oa.hydra.routing_decision_receipt.v1",
            &req.idempotency_key,
            serde_json::json!({"policy": req.policy, "chosen": ids[0]}),
        );
        let r = hydra::RoutingScoreResponse {
            decision_id: format!("rd{}", s.scores),
            policy: req.policy.clone(),
            amount_msat: req.amount_msat,
            ranking: ids
                .iter()
                .enumerate()
                .map(|(i, id)| hydra::ScoredCandidate {
                    rank: i as u32 + 1,
                    candidate_id: id.clone(),
                    reachable: true,
                    ..Default::default()
                })
                .collect(),
            envelope_estimate: None,
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
        };
        Self::store(&mut s, &req.idempotency_key, &r);
        Ok(r)
    }

    async fn credit_intent(
        &self,
        req: hydra::CreditIntentRequest,
    ) -> Result<hydra::CreditIntentResponse, ApiError> {
        if self.mode() == Mode::Down {
            return Err(down());
        }
        if *self.refuse_credit.lock().unwrap() {
            return Err(ApiError::conflict(
                "CREDIT_DENIED",
                "no credit for this agent",
            ));
        }
        let mut s = self.state.lock().unwrap();
        if let Some(r) = Self::replay(&s, &req.idempotency_key) {
            return Ok(r);
        }
        s.intents += 1;
        assert!(req.expires_at_ms > 0, "an expiry is set");
        let e = hydra::Envelope {
            envelope_id: format!("env{}", s.intents),
            agent_id: req.agent_id.clone(),
            provider: req.provider.clone(),
            scope: req.scope.clone(),
            requested_cap_msat: req.cap_msat,
            expires_at_ms: req.expires_at_ms,
            state: hydra::EnvelopeState::Intent as i32,
            ..Default::default()
        };
        s.envelopes.insert(e.envelope_id.clone(), e.clone());
        let r = hydra::CreditIntentResponse { envelope: Some(e) };
        Self::store(&mut s, &req.idempotency_key, &r);
        Ok(r)
    }

    async fn credit_offer(
        &self,
        req: hydra::CreditOfferRequest,
    ) -> Result<hydra::CreditOfferResponse, ApiError> {
        if self.mode() == Mode::Down {
            return Err(down());
        }
        let bps = *self.credit_fee_bps.lock().unwrap();
        let mut s = self.state.lock().unwrap();
        if let Some(r) = Self::replay(&s, &req.idempotency_key) {
            return Ok(r);
        }
        let mut e = s.envelopes.get(&req.envelope_id).cloned().unwrap();
        let cap = e.requested_cap_msat;
        e.state = hydra::EnvelopeState::Offered as i32;
        e.offer = Some(hydra::CreditOffer {
            offer_id: format!("off-{}", e.envelope_id),
            cap_msat: cap,
            limit_msat: cap,
            fee_bps: bps as u32,
            fee_msat: (cap * bps).div_ceil(10_000),
            ..Default::default()
        });
        s.envelopes.insert(e.envelope_id.clone(), e.clone());
        let r = hydra::CreditOfferResponse { envelope: Some(e) };
        Self::store(&mut s, &req.idempotency_key, &r);
        Ok(r)
    }

    async fn credit_envelope(
        &self,
        req: hydra::CreditEnvelopeRequest,
    ) -> Result<hydra::CreditEnvelopeResponse, ApiError> {
        if self.mode() == Mode::Down {
            return Err(down());
        }
        let mut s = self.state.lock().unwrap();
        if let Some(r) = Self::replay(&s, &req.idempotency_key) {
            return Ok(r);
        }
        let id = req.offer_id.strip_prefix("off-").unwrap().to_owned();
        let mut e = s.envelopes.get(&id).cloned().unwrap();
        e.state = hydra::EnvelopeState::Issued as i32;
        s.issued += 1;
        let receipt = self.seal(
            &mut s,
            "oa.hydra.envelope_issue_receipt.v1",
            &req.idempotency_key,
            serde_json::json!({"envelope_id": id, "status": "issued"}),
        );
        s.envelopes.insert(id, e.clone());
        let r = hydra::CreditEnvelopeResponse {
            envelope: Some(e),
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
        };
        Self::store(&mut s, &req.idempotency_key, &r);
        Ok(r)
    }

    async fn credit_settle(
        &self,
        req: hydra::CreditSettleRequest,
    ) -> Result<hydra::CreditSettleResponse, ApiError> {
        if self.mode() == Mode::Down {
            return Err(down());
        }
        let outcome = *self.settle.lock().unwrap();
        let mut s = self.state.lock().unwrap();
        if let Some(r) = Self::replay(&s, &req.idempotency_key) {
            return Ok(r);
        }
        if outcome == Settle::Pending {
            return Err(ApiError::conflict("VERIFICATION_PENDING", "not decided yet").retryable());
        }
        if req.verification_id == "bad-verification" {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "VERIFICATION_MISMATCH",
                "the verification is about other work",
            ));
        }
        s.settles += 1;
        let mut e = s.envelopes.get(&req.envelope_id).cloned().unwrap();
        let inv = oa_invoice::decode(&e.provider.as_ref().unwrap().invoice).unwrap();
        let amount = inv.amount.unwrap().as_u64();
        let (schema, status) = match outcome {
            Settle::Settled => {
                e.state = hydra::EnvelopeState::Settled as i32;
                e.paid_amount_msat = amount;
                e.routing_fee_msat = 3;
                e.preimage = "22".repeat(32);
                ("oa.hydra.envelope_settlement_receipt.v1", "settled")
            }
            _ => {
                e.state = hydra::EnvelopeState::Defaulted as i32;
                e.default_reason = "verification_failed".into();
                ("oa.hydra.envelope_default_receipt.v1", "defaulted")
            }
        };
        e.verification_id = req.verification_id.clone();
        let receipt = self.seal(
            &mut s,
            schema,
            &req.idempotency_key,
            serde_json::json!({"envelope_id": e.envelope_id, "status": status, "payment_hash": inv.payment_hash.to_string()}),
        );
        s.envelopes.insert(e.envelope_id.clone(), e.clone());
        let r = hydra::CreditSettleResponse {
            envelope: Some(e),
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
            ..Default::default()
        };
        Self::store(&mut s, &req.idempotency_key, &r);
        Ok(r)
    }
}

type Answers = HashMap<(Subject, String), Result<RiskStatus, RiskError>>;

/// Aegis's risk budgets as tests set them; a subject nobody set is unbudgeted.
#[derive(Clone, Default)]
pub struct FakeRisk {
    answers: Arc<Mutex<Answers>>,
    pub calls: Arc<Mutex<u32>>,
}

impl FakeRisk {
    pub fn set(&self, subject: Subject, id: &str, state: RiskState, cap_msat: Option<u64>) {
        self.answers.lock().unwrap().insert(
            (subject, id.to_owned()),
            Ok(RiskStatus {
                state,
                effective_cap: cap_msat.map(|c| oa_money::Msat::new(c).unwrap()),
            }),
        );
    }
    pub fn fail(&self, subject: Subject, id: &str) {
        self.answers.lock().unwrap().insert(
            (subject, id.to_owned()),
            Err(RiskError::Unavailable("connection refused".into())),
        );
    }
}

#[async_trait]
impl RiskSource for FakeRisk {
    async fn status(&self, subject: Subject, id: &str) -> Result<RiskStatus, RiskError> {
        *self.calls.lock().unwrap() += 1;
        self.answers
            .lock()
            .unwrap()
            .get(&(subject, id.to_owned()))
            .cloned()
            .unwrap_or(Ok(RiskStatus {
                state: RiskState::Unbudgeted,
                effective_cap: None,
            }))
    }
}
