//! Ground truth and practice: known-answer work units (cases), simulation runs of registered
//! verifiers against them, and the scoreboard whose rates set each verifier's quorum weight.
//!
//! A case is refused when Aegis's own objective checks contradict its expected verdict (a failed
//! check on a case said to pass, or every output objective and passing on a case said to fail):
//! ground truth that Aegis can see is wrong would teach the scoreboard the wrong thing. Each case
//! gets a receipt, `oa.aegis.ground_truth_case_receipt.v1`, in the transaction that records it,
//! so the known answers a verifier was scored against are themselves on the record.

use std::collections::BTreeSet;

use oa_proto::aegis;
use oa_receipts::ReceiptDraft;
use oa_store::journal;
use serde::Serialize;

use crate::{
    classify::class_of,
    error::{AegisError, corrupt, invalid},
    model::{Class, Verdict},
    quorum,
    service::{Aegis, claim, complete, new_id, to_json},
    sim::{self, Score},
    store::{self, CaseRow},
    validate,
    work::{self},
};

pub const CASE_SCHEMA: &str = "oa.aegis.ground_truth_case_receipt.v1";
/// The journal topic of cases and simulation runs.
pub const TOPIC: &str = "aegis.ground_truth";
/// Default and largest page of `GET /v1/aegis/cases` (a case carries its evidence, up to tens of
/// KiB).
pub const DEFAULT_CASE_PAGE: u32 = 20;
pub const MAX_CASE_PAGE: u32 = 50;
/// Longest case label.
pub const MAX_LABEL_LEN: usize = 256;
/// Most verifiers and cases one run names, and most results one run records: a run is one
/// transaction, and its answer lists every result.
pub const MAX_SIM_VERIFIERS: usize = 100;
pub const MAX_SIM_CASES: usize = 1_000;
pub const MAX_SIM_RESULTS: usize = 2_000;

#[derive(Serialize)]
struct CaseBody<'a> {
    case_id: &'a str,
    kind: &'a str,
    agent_id: &'a str,
    expected_verdict: &'static str,
    work_hash: &'a str,
    created_by: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    label: &'a str,
}

fn to_case(row: &CaseRow) -> Result<aegis::GroundTruthCase, AegisError> {
    let work: aegis::WorkUnit =
        serde_json::from_str(&row.work).map_err(|e| corrupt(format!("stored case work: {e}")))?;
    let evidence: Vec<aegis::OutputEvidence> = serde_json::from_str(&row.evidence)
        .map_err(|e| corrupt(format!("stored case evidence: {e}")))?;
    let expected = Verdict::parse(&row.expected_verdict)
        .ok_or_else(|| corrupt(format!("stored expected verdict {}", row.expected_verdict)))?;
    Ok(aegis::GroundTruthCase {
        case_id: row.case_id.clone(),
        work: Some(work),
        evidence,
        expected_verdict: expected.to_proto().into(),
        label: row.label.clone(),
        work_hash: row.work_hash.clone(),
        created_by: row.created_by.clone(),
        created_at_ms: row.created_at_ms,
        receipt_hash: row.receipt_hash.clone(),
    })
}

fn ids(code: &'static str, what: &str, v: &[String], max: usize) -> Result<(), AegisError> {
    if v.len() > max {
        return Err(invalid(code, format!("at most {max} {what}")));
    }
    let mut seen = BTreeSet::new();
    for id in v {
        validate::id(code, what, id, validate::MAX_ID_LEN)?;
        if !seen.insert(id) {
            return Err(invalid(code, format!("{what} names {id} twice")));
        }
    }
    Ok(())
}

impl Aegis {
    /// `POST /v1/aegis/cases/create`.
    pub async fn create_case(
        &self,
        caller: &str,
        req: aegis::CreateCaseRequest,
    ) -> Result<aegis::CreateCaseResponse, AegisError> {
        oa_store::idempotency::validate_key(&req.idempotency_key)?;
        let work = work::validate_work(req.work.as_ref())?;
        let evidence = work::validate_evidence(&work, &req.evidence)?;
        let e: aegis::VerificationVerdict =
            validate::enum_value("INVALID_VERDICT", "expected_verdict", req.expected_verdict)?;
        let expected = Verdict::from_proto(e).ok_or_else(|| {
            invalid(
                "INVALID_VERDICT",
                "expected_verdict must be VERIFICATION_VERDICT_PASSED or VERIFICATION_VERDICT_FAILED",
            )
        })?;
        validate::text("INVALID_LABEL", "label", &req.label, 0, MAX_LABEL_LEN)?;
        let checks = work::run_checks(&work, &evidence)?;
        let all_objective = class_of(&work.checkabilities()) == Class::Objective;
        match (expected, checks.iter().find(|c| !c.passed)) {
            (Verdict::Passed, Some(c)) => {
                return Err(AegisError::CaseContradictsChecks(format!(
                    "the case is said to pass, but check {} of output {} fails: {}",
                    c.check, c.output, c.detail
                )));
            }
            (Verdict::Failed, None) if all_objective => {
                return Err(AegisError::CaseContradictsChecks(
                    "the case is said to fail, but every output is objective and passes its check"
                        .into(),
                ));
            }
            _ => {}
        }
        let work_hash = work::work_hash(&work.proto, &req.evidence)?;
        let now = self.clock.now_ms();
        let scope = format!("aegis.cases/{caller}");
        let fingerprint = oa_store::idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if let Some(replay) =
            claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(replay);
        }
        let case_id = new_id("case");
        let body = CaseBody {
            case_id: &case_id,
            kind: &work.proto.kind,
            agent_id: &work.proto.agent_id,
            expected_verdict: expected.as_str(),
            work_hash: &work_hash,
            created_by: caller,
            label: &req.label,
        };
        let receipt = self
            .log
            .append(
                &mut tx,
                ReceiptDraft {
                    schema: CASE_SCHEMA.into(),
                    receipt_id: new_id("rcpt"),
                    idempotency_key: req.idempotency_key.clone(),
                    links: vec![],
                    body: oa_receipts::body_from(&body)?,
                },
                now,
            )
            .await?;
        let row = CaseRow {
            case_id: case_id.clone(),
            kind: work.proto.kind.clone(),
            work: to_json(&work.proto)?,
            evidence: to_json(&req.evidence)?,
            expected_verdict: expected.as_str().into(),
            label: req.label.clone(),
            work_hash,
            created_by: caller.to_owned(),
            created_at_ms: now,
            receipt_hash: receipt.hash.to_string(),
        };
        store::insert_case(&mut tx, &row).await?;
        journal::append(
            &mut tx,
            TOPIC,
            "case_created",
            &serde_json::json!({"case_id": case_id, "kind": row.kind,
                "expected_verdict": row.expected_verdict, "receipt_hash": row.receipt_hash}),
            now,
        )
        .await?;
        let response = aegis::CreateCaseResponse {
            case: Some(to_case(&row)?),
            receipt: Some(oa_service::receipts::to_proto(&receipt)),
        };
        complete(&mut tx, &scope, &req.idempotency_key, &response, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// `GET /v1/aegis/cases`.
    pub async fn list_cases(
        &self,
        after: &str,
        limit: Option<u32>,
    ) -> Result<aegis::ListCasesResponse, AegisError> {
        if !after.is_empty() {
            validate::id("INVALID_QUERY", "after", after, validate::MAX_ID_LEN)?;
        }
        let limit = limit.unwrap_or(DEFAULT_CASE_PAGE);
        if !(1..=MAX_CASE_PAGE).contains(&limit) {
            return Err(invalid(
                "INVALID_QUERY",
                format!("limit must be 1 to {MAX_CASE_PAGE}"),
            ));
        }
        let rows = store::list_cases(&mut *self.conn().await?, after, limit).await?;
        let next_after = if rows.len() == limit as usize {
            rows.last().map(|r| r.case_id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(aegis::ListCasesResponse {
            cases: rows.iter().map(to_case).collect::<Result<_, _>>()?,
            next_after,
        })
    }

    async fn scoreboard_in(
        &self,
        conn: &mut sqlx::AnyConnection,
    ) -> Result<Vec<aegis::ScoreboardEntry>, AegisError> {
        let verifiers = store::list_verifiers(conn, crate::registry::MAX_VERIFIERS).await?;
        let scores = store::scores(conn, None).await?;
        Ok(verifiers
            .iter()
            .map(|v| {
                let s = scores.get(&v.verifier_id).copied().unwrap_or_default();
                entry(&v.verifier_id, &v.family, &s)
            })
            .collect())
    }

    /// `GET /v1/aegis/sim/scoreboard`.
    pub async fn scoreboard(&self) -> Result<aegis::ScoreboardResponse, AegisError> {
        Ok(aegis::ScoreboardResponse {
            entries: self.scoreboard_in(&mut *self.conn().await?).await?,
        })
    }

    /// `POST /v1/aegis/sim/run`.
    pub async fn sim_run(
        &self,
        caller: &str,
        req: aegis::SimRunRequest,
    ) -> Result<aegis::SimRunResponse, AegisError> {
        oa_store::idempotency::validate_key(&req.idempotency_key)?;
        ids(
            "INVALID_VERIFIER_ID",
            "verifier_ids",
            &req.verifier_ids,
            MAX_SIM_VERIFIERS,
        )?;
        ids("INVALID_CASE_ID", "case_ids", &req.case_ids, MAX_SIM_CASES)?;
        let now = self.clock.now_ms();
        let scope = format!("aegis.sim.run/{caller}");
        let fingerprint = oa_store::idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if let Some(replay) =
            claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(replay);
        }
        let verifiers = if req.verifier_ids.is_empty() {
            store::list_verifiers(&mut tx, crate::registry::MAX_VERIFIERS)
                .await?
                .into_iter()
                .filter(|v| v.active && v.sim.is_some())
                .collect()
        } else {
            let mut out = Vec::with_capacity(req.verifier_ids.len());
            for id in &req.verifier_ids {
                let v = store::get_verifier(&mut tx, id)
                    .await?
                    .ok_or(AegisError::VerifierNotFound)?;
                if !v.active {
                    return Err(AegisError::VerifierDisabled);
                }
                if v.sim.is_none() {
                    return Err(AegisError::VerifierNotSimulated);
                }
                out.push(v);
            }
            out
        };
        if req.case_ids.is_empty() && store::case_count(&mut tx).await? > MAX_SIM_CASES as u64 {
            return Err(invalid(
                "SIM_TOO_LARGE",
                format!("more than {MAX_SIM_CASES} cases: name the cases to run"),
            ));
        }
        let cases = store::case_answers(&mut tx, &req.case_ids, MAX_SIM_CASES as u32).await?;
        if cases.len() < req.case_ids.len() {
            return Err(AegisError::CaseNotFound);
        }
        if verifiers.is_empty() || cases.is_empty() {
            return Err(AegisError::NothingToSimulate(format!(
                "a run needs an active simulated verifier and a case; found {} and {}",
                verifiers.len(),
                cases.len()
            )));
        }
        if verifiers.len().saturating_mul(cases.len()) > MAX_SIM_RESULTS {
            return Err(invalid(
                "SIM_TOO_LARGE",
                format!("verifiers x cases is more than {MAX_SIM_RESULTS}: run fewer at once"),
            ));
        }
        let run_id = new_id("run");
        let mut results = Vec::with_capacity(verifiers.len() * cases.len());
        for v in &verifiers {
            let profile = v
                .sim
                .ok_or_else(|| corrupt("a simulated verifier lost its profile"))?;
            for (case_id, expected) in &cases {
                let expected = Verdict::parse(expected)
                    .ok_or_else(|| corrupt(format!("stored expected verdict {expected}")))?;
                let said = sim::simulate(&profile, &v.verifier_id, case_id, &run_id, expected);
                results.push((v.verifier_id.clone(), case_id.clone(), expected, said));
            }
        }
        store::insert_run(&mut tx, &run_id, caller, &results, now).await?;
        let scoreboard = self.scoreboard_in(&mut tx).await?;
        journal::append(
            &mut tx,
            TOPIC,
            "sim_run",
            &serde_json::json!({"run_id": run_id, "verifiers": verifiers.len(), "cases": cases.len(),
                "requested_by": caller}),
            now,
        )
        .await?;
        let response = aegis::SimRunResponse {
            run_id,
            ran_at_ms: now,
            results: results
                .iter()
                .map(|(v, c, e, s)| aegis::SimResult {
                    verifier_id: v.clone(),
                    case_id: c.clone(),
                    expected: e.to_proto().into(),
                    verdict: s.to_proto().into(),
                })
                .collect(),
            scoreboard,
        };
        complete(&mut tx, &scope, &req.idempotency_key, &response, now).await?;
        tx.commit().await?;
        Ok(response)
    }
}

pub fn entry(verifier_id: &str, family: &str, s: &Score) -> aegis::ScoreboardEntry {
    aegis::ScoreboardEntry {
        verifier_id: verifier_id.to_owned(),
        family: family.to_owned(),
        total: s.total,
        correct: s.correct,
        false_pass: s.false_pass,
        false_fail: s.false_fail,
        expected_pass: s.expected_pass,
        expected_fail: s.expected_fail,
        accuracy_ppm: s.accuracy_ppm(),
        false_pass_rate_ppm: s.false_pass_rate_ppm(),
        false_fail_rate_ppm: s.false_fail_rate_ppm(),
        weight_ppm: quorum::weight_ppm(s),
        scored: quorum::scored(s),
    }
}
