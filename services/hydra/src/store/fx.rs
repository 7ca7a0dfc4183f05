//! SQL for FX quotes.

use oa_money::Msat;
use oa_store::StoreError;
use sqlx::{Any, AnyConnection, Row, any::AnyRow};

use super::{i, msat, opt_u, u};

pub const OPEN: &str = "open";
pub const SETTLED: &str = "settled";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FxQuoteRow {
    pub fx_quote_id: String,
    pub caller: String,
    pub agent_id: String,
    pub sell_currency: String,
    pub sell_amount: String,
    pub buy_currency: String,
    pub buy_amount: String,
    /// Smallest units of each side (the ledger's integer amounts; `Msat` only carries them).
    pub sell_units: Msat,
    pub buy_units: Msat,
    pub rate: String,
    pub mid_rate: String,
    pub spread_bps: u32,
    pub state: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub settled_at_ms: Option<u64>,
    pub receipt_hash: Option<String>,
}

const COLUMNS: &str = "fx_quote_id, caller, agent_id, sell_currency, sell_amount, buy_currency, buy_amount, \
    sell_units, buy_units, rate, mid_rate, spread_bps, state, created_at_ms, expires_at_ms, settled_at_ms, receipt_hash";

fn decode(r: &AnyRow) -> Result<FxQuoteRow, StoreError> {
    Ok(FxQuoteRow {
        fx_quote_id: r.try_get("fx_quote_id")?,
        caller: r.try_get("caller")?,
        agent_id: r.try_get("agent_id")?,
        sell_currency: r.try_get("sell_currency")?,
        sell_amount: r.try_get("sell_amount")?,
        buy_currency: r.try_get("buy_currency")?,
        buy_amount: r.try_get("buy_amount")?,
        sell_units: msat(r.try_get("sell_units")?)?,
        buy_units: msat(r.try_get("buy_units")?)?,
        rate: r.try_get("rate")?,
        mid_rate: r.try_get("mid_rate")?,
        spread_bps: u32::try_from(r.try_get::<i64, _>("spread_bps")?)
            .map_err(|_| StoreError::Corrupt("spread_bps".into()))?,
        state: r.try_get("state")?,
        created_at_ms: u(r.try_get("created_at_ms")?)?,
        expires_at_ms: u(r.try_get("expires_at_ms")?)?,
        settled_at_ms: opt_u(r.try_get("settled_at_ms")?)?,
        receipt_hash: r.try_get("receipt_hash")?,
    })
}

pub async fn insert(conn: &mut AnyConnection, q: &FxQuoteRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO hydra_fx_quotes (fx_quote_id, caller, agent_id, sell_currency, sell_amount, buy_currency,
            buy_amount, sell_units, buy_units, rate, mid_rate, spread_bps, state, created_at_ms, expires_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'open', $13, $14)",
    )
    .bind(&q.fx_quote_id)
    .bind(&q.caller)
    .bind(&q.agent_id)
    .bind(&q.sell_currency)
    .bind(&q.sell_amount)
    .bind(&q.buy_currency)
    .bind(&q.buy_amount)
    .bind(q.sell_units.as_i64())
    .bind(q.buy_units.as_i64())
    .bind(&q.rate)
    .bind(&q.mid_rate)
    .bind(i64::from(q.spread_bps))
    .bind(i(q.created_at_ms)?)
    .bind(i(q.expires_at_ms)?)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<FxQuoteRow>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM hydra_fx_quotes WHERE fx_quote_id = $1"
    ));
    sqlx::query::<Any>(sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// `open -> settled`, only while unexpired: the single point where a quote settles.
pub async fn settle(
    conn: &mut AnyConnection,
    id: &str,
    key: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE hydra_fx_quotes SET state = 'settled', settled_at_ms = $3, settle_idempotency_key = $2
         WHERE fx_quote_id = $1 AND state = 'open' AND expires_at_ms > $3",
    )
    .bind(id)
    .bind(key)
    .bind(i(now_ms)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn set_receipt(conn: &mut AnyConnection, id: &str, hash: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE hydra_fx_quotes SET receipt_hash = $2 WHERE fx_quote_id = $1")
        .bind(id)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
}
