//! The Aegis core every route shares: its database, receipt log, clock and settings, the
//! idempotency steps of a mutation, and the reads classification and pricing make (history and
//! risk). Classification and warranty quotes are here too: they are reads, not mutations, so they
//! carry no idempotency key and record nothing.

use std::sync::Arc;

use oa_money::Msat;
use oa_proto::aegis;
use oa_service::Clock;
use oa_store::{
    Db,
    idempotency::{self, Claim},
    receipt_log::ReceiptLog,
};
use serde::{Serialize, de::DeserializeOwned};
use sqlx::AnyConnection;

use crate::{
    classify::{self, Classification, History, Policy, Risk},
    error::{AegisError, corrupt, invalid},
    model::{Subject, Tier},
    pricing, risk, store,
    work::{self, Work},
};

/// Deployment settings of Aegis's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub policy: Policy,
    /// How far back failure history (classification) and verified share (pricing) look, and the
    /// window of an unbudgeted subject's status.
    pub history_window_ms: u64,
    /// Counted verdicts a heterogeneous verification needs, and from how many families.
    pub quorum_size: u32,
    pub quorum_min_families: u32,
    /// How long an arbitrator has to decide a dispute.
    pub dispute_window_ms: u64,
}

pub struct Aegis {
    pub db: Db,
    pub log: ReceiptLog,
    pub clock: Arc<dyn Clock>,
    pub settings: Settings,
    /// Pays claims through Hydra.
    pub payer: Arc<dyn crate::payer::Payer>,
}

/// What classification read, besides the work.
pub struct Reading {
    pub classification: Classification,
    pub inputs: aegis::ClassifyInputs,
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<String, AegisError> {
    serde_json::to_string(v).map_err(|e| corrupt(e.to_string()))
}

pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Claims an idempotency key inside the caller's transaction: `Ok(None)` for a new request,
/// `Ok(Some(response))` for a replay of a finished one.
pub(crate) async fn claim<T: DeserializeOwned>(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now_ms: u64,
) -> Result<Option<T>, AegisError> {
    match idempotency::claim(conn, scope, key, fingerprint, now_ms).await? {
        Claim::New => Ok(None),
        Claim::Replay { response, .. } => oa_service::parse_json(response.as_bytes())
            .map(Some)
            .map_err(|_| corrupt(format!("stored response of {scope}/{key}"))),
        Claim::Conflict => Err(AegisError::IdempotencyConflict),
        // The claim, the change and the response commit together: "in progress" means another
        // transaction holds the same key right now.
        Claim::InProgress { .. } => Err(AegisError::RequestInProgress),
    }
}

/// Stores the response a replay of this key returns.
pub(crate) async fn complete<T: Serialize>(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
    response: &T,
    now_ms: u64,
) -> Result<(), AegisError> {
    idempotency::complete(conn, scope, key, 200, &to_json(response)?, now_ms).await?;
    Ok(())
}

impl Aegis {
    /// Appends a receipt of `schema` to Aegis's log in the caller's transaction.
    pub(crate) async fn receipt<B: Serialize>(
        &self,
        conn: &mut AnyConnection,
        schema: &str,
        idempotency_key: &str,
        links: Vec<oa_receipts::Hash>,
        body: &B,
        now_ms: u64,
    ) -> Result<oa_receipts::Receipt, AegisError> {
        Ok(self
            .log
            .append(
                conn,
                oa_receipts::ReceiptDraft {
                    schema: schema.into(),
                    receipt_id: new_id("rcpt"),
                    idempotency_key: idempotency_key.to_owned(),
                    links,
                    body: oa_receipts::body_from(body)?,
                },
                now_ms,
            )
            .await?)
    }

    pub(crate) async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, AegisError> {
        Ok(self.db.reader().await?)
    }

    fn since(&self, now_ms: u64, window_ms: u64) -> u64 {
        now_ms.saturating_sub(window_ms)
    }

    /// A subject's budget and where it stands now.
    pub(crate) async fn risk_of(
        &self,
        conn: &mut AnyConnection,
        subject: Subject,
        subject_id: &str,
        now_ms: u64,
    ) -> Result<(Option<risk::Budget>, risk::Assessment), AegisError> {
        let budget = store::get_budget(conn, subject, subject_id).await?;
        let window = budget
            .as_ref()
            .map_or(self.settings.history_window_ms, |b| b.window_ms);
        let (failed, unverified) =
            store::risk_amounts(conn, subject, subject_id, self.since(now_ms, window)).await?;
        let a = risk::assess(budget.as_ref(), failed, unverified);
        Ok((budget, a))
    }

    /// Classifies validated work as of `now_ms` (the rule in [`crate::classify`]).
    pub(crate) async fn read_classification(
        &self,
        conn: &mut AnyConnection,
        work: &Work,
        min_tier: Option<Tier>,
        now_ms: u64,
    ) -> Result<Reading, AegisError> {
        let since = self.since(now_ms, self.settings.history_window_ms);
        let (overall, _) = store::history(conn, &work.proto.agent_id, None, since).await?;
        let (kind, _) =
            store::history(conn, &work.proto.agent_id, Some(&work.proto.kind), since).await?;
        let (_, agent) = self
            .risk_of(conn, Subject::Agent, &work.proto.agent_id, now_ms)
            .await?;
        let org = if work.proto.org_id.is_empty() {
            None
        } else {
            Some(
                self.risk_of(conn, Subject::Org, &work.proto.org_id, now_ms)
                    .await?
                    .1,
            )
        };
        let as_risk = |a: &risk::Assessment| Risk {
            state: a.state,
            effective_cap: a.effective_cap,
        };
        let classification = classify::classify(
            &self.settings.policy,
            &classify::Inputs {
                outputs: work.checkabilities(),
                amount: work.amount,
                overall,
                kind,
                agent_risk: as_risk(&agent),
                org_risk: org.as_ref().map(as_risk),
                min_tier,
            },
        );
        let caps: Vec<Msat> = std::iter::once(&agent)
            .chain(org.as_ref())
            .filter_map(|a| a.effective_cap)
            .collect();
        let inputs = aegis::ClassifyInputs {
            decided_count: overall.decided,
            failed_count: overall.failed,
            kind_decided_count: kind.decided,
            kind_failed_count: kind.failed,
            agent_risk_state: agent.state.to_proto().into(),
            org_risk_state: org
                .as_ref()
                .map_or(aegis::RiskState::Unspecified, |a| a.state.to_proto())
                .into(),
            effective_cap_msat: caps.iter().min().map_or(0, |m| m.as_u64()),
            capped: !caps.is_empty(),
        };
        Ok(Reading {
            classification,
            inputs,
        })
    }

    /// `POST /v1/aegis/classify`.
    pub async fn classify(
        &self,
        req: aegis::ClassifyRequest,
    ) -> Result<aegis::ClassifyResponse, AegisError> {
        let work = work::validate_work(req.work.as_ref())?;
        let now = self.clock.now_ms();
        let reading = self
            .read_classification(&mut *self.conn().await?, &work, None, now)
            .await?;
        Ok(to_classify_response(&reading))
    }

    /// `POST /v1/aegis/warranty/quote` (the price in [`crate::pricing`]).
    pub async fn quote(
        &self,
        req: aegis::WarrantyQuoteRequest,
    ) -> Result<aegis::WarrantyQuoteResponse, AegisError> {
        let work = work::validate_work(req.work.as_ref())?;
        let coverage = match req.coverage_msat {
            0 => work.amount,
            v => {
                let c = Msat::new(v)
                    .map_err(|e| invalid("INVALID_COVERAGE", format!("coverage_msat: {e}")))?;
                if c > work.amount {
                    return Err(invalid(
                        "INVALID_COVERAGE",
                        "coverage_msat cannot exceed the work's amount_msat",
                    ));
                }
                c
            }
        };
        let now = self.clock.now_ms();
        let mut conn = self.conn().await?;
        let reading = self
            .read_classification(&mut conn, &work, None, now)
            .await?;
        let since = self.since(now, self.settings.history_window_ms);
        let (record, passed): (History, u64) =
            store::history(&mut conn, &work.proto.agent_id, None, since).await?;
        let claims = crate::uw_store::paid_claims_of(&mut conn, &work.proto.agent_id).await?;
        let c = &reading.classification;
        let p = pricing::price(&pricing::PriceInputs {
            amount: work.amount,
            coverage,
            class: c.class,
            tier: c.tier,
            decided: record.decided,
            passed,
            claims,
        })
        .map_err(|e| invalid("INVALID_AMOUNT", format!("the price is out of range: {e}")))?;
        Ok(aegis::WarrantyQuoteResponse {
            quote: Some(aegis::WarrantyQuote {
                verifiability_class: c.class.to_proto().into(),
                tier: c.tier.to_proto().into(),
                coverage_msat: coverage.as_u64(),
                verification_fee_msat: p.verification_fee.as_u64(),
                liability_premium_msat: p.premium.as_u64(),
                total_msat: p.total.as_u64(),
                premium_bps: p.premium_bps,
                verified_share_ppm: p.verified_share_ppm,
                decided_count: record.decided,
                claims_count: claims,
                experience_factor_ppm: p.experience_ppm,
                claims_factor_ppm: p.claims_ppm,
                priced_at_ms: now,
            }),
        })
    }
}

pub(crate) fn to_classify_response(r: &Reading) -> aegis::ClassifyResponse {
    let c = &r.classification;
    aegis::ClassifyResponse {
        verifiability_class: c.class.to_proto().into(),
        base_tier: c.base_tier.to_proto().into(),
        tier: c.tier.to_proto().into(),
        raise_reasons: c.raise_reasons.iter().map(|s| (*s).to_owned()).collect(),
        inputs: Some(r.inputs),
    }
}
