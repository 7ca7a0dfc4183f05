//! SQL for lightning-ops's tables (`migrations/0001_ops.sql`). Every function takes the caller's
//! connection or transaction; the caller decides what commits together.

use oa_money::Msat;
use oa_store::StoreError;
use sqlx::{Any, AnyConnection, Row, any::AnyRow};

use crate::{executor::Forward, plan::Observed};

pub const PENDING: &str = "pending";
pub const APPLIED: &str = "applied";
pub const FAILED: &str = "failed";

pub const WAITING: &str = "waiting";
pub const SATISFIED: &str = "satisfied";

/// The forwarding-history cursor's name in `ops_cursors`.
pub const FORWARDS_CURSOR: &str = "forwards";

/// One hour: uptime observations are counted per channel and hour.
pub const UPTIME_BUCKET_MS: u64 = 3_600_000;

pub fn i(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{v} does not fit a BIGINT column")))
}

pub fn u(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("unexpected negative value {v}")))
}

fn msat(v: i64) -> Result<Msat, StoreError> {
    Msat::from_i64(v).map_err(|e| StoreError::Corrupt(format!("amount column: {e}")))
}

fn msat_col(v: u64, what: &str) -> Result<i64, StoreError> {
    let m = Msat::new(v).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))?;
    i(m.as_u64())
}

// ---------------------------------------------------------------------------------------------
// Actions

/// Action kinds, as `ops_actions.kind` stores them.
pub const SET_POLICY: &str = "set_policy";
pub const REBALANCE: &str = "rebalance";
pub const OPEN: &str = "open";
pub const CLOSE: &str = "close";

/// An action lightning-ops executes (or executed) through the wallet-executor: a policy change,
/// a rebalance, a channel open or close.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActionRow {
    pub action_id: String,
    pub idempotency_key: String,
    pub kind: String,
    /// The channel acted on (for a rebalance, the one outside its band); 0 for an open.
    pub chan_id: u64,
    pub channel_id: String,
    /// JSON of what was observed when the action was planned: the [`crate::plan::Fees`] for a
    /// policy change, the band and local share for a rebalance, `{}` otherwise.
    pub previous: String,
    /// JSON of what is asked: the desired [`crate::plan::Fees`], the
    /// [`crate::executor::RebalanceAsk`], or the open's or close's parameters.
    pub desired: String,
    pub source: String,
    pub description: String,
    pub status: String,
    pub created_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub executor_receipt_hash: Option<String>,
    pub receipt_hash: Option<String>,
    pub error_code: Option<String>,
    /// The peer of an open.
    pub remote_pubkey: Option<String>,
    /// A rebalance's fee limit: what it holds of the day's budget until it ends.
    pub fee_limit_msat: Option<u64>,
    /// A rebalance's fee, as the executor reported it once it ended (0 if it failed).
    pub fee_msat: Option<u64>,
}

const ACTION_COLUMNS: &str = "action_id, idempotency_key, kind, chan_id, channel_id, previous, desired, source, description, \
    status, created_at_ms, finished_at_ms, executor_receipt_hash, receipt_hash, error_code, \
    remote_pubkey, fee_limit_msat, fee_msat";

fn decode_action(r: &AnyRow) -> Result<ActionRow, StoreError> {
    Ok(ActionRow {
        action_id: r.try_get("action_id")?,
        idempotency_key: r.try_get("idempotency_key")?,
        kind: r.try_get("kind")?,
        chan_id: u(r.try_get("chan_id")?)?,
        channel_id: r.try_get("channel_id")?,
        previous: r.try_get("previous")?,
        desired: r.try_get("desired")?,
        source: r.try_get("source")?,
        description: r.try_get("description")?,
        status: r.try_get("status")?,
        created_at_ms: u(r.try_get("created_at_ms")?)?,
        finished_at_ms: r
            .try_get::<Option<i64>, _>("finished_at_ms")?
            .map(u)
            .transpose()?,
        executor_receipt_hash: r.try_get("executor_receipt_hash")?,
        receipt_hash: r.try_get("receipt_hash")?,
        error_code: r.try_get("error_code")?,
        remote_pubkey: r.try_get("remote_pubkey")?,
        fee_limit_msat: r
            .try_get::<Option<i64>, _>("fee_limit_msat")?
            .map(u)
            .transpose()?,
        fee_msat: r
            .try_get::<Option<i64>, _>("fee_msat")?
            .map(u)
            .transpose()?,
    })
}

/// Records an action as pending. Returns false if its idempotency key is already recorded (the
/// same action, planned again before it finished).
pub async fn insert_action(conn: &mut AnyConnection, a: &ActionRow) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "INSERT INTO ops_actions (action_id, idempotency_key, kind, chan_id, channel_id, previous, desired,
            source, description, status, created_at_ms, remote_pubkey, fee_limit_msat)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(&a.action_id)
    .bind(&a.idempotency_key)
    .bind(&a.kind)
    .bind(i(a.chan_id)?)
    .bind(&a.channel_id)
    .bind(&a.previous)
    .bind(&a.desired)
    .bind(&a.source)
    .bind(&a.description)
    .bind(&a.status)
    .bind(i(a.created_at_ms)?)
    .bind(a.remote_pubkey.as_deref())
    .bind(
        a.fee_limit_msat
            .map(|v| msat_col(v, "fee_limit_msat"))
            .transpose()?,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn action_by_key(
    conn: &mut AnyConnection,
    key: &str,
) -> Result<Option<ActionRow>, StoreError> {
    let sql = format!("SELECT {ACTION_COLUMNS} FROM ops_actions WHERE idempotency_key = $1");
    sqlx::query::<Any>(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(decode_action)
        .transpose()
}

/// Actions written pending and not finished (an apply was interrupted), oldest first.
pub async fn pending_actions(conn: &mut AnyConnection) -> Result<Vec<ActionRow>, StoreError> {
    let sql = format!(
        "SELECT {ACTION_COLUMNS} FROM ops_actions WHERE status = 'pending' ORDER BY created_at_ms, action_id"
    );
    sqlx::query::<Any>(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(decode_action)
        .collect()
}

/// Every action, oldest first (for tests and audits; lightning-ops makes few).
pub async fn all_actions(conn: &mut AnyConnection) -> Result<Vec<ActionRow>, StoreError> {
    let sql = format!("SELECT {ACTION_COLUMNS} FROM ops_actions ORDER BY created_at_ms, action_id");
    sqlx::query::<Any>(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(decode_action)
        .collect()
}

/// Sets the receipt hash of an action finished in the same transaction.
pub async fn set_receipt_hash(
    conn: &mut AnyConnection,
    action_id: &str,
    receipt_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE ops_actions SET receipt_hash = $2 WHERE action_id = $1")
        .bind(action_id)
        .bind(receipt_hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Finishes a pending action. Guarded by its status, so only one finisher wins; returns whether
/// this call did.
#[allow(clippy::too_many_arguments)]
pub async fn finish_action(
    conn: &mut AnyConnection,
    action_id: &str,
    status: &str,
    now_ms: u64,
    executor_receipt_hash: Option<&str>,
    receipt_hash: Option<&str>,
    error_code: Option<&str>,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE ops_actions SET status = $2, finished_at_ms = $3, executor_receipt_hash = $4,
            receipt_hash = $5, error_code = $6
         WHERE action_id = $1 AND status = 'pending'",
    )
    .bind(action_id)
    .bind(status)
    .bind(i(now_ms)?)
    .bind(executor_receipt_hash)
    .bind(receipt_hash)
    .bind(error_code)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Records the fee a rebalance paid (0 if it failed), in the transaction that finishes it.
pub async fn set_fee(
    conn: &mut AnyConnection,
    action_id: &str,
    fee_msat: u64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE ops_actions SET fee_msat = $2 WHERE action_id = $1")
        .bind(action_id)
        .bind(msat_col(fee_msat, "fee_msat")?)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Whose actions a [`History`] counts: a channel's, or (for opens) a peer's.
#[derive(Clone, Copy, Debug)]
pub enum Subject<'a> {
    Channel(u64),
    Peer(&'a str),
}

/// The finished actions of one kind on one channel (or peer): applied, or refused by the
/// executor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// How many finished: the *generation* the next action's executor key carries.
    pub finished: u64,
    pub last_finished_ms: Option<u64>,
    pub last_failed_ms: Option<u64>,
}

pub async fn history(
    conn: &mut AnyConnection,
    kind: &str,
    subject: Subject<'_>,
) -> Result<History, StoreError> {
    let sql = match subject {
        Subject::Channel(_) => "chan_id = $2",
        Subject::Peer(_) => "remote_pubkey = $2",
    };
    let q = format!(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n, MAX(finished_at_ms) AS last,
            MAX(CASE WHEN status = 'failed' THEN finished_at_ms END) AS last_failed
         FROM ops_actions WHERE kind = $1 AND {sql} AND status IN ('applied', 'failed')"
    );
    let query = sqlx::query::<Any>(sqlx::AssertSqlSafe(q)).bind(kind);
    let query = match subject {
        Subject::Channel(chan_id) => query.bind(i(chan_id)?),
        Subject::Peer(peer) => query.bind(peer.to_owned()),
    };
    let row = query.fetch_one(&mut *conn).await?;
    let opt = |name: &str| -> Result<Option<u64>, StoreError> {
        row.try_get::<Option<i64>, _>(name)?.map(u).transpose()
    };
    Ok(History {
        finished: u(row.try_get("n")?)?,
        last_finished_ms: opt("last")?,
        last_failed_ms: opt("last_failed")?,
    })
}

/// How much of the rebalance budget the rebalances started in `[from_ms, to_ms)` hold: the fee
/// limit of each one not finished yet (its fee is unknown, at most that), the fee of each one
/// finished (0 for a failed one).
pub async fn rebalance_spent(
    conn: &mut AnyConnection,
    from_ms: u64,
    to_ms: u64,
) -> Result<Msat, StoreError> {
    let v: Option<i64> = sqlx::query_scalar::<Any, Option<i64>>(
        "SELECT CAST(SUM(CASE WHEN status = 'pending' THEN COALESCE(fee_limit_msat, 0)
                ELSE COALESCE(fee_msat, 0) END) AS BIGINT)
         FROM ops_actions WHERE kind = 'rebalance' AND created_at_ms >= $1 AND created_at_ms < $2",
    )
    .bind(i(from_ms)?)
    .bind(i(to_ms)?)
    .fetch_one(&mut *conn)
    .await?;
    msat(v.unwrap_or(0))
}

/// Peers with an open of ours under way: pending (asked, outcome not recorded: possibly in
/// doubt), or applied at or after `since_ms` without a channel to the peer observed since.
pub async fn opening_peers(
    conn: &mut AnyConnection,
    since_ms: u64,
) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar::<Any, String>(
        "SELECT DISTINCT a.remote_pubkey FROM ops_actions a
         WHERE a.kind = 'open' AND a.remote_pubkey IS NOT NULL
           AND (a.status = 'pending'
                OR (a.status = 'applied' AND a.created_at_ms >= $1
                    AND NOT EXISTS (SELECT 1 FROM ops_channels c
                                    WHERE c.remote_pubkey = a.remote_pubkey
                                      AND c.first_seen_ms >= a.created_at_ms)))
         ORDER BY a.remote_pubkey",
    )
    .bind(i(since_ms)?)
    .fetch_all(&mut *conn)
    .await
    .map_err(Into::into)
}

/// Channels lightning-ops closed or is closing (a close pending or applied).
pub async fn closing_channels(conn: &mut AnyConnection) -> Result<Vec<u64>, StoreError> {
    sqlx::query_scalar::<Any, i64>(
        "SELECT DISTINCT chan_id FROM ops_actions
         WHERE kind = 'close' AND status IN ('pending', 'applied') ORDER BY chan_id",
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(u)
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Deferred updates

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeferralRow {
    pub deferral_id: String,
    pub chan_id: u64,
    pub channel_id: String,
    pub desired: String,
    pub description: String,
    pub not_before_ms: u64,
    pub status: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub action_id: Option<String>,
}

fn decode_deferral(r: &AnyRow) -> Result<DeferralRow, StoreError> {
    Ok(DeferralRow {
        deferral_id: r.try_get("deferral_id")?,
        chan_id: u(r.try_get("chan_id")?)?,
        channel_id: r.try_get("channel_id")?,
        desired: r.try_get("desired")?,
        description: r.try_get("description")?,
        not_before_ms: u(r.try_get("not_before_ms")?)?,
        status: r.try_get("status")?,
        created_at_ms: u(r.try_get("created_at_ms")?)?,
        updated_at_ms: u(r.try_get("updated_at_ms")?)?,
        action_id: r.try_get("action_id")?,
    })
}

/// Holds back an update of `chan_id` until `not_before_ms`: creates the channel's waiting row, or
/// refreshes it with the latest desired policy. Returns false when the waiting row already said
/// exactly this (nothing changed).
#[allow(clippy::too_many_arguments)]
pub async fn defer(
    conn: &mut AnyConnection,
    deferral_id: &str,
    chan_id: u64,
    channel_id: &str,
    desired: &str,
    description: &str,
    not_before_ms: u64,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let current = sqlx::query::<Any>(
        "SELECT desired, not_before_ms FROM ops_deferred WHERE chan_id = $1 AND status = 'waiting'",
    )
    .bind(i(chan_id)?)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = current {
        let same_desired = row.try_get::<String, _>("desired")? == desired;
        let same_time = u(row.try_get("not_before_ms")?)? == not_before_ms;
        if same_desired && same_time {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE ops_deferred SET desired = $2, description = $3, not_before_ms = $4, updated_at_ms = $5
             WHERE chan_id = $1 AND status = 'waiting'",
        )
        .bind(i(chan_id)?)
        .bind(desired)
        .bind(description)
        .bind(i(not_before_ms)?)
        .bind(i(now_ms)?)
        .execute(&mut *conn)
        .await?;
        return Ok(true);
    }
    sqlx::query(
        "INSERT INTO ops_deferred (deferral_id, chan_id, channel_id, desired, description, not_before_ms,
            status, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, 'waiting', $7, $7)",
    )
    .bind(deferral_id)
    .bind(i(chan_id)?)
    .bind(channel_id)
    .bind(desired)
    .bind(description)
    .bind(i(not_before_ms)?)
    .bind(i(now_ms)?)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Ends a channel's waiting deferral, if it has one: `applied` by `action_id`, or `satisfied`.
pub async fn close_deferral(
    conn: &mut AnyConnection,
    chan_id: u64,
    status: &str,
    action_id: Option<&str>,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE ops_deferred SET status = $2, action_id = $3, updated_at_ms = $4
         WHERE chan_id = $1 AND status = 'waiting'",
    )
    .bind(i(chan_id)?)
    .bind(status)
    .bind(action_id)
    .bind(i(now_ms)?)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Every deferral, oldest first.
pub async fn deferrals(conn: &mut AnyConnection) -> Result<Vec<DeferralRow>, StoreError> {
    sqlx::query::<Any>(
        "SELECT deferral_id, chan_id, channel_id, desired, description, not_before_ms, status,
            created_at_ms, updated_at_ms, action_id
         FROM ops_deferred ORDER BY created_at_ms, deferral_id",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(decode_deferral)
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Forwarding history

/// The next forwarding-log index to ask the node for (0 before the first ingestion).
pub async fn cursor(conn: &mut AnyConnection, name: &str) -> Result<u64, StoreError> {
    let v: Option<i64> =
        sqlx::query_scalar::<Any, i64>("SELECT next_offset FROM ops_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    u(v.unwrap_or(0))
}

/// Moves a cursor from `from` to `to`, only if it is still at `from` (a guarded update: of two
/// ingesters that read the same page, one advances and the other rolls back). Returns whether
/// this call moved it.
pub async fn advance_cursor(
    conn: &mut AnyConnection,
    name: &str,
    from: u64,
    to: u64,
    now_ms: u64,
) -> Result<bool, StoreError> {
    sqlx::query(
        "INSERT INTO ops_cursors (name, next_offset, updated_at_ms) VALUES ($1, 0, $2)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(i(now_ms)?)
    .execute(&mut *conn)
    .await?;
    let n = sqlx::query(
        "UPDATE ops_cursors SET next_offset = $3, updated_at_ms = $4
         WHERE name = $1 AND next_offset = $2",
    )
    .bind(name)
    .bind(i(from)?)
    .bind(i(to)?)
    .bind(i(now_ms)?)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Stores one forwarding event. Its index is the primary key: storing an event twice fails.
pub async fn insert_forward(
    conn: &mut AnyConnection,
    f: &Forward,
    now_ms: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ops_forwards (idx, timestamp_ms, chan_id_in, chan_id_out, amt_in_msat, amt_out_msat,
            fee_msat, ingested_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(i(f.index)?)
    .bind(i(f.timestamp_ms)?)
    .bind(i(f.chan_id_in)?)
    .bind(i(f.chan_id_out)?)
    .bind(msat_col(f.amt_in_msat, "amt_in_msat")?)
    .bind(msat_col(f.amt_out_msat, "amt_out_msat")?)
    .bind(msat_col(f.fee_msat, "fee_msat")?)
    .bind(i(now_ms)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stored forwarding events, by index (for tests and audits).
pub async fn forwards(conn: &mut AnyConnection) -> Result<Vec<Forward>, StoreError> {
    sqlx::query::<Any>(
        "SELECT idx, timestamp_ms, chan_id_in, chan_id_out, amt_in_msat, amt_out_msat, fee_msat
         FROM ops_forwards ORDER BY idx",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(Forward {
            index: u(r.try_get("idx")?)?,
            timestamp_ms: u(r.try_get("timestamp_ms")?)?,
            chan_id_in: u(r.try_get("chan_id_in")?)?,
            chan_id_out: u(r.try_get("chan_id_out")?)?,
            amt_in_msat: u(r.try_get("amt_in_msat")?)?,
            amt_out_msat: u(r.try_get("amt_out_msat")?)?,
            fee_msat: u(r.try_get("fee_msat")?)?,
        })
    })
    .collect()
}

/// Per outgoing channel over `[from, to)`: number of forwards, amount sent out, fees earned.
pub async fn forwards_out(
    conn: &mut AnyConnection,
    from_ms: u64,
    to_ms: u64,
) -> Result<Vec<(u64, u64, Msat, Msat)>, StoreError> {
    sqlx::query::<Any>(
        "SELECT chan_id_out, CAST(COUNT(*) AS BIGINT) AS n, CAST(SUM(amt_out_msat) AS BIGINT) AS amt,
            CAST(SUM(fee_msat) AS BIGINT) AS fee
         FROM ops_forwards WHERE timestamp_ms >= $1 AND timestamp_ms < $2
         GROUP BY chan_id_out",
    )
    .bind(i(from_ms)?)
    .bind(i(to_ms)?)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok((
            u(r.try_get("chan_id_out")?)?,
            u(r.try_get("n")?)?,
            msat(r.try_get("amt")?)?,
            msat(r.try_get("fee")?)?,
        ))
    })
    .collect()
}

/// Per incoming channel over `[from, to)`: amount received for forwarding.
pub async fn forwards_in(
    conn: &mut AnyConnection,
    from_ms: u64,
    to_ms: u64,
) -> Result<Vec<(u64, Msat)>, StoreError> {
    sqlx::query::<Any>(
        "SELECT chan_id_in, CAST(SUM(amt_in_msat) AS BIGINT) AS amt
         FROM ops_forwards WHERE timestamp_ms >= $1 AND timestamp_ms < $2
         GROUP BY chan_id_in",
    )
    .bind(i(from_ms)?)
    .bind(i(to_ms)?)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| Ok((u(r.try_get("chan_id_in")?)?, msat(r.try_get("amt")?)?)))
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Rebalances

/// A rebalance's cost: `fee_msat` paid to move `amount_msat` out of `chan_id_out` and back in
/// through `chan_id_in`, which received the local liquidity and bears the fee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebalance {
    /// Unique per rebalance (the executing action's id): recording it twice records it once.
    pub rebalance_id: String,
    pub at_ms: u64,
    pub chan_id_out: u64,
    pub chan_id_in: u64,
    pub amount_msat: Msat,
    pub fee_msat: Msat,
    pub executor_receipt_hash: Option<String>,
}

/// Records a rebalance's cost in the caller's transaction (the rebalance action's, once it
/// exists). Returns false if this `rebalance_id` was recorded before.
pub async fn insert_rebalance(
    conn: &mut AnyConnection,
    r: &Rebalance,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "INSERT INTO ops_rebalances (rebalance_id, at_ms, chan_id_out, chan_id_in, amount_msat, fee_msat,
            executor_receipt_hash, recorded_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (rebalance_id) DO NOTHING",
    )
    .bind(&r.rebalance_id)
    .bind(i(r.at_ms)?)
    .bind(i(r.chan_id_out)?)
    .bind(i(r.chan_id_in)?)
    .bind(i(r.amount_msat.as_u64())?)
    .bind(i(r.fee_msat.as_u64())?)
    .bind(r.executor_receipt_hash.as_deref())
    .bind(i(now_ms)?)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Rebalance fees over `[from, to)`, per channel that received the liquidity.
pub async fn rebalance_costs(
    conn: &mut AnyConnection,
    from_ms: u64,
    to_ms: u64,
) -> Result<Vec<(u64, Msat)>, StoreError> {
    sqlx::query::<Any>(
        "SELECT chan_id_in, CAST(SUM(fee_msat) AS BIGINT) AS fee
         FROM ops_rebalances WHERE at_ms >= $1 AND at_ms < $2
         GROUP BY chan_id_in",
    )
    .bind(i(from_ms)?)
    .bind(i(to_ms)?)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| Ok((u(r.try_get("chan_id_in")?)?, msat(r.try_get("fee")?)?)))
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Observations

/// The latest observation of a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelRow {
    pub chan_id: u64,
    pub channel_id: String,
    pub remote_pubkey: String,
    pub local_balance_msat: u64,
    pub remote_balance_msat: u64,
    pub active: bool,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

/// Records one observation of the node's channels: the latest state of each, and one uptime
/// observation each in the current hour.
pub async fn observe(
    conn: &mut AnyConnection,
    observed: &[Observed],
    now_ms: u64,
) -> Result<(), StoreError> {
    let hour = now_ms - now_ms % UPTIME_BUCKET_MS;
    for c in observed {
        let active = i64::from(c.active);
        sqlx::query(
            "INSERT INTO ops_channels (chan_id, channel_id, remote_pubkey, local_balance_msat,
                remote_balance_msat, active, first_seen_ms, last_seen_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (chan_id) DO UPDATE SET remote_pubkey = excluded.remote_pubkey,
                local_balance_msat = excluded.local_balance_msat,
                remote_balance_msat = excluded.remote_balance_msat,
                active = excluded.active, last_seen_ms = excluded.last_seen_ms",
        )
        .bind(i(c.chan_id)?)
        .bind(crate::plan::channel_id(c.chan_id))
        .bind(&c.remote_pubkey)
        .bind(msat_col(c.local_balance_msat, "local_balance_msat")?)
        .bind(msat_col(c.remote_balance_msat, "remote_balance_msat")?)
        .bind(active)
        .bind(i(now_ms)?)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO ops_uptime (chan_id, hour_ms, observations, active) VALUES ($1, $2, 1, $3)
             ON CONFLICT (chan_id, hour_ms) DO UPDATE SET observations = ops_uptime.observations + 1,
                active = ops_uptime.active + excluded.active",
        )
        .bind(i(c.chan_id)?)
        .bind(i(hour)?)
        .bind(active)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Every channel ever observed, by channel id.
pub async fn channels(conn: &mut AnyConnection) -> Result<Vec<ChannelRow>, StoreError> {
    sqlx::query::<Any>(
        "SELECT chan_id, channel_id, remote_pubkey, local_balance_msat, remote_balance_msat, active,
            first_seen_ms, last_seen_ms
         FROM ops_channels ORDER BY chan_id",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(ChannelRow {
            chan_id: u(r.try_get("chan_id")?)?,
            channel_id: r.try_get("channel_id")?,
            remote_pubkey: r.try_get("remote_pubkey")?,
            local_balance_msat: u(r.try_get("local_balance_msat")?)?,
            remote_balance_msat: u(r.try_get("remote_balance_msat")?)?,
            active: r.try_get::<i64, _>("active")? != 0,
            first_seen_ms: u(r.try_get("first_seen_ms")?)?,
            last_seen_ms: u(r.try_get("last_seen_ms")?)?,
        })
    })
    .collect()
}

/// Per channel: observations, and how many found it active, in the hours starting in
/// `[from, to)`.
pub async fn uptime(
    conn: &mut AnyConnection,
    from_ms: u64,
    to_ms: u64,
) -> Result<Vec<(u64, u64, u64)>, StoreError> {
    sqlx::query::<Any>(
        "SELECT chan_id, CAST(SUM(observations) AS BIGINT) AS n, CAST(SUM(active) AS BIGINT) AS up
         FROM ops_uptime WHERE hour_ms >= $1 AND hour_ms < $2
         GROUP BY chan_id",
    )
    .bind(i(from_ms)?)
    .bind(i(to_ms)?)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok((
            u(r.try_get("chan_id")?)?,
            u(r.try_get("n")?)?,
            u(r.try_get("up")?)?,
        ))
    })
    .collect()
}
