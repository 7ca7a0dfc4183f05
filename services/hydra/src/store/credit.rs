//! SQL for credit envelopes, the per-agent open-envelope counter and payment outcomes.
//!
//! Every state change is a guarded `UPDATE` whose `WHERE` names the state it leaves (and the
//! clock condition that must hold), so of any number of racing callers exactly one moves an
//! envelope; the others see zero rows and learn what happened by reading it again.

use oa_money::Msat;
use oa_store::StoreError;
use sqlx::{Any, AnyConnection, Row, any::AnyRow};

use super::{i, msat, opt_msat, opt_u, u};

/// The offer on an envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferRow {
    pub offer_id: String,
    pub cap: Msat,
    pub limit: Msat,
    pub fee_bps: u32,
    pub fee: Msat,
    pub weighted_losses: Msat,
    /// The underwriting inputs, as JSON (`UnderwritingInputs`).
    pub inputs: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeRow {
    pub envelope_id: String,
    pub caller: String,
    pub agent_id: String,
    pub provider_id: String,
    pub provider_invoice: Option<String>,
    pub provider_pubkey: Option<String>,
    pub scope: String,
    pub requested_cap: Msat,
    pub expires_at_ms: u64,
    pub state: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub offer: Option<OfferRow>,
    pub issued_at_ms: Option<u64>,
    pub issue_receipt_hash: Option<String>,
    pub settle_idempotency_scope: Option<String>,
    pub settle_idempotency_key: Option<String>,
    pub verification_id: Option<String>,
    pub verification_receipt: Option<String>,
    pub payment_invoice: Option<String>,
    pub payment_hash: Option<String>,
    pub payment_amount: Option<Msat>,
    pub payment_fee_limit: Option<Msat>,
    pub routing_fee: Option<Msat>,
    pub preimage: Option<String>,
    pub executor_receipt: Option<String>,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub ended_at_ms: Option<u64>,
    pub default_reason: Option<String>,
    pub end_receipt_hash: Option<String>,
}

const COLUMNS: &str = "envelope_id, caller, agent_id, provider_id, provider_invoice, provider_pubkey, scope, \
    requested_cap_msat, expires_at_ms, state, created_at_ms, updated_at_ms, offer_id, offer_cap_msat, \
    offer_limit_msat, offer_fee_bps, offer_fee_msat, offer_weighted_losses_msat, offer_inputs, \
    offer_created_at_ms, offer_expires_at_ms, issued_at_ms, issue_receipt_hash, settle_idempotency_scope, \
    settle_idempotency_key, verification_id, verification_receipt, payment_invoice, payment_hash, \
    payment_amount_msat, payment_fee_limit_msat, routing_fee_msat, preimage, executor_receipt, failure_code, \
    failure_reason, ended_at_ms, default_reason, end_receipt_hash";

fn decode(r: &AnyRow) -> Result<EnvelopeRow, StoreError> {
    let offer_id: Option<String> = r.try_get("offer_id")?;
    let offer = match offer_id {
        None => None,
        Some(offer_id) => {
            let need = |c: &str| -> Result<i64, StoreError> {
                r.try_get::<Option<i64>, _>(c)?
                    .ok_or_else(|| StoreError::Corrupt(format!("offer without {c}")))
            };
            Some(OfferRow {
                offer_id,
                cap: msat(need("offer_cap_msat")?)?,
                limit: msat(need("offer_limit_msat")?)?,
                fee_bps: u32::try_from(need("offer_fee_bps")?)
                    .map_err(|_| StoreError::Corrupt("offer fee bps".into()))?,
                fee: msat(need("offer_fee_msat")?)?,
                weighted_losses: msat(need("offer_weighted_losses_msat")?)?,
                inputs: r
                    .try_get::<Option<String>, _>("offer_inputs")?
                    .unwrap_or_default(),
                created_at_ms: u(need("offer_created_at_ms")?)?,
                expires_at_ms: u(need("offer_expires_at_ms")?)?,
            })
        }
    };
    Ok(EnvelopeRow {
        envelope_id: r.try_get("envelope_id")?,
        caller: r.try_get("caller")?,
        agent_id: r.try_get("agent_id")?,
        provider_id: r.try_get("provider_id")?,
        provider_invoice: r.try_get("provider_invoice")?,
        provider_pubkey: r.try_get("provider_pubkey")?,
        scope: r.try_get("scope")?,
        requested_cap: msat(r.try_get("requested_cap_msat")?)?,
        expires_at_ms: u(r.try_get("expires_at_ms")?)?,
        state: r.try_get("state")?,
        created_at_ms: u(r.try_get("created_at_ms")?)?,
        updated_at_ms: u(r.try_get("updated_at_ms")?)?,
        offer,
        issued_at_ms: opt_u(r.try_get("issued_at_ms")?)?,
        issue_receipt_hash: r.try_get("issue_receipt_hash")?,
        settle_idempotency_scope: r.try_get("settle_idempotency_scope")?,
        settle_idempotency_key: r.try_get("settle_idempotency_key")?,
        verification_id: r.try_get("verification_id")?,
        verification_receipt: r.try_get("verification_receipt")?,
        payment_invoice: r.try_get("payment_invoice")?,
        payment_hash: r.try_get("payment_hash")?,
        payment_amount: opt_msat(r.try_get("payment_amount_msat")?)?,
        payment_fee_limit: opt_msat(r.try_get("payment_fee_limit_msat")?)?,
        routing_fee: opt_msat(r.try_get("routing_fee_msat")?)?,
        preimage: r.try_get("preimage")?,
        executor_receipt: r.try_get("executor_receipt")?,
        failure_code: r.try_get("failure_code")?,
        failure_reason: r.try_get("failure_reason")?,
        ended_at_ms: opt_u(r.try_get("ended_at_ms")?)?,
        default_reason: r.try_get("default_reason")?,
        end_receipt_hash: r.try_get("end_receipt_hash")?,
    })
}

pub async fn insert_intent(conn: &mut AnyConnection, e: &EnvelopeRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO hydra_envelopes (envelope_id, caller, agent_id, provider_id, provider_invoice, provider_pubkey,
            scope, requested_cap_msat, expires_at_ms, state, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'intent', $10, $10)",
    )
    .bind(&e.envelope_id)
    .bind(&e.caller)
    .bind(&e.agent_id)
    .bind(&e.provider_id)
    .bind(&e.provider_invoice)
    .bind(&e.provider_pubkey)
    .bind(&e.scope)
    .bind(e.requested_cap.as_i64())
    .bind(i(e.expires_at_ms)?)
    .bind(i(e.created_at_ms)?)
    .execute(conn)
    .await?;
    Ok(())
}

async fn get_where(
    conn: &mut AnyConnection,
    column: &'static str,
    value: &str,
) -> Result<Option<EnvelopeRow>, StoreError> {
    // Only fixed column names are interpolated.
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM hydra_envelopes WHERE {column} = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(value)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<EnvelopeRow>, StoreError> {
    get_where(conn, "envelope_id", id).await
}

pub async fn get_by_offer(
    conn: &mut AnyConnection,
    offer_id: &str,
) -> Result<Option<EnvelopeRow>, StoreError> {
    get_where(conn, "offer_id", offer_id).await
}

/// `intent -> offered`, or a new offer replacing a lapsed one (`offered -> offered`). Guarded by
/// the state and the previous offer the caller saw, so two racing offers cannot both land.
pub async fn set_offer(
    conn: &mut AnyConnection,
    envelope_id: &str,
    previous_offer: Option<&str>,
    o: &OfferRow,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let sql = match previous_offer {
        None => {
            "UPDATE hydra_envelopes SET state = 'offered', offer_id = $2, offer_cap_msat = $3, offer_limit_msat = $4,
                offer_fee_bps = $5, offer_fee_msat = $6, offer_weighted_losses_msat = $7, offer_inputs = $8,
                offer_created_at_ms = $9, offer_expires_at_ms = $10, updated_at_ms = $9
             WHERE envelope_id = $1 AND state = 'intent' AND offer_id IS NULL AND $11 = ''"
        }
        Some(_) => {
            "UPDATE hydra_envelopes SET state = 'offered', offer_id = $2, offer_cap_msat = $3, offer_limit_msat = $4,
                offer_fee_bps = $5, offer_fee_msat = $6, offer_weighted_losses_msat = $7, offer_inputs = $8,
                offer_created_at_ms = $9, offer_expires_at_ms = $10, updated_at_ms = $9
             WHERE envelope_id = $1 AND state = 'offered' AND offer_id = $11 AND offer_expires_at_ms <= $9"
        }
    };
    let n = sqlx::query(sql)
        .bind(envelope_id)
        .bind(&o.offer_id)
        .bind(o.cap.as_i64())
        .bind(o.limit.as_i64())
        .bind(i64::from(o.fee_bps))
        .bind(o.fee.as_i64())
        .bind(o.weighted_losses.as_i64())
        .bind(&o.inputs)
        .bind(i(now_ms)?)
        .bind(i(o.expires_at_ms)?)
        .bind(previous_offer.unwrap_or(""))
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// `offered -> issued`, only while the offer and the envelope are both unexpired.
pub async fn issue(
    conn: &mut AnyConnection,
    offer_id: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE hydra_envelopes SET state = 'issued', issued_at_ms = $2, updated_at_ms = $2
         WHERE offer_id = $1 AND state = 'offered' AND offer_expires_at_ms > $2 AND expires_at_ms > $2",
    )
    .bind(offer_id)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn set_issue_receipt(
    conn: &mut AnyConnection,
    envelope_id: &str,
    hash: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE hydra_envelopes SET issue_receipt_hash = $2 WHERE envelope_id = $1")
        .bind(envelope_id)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// What a settlement starts with.
#[derive(Clone, Debug)]
pub struct SettleStart<'a> {
    pub idempotency_scope: &'a str,
    pub idempotency_key: &'a str,
    pub verification_id: &'a str,
    pub verification_receipt: &'a str,
    pub invoice: &'a str,
    pub payment_hash: &'a str,
    pub amount: Msat,
    pub fee_limit: Msat,
}

/// `issued -> settling`, only while the envelope is unexpired: the single point where a
/// settlement starts, however many callers race for it.
pub async fn start_settling(
    conn: &mut AnyConnection,
    envelope_id: &str,
    s: &SettleStart<'_>,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE hydra_envelopes SET state = 'settling', settle_idempotency_scope = $2, settle_idempotency_key = $3,
            verification_id = $4, verification_receipt = $5, payment_invoice = $6, payment_hash = $7,
            payment_amount_msat = $8, payment_fee_limit_msat = $9, routing_fee_msat = NULL, preimage = NULL,
            executor_receipt = NULL, failure_code = NULL, failure_reason = NULL, updated_at_ms = $10
         WHERE envelope_id = $1 AND state = 'issued' AND expires_at_ms > $10",
    )
    .bind(envelope_id)
    .bind(s.idempotency_scope)
    .bind(s.idempotency_key)
    .bind(s.verification_id)
    .bind(s.verification_receipt)
    .bind(s.invoice)
    .bind(s.payment_hash)
    .bind(s.amount.as_i64())
    .bind(s.fee_limit.as_i64())
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// `settling -> settled`, once, for the payment the settlement started.
pub async fn finish_settled(
    conn: &mut AnyConnection,
    envelope_id: &str,
    payment_hash: &str,
    routing_fee: Msat,
    preimage: &str,
    executor_receipt: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE hydra_envelopes SET state = 'settled', routing_fee_msat = $3, preimage = $4, executor_receipt = $5,
            ended_at_ms = $6, updated_at_ms = $6
         WHERE envelope_id = $1 AND state = 'settling' AND payment_hash = $2",
    )
    .bind(envelope_id)
    .bind(payment_hash)
    .bind(routing_fee.as_i64())
    .bind(preimage)
    .bind(executor_receipt)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// `settling -> issued` after the provider payment failed: the reservation stays, and the
/// envelope may be settled again (with a new invoice) until it expires.
pub async fn payment_failed(
    conn: &mut AnyConnection,
    envelope_id: &str,
    payment_hash: &str,
    failure_code: &str,
    failure_reason: &str,
    executor_receipt: Option<&str>,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE hydra_envelopes SET state = 'issued', failure_code = $3, failure_reason = $4, executor_receipt = $5,
            updated_at_ms = $6
         WHERE envelope_id = $1 AND state = 'settling' AND payment_hash = $2",
    )
    .bind(envelope_id)
    .bind(payment_hash)
    .bind(failure_code)
    .bind(failure_reason)
    .bind(executor_receipt)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// `issued -> defaulted` on a failed verification.
pub async fn default_failed_verification(
    conn: &mut AnyConnection,
    envelope_id: &str,
    verification_id: &str,
    verification_receipt: &str,
    idempotency: (&str, &str),
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE hydra_envelopes SET state = 'defaulted', default_reason = 'verification_failed', verification_id = $2,
            verification_receipt = $3, settle_idempotency_scope = $4, settle_idempotency_key = $5,
            ended_at_ms = $6, updated_at_ms = $6
         WHERE envelope_id = $1 AND state = 'issued'",
    )
    .bind(envelope_id)
    .bind(verification_id)
    .bind(verification_receipt)
    .bind(idempotency.0)
    .bind(idempotency.1)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// `issued -> expired`, once the envelope's expiry has passed.
pub async fn expire(
    conn: &mut AnyConnection,
    envelope_id: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE hydra_envelopes SET state = 'expired', default_reason = 'expired', ended_at_ms = $2, updated_at_ms = $2
         WHERE envelope_id = $1 AND state = 'issued' AND expires_at_ms <= $2",
    )
    .bind(envelope_id)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn set_end_receipt(
    conn: &mut AnyConnection,
    envelope_id: &str,
    hash: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE hydra_envelopes SET end_receipt_hash = $2 WHERE envelope_id = $1")
        .bind(envelope_id)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
}

async fn ids(
    conn: &mut AnyConnection,
    sql: &'static str,
    now_ms: Option<u64>,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    let mut q = sqlx::query_scalar::<Any, String>(sql);
    if let Some(now) = now_ms {
        q = q.bind(i(now)?);
    }
    Ok(q.bind(i64::from(limit)).fetch_all(conn).await?)
}

/// Issued envelopes whose expiry has passed, oldest deadline first.
pub async fn due_for_expiry(
    conn: &mut AnyConnection,
    now_ms: u64,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    ids(
        conn,
        "SELECT envelope_id FROM hydra_envelopes WHERE state = 'issued' AND expires_at_ms <= $1
         ORDER BY expires_at_ms, envelope_id LIMIT $2",
        Some(now_ms),
        limit,
    )
    .await
}

/// Envelopes left in `settling` (to re-drive after a restart).
pub async fn settling(conn: &mut AnyConnection, limit: u32) -> Result<Vec<String>, StoreError> {
    ids(
        conn,
        "SELECT envelope_id FROM hydra_envelopes WHERE state = 'settling' ORDER BY updated_at_ms LIMIT $1",
        None,
        limit,
    )
    .await
}

/// An agent's credit history in Hydra's records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentHistory {
    pub settled_volume: Msat,
    pub settled_count: u64,
    /// Caps of defaulted and expired envelopes with when they ended, newest first.
    pub losses: Vec<(Msat, u64)>,
    pub open_exposure: Msat,
}

/// The agent's settled volume (amount + routing fee paid out), its most recent `max_losses`
/// losses and its open exposure (caps of issued and settling envelopes).
pub async fn history(
    conn: &mut AnyConnection,
    agent: &str,
    max_losses: u32,
) -> Result<AgentHistory, StoreError> {
    let row = sqlx::query::<Any>(
        "SELECT CAST(COALESCE(SUM(payment_amount_msat + routing_fee_msat), 0) AS BIGINT) AS volume,
                CAST(COUNT(*) AS BIGINT) AS n
         FROM hydra_envelopes WHERE agent_id = $1 AND state = 'settled'",
    )
    .bind(agent)
    .fetch_one(&mut *conn)
    .await?;
    let settled_volume = msat(row.try_get("volume")?)?;
    let settled_count = u(row.try_get("n")?)?;
    let open: i64 = sqlx::query_scalar::<Any, i64>(
        "SELECT CAST(COALESCE(SUM(offer_cap_msat), 0) AS BIGINT) FROM hydra_envelopes
         WHERE agent_id = $1 AND state IN ('issued', 'settling')",
    )
    .bind(agent)
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query::<Any>(
        "SELECT offer_cap_msat, ended_at_ms FROM hydra_envelopes
         WHERE agent_id = $1 AND state IN ('defaulted', 'expired')
         ORDER BY ended_at_ms DESC, envelope_id LIMIT $2",
    )
    .bind(agent)
    .bind(i64::from(max_losses))
    .fetch_all(&mut *conn)
    .await?;
    let losses = rows
        .iter()
        .map(|r| {
            Ok((
                msat(r.try_get("offer_cap_msat")?)?,
                u(r.try_get("ended_at_ms")?)?,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(AgentHistory {
        settled_volume,
        settled_count,
        losses,
        open_exposure: msat(open)?,
    })
}

/// Settled and (defaulted + expired) envelope counts, of one agent or of all.
pub async fn outcome_counts(
    conn: &mut AnyConnection,
    agent: Option<&str>,
) -> Result<(u64, u64), StoreError> {
    let row = sqlx::query::<Any>(
        "SELECT CAST(COALESCE(SUM(CASE WHEN state = 'settled' THEN 1 ELSE 0 END), 0) AS BIGINT) AS settled,
                CAST(COALESCE(SUM(CASE WHEN state IN ('defaulted', 'expired') THEN 1 ELSE 0 END), 0) AS BIGINT) AS lost
         FROM hydra_envelopes WHERE ($1 = '' OR agent_id = $1) AND ended_at_ms IS NOT NULL",
    )
    .bind(agent.unwrap_or(""))
    .fetch_one(conn)
    .await?;
    Ok((u(row.try_get("settled")?)?, u(row.try_get("lost")?)?))
}

/// Open envelopes (issued or settling) and their total cap, over all agents.
pub async fn open_totals(conn: &mut AnyConnection) -> Result<(u64, Msat), StoreError> {
    let row = sqlx::query::<Any>(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(COALESCE(SUM(offer_cap_msat), 0) AS BIGINT) AS exposure
         FROM hydra_envelopes WHERE state IN ('issued', 'settling')",
    )
    .fetch_one(conn)
    .await?;
    Ok((u(row.try_get("n")?)?, msat(row.try_get("exposure")?)?))
}

/// Takes one of the agent's open-envelope slots, if it has fewer than `max` open. The guarded
/// update takes the agent's row lock, so issuing for one agent is serialized from here to commit.
pub async fn take_slot(
    conn: &mut AnyConnection,
    agent: &str,
    max: u64,
    now_ms: u64,
) -> Result<bool, StoreError> {
    sqlx::query(
        "INSERT INTO hydra_credit_agents (agent_id, open_envelopes, updated_at_ms) VALUES ($1, 0, $2)
         ON CONFLICT (agent_id) DO NOTHING",
    )
    .bind(agent)
    .bind(i(now_ms)?)
    .execute(&mut *conn)
    .await?;
    let n = sqlx::query(
        "UPDATE hydra_credit_agents SET open_envelopes = open_envelopes + 1, updated_at_ms = $3
         WHERE agent_id = $1 AND open_envelopes < $2",
    )
    .bind(agent)
    .bind(i(max)?)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Gives back the slot of an envelope that ended.
pub async fn release_slot(
    conn: &mut AnyConnection,
    agent: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let n = sqlx::query(
        "UPDATE hydra_credit_agents SET open_envelopes = open_envelopes - 1, updated_at_ms = $2
         WHERE agent_id = $1 AND open_envelopes > 0",
    )
    .bind(agent)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    if n != 1 {
        return Err(StoreError::Corrupt(format!(
            "open-envelope count of {agent} is already zero"
        )));
    }
    Ok(())
}

/// Records a payment's terminal outcome once (a repeat of the same payment is ignored).
pub async fn record_payment_outcome(
    conn: &mut AnyConnection,
    source: &str,
    ref_id: &str,
    payment_hash: &str,
    succeeded: bool,
    amount: Msat,
    now_ms: u64,
) -> Result<(), StoreError> {
    record_payment_outcomes(
        conn,
        source,
        &[Outcome {
            ref_id,
            payment_hash,
            succeeded,
            amount,
            at_ms: now_ms,
        }],
    )
    .await
}

/// One payment's outcome, for [`record_payment_outcomes`].
pub struct Outcome<'a> {
    pub ref_id: &'a str,
    pub payment_hash: &'a str,
    pub succeeded: bool,
    pub amount: Msat,
    pub at_ms: u64,
}

/// Several outcomes of one source in one statement (an outcome already recorded is kept).
pub async fn record_payment_outcomes(
    conn: &mut AnyConnection,
    source: &str,
    outcomes: &[Outcome<'_>],
) -> Result<(), StoreError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO hydra_payment_outcomes (source, ref_id, payment_hash, succeeded, amount_msat, at_ms)
         VALUES {} ON CONFLICT (source, ref_id) DO NOTHING",
        oa_store::sql::row_placeholders(oa_store::sql::is_sqlite(conn), outcomes.len(), 6)
    );
    let mut q = sqlx::query::<Any>(sqlx::AssertSqlSafe(sql));
    for o in outcomes {
        q = q
            .bind(source)
            .bind(o.ref_id)
            .bind(o.payment_hash)
            .bind(i64::from(o.succeeded))
            .bind(o.amount.as_i64())
            .bind(i(o.at_ms)?);
    }
    q.execute(conn).await?;
    Ok(())
}
