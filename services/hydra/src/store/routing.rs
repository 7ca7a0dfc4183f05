//! SQL for routing decisions and learned channel bounds.

use oa_store::StoreError;
use sqlx::{Any, AnyConnection, Row};

use super::{i, msat, u};
use crate::scoring::Bounds;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionRow {
    pub decision_id: String,
    pub caller: String,
    pub policy: String,
    pub amount_msat: u64,
    pub payment_hash: Option<String>,
    pub inputs: String,
    pub ranking: String,
    pub chosen_candidate_id: Option<String>,
    pub chosen_route: Option<String>,
    pub created_at_ms: u64,
}

pub async fn insert_decision(conn: &mut AnyConnection, d: &DecisionRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO hydra_routing_decisions (decision_id, caller, policy, amount_msat, payment_hash, inputs, ranking,
            chosen_candidate_id, chosen_route, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&d.decision_id)
    .bind(&d.caller)
    .bind(&d.policy)
    .bind(i(d.amount_msat)?)
    .bind(&d.payment_hash)
    .bind(&d.inputs)
    .bind(&d.ranking)
    .bind(&d.chosen_candidate_id)
    .bind(&d.chosen_route)
    .bind(i(d.created_at_ms)?)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_receipt(
    conn: &mut AnyConnection,
    decision_id: &str,
    hash: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE hydra_routing_decisions SET receipt_hash = $2 WHERE decision_id = $1")
        .bind(decision_id)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// Claims the latest unlearned decision for `payment_hash` that chose a route, and returns that
/// route (JSON). The guarded update makes each decision teach at most once.
/// Which of these payment hashes have a lesson to learn (a chosen route not learned from yet):
/// one statement for a batch of results, most of which have none.
pub async fn with_lessons(
    conn: &mut AnyConnection,
    payment_hashes: &[&str],
) -> Result<std::collections::HashSet<String>, StoreError> {
    if payment_hashes.is_empty() {
        return Ok(std::collections::HashSet::new());
    }
    let sql = format!(
        "SELECT DISTINCT payment_hash FROM hydra_routing_decisions
         WHERE payment_hash IN ({}) AND learned_at_ms IS NULL AND chosen_route IS NOT NULL",
        oa_store::sql::placeholders(oa_store::sql::is_sqlite(conn), 1, payment_hashes.len())
    );
    let mut q = sqlx::query_scalar::<Any, String>(sqlx::AssertSqlSafe(sql));
    for h in payment_hashes {
        q = q.bind(*h);
    }
    Ok(q.fetch_all(conn).await?.into_iter().collect())
}

pub async fn claim_lesson(
    conn: &mut AnyConnection,
    payment_hash: &str,
    now_ms: u64,
) -> Result<Option<String>, StoreError> {
    let Some(id) = sqlx::query_scalar::<Any, String>(
        "SELECT decision_id FROM hydra_routing_decisions
         WHERE payment_hash = $1 AND learned_at_ms IS NULL AND chosen_route IS NOT NULL
         ORDER BY created_at_ms DESC, decision_id DESC LIMIT 1",
    )
    .bind(payment_hash)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let route = sqlx::query_scalar::<Any, String>(
        "UPDATE hydra_routing_decisions SET learned_at_ms = $2
         WHERE decision_id = $1 AND learned_at_ms IS NULL RETURNING chosen_route",
    )
    .bind(&id)
    .bind(i(now_ms)?)
    .fetch_optional(conn)
    .await?;
    Ok(route)
}

/// The stored bounds of these channels. With `lock`, each existing row is read by an
/// `UPDATE ... RETURNING` (in the given order, which callers sort), which takes its row lock on
/// PostgreSQL, so two payments learning about one channel do not lose each other's update.
pub async fn bounds(
    conn: &mut AnyConnection,
    chan_ids: &[u64],
    lock: bool,
) -> Result<Vec<(u64, Bounds)>, StoreError> {
    let sql = if lock {
        "UPDATE hydra_channel_bounds SET observed_at_ms = observed_at_ms WHERE chan_id = $1
         RETURNING min_msat, max_msat, observed_at_ms"
    } else {
        "SELECT min_msat, max_msat, observed_at_ms FROM hydra_channel_bounds WHERE chan_id = $1"
    };
    let mut out = Vec::new();
    for &chan in chan_ids {
        let row = sqlx::query::<Any>(sql)
            .bind(chan.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(r) = row {
            out.push((
                chan,
                Bounds {
                    min: msat(r.try_get("min_msat")?)?,
                    max: msat(r.try_get("max_msat")?)?,
                    observed_at_ms: u(r.try_get("observed_at_ms")?)?,
                },
            ));
        }
    }
    Ok(out)
}

pub async fn put_bounds(
    conn: &mut AnyConnection,
    chan_id: u64,
    b: &Bounds,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO hydra_channel_bounds (chan_id, min_msat, max_msat, observed_at_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (chan_id) DO UPDATE SET min_msat = $2, max_msat = $3, observed_at_ms = $4",
    )
    .bind(chan_id.to_string())
    .bind(b.min.as_i64())
    .bind(b.max.as_i64())
    .bind(i(b.observed_at_ms)?)
    .execute(conn)
    .await?;
    Ok(())
}
