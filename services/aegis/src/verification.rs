//! Verifications: the plan for a work unit's tier, run until a final verdict, and the one
//! receipt that states it (what Hydra checks before settling a credit envelope).
//!
//! **State machine** ([`State`]; a pending verification moves once, by a guarded `UPDATE`):
//!
//! ```text
//! (new) --objective tier, every check passed-----------------> passed
//! (new) --any objective check failed (at any tier)-----------> failed
//! (new) --heterogeneous, adjudicated or human tier-----------> pending
//! pending --heterogeneous: the quorum is reached-------------> passed | failed
//! pending --adjudicated / human: a decider decides-----------> passed | failed
//! ```
//!
//! Every tier runs the objective checks the work declares, and a failed check fails the
//! verification at once: no quorum or decider can pass work whose hash, schema or tests are
//! wrong. Refusals: a verdict or decision on a decided verification (`VERIFICATION_DECIDED`), a
//! verdict on a non-heterogeneous one or a decision on a non-adjudicated/human one
//! (`WRONG_TIER`), a second verdict by one verifier (`VERDICT_ALREADY_SUBMITTED`), an unknown
//! or disabled verifier, a signature that does not verify under the verifier's registered key
//! (`INVALID_VERDICT_SIGNATURE`), a decision by the identity that asked for the verification
//! (`DECIDER_NOT_INDEPENDENT`) or, on the human tier, by one without `aegis:decide_human`.
//!
//! **Receipt** `oa.aegis.verification_receipt.v1`, appended in the transaction that makes the
//! verdict final, with exactly the body the contract documents
//! (`proto/openagents/aegis/v1/aegis.proto`): `verification_id`, `scope`, `verdict`, `tier`,
//! `decided_at_ms` and, when set, `subject_ref`. Its `idempotency_key` is the key of the request
//! that made the verdict final. Nothing else about a verification is a receipt: pending
//! verifications and individual verdicts move no money and create no liability.
//!
//! Risk: a failed verification counts against its agent's and org's budgets for the budget's
//! window; a pending one counts as unverified exposure until it is decided.

use oa_proto::aegis;
use oa_receipts::{Receipt, ReceiptDraft};
use oa_store::{journal, receipt_log};
use serde::Serialize;
use sqlx::AnyConnection;

use crate::{
    error::{AegisError, corrupt, invalid},
    model::{Class, Tier, Verdict},
    quorum,
    service::{Aegis, claim, complete, new_id, to_json},
    store::{self, PENDING, VerdictRow, VerificationRow},
    validate,
    work::{self, Check},
};

/// The receipt class of a verification (the contract Hydra checks).
pub const VERIFICATION_SCHEMA: &str = "oa.aegis.verification_receipt.v1";
/// The journal topic of verification events.
pub const TOPIC: &str = "aegis.verification";
/// Most queue items one read returns.
pub const MAX_QUEUE_PAGE: u32 = 100;

/// Where a verification stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not yet recorded.
    New,
    Pending,
    Passed,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::New => "new",
            State::Pending => PENDING,
            State::Passed => "passed",
            State::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        [State::Pending, State::Passed, State::Failed]
            .into_iter()
            .find(|st| st.as_str() == s)
    }

    pub fn of(v: Verdict) -> State {
        match v {
            Verdict::Passed => State::Passed,
            Verdict::Failed => State::Failed,
        }
    }

    /// The transitions of the state machine (module docs).
    pub fn can_become(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (New, Pending) | (New, Passed) | (New, Failed) | (Pending, Passed) | (Pending, Failed)
        )
    }
}

/// Asserts that `from -> to` is a transition of the machine before making it.
fn step(from: State, to: State) -> Result<(), AegisError> {
    if from.can_become(to) {
        Ok(())
    } else {
        Err(corrupt(format!(
            "verification transition {} -> {} is not in the state machine",
            from.as_str(),
            to.as_str()
        )))
    }
}

#[derive(Serialize)]
struct ReceiptBody<'a> {
    verification_id: &'a str,
    scope: &'a str,
    verdict: &'static str,
    tier: &'a str,
    #[serde(with = "oa_receipts::u64_string")]
    decided_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject_ref: Option<&'a str>,
}

fn row_state(row: &VerificationRow) -> Result<State, AegisError> {
    State::parse(&row.state).ok_or_else(|| corrupt(format!("verification state {}", row.state)))
}

fn row_tier(row: &VerificationRow) -> Result<Tier, AegisError> {
    Tier::parse(&row.tier).ok_or_else(|| corrupt(format!("verification tier {}", row.tier)))
}

fn verdict_value(v: i32) -> Result<Verdict, AegisError> {
    let p: aegis::VerificationVerdict = validate::enum_value("INVALID_VERDICT", "verdict", v)?;
    Verdict::from_proto(p).ok_or_else(|| {
        invalid(
            "INVALID_VERDICT",
            "verdict must be VERIFICATION_VERDICT_PASSED or VERIFICATION_VERDICT_FAILED",
        )
    })
}

pub(crate) fn validate_id(id: &str) -> Result<(), AegisError> {
    validate::id(
        "INVALID_VERIFICATION_ID",
        "verification id",
        id,
        validate::MAX_ID_LEN,
    )
}

/// The contract message of a stored verification.
pub fn to_verification(row: &VerificationRow) -> Result<aegis::Verification, AegisError> {
    let verdict = match row_state(row)? {
        State::Pending | State::New => aegis::VerificationVerdict::Pending,
        State::Passed => aegis::VerificationVerdict::Passed,
        State::Failed => aegis::VerificationVerdict::Failed,
    };
    Ok(aegis::Verification {
        verification_id: row.verification_id.clone(),
        scope: row.scope.clone(),
        subject_ref: row.subject_ref.clone().unwrap_or_default(),
        verdict: verdict.into(),
        tier: row.tier.clone(),
        created_at_ms: row.created_at_ms,
        decided_at_ms: row.decided_at_ms.unwrap_or(0),
    })
}

fn tally_of(verdicts: &[VerdictRow]) -> Result<quorum::Tally, AegisError> {
    let counted = verdicts
        .iter()
        .map(|v| {
            Ok(quorum::Counted {
                family: &v.family,
                verdict: Verdict::parse(&v.verdict)
                    .ok_or_else(|| corrupt(format!("stored verdict {}", v.verdict)))?,
                weight_ppm: v.weight_ppm,
            })
        })
        .collect::<Result<Vec<_>, AegisError>>()?;
    Ok(quorum::tally(&counted))
}

fn to_detail(
    row: &VerificationRow,
    verdicts: &[VerdictRow],
) -> Result<aegis::VerificationDetail, AegisError> {
    let checks: Vec<Check> =
        serde_json::from_str(&row.checks).map_err(|e| corrupt(format!("stored checks: {e}")))?;
    let reasons: Vec<String> = serde_json::from_str(&row.raise_reasons)
        .map_err(|e| corrupt(format!("stored raise reasons: {e}")))?;
    let class = Class::parse(&row.class).ok_or_else(|| corrupt(format!("class {}", row.class)))?;
    let t = tally_of(verdicts)?;
    Ok(aegis::VerificationDetail {
        verifiability_class: class.to_proto().into(),
        kind: row.kind.clone(),
        agent_id: row.agent_id.clone(),
        org_id: row.org_id.clone().unwrap_or_default(),
        amount_msat: row.amount.as_u64(),
        work_hash: row.work_hash.clone(),
        checks: checks.iter().map(Check::to_proto).collect(),
        verdicts: verdicts
            .iter()
            .map(|v| aegis::VerdictRecord {
                verifier_id: v.verifier_id.clone(),
                family: v.family.clone(),
                verdict: Verdict::parse(&v.verdict)
                    .map_or(aegis::VerificationVerdict::Unspecified, Verdict::to_proto)
                    .into(),
                weight_ppm: v.weight_ppm,
                submitted_at_ms: v.submitted_at_ms,
                signature: v.signature.clone(),
            })
            .collect(),
        quorum: (row.tier == Tier::Heterogeneous.as_str()).then_some(aegis::QuorumStatus {
            size: row.quorum_size,
            min_families: row.min_families,
            counted: t.counted,
            families: t.families,
            pass_weight_ppm: t.pass_weight,
            fail_weight_ppm: t.fail_weight,
        }),
        decided_by: row.decided_by.clone().unwrap_or_default(),
        reason: row.reason.clone().unwrap_or_default(),
        requested_by: row.requested_by.clone(),
        raise_reasons: reasons,
    })
}

/// The full answer about a stored verification.
async fn response(
    conn: &mut AnyConnection,
    row: &VerificationRow,
) -> Result<aegis::VerifyResponse, AegisError> {
    let receipt = receipt_log::get_stored(conn, row.receipt_hash.as_deref()).await?;
    let verdicts = store::verdicts(conn, &row.verification_id).await?;
    Ok(aegis::VerifyResponse {
        verification: Some(to_verification(row)?),
        receipt: receipt.as_ref().map(oa_service::receipts::to_proto),
        detail: Some(to_detail(row, &verdicts)?),
    })
}

impl Aegis {
    /// Seals the verdict's receipt; the caller stores its hash with the final state.
    async fn seal(
        &self,
        conn: &mut AnyConnection,
        row: &VerificationRow,
        verdict: Verdict,
        idempotency_key: &str,
        now_ms: u64,
    ) -> Result<Receipt, AegisError> {
        let body = ReceiptBody {
            verification_id: &row.verification_id,
            scope: &row.scope,
            verdict: verdict.as_str(),
            tier: &row.tier,
            decided_at_ms: now_ms,
            subject_ref: row.subject_ref.as_deref(),
        };
        Ok(self
            .log
            .append(
                conn,
                ReceiptDraft {
                    schema: VERIFICATION_SCHEMA.into(),
                    receipt_id: new_id("rcpt"),
                    idempotency_key: idempotency_key.to_owned(),
                    links: vec![],
                    body: oa_receipts::body_from(&body)?,
                },
                now_ms,
            )
            .await?)
    }

    /// `pending -> passed | failed`: the receipt, the guarded update and the event, in the
    /// caller's transaction (which holds the row's lock).
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        conn: &mut AnyConnection,
        row: &VerificationRow,
        verdict: Verdict,
        decided_by: &str,
        reason: &str,
        idempotency_key: &str,
        now_ms: u64,
    ) -> Result<VerificationRow, AegisError> {
        step(row_state(row)?, State::of(verdict))?;
        let receipt = self
            .seal(conn, row, verdict, idempotency_key, now_ms)
            .await?;
        if !store::finish(
            conn,
            &row.verification_id,
            verdict,
            decided_by,
            reason,
            &receipt.hash.to_string(),
            now_ms,
        )
        .await?
        {
            return Err(corrupt(
                "a locked pending verification was decided by another",
            ));
        }
        journal::append(
            conn,
            TOPIC,
            "verification_decided",
            &serde_json::json!({"verification_id": row.verification_id, "verdict": verdict.as_str(),
                "tier": row.tier, "decided_by": decided_by, "receipt_hash": receipt.hash.to_string()}),
            now_ms,
        )
        .await?;
        store::get_verification(conn, &row.verification_id)
            .await?
            .ok_or(AegisError::VerificationNotFound)
    }

    /// `POST /v1/aegis/verify`.
    pub async fn verify(
        &self,
        caller: &str,
        req: aegis::VerifyRequest,
    ) -> Result<aegis::VerifyResponse, AegisError> {
        oa_store::idempotency::validate_key(&req.idempotency_key)?;
        let work = work::validate_work(req.work.as_ref())?;
        validate::text(
            "INVALID_SCOPE",
            "scope",
            &req.scope,
            1,
            validate::MAX_SCOPE_LEN,
        )?;
        if !req.subject_ref.is_empty() {
            validate::text(
                "INVALID_SUBJECT_REF",
                "subject_ref",
                &req.subject_ref,
                1,
                validate::MAX_SCOPE_LEN,
            )?;
        }
        let min_tier: aegis::IndependenceTier =
            validate::enum_value("INVALID_TIER", "min_tier", req.min_tier)?;
        let min_tier = Tier::from_proto(min_tier);
        let evidence = work::validate_evidence(&work, &req.evidence)?;
        // The checks run before the transaction: they read only the request.
        let checks = work::run_checks(&work, &evidence)?;
        let work_hash = work::work_hash(&work.proto, &req.evidence)?;

        let now = self.clock.now_ms();
        let scope = format!("aegis.verify/{caller}");
        let fingerprint = oa_store::idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if let Some(replay) =
            claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(replay);
        }
        let reading = self
            .read_classification(&mut tx, &work, min_tier, now)
            .await?;
        let c = &reading.classification;
        let failed_check = checks.iter().find(|ch| !ch.passed);
        let outcome = match (failed_check, c.tier) {
            (Some(ch), _) => Some((
                Verdict::Failed,
                format!(
                    "objective check {} of output {} failed",
                    ch.check, ch.output
                ),
            )),
            (None, Tier::Objective) => Some((
                Verdict::Passed,
                format!("all {} objective checks passed", checks.len()),
            )),
            (None, _) => None,
        };
        let mut row = VerificationRow {
            verification_id: new_id("ver"),
            requested_by: caller.to_owned(),
            scope: req.scope.clone(),
            subject_ref: (!req.subject_ref.is_empty()).then(|| req.subject_ref.clone()),
            agent_id: work.proto.agent_id.clone(),
            org_id: (!work.proto.org_id.is_empty()).then(|| work.proto.org_id.clone()),
            kind: work.proto.kind.clone(),
            amount: work.amount,
            class: c.class.as_str().into(),
            tier: c.tier.as_str().into(),
            state: PENDING.into(),
            work_hash,
            work: to_json(&work.proto)?,
            checks: to_json(&checks)?,
            raise_reasons: to_json(&c.raise_reasons)?,
            quorum_size: self.settings.quorum_size,
            min_families: self.settings.quorum_min_families,
            decided_by: None,
            reason: None,
            receipt_hash: None,
            created_at_ms: now,
            updated_at_ms: now,
            decided_at_ms: None,
        };
        match &outcome {
            Some((verdict, reason)) => {
                step(State::New, State::of(*verdict))?;
                let receipt = self
                    .seal(&mut tx, &row, *verdict, &req.idempotency_key, now)
                    .await?;
                row.state = verdict.as_str().into();
                row.decided_by = Some("objective_checks".into());
                row.reason = Some(reason.clone());
                row.receipt_hash = Some(receipt.hash.to_string());
                row.decided_at_ms = Some(now);
            }
            None => step(State::New, State::Pending)?,
        }
        store::insert_verification(&mut tx, &row).await?;
        journal::append(
            &mut tx,
            TOPIC,
            "verification_created",
            &serde_json::json!({"verification_id": row.verification_id, "agent_id": row.agent_id,
                "tier": row.tier, "class": row.class, "state": row.state}),
            now,
        )
        .await?;
        let response = response(&mut tx, &row).await?;
        complete(&mut tx, &scope, &req.idempotency_key, &response, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// Locks a pending verification, or says why it cannot be.
    async fn lock(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        now_ms: u64,
    ) -> Result<VerificationRow, AegisError> {
        let locked = store::lock_pending(conn, id, now_ms).await?;
        let row = store::get_verification(conn, id)
            .await?
            .ok_or(AegisError::VerificationNotFound)?;
        if !locked {
            return Err(AegisError::VerificationDecided { state: row.state });
        }
        Ok(row)
    }

    /// `POST /v1/aegis/verification/{id}/verdict`.
    pub async fn submit_verdict(
        &self,
        caller: &str,
        id: &str,
        req: aegis::SubmitVerdictRequest,
    ) -> Result<aegis::VerifyResponse, AegisError> {
        oa_store::idempotency::validate_key(&req.idempotency_key)?;
        validate_id(id)?;
        validate::id(
            "INVALID_VERIFIER_ID",
            "verifier_id",
            &req.verifier_id,
            validate::MAX_ID_LEN,
        )?;
        let verdict = verdict_value(req.verdict)?;
        validate::lower_hex(
            "INVALID_VERDICT_SIGNATURE",
            "signature",
            &req.signature,
            128,
        )?;
        let now = self.clock.now_ms();
        let scope = format!("aegis.verdict/{caller}");
        let fingerprint = oa_store::idempotency::fingerprint(&(id, &req))?;
        let mut tx = self.db.begin().await?;
        if let Some(replay) =
            claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(replay);
        }
        // Refusals below return early: dropping the transaction rolls the claim and the lock
        // back, so nothing is recorded.
        let row = self.lock(&mut tx, id, now).await?;
        if row_tier(&row)? != Tier::Heterogeneous {
            return Err(AegisError::WrongTier(format!(
                "verdicts are for heterogeneous verifications; this one is {}",
                row.tier
            )));
        }
        let verifier = store::get_verifier(&mut tx, &req.verifier_id)
            .await?
            .ok_or(AegisError::VerifierNotFound)?;
        if !verifier.active {
            return Err(AegisError::VerifierDisabled);
        }
        let hash = quorum::statement_hash(id, &row.work_hash, &req.verifier_id, verdict)?;
        if !quorum::signature_ok(&verifier.public_key, &hash, &req.signature) {
            tracing::warn!(verifier = %req.verifier_id, verification = %id, "verdict signature refused");
            return Err(AegisError::BadSignature);
        }
        let score = store::scores(&mut tx, Some(&req.verifier_id))
            .await?
            .remove(&req.verifier_id)
            .unwrap_or_default();
        let accepted = VerdictRow {
            verification_id: id.to_owned(),
            verifier_id: req.verifier_id.clone(),
            family: verifier.family.clone(),
            verdict: verdict.as_str().into(),
            weight_ppm: quorum::weight_ppm(&score),
            signature: req.signature.clone(),
            submitted_at_ms: now,
        };
        if !store::insert_verdict(&mut tx, &accepted).await? {
            return Err(AegisError::VerdictAlreadySubmitted);
        }
        let verdicts = store::verdicts(&mut tx, id).await?;
        let t = tally_of(&verdicts)?;
        let row = match quorum::decide(&t, row.quorum_size, row.min_families) {
            Some(v) => {
                let reason = format!(
                    "{} counted verdicts from {} families: pass weight {} ppm, fail weight {} ppm",
                    t.counted, t.families, t.pass_weight, t.fail_weight
                );
                self.finish(
                    &mut tx,
                    &row,
                    v,
                    "quorum",
                    &reason,
                    &req.idempotency_key,
                    now,
                )
                .await?
            }
            None => row,
        };
        let response = response(&mut tx, &row).await?;
        complete(&mut tx, &scope, &req.idempotency_key, &response, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// `POST /v1/aegis/verification/{id}/decide`. `may_decide_human` says whether the caller
    /// holds `aegis:decide_human` (the route already required one of the decide scopes).
    pub async fn decide(
        &self,
        caller: &str,
        may_decide_human: bool,
        id: &str,
        req: aegis::DecideRequest,
    ) -> Result<aegis::VerifyResponse, AegisError> {
        oa_store::idempotency::validate_key(&req.idempotency_key)?;
        validate_id(id)?;
        let verdict = verdict_value(req.verdict)?;
        validate::text(
            "INVALID_REASON",
            "reason",
            &req.reason,
            1,
            validate::MAX_REASON_LEN,
        )?;
        let now = self.clock.now_ms();
        let scope = format!("aegis.decide/{caller}");
        let fingerprint = oa_store::idempotency::fingerprint(&(id, &req))?;
        let mut tx = self.db.begin().await?;
        if let Some(replay) =
            claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(replay);
        }
        let row = self.lock(&mut tx, id, now).await?;
        match row_tier(&row)? {
            Tier::Adjudicated => {}
            Tier::Human if may_decide_human => {}
            Tier::Human => {
                return Err(AegisError::Forbidden {
                    code: "HUMAN_DECIDER_REQUIRED",
                    message: "a human-tier verification needs a decider with aegis:decide_human"
                        .into(),
                });
            }
            other => {
                return Err(AegisError::WrongTier(format!(
                    "decisions are for adjudicated and human verifications; this one is {}",
                    other.as_str()
                )));
            }
        }
        if row.requested_by == caller {
            return Err(AegisError::Forbidden {
                code: "DECIDER_NOT_INDEPENDENT",
                message: "the identity that asked for a verification cannot decide it".into(),
            });
        }
        let row = self
            .finish(
                &mut tx,
                &row,
                verdict,
                caller,
                &req.reason,
                &req.idempotency_key,
                now,
            )
            .await?;
        let response = response(&mut tx, &row).await?;
        complete(&mut tx, &scope, &req.idempotency_key, &response, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// `GET /v1/aegis/verification/{id}` (the contract message and, once final, the receipt).
    pub async fn get(&self, id: &str) -> Result<aegis::GetVerificationResponse, AegisError> {
        let r = self.detail(id).await?;
        Ok(aegis::GetVerificationResponse {
            verification: r.verification,
            receipt: r.receipt,
        })
    }

    /// `GET /v1/aegis/verification/{id}/detail`.
    pub async fn detail(&self, id: &str) -> Result<aegis::VerifyResponse, AegisError> {
        validate_id(id)?;
        let mut conn = self.conn().await?;
        let row = store::get_verification(&mut conn, id)
            .await?
            .ok_or(AegisError::VerificationNotFound)?;
        response(&mut conn, &row).await
    }

    /// `GET /v1/aegis/queue`.
    pub async fn queue(&self, limit: u32) -> Result<aegis::QueueResponse, AegisError> {
        let mut conn = self.conn().await?;
        let rows = store::queue(&mut conn, limit.clamp(1, MAX_QUEUE_PAGE)).await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            items.push(response(&mut conn, row).await?);
        }
        Ok(aegis::QueueResponse { items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_machine_has_exactly_the_documented_transitions() {
        use State::*;
        let all = [New, Pending, Passed, Failed];
        let allowed = [
            (New, Pending),
            (New, Passed),
            (New, Failed),
            (Pending, Passed),
            (Pending, Failed),
        ];
        for from in all {
            for to in all {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
        assert!(step(Passed, Failed).is_err());
    }
}
