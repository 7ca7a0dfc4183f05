//! Aegis's SQL. Every function takes the caller's connection or transaction; the handler owns the
//! transaction, so a state change, its verdict rows, its receipt and its idempotency record
//! commit together. Portable between SQLite and PostgreSQL (`crates/store` conventions).

use std::collections::BTreeMap;

use futures::TryStreamExt;
use oa_money::Msat;
use oa_store::StoreError;
use sqlx::{Any, AnyConnection, Row, any::AnyRow};

use crate::{
    classify::History,
    model::{Subject, Verdict},
    risk::Budget,
    sim::{Behaviour, Profile, Score},
};

pub const PENDING: &str = "pending";

pub(crate) fn i(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt("integer overflow".into()))
}
pub(crate) fn u(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt("negative integer".into()))
}
pub(crate) fn msat(v: i64) -> Result<Msat, StoreError> {
    Msat::from_i64(v).map_err(|e| StoreError::Corrupt(format!("amount: {e}")))
}
fn small(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt("count out of range".into()))
}
fn count(r: &AnyRow, col: &str) -> Result<u64, StoreError> {
    u(r.try_get::<Option<i64>, _>(col)?.unwrap_or(0))
}

// ---- verifications ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerificationRow {
    pub verification_id: String,
    pub requested_by: String,
    pub scope: String,
    pub subject_ref: Option<String>,
    pub agent_id: String,
    pub org_id: Option<String>,
    pub kind: String,
    pub amount: Msat,
    pub class: String,
    pub tier: String,
    pub state: String,
    pub work_hash: String,
    pub work: String,
    pub checks: String,
    pub raise_reasons: String,
    pub quorum_size: u32,
    pub min_families: u32,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub receipt_hash: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub decided_at_ms: Option<u64>,
}

const VERIFICATION_COLUMNS: &str = "verification_id, requested_by, scope, subject_ref, agent_id, org_id, kind, \
    amount_msat, class, tier, state, work_hash, work, checks, raise_reasons, quorum_size, min_families, decided_by, \
    reason, receipt_hash, created_at_ms, updated_at_ms, decided_at_ms";

fn decode_verification(r: &AnyRow) -> Result<VerificationRow, StoreError> {
    Ok(VerificationRow {
        verification_id: r.try_get("verification_id")?,
        requested_by: r.try_get("requested_by")?,
        scope: r.try_get("scope")?,
        subject_ref: r.try_get("subject_ref")?,
        agent_id: r.try_get("agent_id")?,
        org_id: r.try_get("org_id")?,
        kind: r.try_get("kind")?,
        amount: msat(r.try_get("amount_msat")?)?,
        class: r.try_get("class")?,
        tier: r.try_get("tier")?,
        state: r.try_get("state")?,
        work_hash: r.try_get("work_hash")?,
        work: r.try_get("work")?,
        checks: r.try_get("checks")?,
        raise_reasons: r.try_get("raise_reasons")?,
        quorum_size: small(r.try_get("quorum_size")?)?,
        min_families: small(r.try_get("min_families")?)?,
        decided_by: r.try_get("decided_by")?,
        reason: r.try_get("reason")?,
        receipt_hash: r.try_get("receipt_hash")?,
        created_at_ms: u(r.try_get("created_at_ms")?)?,
        updated_at_ms: u(r.try_get("updated_at_ms")?)?,
        decided_at_ms: r
            .try_get::<Option<i64>, _>("decided_at_ms")?
            .map(u)
            .transpose()?,
    })
}

pub async fn insert_verification(
    conn: &mut AnyConnection,
    v: &VerificationRow,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO aegis_verifications (verification_id, requested_by, scope, subject_ref, agent_id, org_id, kind,
            amount_msat, class, tier, state, work_hash, work, checks, raise_reasons, quorum_size, min_families,
            decided_by, reason, receipt_hash, created_at_ms, updated_at_ms, decided_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)",
    )
    .bind(&v.verification_id)
    .bind(&v.requested_by)
    .bind(&v.scope)
    .bind(&v.subject_ref)
    .bind(&v.agent_id)
    .bind(&v.org_id)
    .bind(&v.kind)
    .bind(v.amount.as_i64())
    .bind(&v.class)
    .bind(&v.tier)
    .bind(&v.state)
    .bind(&v.work_hash)
    .bind(&v.work)
    .bind(&v.checks)
    .bind(&v.raise_reasons)
    .bind(i64::from(v.quorum_size))
    .bind(i64::from(v.min_families))
    .bind(&v.decided_by)
    .bind(&v.reason)
    .bind(&v.receipt_hash)
    .bind(i(v.created_at_ms)?)
    .bind(i(v.updated_at_ms)?)
    .bind(v.decided_at_ms.map(i).transpose()?)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_verification(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<VerificationRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {VERIFICATION_COLUMNS} FROM aegis_verifications WHERE verification_id = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode_verification)
        .transpose()
}

/// Takes the row lock of a pending verification (a guarded `UPDATE`: on PostgreSQL it holds the
/// row until commit, so concurrent verdicts or decisions on one verification serialize and each
/// sees the verdicts committed before it; SQLite holds its write lock already). `false` if the
/// verification is not pending (or does not exist).
pub async fn lock_pending(
    conn: &mut AnyConnection,
    id: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE aegis_verifications SET updated_at_ms = $2 WHERE verification_id = $1 AND state = 'pending'",
    )
    .bind(id)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// `pending -> passed | failed`, once.
pub async fn finish(
    conn: &mut AnyConnection,
    id: &str,
    verdict: Verdict,
    decided_by: &str,
    reason: &str,
    receipt_hash: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE aegis_verifications SET state = $2, decided_by = $3, reason = $4, receipt_hash = $5,
            decided_at_ms = $6, updated_at_ms = $6
         WHERE verification_id = $1 AND state = 'pending'",
    )
    .bind(id)
    .bind(verdict.as_str())
    .bind(decided_by)
    .bind(reason)
    .bind(receipt_hash)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// The agent's verifications decided at or after `since_ms` (of one kind if given).
pub async fn history(
    conn: &mut AnyConnection,
    agent_id: &str,
    kind: Option<&str>,
    since_ms: u64,
) -> Result<(History, u64), StoreError> {
    let row = sqlx::query::<Any>(
        "SELECT CAST(COUNT(*) AS BIGINT) AS decided,
                CAST(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS failed,
                CAST(SUM(CASE WHEN state = 'passed' THEN 1 ELSE 0 END) AS BIGINT) AS passed
         FROM aegis_verifications
         WHERE agent_id = $1 AND state <> 'pending' AND decided_at_ms >= $2 AND ($3 = '' OR kind = $3)",
    )
    .bind(agent_id)
    .bind(i(since_ms)?)
    .bind(kind.unwrap_or(""))
    .fetch_one(conn)
    .await?;
    Ok((
        History {
            decided: count(&row, "decided")?,
            failed: count(&row, "failed")?,
        },
        count(&row, "passed")?,
    ))
}

/// Amounts of a subject's failed verifications decided at or after `since_ms`, and of its
/// pending ones. Summed here with saturation (a SQL `SUM` of many amounts near the supply could
/// overflow a `BIGINT`).
pub async fn risk_amounts(
    conn: &mut AnyConnection,
    subject: Subject,
    subject_id: &str,
    since_ms: u64,
) -> Result<(Msat, Msat), StoreError> {
    let column = match subject {
        Subject::Agent => "agent_id",
        Subject::Org => "org_id",
    };
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT state, amount_msat FROM aegis_verifications
         WHERE {column} = $1 AND (state = 'pending' OR (state = 'failed' AND decided_at_ms >= $2))"
    ));
    let mut rows = sqlx::query::<Any>(sql)
        .bind(subject_id)
        .bind(i(since_ms)?)
        .fetch(conn);
    let (mut failed, mut pending) = (0u128, 0u128);
    while let Some(r) = rows.try_next().await? {
        let state: String = r.try_get("state")?;
        let amount = u128::from(msat(r.try_get("amount_msat")?)?.as_u64());
        if state == PENDING {
            pending += amount;
        } else {
            failed += amount;
        }
    }
    let clamp = |v: u128| Msat::new(u64::try_from(v).unwrap_or(u64::MAX)).unwrap_or(Msat::MAX);
    Ok((clamp(failed), clamp(pending)))
}

/// Pending adjudicated and human verifications, oldest first.
pub async fn queue(
    conn: &mut AnyConnection,
    limit: u32,
) -> Result<Vec<VerificationRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {VERIFICATION_COLUMNS} FROM aegis_verifications
         WHERE state = 'pending' AND tier IN ('adjudicated', 'human')
         ORDER BY created_at_ms, verification_id LIMIT $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?
        .iter()
        .map(decode_verification)
        .collect()
}

// ---- verdicts --------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerdictRow {
    pub verification_id: String,
    pub verifier_id: String,
    pub family: String,
    pub verdict: String,
    pub weight_ppm: u32,
    pub signature: String,
    pub submitted_at_ms: u64,
}

/// Records a verdict; `false` if this verifier has one on this verification already.
pub async fn insert_verdict(conn: &mut AnyConnection, v: &VerdictRow) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "INSERT INTO aegis_verdicts (verification_id, verifier_id, family, verdict, weight_ppm, signature, submitted_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (verification_id, verifier_id) DO NOTHING",
    )
    .bind(&v.verification_id)
    .bind(&v.verifier_id)
    .bind(&v.family)
    .bind(&v.verdict)
    .bind(i64::from(v.weight_ppm))
    .bind(&v.signature)
    .bind(i(v.submitted_at_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn verdicts(
    conn: &mut AnyConnection,
    verification_id: &str,
) -> Result<Vec<VerdictRow>, StoreError> {
    sqlx::query::<Any>(
        "SELECT verification_id, verifier_id, family, verdict, weight_ppm, signature, submitted_at_ms
         FROM aegis_verdicts WHERE verification_id = $1 ORDER BY submitted_at_ms, verifier_id",
    )
    .bind(verification_id)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|r| {
        Ok(VerdictRow {
            verification_id: r.try_get("verification_id")?,
            verifier_id: r.try_get("verifier_id")?,
            family: r.try_get("family")?,
            verdict: r.try_get("verdict")?,
            weight_ppm: small(r.try_get("weight_ppm")?)?,
            signature: r.try_get("signature")?,
            submitted_at_ms: u(r.try_get("submitted_at_ms")?)?,
        })
    })
    .collect()
}

// ---- verifiers -------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierRow {
    pub verifier_id: String,
    pub public_key: String,
    pub family: String,
    pub active: bool,
    pub sim: Option<Profile>,
    pub disabled_reason: Option<String>,
    pub registered_by: String,
    pub registered_at_ms: u64,
    pub updated_at_ms: u64,
}

const VERIFIER_COLUMNS: &str = "verifier_id, public_key, family, active, sim_behaviour, sim_seed, sim_noise_ppm, \
    disabled_reason, registered_by, registered_at_ms, updated_at_ms";

fn decode_verifier(r: &AnyRow) -> Result<VerifierRow, StoreError> {
    let behaviour: Option<String> = r.try_get("sim_behaviour")?;
    let sim = match behaviour {
        None => None,
        Some(b) => {
            let seed: Option<String> = r.try_get("sim_seed")?;
            let noise: Option<i64> = r.try_get("sim_noise_ppm")?;
            Some(Profile {
                behaviour: Behaviour::parse(&b)
                    .ok_or_else(|| StoreError::Corrupt(format!("sim behaviour {b}")))?,
                seed: seed
                    .unwrap_or_default()
                    .parse()
                    .map_err(|_| StoreError::Corrupt("sim seed".into()))?,
                noise_ppm: small(noise.unwrap_or(0))?,
            })
        }
    };
    Ok(VerifierRow {
        verifier_id: r.try_get("verifier_id")?,
        public_key: r.try_get("public_key")?,
        family: r.try_get("family")?,
        active: r.try_get::<i64, _>("active")? == 1,
        sim,
        disabled_reason: r.try_get("disabled_reason")?,
        registered_by: r.try_get("registered_by")?,
        registered_at_ms: u(r.try_get("registered_at_ms")?)?,
        updated_at_ms: u(r.try_get("updated_at_ms")?)?,
    })
}

/// Registers a verifier; `false` if the id is taken.
pub async fn insert_verifier(
    conn: &mut AnyConnection,
    v: &VerifierRow,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "INSERT INTO aegis_verifiers (verifier_id, public_key, family, active, sim_behaviour, sim_seed, sim_noise_ppm,
            disabled_reason, registered_by, registered_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) ON CONFLICT (verifier_id) DO NOTHING",
    )
    .bind(&v.verifier_id)
    .bind(&v.public_key)
    .bind(&v.family)
    .bind(i64::from(v.active))
    .bind(v.sim.map(|p| p.behaviour.as_str()))
    .bind(v.sim.map(|p| p.seed.to_string()))
    .bind(v.sim.map(|p| i64::from(p.noise_ppm)))
    .bind(&v.disabled_reason)
    .bind(&v.registered_by)
    .bind(i(v.registered_at_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn get_verifier(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<VerifierRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {VERIFIER_COLUMNS} FROM aegis_verifiers WHERE verifier_id = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode_verifier)
        .transpose()
}

/// Every verifier, by id (the registry is small: an operator registers each one).
pub async fn list_verifiers(
    conn: &mut AnyConnection,
    limit: u32,
) -> Result<Vec<VerifierRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {VERIFIER_COLUMNS} FROM aegis_verifiers ORDER BY verifier_id LIMIT $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?
        .iter()
        .map(decode_verifier)
        .collect()
}

/// `active -> disabled`, once; `false` if it was disabled already.
pub async fn disable_verifier(
    conn: &mut AnyConnection,
    id: &str,
    reason: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE aegis_verifiers SET active = 0, disabled_reason = $2, updated_at_ms = $3
         WHERE verifier_id = $1 AND active = 1",
    )
    .bind(id)
    .bind(reason)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

// ---- risk budgets ----------------------------------------------------------------------------

pub async fn upsert_budget(
    conn: &mut AnyConnection,
    subject: Subject,
    subject_id: &str,
    b: &Budget,
    updated_by: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO aegis_risk_budgets (subject_type, subject_id, tolerated_msat, window_ms, cap_msat, updated_by, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (subject_type, subject_id) DO UPDATE SET tolerated_msat = $3, window_ms = $4, cap_msat = $5,
            updated_by = $6, updated_at_ms = $7",
    )
    .bind(subject.as_str())
    .bind(subject_id)
    .bind(b.tolerated.as_i64())
    .bind(i(b.window_ms)?)
    .bind(b.cap.as_i64())
    .bind(updated_by)
    .bind(i(b.updated_at_ms)?)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_budget(
    conn: &mut AnyConnection,
    subject: Subject,
    subject_id: &str,
) -> Result<Option<Budget>, StoreError> {
    let row = sqlx::query::<Any>(
        "SELECT tolerated_msat, window_ms, cap_msat, updated_at_ms FROM aegis_risk_budgets
         WHERE subject_type = $1 AND subject_id = $2",
    )
    .bind(subject.as_str())
    .bind(subject_id)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(Budget {
            tolerated: msat(r.try_get("tolerated_msat")?)?,
            window_ms: u(r.try_get("window_ms")?)?,
            cap: msat(r.try_get("cap_msat")?)?,
            updated_at_ms: u(r.try_get("updated_at_ms")?)?,
        })
    })
    .transpose()
}

// ---- ground-truth cases ----------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseRow {
    pub case_id: String,
    pub kind: String,
    /// Proto JSON of the work unit and of the evidence list.
    pub work: String,
    pub evidence: String,
    pub expected_verdict: String,
    pub label: String,
    pub work_hash: String,
    pub created_by: String,
    pub created_at_ms: u64,
    pub receipt_hash: String,
}

const CASE_COLUMNS: &str = "case_id, kind, work, evidence, expected_verdict, label, work_hash, created_by, \
    created_at_ms, receipt_hash";

fn decode_case(r: &AnyRow) -> Result<CaseRow, StoreError> {
    Ok(CaseRow {
        case_id: r.try_get("case_id")?,
        kind: r.try_get("kind")?,
        work: r.try_get("work")?,
        evidence: r.try_get("evidence")?,
        expected_verdict: r.try_get("expected_verdict")?,
        label: r.try_get("label")?,
        work_hash: r.try_get("work_hash")?,
        created_by: r.try_get("created_by")?,
        created_at_ms: u(r.try_get("created_at_ms")?)?,
        receipt_hash: r.try_get("receipt_hash")?,
    })
}

pub async fn insert_case(conn: &mut AnyConnection, c: &CaseRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO aegis_cases (case_id, kind, work, evidence, expected_verdict, label, work_hash, created_by,
            created_at_ms, receipt_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&c.case_id)
    .bind(&c.kind)
    .bind(&c.work)
    .bind(&c.evidence)
    .bind(&c.expected_verdict)
    .bind(&c.label)
    .bind(&c.work_hash)
    .bind(&c.created_by)
    .bind(i(c.created_at_ms)?)
    .bind(&c.receipt_hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// Cases with an id after `after`, by id, at most `limit`.
pub async fn list_cases(
    conn: &mut AnyConnection,
    after: &str,
    limit: u32,
) -> Result<Vec<CaseRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {CASE_COLUMNS} FROM aegis_cases WHERE case_id > $1 ORDER BY case_id LIMIT $2"
    ));
    sqlx::query::<Any>(sql)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?
        .iter()
        .map(decode_case)
        .collect()
}

/// `(case_id, expected verdict)` of the named cases, or of every case (at most `limit`).
pub async fn case_answers(
    conn: &mut AnyConnection,
    ids: &[String],
    limit: u32,
) -> Result<Vec<(String, String)>, StoreError> {
    if ids.is_empty() {
        let rows = sqlx::query::<Any>(
            "SELECT case_id, expected_verdict FROM aegis_cases ORDER BY case_id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(conn)
        .await?;
        return rows
            .iter()
            .map(|r| Ok((r.try_get("case_id")?, r.try_get("expected_verdict")?)))
            .collect();
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let row = sqlx::query::<Any>(
            "SELECT case_id, expected_verdict FROM aegis_cases WHERE case_id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(r) = row {
            out.push((r.try_get("case_id")?, r.try_get("expected_verdict")?));
        }
    }
    Ok(out)
}

pub async fn case_count(conn: &mut AnyConnection) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar::<Any, i64>("SELECT CAST(COUNT(*) AS BIGINT) FROM aegis_cases")
        .fetch_one(conn)
        .await?;
    u(n)
}

// ---- simulation ------------------------------------------------------------------------------

pub async fn insert_run(
    conn: &mut AnyConnection,
    run_id: &str,
    requested_by: &str,
    results: &[(String, String, Verdict, Verdict)],
    now_ms: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO aegis_sim_runs (run_id, requested_by, results_count, ran_at_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(run_id)
    .bind(requested_by)
    .bind(i(results.len() as u64)?)
    .bind(i(now_ms)?)
    .execute(&mut *conn)
    .await?;
    for (verifier_id, case_id, expected, verdict) in results {
        sqlx::query(
            "INSERT INTO aegis_sim_results (run_id, verifier_id, case_id, expected, verdict) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(run_id)
        .bind(verifier_id)
        .bind(case_id)
        .bind(expected.as_str())
        .bind(verdict.as_str())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Simulation scores per verifier (of one verifier if given).
pub async fn scores(
    conn: &mut AnyConnection,
    verifier_id: Option<&str>,
) -> Result<BTreeMap<String, Score>, StoreError> {
    let rows = sqlx::query::<Any>(
        "SELECT verifier_id,
            CAST(COUNT(*) AS BIGINT) AS total,
            CAST(SUM(CASE WHEN expected = verdict THEN 1 ELSE 0 END) AS BIGINT) AS correct,
            CAST(SUM(CASE WHEN expected = 'failed' AND verdict = 'passed' THEN 1 ELSE 0 END) AS BIGINT) AS false_pass,
            CAST(SUM(CASE WHEN expected = 'passed' AND verdict = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS false_fail,
            CAST(SUM(CASE WHEN expected = 'passed' THEN 1 ELSE 0 END) AS BIGINT) AS expected_pass,
            CAST(SUM(CASE WHEN expected = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS expected_fail
         FROM aegis_sim_results WHERE ($1 = '' OR verifier_id = $1) GROUP BY verifier_id",
    )
    .bind(verifier_id.unwrap_or(""))
    .fetch_all(conn)
    .await?;
    let mut out = BTreeMap::new();
    for r in &rows {
        out.insert(
            r.try_get::<String, _>("verifier_id")?,
            Score {
                total: count(r, "total")?,
                correct: count(r, "correct")?,
                false_pass: count(r, "false_pass")?,
                false_fail: count(r, "false_fail")?,
                expected_pass: count(r, "expected_pass")?,
                expected_fail: count(r, "expected_fail")?,
            },
        );
    }
    Ok(out)
}
