//! Credit envelopes: outcome-scoped credit. Hydra reserves a cap from its pool and pays the
//! provider directly once Aegis has verified the work, so the agent never holds the funds.
//!
//! **State machine** ([`State`]; every move is one guarded `UPDATE` in `store::credit`, checked
//! against [`State::can_become`] first):
//!
//! ```text
//! intent --offer--> offered --accept--> issued --settle (verified)--> settling --paid--> settled
//!                   offered --offer (the last one lapsed)--> offered
//!                                       issued --settle (verification failed)--> defaulted
//!                                       issued --sweeper (expiry passed)--> expired
//!                                     settling --provider payment failed--> issued
//! ```
//!
//! **Receipts**, each in the transaction of its transition: `envelope_issue` (issued: the cap is
//! reserved, so Hydra is liable for it), `envelope_settlement` (settled: links the issue receipt,
//! Aegis's verification receipt and the wallet-executor's payment receipt), `envelope_default`
//! (defaulted or expired: links the issue receipt, and Aegis's receipt for a failed
//! verification). Intent, offer and the start of a settlement move no money and create no
//! liability, so they have none; a failed provider payment moves none either (the executor's
//! own receipt records it).
//!
//! **Money** (see `book`): accepting an offer reserves the cap from the pool with a pending
//! transfer; settling posts amount + routing fee (at most the cap: the payment's fee limit is
//! what is left of the cap) and charges the credit fee; a default or an expiry voids it.
//!
//! **Limits**: at most `max_open_envelopes` issued-or-settling envelopes per agent (a counter row
//! whose guarded increment also serializes issuing for one agent), the offer's cap re-checked
//! against the agent's limit at acceptance (so racing acceptances cannot overdraw it), the
//! pool's no-overdraft flag, and the breakers (`risk`: new envelopes and large settlements halt
//! while one is open).
//!
//! **Exactly once**: of any number of concurrent settles of one envelope, one moves it
//! `issued -> settling`; the provider payment's idempotency key derives from the envelope and the
//! payment hash, so retries and the tracker after a restart ask the executor for the same payment.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use oa_invoice::{InvoicePolicy, Network};
use oa_money::Msat;
use oa_proto::{hydra, wallet};
use oa_receipts::{Hash, Receipt, ReceiptDraft};
use oa_service::{Clock, tracker::Tracker};
use oa_store::{
    Db,
    idempotency::{self, Claim},
    journal,
    receipt_log::{self, ReceiptLog},
};
use serde::Serialize;
use sqlx::AnyConnection;

use crate::error::{claim_or_replay, corrupt, replay};
use crate::{
    aegis::{self, Verdict, Verifications},
    book,
    error::HydraError,
    executor::Executor,
    liquidity::Liquidity,
    risk::Risk,
    store::credit::{self as store, EnvelopeRow, OfferRow, SettleStart},
    underwriting::{self, Terms},
    validate::{self, invalid},
};

pub const ISSUE_SCHEMA: &str = "oa.hydra.envelope_issue_receipt.v1";
pub const SETTLEMENT_SCHEMA: &str = "oa.hydra.envelope_settlement_receipt.v1";
pub const DEFAULT_SCHEMA: &str = "oa.hydra.envelope_default_receipt.v1";
/// The journal topic of envelope events.
pub const TOPIC: &str = "hydra.credit";
/// The payment-outcome source of envelope settlements.
const OUTCOME_SOURCE: &str = "envelope";
/// Longest scope string.
pub const MAX_SCOPE_LEN: usize = 256;
/// Shortest time an intent's expiry may lie ahead: enough to offer, accept and verify.
pub const MIN_ENVELOPE_TTL: Duration = Duration::from_secs(60);
/// An invoice named at intent time must stay valid at least this long.
const INTENT_INVOICE_MIN_REMAINING: Duration = Duration::from_secs(60);
/// An invoice paid at settlement must stay valid at least this long, so the payment can complete.
const SETTLE_INVOICE_MIN_REMAINING: Duration = Duration::from_secs(30);
/// How long a settle call waits at the executor before answering that the payment is in flight.
const PAY_WAIT_MS: u32 = 20_000;
/// Losses underwriting looks at: the most recent ones. Older losses weigh at most
/// 2^-(age / half-life) of their amount, and a thousand bounds the query.
pub const MAX_LOSSES: u32 = 1_000;
/// Envelopes expired per sweep transaction batch, and re-driven per batch at start-up.
const BATCH: u32 = 200;
const DAY_MS: u64 = 86_400_000;

/// Where an envelope stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Intent,
    Offered,
    Issued,
    Settling,
    Settled,
    Defaulted,
    Expired,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Intent,
        State::Offered,
        State::Issued,
        State::Settling,
        State::Settled,
        State::Defaulted,
        State::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Intent => "intent",
            State::Offered => "offered",
            State::Issued => "issued",
            State::Settling => "settling",
            State::Settled => "settled",
            State::Defaulted => "defaulted",
            State::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The transitions of the state machine (module docs).
    pub fn can_become(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Intent, Offered)
                | (Offered, Offered)
                | (Offered, Issued)
                | (Issued, Settling)
                | (Issued, Defaulted)
                | (Issued, Expired)
                | (Settling, Settled)
                | (Settling, Issued)
        )
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Settled | State::Defaulted | State::Expired)
    }

    fn to_proto(self) -> hydra::EnvelopeState {
        match self {
            State::Intent => hydra::EnvelopeState::Intent,
            State::Offered => hydra::EnvelopeState::Offered,
            State::Issued => hydra::EnvelopeState::Issued,
            State::Settling => hydra::EnvelopeState::Settling,
            State::Settled => hydra::EnvelopeState::Settled,
            State::Defaulted => hydra::EnvelopeState::Defaulted,
            State::Expired => hydra::EnvelopeState::Expired,
        }
    }
}

/// Asserts that `from -> to` is a transition of the machine before the guarded update makes it.
fn step(from: State, to: State) -> Result<(), HydraError> {
    if from.can_become(to) {
        Ok(())
    } else {
        Err(corrupt(&format!(
            "envelope transition {} -> {} is not in the state machine",
            from.as_str(),
            to.as_str()
        )))
    }
}

fn row_state(row: &EnvelopeRow) -> Result<State, HydraError> {
    State::parse(&row.state).ok_or_else(|| corrupt(&format!("envelope state {}", row.state)))
}

/// The refusal for a step that needs another state than `state` (an expired envelope says so
/// with its own code).
fn not_issued(state: State) -> HydraError {
    match state {
        State::Expired => HydraError::EnvelopeExpired,
        _ => HydraError::EnvelopeState {
            state: state.as_str().to_owned(),
        },
    }
}

#[derive(Clone, Debug)]
pub struct CreditConfig {
    pub network: Network,
    pub terms: Terms,
    pub offer_ttl: Duration,
    pub max_envelope_ttl: Duration,
    pub max_open_envelopes: u64,
    pub sweep_interval: Duration,
    /// Trusted Aegis receipt key ids (hex); empty trusts the key a receipt names once its
    /// signature verifies (development).
    pub aegis_keys: Vec<String>,
}

pub struct Credit {
    pub db: Db,
    pub executor: Arc<dyn Executor>,
    pub verifications: Option<Arc<dyn Verifications>>,
    pub log: ReceiptLog,
    pub clock: Arc<dyn Clock>,
    pub config: CreditConfig,
    pub liquidity: Arc<Liquidity>,
    pub risk: Arc<Risk>,
    tracker: Arc<Tracker>,
}

#[derive(Serialize)]
struct IssueBody<'a> {
    envelope_id: &'a str,
    offer_id: &'a str,
    agent_id: &'a str,
    provider_id: &'a str,
    scope: &'a str,
    cap_msat: Msat,
    limit_msat: Msat,
    #[serde(with = "oa_receipts::u64_string")]
    fee_bps: u64,
    fee_msat: Msat,
    weighted_losses_msat: Msat,
    settled_volume_msat: Msat,
    #[serde(with = "oa_receipts::u64_string")]
    settled_count: u64,
    #[serde(with = "oa_receipts::u64_string")]
    losses_count: u64,
    open_exposure_msat: Msat,
    #[serde(with = "oa_receipts::u64_string")]
    expires_at_ms: u64,
    reservation_transfer: String,
}

#[derive(Serialize)]
struct SettlementBody<'a> {
    envelope_id: &'a str,
    agent_id: &'a str,
    provider_id: &'a str,
    scope: &'a str,
    status: &'static str,
    payment_hash: &'a str,
    amount_msat: Msat,
    /// The routing fee of the provider payment.
    fee_msat: Msat,
    credit_fee_msat: Msat,
    cap_msat: Msat,
    posted_msat: Msat,
    released_msat: Msat,
    preimage: &'a str,
    verification_id: &'a str,
    verification_verdict: &'static str,
    verification_receipt: String,
    executor_receipt: String,
    issue_receipt: &'a str,
}

#[derive(Serialize)]
struct DefaultBody<'a> {
    envelope_id: &'a str,
    agent_id: &'a str,
    provider_id: &'a str,
    scope: &'a str,
    /// `defaulted` or `expired`.
    status: &'static str,
    /// `verification_failed` or `expired`.
    reason: &'static str,
    cap_msat: Msat,
    released_msat: Msat,
    loss_msat: Msat,
    #[serde(skip_serializing_if = "Option::is_none")]
    verification_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verification_verdict: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verification_receipt: Option<String>,
    issue_receipt: &'a str,
}

fn to_json<T: Serialize>(v: &T) -> Result<String, HydraError> {
    serde_json::to_string(v).map_err(|e| corrupt(&e.to_string()))
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// What a verification must name as its subject, if it names one.
pub fn subject_ref(envelope_id: &str) -> String {
    format!("hydra:envelope:{envelope_id}")
}

fn to_history(h: &store::AgentHistory, now_ms: u64) -> underwriting::History {
    underwriting::History {
        settled_volume: h.settled_volume,
        settled_count: h.settled_count,
        losses: h
            .losses
            .iter()
            .map(|&(amount, ended_at_ms)| underwriting::Loss {
                amount,
                age_days: u32::try_from(now_ms.saturating_sub(ended_at_ms) / DAY_MS)
                    .unwrap_or(u32::MAX),
            })
            .collect(),
        open_exposure: h.open_exposure,
    }
}

fn denial(d: underwriting::Denial) -> HydraError {
    HydraError::CreditDenied {
        reason_code: d.reason_code(),
        message: d.to_string(),
    }
}

impl Credit {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        executor: Arc<dyn Executor>,
        verifications: Option<Arc<dyn Verifications>>,
        log: ReceiptLog,
        clock: Arc<dyn Clock>,
        config: CreditConfig,
        liquidity: Arc<Liquidity>,
        risk: Arc<Risk>,
    ) -> Self {
        Self {
            db,
            executor,
            verifications,
            log,
            clock,
            config,
            liquidity,
            risk,
            tracker: Arc::new(Tracker::new()),
        }
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, HydraError> {
        Ok(self.db.reader().await?)
    }

    /// `POST /v1/credit/intent`.
    pub async fn intent(
        &self,
        caller: &str,
        req: hydra::CreditIntentRequest,
    ) -> Result<hydra::CreditIntentResponse, HydraError> {
        idempotency::validate_key(&req.idempotency_key)?;
        validate::agent_id(&req.agent_id)?;
        let provider = req
            .provider
            .as_ref()
            .ok_or_else(|| invalid("INVALID_PROVIDER", "provider is required"))?;
        validate::id(
            "INVALID_PROVIDER",
            "provider.provider_id",
            &provider.provider_id,
            validate::MAX_ID_LEN,
        )?;
        validate::text("INVALID_SCOPE", "scope", &req.scope, MAX_SCOPE_LEN)?;
        let cap = validate::positive_msat("INVALID_CAP", "cap_msat", req.cap_msat)?;
        if cap > self.config.terms.max_limit {
            return Err(invalid(
                "INVALID_CAP",
                format!(
                    "cap_msat is above the largest credit Hydra extends ({} msat)",
                    self.config.terms.max_limit.as_u64()
                ),
            ));
        }
        let now = self.clock.now_ms();
        let min_ms = u64::try_from(MIN_ENVELOPE_TTL.as_millis()).unwrap_or(u64::MAX);
        let max_ms = u64::try_from(self.config.max_envelope_ttl.as_millis()).unwrap_or(u64::MAX);
        if req.expires_at_ms < now.saturating_add(min_ms)
            || req.expires_at_ms > now.saturating_add(max_ms)
        {
            return Err(invalid(
                "INVALID_EXPIRY",
                format!(
                    "expires_at_ms must lie between {} s and {} s from now",
                    MIN_ENVELOPE_TTL.as_secs(),
                    self.config.max_envelope_ttl.as_secs()
                ),
            ));
        }
        let mut pubkey = None;
        if !provider.node_pubkey.is_empty() {
            validate::node_pubkey("INVALID_PROVIDER", &provider.node_pubkey)?;
            pubkey = Some(provider.node_pubkey.clone());
        }
        let mut invoice = None;
        if !provider.invoice.is_empty() {
            let decoded = oa_invoice::decode(&provider.invoice)?;
            let policy = InvoicePolicy {
                network: self.config.network,
                max_amount: Msat::MAX,
                min_expiry_remaining: INTENT_INVOICE_MIN_REMAINING,
            };
            // An amountless invoice is checked as if paid in full; its amount is named at settle.
            let valid = oa_invoice::validate(
                &provider.invoice,
                &policy,
                now,
                decoded.amount.is_none().then_some(cap),
            )?;
            if decoded.amount.is_some_and(|a| a > cap) {
                return Err(invalid(
                    "CAP_EXCEEDED",
                    "the provider's invoice is for more than cap_msat",
                ));
            }
            if pubkey.as_ref().is_some_and(|p| *p != valid.payee_pubkey) {
                return Err(invalid(
                    "PAYEE_MISMATCH",
                    "the invoice is payable to another node than provider.node_pubkey",
                ));
            }
            pubkey = Some(valid.payee_pubkey);
            invoice = Some(valid.bolt11);
        }
        let row = EnvelopeRow {
            envelope_id: new_id("env"),
            caller: caller.to_owned(),
            agent_id: req.agent_id.clone(),
            provider_id: provider.provider_id.clone(),
            provider_invoice: invoice,
            provider_pubkey: pubkey,
            scope: req.scope.clone(),
            requested_cap: cap,
            expires_at_ms: req.expires_at_ms,
            state: State::Intent.as_str().into(),
            created_at_ms: now,
            updated_at_ms: now,
            offer: None,
            issued_at_ms: None,
            issue_receipt_hash: None,
            settle_idempotency_scope: None,
            settle_idempotency_key: None,
            verification_id: None,
            verification_receipt: None,
            payment_invoice: None,
            payment_hash: None,
            payment_amount: None,
            payment_fee_limit: None,
            routing_fee: None,
            preimage: None,
            executor_receipt: None,
            failure_code: None,
            failure_reason: None,
            ended_at_ms: None,
            default_reason: None,
            end_receipt_hash: None,
        };
        let scope = format!("hydra.credit.intent/{caller}");
        let fingerprint = idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if let Some(done) =
            claim_or_replay(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(done);
        }
        store::insert_intent(&mut tx, &row).await?;
        let response = hydra::CreditIntentResponse {
            envelope: Some(to_envelope(&row)?),
        };
        idempotency::complete(
            &mut tx,
            &scope,
            &req.idempotency_key,
            200,
            &to_json(&response)?,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// `POST /v1/credit/offer`: underwrites the intent from the agent's history.
    pub async fn offer(
        &self,
        caller: &str,
        req: hydra::CreditOfferRequest,
    ) -> Result<hydra::CreditOfferResponse, HydraError> {
        idempotency::validate_key(&req.idempotency_key)?;
        validate::id(
            "INVALID_ENVELOPE_ID",
            "envelope_id",
            &req.envelope_id,
            validate::MAX_ID_LEN,
        )?;
        let now = self.clock.now_ms();
        let scope = format!("hydra.credit.offer/{caller}");
        let fingerprint = idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if let Some(done) =
            claim_or_replay(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(done);
        }
        // Refusals below return early; dropping the transaction rolls the claim back, so nothing
        // is recorded and the key stays free.
        let row = store::get(&mut tx, &req.envelope_id)
            .await?
            .filter(|r| r.caller == caller)
            .ok_or(HydraError::EnvelopeNotFound)?;
        let state = row_state(&row)?;
        let previous = match (state, &row.offer) {
            (State::Intent, _) => None,
            (State::Offered, Some(o)) if o.expires_at_ms > now => {
                return Err(HydraError::OfferLive);
            }
            (State::Offered, Some(o)) => Some(o.offer_id.clone()),
            (other, _) => return Err(not_issued(other)),
        };
        step(state, State::Offered)?;
        if row.expires_at_ms <= now {
            return Err(HydraError::EnvelopeExpired);
        }
        self.risk.allow_new_envelopes(&mut tx, now).await?;
        let hist = store::history(&mut tx, &row.agent_id, MAX_LOSSES).await?;
        let o = underwriting::offer(
            &self.config.terms,
            &to_history(&hist, now),
            row.requested_cap,
        )
        .map_err(denial)?;
        if let Some(inv) = &row.provider_invoice
            && oa_invoice::decode(inv)?.amount.is_some_and(|a| a > o.cap)
        {
            return Err(HydraError::CreditDenied {
                reason_code: "LIMIT_BELOW_INVOICE",
                message: format!(
                    "the agent's limit allows {} msat, less than the provider's invoice",
                    o.cap.as_u64()
                ),
            });
        }
        let ttl_ms = u64::try_from(self.config.offer_ttl.as_millis()).unwrap_or(u64::MAX);
        let inputs = hydra::UnderwritingInputs {
            settled_volume_msat: hist.settled_volume.as_u64(),
            settled_count: hist.settled_count,
            losses_count: hist.losses.len() as u64,
            open_exposure_msat: hist.open_exposure.as_u64(),
        };
        let offer = OfferRow {
            offer_id: new_id("ofr"),
            cap: o.cap,
            limit: o.limit,
            fee_bps: o.fee_bps,
            fee: o.fee,
            weighted_losses: o.weighted_losses,
            inputs: to_json(&inputs)?,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl_ms).min(row.expires_at_ms),
        };
        if !store::set_offer(&mut tx, &row.envelope_id, previous.as_deref(), &offer, now).await? {
            return Err(HydraError::OfferLive);
        }
        let row = store::get(&mut tx, &row.envelope_id)
            .await?
            .ok_or(HydraError::EnvelopeNotFound)?;
        let response = hydra::CreditOfferResponse {
            envelope: Some(to_envelope(&row)?),
        };
        idempotency::complete(
            &mut tx,
            &scope,
            &req.idempotency_key,
            200,
            &to_json(&response)?,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// `POST /v1/credit/envelope`: accepts a live offer, reserving its cap from the pool.
    pub async fn accept(
        &self,
        caller: &str,
        req: hydra::CreditEnvelopeRequest,
    ) -> Result<hydra::CreditEnvelopeResponse, HydraError> {
        idempotency::validate_key(&req.idempotency_key)?;
        validate::id(
            "INVALID_OFFER_ID",
            "offer_id",
            &req.offer_id,
            validate::MAX_ID_LEN,
        )?;
        let now = self.clock.now_ms();
        let scope = format!("hydra.credit.envelope/{caller}");
        let fingerprint = idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if let Some(done) =
            claim_or_replay(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(done);
        }
        let row = store::get_by_offer(&mut tx, &req.offer_id)
            .await?
            .filter(|r| r.caller == caller)
            .ok_or(HydraError::OfferNotFound)?;
        let state = row_state(&row)?;
        if state != State::Offered {
            return Err(HydraError::OfferAlreadyUsed);
        }
        step(state, State::Issued)?;
        let offer = row
            .offer
            .clone()
            .ok_or_else(|| corrupt("offered envelope without an offer"))?;
        if offer.expires_at_ms <= now {
            return Err(HydraError::OfferExpired);
        }
        if row.expires_at_ms <= now {
            return Err(HydraError::EnvelopeExpired);
        }
        self.risk.allow_new_envelopes(&mut tx, now).await?;
        // Takes the agent's row lock: from here to commit, no other envelope of this agent is
        // issued, so the limit re-check below sees every open envelope.
        if !store::take_slot(&mut tx, &row.agent_id, self.config.max_open_envelopes, now).await? {
            return Err(HydraError::TooManyOpenEnvelopes {
                max: self.config.max_open_envelopes,
            });
        }
        let hist = store::history(&mut tx, &row.agent_id, MAX_LOSSES).await?;
        let now_offer = underwriting::offer(&self.config.terms, &to_history(&hist, now), offer.cap)
            .map_err(denial)?;
        if now_offer.cap < offer.cap {
            return Err(HydraError::CreditDenied {
                reason_code: "CREDIT_LIMIT_EXHAUSTED",
                message: format!(
                    "the agent's limit is now {} msat, below the offer's cap",
                    now_offer.limit.as_u64()
                ),
            });
        }
        if !store::issue(&mut tx, &offer.offer_id, now).await? {
            return Err(HydraError::OfferExpired);
        }
        match book::reserve_envelope(&mut tx, &row.agent_id, &row.envelope_id, offer.cap, now)
            .await?
        {
            Ok(()) => {}
            Err(book::Refusal::PoolExhausted) => return Err(HydraError::PoolExhausted),
        }
        let body = IssueBody {
            envelope_id: &row.envelope_id,
            offer_id: &offer.offer_id,
            agent_id: &row.agent_id,
            provider_id: &row.provider_id,
            scope: &row.scope,
            cap_msat: offer.cap,
            limit_msat: offer.limit,
            fee_bps: u64::from(offer.fee_bps),
            fee_msat: offer.fee,
            weighted_losses_msat: offer.weighted_losses,
            settled_volume_msat: hist.settled_volume,
            settled_count: hist.settled_count,
            losses_count: hist.losses.len() as u64,
            open_exposure_msat: hist.open_exposure,
            expires_at_ms: row.expires_at_ms,
            reservation_transfer: book::reservation_id(&row.envelope_id),
        };
        let receipt = self
            .log
            .append(
                &mut tx,
                ReceiptDraft {
                    schema: ISSUE_SCHEMA.into(),
                    receipt_id: new_id("rcpt"),
                    idempotency_key: req.idempotency_key.clone(),
                    links: vec![],
                    body: oa_receipts::body_from(&body)?,
                },
                now,
            )
            .await?;
        store::set_issue_receipt(&mut tx, &row.envelope_id, &receipt.hash.to_string()).await?;
        journal::append(
            &mut tx,
            TOPIC,
            "envelope_issued",
            &serde_json::json!({"envelope_id": row.envelope_id, "agent_id": row.agent_id, "cap_msat": offer.cap, "receipt_hash": receipt.hash.to_string()}),
            now,
        )
        .await?;
        let row = store::get(&mut tx, &row.envelope_id)
            .await?
            .ok_or(HydraError::EnvelopeNotFound)?;
        let response = hydra::CreditEnvelopeResponse {
            envelope: Some(to_envelope(&row)?),
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
        };
        idempotency::complete(
            &mut tx,
            &scope,
            &req.idempotency_key,
            200,
            &to_json(&response)?,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// `POST /v1/credit/settle`: checks the verification with Aegis, then pays the provider (a
    /// passed verification) or defaults the envelope (a failed one).
    pub async fn settle(
        self: &Arc<Self>,
        caller: &str,
        req: hydra::CreditSettleRequest,
    ) -> Result<hydra::CreditSettleResponse, HydraError> {
        idempotency::validate_key(&req.idempotency_key)?;
        validate::id(
            "INVALID_ENVELOPE_ID",
            "envelope_id",
            &req.envelope_id,
            validate::MAX_ID_LEN,
        )?;
        validate::id(
            "INVALID_VERIFICATION_ID",
            "verification_id",
            &req.verification_id,
            validate::MAX_ID_LEN,
        )?;
        let vhash = Hash::parse(&req.verification_receipt_hash).map_err(|_| {
            invalid(
                "INVALID_HASH",
                "verification_receipt_hash must be sha256: followed by 64 lowercase hex digits",
            )
        })?;
        let amount_override = match req.amount_msat {
            0 => None,
            v => Some(validate::msat("INVALID_REQUEST", "amount_msat", v)?),
        };
        if !req.invoice.is_empty() {
            // Checked here as well as below, so a malformed invoice is a 400 in every state.
            oa_invoice::decode(&req.invoice)?;
        }
        let scope = format!("hydra.credit.settle/{caller}");
        let fingerprint = idempotency::fingerprint(&req)?;
        let now = self.clock.now_ms();
        let row = store::get(&mut *self.conn().await?, &req.envelope_id)
            .await?
            .filter(|r| r.caller == caller)
            .ok_or(HydraError::EnvelopeNotFound)?;
        let state = row_state(&row)?;
        if state != State::Issued || row.expires_at_ms <= now {
            let refusal = if state == State::Issued {
                HydraError::EnvelopeExpired
            } else {
                not_issued(state)
            };
            return self
                .replay_or(&scope, &req.idempotency_key, &fingerprint, &row, refusal)
                .await;
        }
        let offer = row
            .offer
            .clone()
            .ok_or_else(|| corrupt("issued envelope without an offer"))?;
        let bolt11 = match (req.invoice.as_str(), row.provider_invoice.as_deref()) {
            ("", Some(inv)) => inv.to_owned(),
            ("", None) => {
                return Err(invalid(
                    "INVOICE_REQUIRED",
                    "the intent named no invoice: settle must carry the provider's invoice",
                ));
            }
            (inv, _) => inv.to_owned(),
        };
        let policy = InvoicePolicy {
            network: self.config.network,
            max_amount: Msat::MAX,
            min_expiry_remaining: SETTLE_INVOICE_MIN_REMAINING,
        };
        let inv = oa_invoice::validate(&bolt11, &policy, now, amount_override)?;
        if inv.amount > offer.cap {
            return Err(HydraError::CapExceeded {
                amount_msat: inv.amount.as_u64(),
                cap_msat: offer.cap.as_u64(),
            });
        }
        if row
            .provider_pubkey
            .as_ref()
            .is_some_and(|p| *p != inv.payee_pubkey)
        {
            return Err(HydraError::PayeeMismatch);
        }
        let verifications = self
            .verifications
            .as_ref()
            .ok_or(HydraError::AegisNotConfigured)?;
        let answer = verifications
            .get(&req.verification_id)
            .await
            .map_err(HydraError::Aegis)?
            .ok_or(HydraError::VerificationNotFound)?;
        let (vreceipt, verdict) = aegis::check(
            &answer,
            &req.verification_id,
            &vhash,
            &row.scope,
            &subject_ref(&row.envelope_id),
            &self.config.aegis_keys,
        )
        .map_err(|p| match p {
            aegis::Problem::Pending => HydraError::VerificationPending,
            aegis::Problem::Mismatch(m) => HydraError::VerificationMismatch(m),
            aegis::Problem::BadReceipt(m) => HydraError::BadAegisReceipt(m),
        })?;
        let vjson = to_json(&vreceipt)?;
        if verdict == Verdict::Failed {
            return self
                .default_on_failed_verification(&row, &req, &scope, &fingerprint, &vreceipt, &vjson)
                .await;
        }
        // Only paying is halted by a breaker; a default (above) only removes risk.
        self.risk.allow_settlement(inv.amount).await?;
        let max_fee = offer
            .cap
            .checked_sub(inv.amount)
            .map_err(|e| corrupt(&e.to_string()))?;
        let fee_limit = self.liquidity.fee_limit(inv.amount, max_fee);
        let now = self.clock.now_ms();
        let mut tx = self.db.begin().await?;
        match idempotency::claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await? {
            Claim::Conflict => return Err(HydraError::IdempotencyConflict),
            Claim::Replay { response, .. } => return replay(&response),
            Claim::InProgress { .. } => {
                tx.rollback().await?;
                return self.current(&row.envelope_id).await;
            }
            Claim::New => {}
        }
        step(State::Issued, State::Settling)?;
        let start = SettleStart {
            idempotency_scope: &scope,
            idempotency_key: &req.idempotency_key,
            verification_id: &req.verification_id,
            verification_receipt: &vjson,
            invoice: &inv.bolt11,
            payment_hash: &inv.payment_hash.to_string(),
            amount: inv.amount,
            fee_limit,
        };
        if !store::start_settling(&mut tx, &row.envelope_id, &start, now).await? {
            // Another settle won the race, or the envelope expired since it was read.
            let current = store::get(&mut tx, &row.envelope_id)
                .await?
                .ok_or(HydraError::EnvelopeNotFound)?;
            tx.rollback().await?;
            let state = row_state(&current)?;
            return Err(if state == State::Issued {
                HydraError::EnvelopeExpired
            } else {
                not_issued(state)
            });
        }
        idempotency::set_resource(&mut tx, &scope, &req.idempotency_key, &row.envelope_id).await?;
        journal::append(
            &mut tx,
            TOPIC,
            "envelope_settling",
            &serde_json::json!({"envelope_id": row.envelope_id, "payment_hash": inv.payment_hash.to_string(), "verification_id": req.verification_id}),
            now,
        )
        .await?;
        tx.commit().await?;
        self.drive(&row.envelope_id).await?;
        self.current(&row.envelope_id).await
    }

    /// A settle that cannot proceed: replays the key's stored answer if it has one (the key was
    /// used before), else gives `refusal`. Records nothing.
    async fn replay_or(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        row: &EnvelopeRow,
        refusal: HydraError,
    ) -> Result<hydra::CreditSettleResponse, HydraError> {
        let now = self.clock.now_ms();
        let mut tx = self.db.begin().await?;
        match idempotency::claim(&mut tx, scope, key, fingerprint, now).await? {
            Claim::Conflict => Err(HydraError::IdempotencyConflict),
            Claim::Replay { response, .. } => replay(&response),
            Claim::InProgress { .. } => {
                tx.rollback().await?;
                self.current(&row.envelope_id).await
            }
            Claim::New => {
                tx.rollback().await?;
                Err(refusal)
            }
        }
    }

    /// `issued -> defaulted` on a failed verification, with its receipt, in one transaction.
    async fn default_on_failed_verification(
        &self,
        row: &EnvelopeRow,
        req: &hydra::CreditSettleRequest,
        scope: &str,
        fingerprint: &str,
        vreceipt: &Receipt,
        vjson: &str,
    ) -> Result<hydra::CreditSettleResponse, HydraError> {
        let now = self.clock.now_ms();
        let mut tx = self.db.begin().await?;
        match idempotency::claim(&mut tx, scope, &req.idempotency_key, fingerprint, now).await? {
            Claim::Conflict => return Err(HydraError::IdempotencyConflict),
            Claim::Replay { response, .. } => return replay(&response),
            Claim::InProgress { .. } => {
                tx.rollback().await?;
                return self.current(&row.envelope_id).await;
            }
            Claim::New => {}
        }
        step(State::Issued, State::Defaulted)?;
        if !store::default_failed_verification(
            &mut tx,
            &row.envelope_id,
            &req.verification_id,
            vjson,
            (scope, &req.idempotency_key),
            now,
        )
        .await?
        {
            let current = store::get(&mut tx, &row.envelope_id)
                .await?
                .ok_or(HydraError::EnvelopeNotFound)?;
            tx.rollback().await?;
            return Err(not_issued(row_state(&current)?));
        }
        let receipt = self
            .end_without_payment(
                &mut tx,
                row,
                State::Defaulted,
                Some(vreceipt),
                &req.idempotency_key,
                now,
            )
            .await?;
        let row = store::get(&mut tx, &row.envelope_id)
            .await?
            .ok_or(HydraError::EnvelopeNotFound)?;
        let response = settle_response(&mut tx, &row).await?;
        debug_assert_eq!(
            response.receipt.as_ref().map(|r| r.hash.clone()),
            Some(receipt.hash.to_string())
        );
        idempotency::complete(
            &mut tx,
            scope,
            &req.idempotency_key,
            200,
            &to_json(&response)?,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// The common end of a default or an expiry (after its guarded update): the agent's slot
    /// back, the reservation voided, the default receipt and the event.
    async fn end_without_payment(
        &self,
        conn: &mut AnyConnection,
        row: &EnvelopeRow,
        to: State,
        vreceipt: Option<&Receipt>,
        idempotency_key: &str,
        now: u64,
    ) -> Result<Receipt, HydraError> {
        let offer = row
            .offer
            .as_ref()
            .ok_or_else(|| corrupt("issued envelope without an offer"))?;
        let issue = row
            .issue_receipt_hash
            .as_deref()
            .ok_or_else(|| corrupt("issued envelope without its issue receipt"))?;
        store::release_slot(conn, &row.agent_id, now).await?;
        book::release_envelope(conn, &row.envelope_id, now).await?;
        let (status, reason) = match to {
            State::Expired => ("expired", "expired"),
            _ => ("defaulted", "verification_failed"),
        };
        let body = DefaultBody {
            envelope_id: &row.envelope_id,
            agent_id: &row.agent_id,
            provider_id: &row.provider_id,
            scope: &row.scope,
            status,
            reason,
            cap_msat: offer.cap,
            released_msat: offer.cap,
            loss_msat: offer.cap,
            verification_id: vreceipt
                .and_then(|r| r.body.get("verification_id"))
                .and_then(|v| v.as_str()),
            verification_verdict: vreceipt.map(|_| Verdict::Failed.as_str()),
            verification_receipt: vreceipt.map(|r| r.hash.to_string()),
            issue_receipt: issue,
        };
        let mut links = vec![Hash::parse(issue).map_err(|e| corrupt(&e.to_string()))?];
        links.extend(vreceipt.map(|r| r.hash));
        let receipt = self
            .log
            .append(
                conn,
                ReceiptDraft {
                    schema: DEFAULT_SCHEMA.into(),
                    receipt_id: new_id("rcpt"),
                    idempotency_key: idempotency_key.to_owned(),
                    links,
                    body: oa_receipts::body_from(&body)?,
                },
                now,
            )
            .await?;
        store::set_end_receipt(conn, &row.envelope_id, &receipt.hash.to_string()).await?;
        journal::append(
            conn,
            TOPIC,
            if to == State::Expired { "envelope_expired" } else { "envelope_defaulted" },
            &serde_json::json!({"envelope_id": row.envelope_id, "agent_id": row.agent_id, "reason": reason, "receipt_hash": receipt.hash.to_string()}),
            now,
        )
        .await?;
        Ok(receipt)
    }

    /// Drives an envelope in `settling`: one attempt now, then the tracker if it is not terminal.
    async fn drive(self: &Arc<Self>, envelope_id: &str) -> Result<(), HydraError> {
        match self.attempt(envelope_id).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.spawn_tracker(envelope_id.to_owned());
                Ok(())
            }
            Err(HydraError::Executor(e)) => {
                tracing::warn!(%envelope_id, code = %e.code, "executor did not answer; tracking");
                self.spawn_tracker(envelope_id.to_owned());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Asks the executor for the settlement's payment and records a terminal answer. Safe to
    /// repeat: the idempotency key derives from the envelope and the payment hash.
    async fn attempt(&self, envelope_id: &str) -> Result<bool, HydraError> {
        let row = store::get(&mut *self.conn().await?, envelope_id)
            .await?
            .ok_or(HydraError::EnvelopeNotFound)?;
        if row_state(&row)? != State::Settling {
            return Ok(true);
        }
        let (Some(invoice), Some(hash), Some(amount), Some(fee_limit)) = (
            row.payment_invoice.clone(),
            row.payment_hash.clone(),
            row.payment_amount,
            row.payment_fee_limit,
        ) else {
            return Err(corrupt("settling envelope without its payment"));
        };
        let req = wallet::PayInvoiceRequest {
            idempotency_key: format!("hydra:envelope:{envelope_id}:{hash}"),
            invoice,
            amount_msat: amount.as_u64(),
            fee_limit_msat: fee_limit.as_u64(),
            timeout_ms: PAY_WAIT_MS,
        };
        match self.executor.pay(req).await {
            Ok(resp) => match resp.payment.as_ref().map(wallet::WalletPayment::status) {
                Some(wallet::PaymentStatus::Succeeded | wallet::PaymentStatus::Failed) => {
                    self.finish(&row, &hash, amount, &resp).await?;
                    Ok(true)
                }
                _ => Ok(false),
            },
            // The executor refused the payment itself (its caps, a hash paid before, ...): nothing
            // was sent, and the envelope goes back to issued with the executor's code.
            Err(e)
                if !e.retryable && e.status.is_client_error() && e.code != "PAYMENT_IN_FLIGHT" =>
            {
                self.record_failed(&row, &hash, &e.code, &e.message, None)
                    .await?;
                Ok(true)
            }
            Err(e) => Err(HydraError::Executor(e)),
        }
    }

    async fn finish(
        &self,
        row: &EnvelopeRow,
        hash: &str,
        amount: Msat,
        resp: &wallet::PaymentResponse,
    ) -> Result<(), HydraError> {
        let payment = resp
            .payment
            .as_ref()
            .ok_or_else(|| HydraError::BadExecutorReceipt("no payment".into()))?;
        let proto = resp.receipt.as_ref().ok_or_else(|| {
            HydraError::BadExecutorReceipt("terminal payment without a receipt".into())
        })?;
        let receipt = crate::executor::check_receipt(
            &self.liquidity.executor_keys,
            hash,
            amount,
            payment,
            proto,
        )
        .map_err(HydraError::BadExecutorReceipt)?;
        if payment.status() == wallet::PaymentStatus::Succeeded {
            let fee = Msat::new(payment.fee_msat)
                .map_err(|e| HydraError::BadExecutorReceipt(e.to_string()))?;
            self.record_settled(row, hash, amount, fee, &payment.preimage, &receipt)
                .await
        } else {
            self.record_failed(
                row,
                hash,
                &payment.failure_code,
                &payment.failure_reason,
                Some(&receipt),
            )
            .await
        }
    }

    /// `settling -> settled`: posts the used part and the credit fee, releases the rest, issues
    /// the settlement receipt and stores the settle's answer, in one transaction.
    async fn record_settled(
        &self,
        row: &EnvelopeRow,
        hash: &str,
        amount: Msat,
        fee: Msat,
        preimage: &str,
        exec: &Receipt,
    ) -> Result<(), HydraError> {
        let now = self.clock.now_ms();
        let offer = row
            .offer
            .as_ref()
            .ok_or_else(|| corrupt("settling envelope without an offer"))?;
        let used = amount
            .checked_add(fee)
            .map_err(|e| corrupt(&e.to_string()))?;
        // The fee limit was what the cap left after the amount, so this holds unless the executor
        // overspent its limit; then the envelope must not post more than it reserved.
        if used > offer.cap {
            return Err(HydraError::BadExecutorReceipt(format!(
                "amount + fee {} msat exceeds the envelope's cap {} msat",
                used.as_u64(),
                offer.cap.as_u64()
            )));
        }
        let released = offer
            .cap
            .checked_sub(used)
            .map_err(|e| corrupt(&e.to_string()))?;
        let exec_json = to_json(exec)?;
        let mut tx = self.db.begin().await?;
        step(State::Settling, State::Settled)?;
        if !store::finish_settled(
            &mut tx,
            &row.envelope_id,
            hash,
            fee,
            preimage,
            &exec_json,
            now,
        )
        .await?
        {
            tx.rollback().await?;
            return Ok(());
        }
        store::release_slot(&mut tx, &row.agent_id, now).await?;
        book::settle_envelope(
            &mut tx,
            &row.agent_id,
            &row.envelope_id,
            used,
            offer.fee,
            now,
        )
        .await?;
        store::record_payment_outcome(
            &mut tx,
            OUTCOME_SOURCE,
            &format!("{}:{hash}", row.envelope_id),
            hash,
            true,
            amount,
            now,
        )
        .await?;
        self.liquidity
            .routing
            .learn(&mut tx, hash, amount, true, now)
            .await?;
        let vjson = row
            .verification_receipt
            .as_deref()
            .ok_or_else(|| corrupt("settling envelope without its verification"))?;
        let vreceipt: Receipt = serde_json::from_str(vjson).map_err(|e| corrupt(&e.to_string()))?;
        let issue = row
            .issue_receipt_hash
            .as_deref()
            .ok_or_else(|| corrupt("issued envelope without its issue receipt"))?;
        let body = SettlementBody {
            envelope_id: &row.envelope_id,
            agent_id: &row.agent_id,
            provider_id: &row.provider_id,
            scope: &row.scope,
            status: "settled",
            payment_hash: hash,
            amount_msat: amount,
            fee_msat: fee,
            credit_fee_msat: offer.fee,
            cap_msat: offer.cap,
            posted_msat: used,
            released_msat: released,
            preimage,
            verification_id: row.verification_id.as_deref().unwrap_or_default(),
            verification_verdict: Verdict::Passed.as_str(),
            verification_receipt: vreceipt.hash.to_string(),
            executor_receipt: exec.hash.to_string(),
            issue_receipt: issue,
        };
        let receipt = self
            .log
            .append(
                &mut tx,
                ReceiptDraft {
                    schema: SETTLEMENT_SCHEMA.into(),
                    receipt_id: new_id("rcpt"),
                    idempotency_key: row.settle_idempotency_key.clone().unwrap_or_default(),
                    links: vec![
                        Hash::parse(issue).map_err(|e| corrupt(&e.to_string()))?,
                        vreceipt.hash,
                        exec.hash,
                    ],
                    body: oa_receipts::body_from(&body)?,
                },
                now,
            )
            .await?;
        store::set_end_receipt(&mut tx, &row.envelope_id, &receipt.hash.to_string()).await?;
        journal::append(
            &mut tx,
            TOPIC,
            "envelope_settled",
            &serde_json::json!({"envelope_id": row.envelope_id, "payment_hash": hash, "receipt_hash": receipt.hash.to_string()}),
            now,
        )
        .await?;
        self.complete_settle(&mut tx, row, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `settling -> issued` after the provider payment failed (or the executor refused it).
    async fn record_failed(
        &self,
        row: &EnvelopeRow,
        hash: &str,
        code: &str,
        reason: &str,
        exec: Option<&Receipt>,
    ) -> Result<(), HydraError> {
        let now = self.clock.now_ms();
        let exec_json = exec.map(to_json).transpose()?;
        let mut tx = self.db.begin().await?;
        step(State::Settling, State::Issued)?;
        if !store::payment_failed(
            &mut tx,
            &row.envelope_id,
            hash,
            code,
            reason,
            exec_json.as_deref(),
            now,
        )
        .await?
        {
            tx.rollback().await?;
            return Ok(());
        }
        // Only the network's answers count for the payment-failure breaker.
        if exec.is_some() {
            store::record_payment_outcome(
                &mut tx,
                OUTCOME_SOURCE,
                &format!("{}:{hash}", row.envelope_id),
                hash,
                false,
                row.payment_amount.unwrap_or(Msat::ZERO),
                now,
            )
            .await?;
            if let Some(amount) = row.payment_amount {
                self.liquidity
                    .routing
                    .learn(&mut tx, hash, amount, false, now)
                    .await?;
            }
        }
        journal::append(
            &mut tx,
            TOPIC,
            "envelope_payment_failed",
            &serde_json::json!({"envelope_id": row.envelope_id, "payment_hash": hash, "failure_code": code}),
            now,
        )
        .await?;
        self.complete_settle(&mut tx, row, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores the settle's final answer under its idempotency key.
    async fn complete_settle(
        &self,
        conn: &mut AnyConnection,
        row: &EnvelopeRow,
        now: u64,
    ) -> Result<(), HydraError> {
        let current = store::get(conn, &row.envelope_id)
            .await?
            .ok_or(HydraError::EnvelopeNotFound)?;
        let response = settle_response(conn, &current).await?;
        if let (Some(scope), Some(key)) =
            (&row.settle_idempotency_scope, &row.settle_idempotency_key)
        {
            idempotency::complete(conn, scope, key, 200, &to_json(&response)?, now).await?;
        }
        Ok(())
    }

    /// The envelope as a settle answers it now.
    pub async fn current(
        &self,
        envelope_id: &str,
    ) -> Result<hydra::CreditSettleResponse, HydraError> {
        let mut conn = self.conn().await?;
        let row = store::get(&mut conn, envelope_id)
            .await?
            .ok_or(HydraError::EnvelopeNotFound)?;
        settle_response(&mut conn, &row).await
    }

    pub fn spawn_tracker(self: &Arc<Self>, envelope_id: String) {
        let this = Arc::clone(self);
        let id = envelope_id.clone();
        self.tracker.spawn(envelope_id, move || {
            let (this, id) = (this.clone(), id.clone());
            async move { this.attempt(&id).await }
        });
    }

    /// After a restart: re-drive every envelope left in `settling`.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, HydraError> {
        let ids = store::settling(&mut *self.conn().await?, BATCH).await?;
        for id in &ids {
            self.spawn_tracker(id.clone());
        }
        Ok(ids.len())
    }

    /// Expires every issued envelope whose expiry has passed (by the clock), each in its own
    /// transaction with its default receipt. Returns how many it expired.
    pub async fn sweep_expired(&self) -> Result<usize, HydraError> {
        let mut expired = 0;
        loop {
            let now = self.clock.now_ms();
            let due = store::due_for_expiry(&mut *self.conn().await?, now, BATCH).await?;
            let full = due.len() == BATCH as usize;
            for id in &due {
                if self.expire_one(id).await? {
                    expired += 1;
                }
            }
            if !full {
                return Ok(expired);
            }
        }
    }

    async fn expire_one(&self, envelope_id: &str) -> Result<bool, HydraError> {
        let now = self.clock.now_ms();
        let mut tx = self.db.begin().await?;
        let Some(row) = store::get(&mut tx, envelope_id).await? else {
            return Ok(false);
        };
        if row_state(&row)? != State::Issued {
            return Ok(false);
        }
        step(State::Issued, State::Expired)?;
        if !store::expire(&mut tx, envelope_id, now).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        self.end_without_payment(
            &mut tx,
            &row,
            State::Expired,
            None,
            &format!("hydra:envelope:{envelope_id}:expire"),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Runs [`Credit::sweep_expired`] every `sweep_interval` until Hydra is dropped or its
    /// database closed. Time is the clock's, so tests move expiry with a manual clock.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = self.config.sweep_interval.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { break };
                if this.db.pool().is_closed() {
                    break;
                }
                if let Err(e) = this.sweep_expired().await {
                    tracing::warn!("envelope expiry sweep failed, will retry: {e}");
                }
            }
        });
    }
}

fn to_offer(o: &OfferRow) -> hydra::CreditOffer {
    hydra::CreditOffer {
        offer_id: o.offer_id.clone(),
        cap_msat: o.cap.as_u64(),
        limit_msat: o.limit.as_u64(),
        fee_bps: o.fee_bps,
        fee_msat: o.fee.as_u64(),
        weighted_losses_msat: o.weighted_losses.as_u64(),
        created_at_ms: o.created_at_ms,
        expires_at_ms: o.expires_at_ms,
        inputs: oa_service::parse_json(o.inputs.as_bytes()).ok(),
    }
}

pub fn to_envelope(row: &EnvelopeRow) -> Result<hydra::Envelope, HydraError> {
    let state = row_state(row)?;
    Ok(hydra::Envelope {
        envelope_id: row.envelope_id.clone(),
        agent_id: row.agent_id.clone(),
        provider: Some(hydra::Provider {
            provider_id: row.provider_id.clone(),
            invoice: row.provider_invoice.clone().unwrap_or_default(),
            node_pubkey: row.provider_pubkey.clone().unwrap_or_default(),
        }),
        scope: row.scope.clone(),
        requested_cap_msat: row.requested_cap.as_u64(),
        expires_at_ms: row.expires_at_ms,
        state: state.to_proto() as i32,
        offer: row.offer.as_ref().map(to_offer),
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
        payment_hash: row.payment_hash.clone().unwrap_or_default(),
        paid_amount_msat: if state == State::Settled {
            row.payment_amount.map_or(0, Msat::as_u64)
        } else {
            0
        },
        routing_fee_msat: row.routing_fee.map_or(0, Msat::as_u64),
        preimage: row.preimage.clone().unwrap_or_default(),
        failure_code: row.failure_code.clone().unwrap_or_default(),
        failure_reason: row.failure_reason.clone().unwrap_or_default(),
        verification_id: row.verification_id.clone().unwrap_or_default(),
        default_reason: row.default_reason.clone().unwrap_or_default(),
    })
}

fn stored_receipt(json: Option<&str>) -> Result<Option<oa_proto::common::Receipt>, HydraError> {
    json.map(|j| {
        serde_json::from_str::<Receipt>(j)
            .map(|r| oa_service::receipts::to_proto(&r))
            .map_err(|e| corrupt(&e.to_string()))
    })
    .transpose()
}

async fn settle_response(
    conn: &mut AnyConnection,
    row: &EnvelopeRow,
) -> Result<hydra::CreditSettleResponse, HydraError> {
    let end = receipt_log::get_stored(conn, row.end_receipt_hash.as_deref()).await?;
    Ok(hydra::CreditSettleResponse {
        envelope: Some(to_envelope(row)?),
        receipt: end.as_ref().map(oa_service::receipts::to_proto),
        executor_receipt: stored_receipt(row.executor_receipt.as_deref())?,
        verification_receipt: stored_receipt(row.verification_receipt.as_deref())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_machine_has_exactly_the_documented_transitions() {
        let allowed: Vec<(&str, &str)> = State::ALL
            .iter()
            .flat_map(|a| State::ALL.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.can_become(*b))
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            allowed,
            [
                ("intent", "offered"),
                ("offered", "offered"),
                ("offered", "issued"),
                ("issued", "settling"),
                ("issued", "defaulted"),
                ("issued", "expired"),
                ("settling", "issued"),
                ("settling", "settled"),
            ]
        );
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            if s.is_terminal() {
                assert!(State::ALL.iter().all(|t| !s.can_become(*t)), "{s:?}");
            }
        }
    }

    #[test]
    fn losses_age_in_whole_days() {
        let h = store::AgentHistory {
            losses: vec![(Msat::new(5).unwrap(), 1_000)],
            ..Default::default()
        };
        let u = to_history(&h, 1_000 + 3 * DAY_MS - 1);
        assert_eq!(u.losses[0].age_days, 2);
    }
}
