//! The risk budget routes: setting a subject's budget and reading its state (the rule is in
//! [`crate::risk`]).

use oa_proto::aegis;
use oa_store::journal;

use crate::{
    error::{AegisError, invalid},
    model::Subject,
    risk::{self, Budget, MAX_WINDOW_MS, MIN_WINDOW_MS},
    service::{Aegis, claim, complete},
    store, validate,
};

/// The journal topic of risk budget changes.
pub const TOPIC: &str = "aegis.risk";

fn subject_id(subject: Subject, id: &str) -> Result<(), AegisError> {
    match subject {
        Subject::Agent => validate::agent_id(id),
        Subject::Org => validate::id(
            "INVALID_ORG_ID",
            "subject_id",
            id,
            validate::MAX_AGENT_ID_LEN,
        ),
    }
}

impl Aegis {
    /// `POST /v1/aegis/risk_budget/set`.
    pub async fn set_budget(
        &self,
        caller: &str,
        req: aegis::SetRiskBudgetRequest,
    ) -> Result<aegis::RiskBudgetResponse, AegisError> {
        oa_store::idempotency::validate_key(&req.idempotency_key)?;
        let t: aegis::RiskSubjectType =
            validate::enum_value("INVALID_SUBJECT", "subject_type", req.subject_type)?;
        let subject = Subject::from_proto(t)
            .ok_or_else(|| invalid("INVALID_SUBJECT", "subject_type is required"))?;
        subject_id(subject, &req.subject_id)?;
        let tolerated =
            validate::msat("INVALID_RISK_BUDGET", "tolerated_msat", req.tolerated_msat)?;
        let cap = validate::msat("INVALID_RISK_BUDGET", "cap_msat", req.cap_msat)?;
        if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&req.window_ms) {
            return Err(invalid(
                "INVALID_RISK_BUDGET",
                format!("window_ms must be {MIN_WINDOW_MS} to {MAX_WINDOW_MS}"),
            ));
        }
        let now = self.clock.now_ms();
        let scope = format!("aegis.risk_budget.set/{caller}");
        let fingerprint = oa_store::idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if let Some(replay) =
            claim(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(replay);
        }
        let budget = Budget {
            tolerated,
            window_ms: req.window_ms,
            cap,
            updated_at_ms: now,
        };
        store::upsert_budget(&mut tx, subject, &req.subject_id, &budget, caller).await?;
        let (budget, a) = self.risk_of(&mut tx, subject, &req.subject_id, now).await?;
        let response = aegis::RiskBudgetResponse {
            status: Some(risk::to_proto(
                subject,
                &req.subject_id,
                budget.as_ref(),
                &a,
                now,
            )),
        };
        journal::append(
            &mut tx,
            TOPIC,
            "risk_budget_set",
            &serde_json::json!({"subject_type": subject.as_str(), "subject_id": req.subject_id,
                "tolerated_msat": tolerated, "window_ms": req.window_ms.to_string(), "cap_msat": cap,
                "updated_by": caller}),
            now,
        )
        .await?;
        complete(&mut tx, &scope, &req.idempotency_key, &response, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// `GET /v1/aegis/risk_budget/status`.
    pub async fn budget_status(
        &self,
        subject_type: &str,
        subject_id_: &str,
    ) -> Result<aegis::RiskBudgetResponse, AegisError> {
        let subject = Subject::parse(subject_type)
            .ok_or_else(|| invalid("INVALID_SUBJECT", "subject_type must be agent or org"))?;
        subject_id(subject, subject_id_)?;
        let now = self.clock.now_ms();
        let (budget, a) = self
            .risk_of(&mut *self.conn().await?, subject, subject_id_, now)
            .await?;
        Ok(aegis::RiskBudgetResponse {
            status: Some(risk::to_proto(
                subject,
                subject_id_,
                budget.as_ref(),
                &a,
                now,
            )),
        })
    }
}
