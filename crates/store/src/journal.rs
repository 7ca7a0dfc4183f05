//! The event journal: each service's durable, per-topic ordered log of domain events.
//!
//! `seq` is allocated per topic in the writer's transaction from `event_heads` with an upsert
//! that also takes the row lock, so sequence numbers are gapless and in commit order per topic
//! even with several replicas on one PostgreSQL database. Consumers resume with `after_seq` and
//! drop anything with `seq <= last applied`.

use serde::{Deserialize, Serialize};
use sqlx::{Any, Row};

use crate::StoreError;

/// Largest page a reader may ask for.
pub const MAX_PAGE: u32 = 1_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub topic: String,
    #[serde(with = "oa_receipts::u64_string")]
    pub seq: u64,
    pub kind: String,
    pub payload: serde_json::Value,
    #[serde(with = "oa_receipts::u64_string")]
    pub created_at_ms: u64,
}

/// Appends an event to `topic` in the caller's transaction; returns its `seq` (1-based).
///
/// One round trip: the head's upsert (which takes its row lock on PostgreSQL) and the event's
/// insert go together, as a data-modifying `WITH` on PostgreSQL and as one command of two
/// statements on SQLite (which has no `INSERT` inside `WITH`, and holds the write lock anyway).
pub async fn append(
    conn: &mut sqlx::AnyConnection,
    topic: &str,
    kind: &str,
    payload: &serde_json::Value,
    now_ms: u64,
) -> Result<u64, StoreError> {
    const SQLITE: &str = "INSERT INTO event_heads (topic, last_seq) VALUES ($1, 1)
         ON CONFLICT (topic) DO UPDATE SET last_seq = event_heads.last_seq + 1;
         INSERT INTO events (topic, seq, kind, payload, created_at_ms)
         SELECT $1, last_seq, $2, $3, $4 FROM event_heads WHERE topic = $1
         RETURNING seq";
    const POSTGRES: &str = "WITH head AS (
           INSERT INTO event_heads (topic, last_seq) VALUES ($1, 1)
           ON CONFLICT (topic) DO UPDATE SET last_seq = event_heads.last_seq + 1
           RETURNING last_seq)
         INSERT INTO events (topic, seq, kind, payload, created_at_ms)
         SELECT $1, last_seq, $2, $3, $4 FROM head
         RETURNING seq";
    let payload = serde_json::to_string(payload)
        .map_err(|e| StoreError::Corrupt(format!("event payload: {e}")))?;
    let sql = if crate::sql::is_sqlite(conn) {
        SQLITE
    } else {
        POSTGRES
    };
    // `fetch_all`, not `fetch_one`: on SQLite a command stops at its first row, and every
    // statement of this one must run.
    let seqs: Vec<i64> = sqlx::query_scalar::<Any, i64>(sql)
        .bind(topic)
        .bind(kind)
        .bind(payload)
        .bind(i64::try_from(now_ms).map_err(|_| StoreError::Corrupt("time overflow".into()))?)
        .fetch_all(&mut *conn)
        .await?;
    let [seq] = seqs[..] else {
        return Err(StoreError::Corrupt(format!(
            "appending an event gave {} sequence numbers",
            seqs.len()
        )));
    };
    u64::try_from(seq).map_err(|_| StoreError::Corrupt("negative seq".into()))
}

/// Appends `events` (kind, payload) to `topic` in order, in the caller's transaction, with two
/// statements however many there are; returns the `seq` of the first (0 when there are none).
pub async fn append_many(
    conn: &mut sqlx::AnyConnection,
    topic: &str,
    events: &[(&str, serde_json::Value)],
    now_ms: u64,
) -> Result<u64, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let n = i64::try_from(events.len())
        .map_err(|_| StoreError::Corrupt("too many events at once".into()))?;
    let last: i64 = sqlx::query_scalar::<Any, i64>(
        "INSERT INTO event_heads (topic, last_seq) VALUES ($1, $2)
         ON CONFLICT (topic) DO UPDATE SET last_seq = event_heads.last_seq + $2
         RETURNING last_seq",
    )
    .bind(topic)
    .bind(n)
    .fetch_one(&mut *conn)
    .await?;
    let first = last - n + 1;
    let at = i64::try_from(now_ms).map_err(|_| StoreError::Corrupt("time overflow".into()))?;
    let sql = format!(
        "INSERT INTO events (topic, seq, kind, payload, created_at_ms) VALUES {}",
        crate::sql::row_placeholders(crate::sql::is_sqlite(conn), events.len(), 5)
    );
    let mut q = sqlx::query::<Any>(sqlx::AssertSqlSafe(sql));
    for (seq, (kind, payload)) in (first..).zip(events) {
        let payload = serde_json::to_string(payload)
            .map_err(|e| StoreError::Corrupt(format!("event payload: {e}")))?;
        q = q.bind(topic).bind(seq).bind(*kind).bind(payload).bind(at);
    }
    q.execute(&mut *conn).await?;
    u64::try_from(first).map_err(|_| StoreError::Corrupt("negative seq".into()))
}

/// Events of `topic` with `seq > after_seq`, oldest first, at most `limit` (capped at [`MAX_PAGE`]).
pub async fn read(
    conn: &mut sqlx::AnyConnection,
    topic: &str,
    after_seq: u64,
    limit: u32,
) -> Result<Vec<Event>, StoreError> {
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let rows = sqlx::query::<Any>(
        "SELECT topic, seq, kind, payload, created_at_ms FROM events
         WHERE topic = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(topic)
    .bind(after)
    .bind(i64::from(limit.min(MAX_PAGE)))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let payload: String = r.try_get("payload")?;
            Ok(Event {
                topic: r.try_get("topic")?,
                seq: to_u64(r.try_get("seq")?)?,
                kind: r.try_get("kind")?,
                payload: serde_json::from_str(&payload)
                    .map_err(|e| StoreError::Corrupt(format!("event payload: {e}")))?,
                created_at_ms: to_u64(r.try_get("created_at_ms")?)?,
            })
        })
        .collect()
}

/// The retention floor of `topic`: events with `seq <= floor` have been pruned (0 if none were).
pub async fn floor(conn: &mut sqlx::AnyConnection, topic: &str) -> Result<u64, StoreError> {
    let floor: Option<i64> =
        sqlx::query_scalar::<Any, i64>("SELECT floor_seq FROM event_floors WHERE topic = $1")
            .bind(topic)
            .fetch_optional(&mut *conn)
            .await?;
    to_u64(floor.unwrap_or(0))
}

/// The last `seq` of `topic` (0 if it has no events).
pub async fn head(conn: &mut sqlx::AnyConnection, topic: &str) -> Result<u64, StoreError> {
    let last: Option<i64> =
        sqlx::query_scalar::<Any, i64>("SELECT last_seq FROM event_heads WHERE topic = $1")
            .bind(topic)
            .fetch_optional(&mut *conn)
            .await?;
    to_u64(last.unwrap_or(0))
}

/// Deletes the events of `topic` with `seq <= up_to_seq` and raises its retention floor, in the
/// caller's transaction. The floor never moves down.
pub async fn prune(
    conn: &mut sqlx::AnyConnection,
    topic: &str,
    up_to_seq: u64,
) -> Result<(), StoreError> {
    let up_to = i64::try_from(up_to_seq).unwrap_or(i64::MAX);
    sqlx::query("DELETE FROM events WHERE topic = $1 AND seq <= $2")
        .bind(topic)
        .bind(up_to)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO event_floors (topic, floor_seq) VALUES ($1, $2)
         ON CONFLICT (topic) DO UPDATE SET floor_seq = CASE
           WHEN event_floors.floor_seq > $2 THEN event_floors.floor_seq ELSE $2 END",
    )
    .bind(topic)
    .bind(up_to)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Prunes, for every topic, the events created before `before_ms`, raising each topic's floor.
/// Returns how many topics had events pruned.
pub async fn prune_older_than(
    conn: &mut sqlx::AnyConnection,
    before_ms: u64,
) -> Result<usize, StoreError> {
    let before = i64::try_from(before_ms).unwrap_or(i64::MAX);
    let rows: Vec<(String, i64)> = sqlx::query_as::<Any, (String, i64)>(
        "SELECT topic, CAST(MAX(seq) AS BIGINT) FROM events WHERE created_at_ms < $1 GROUP BY topic",
    )
    .bind(before)
    .fetch_all(&mut *conn)
    .await?;
    for (topic, seq) in &rows {
        prune(&mut *conn, topic, to_u64(*seq)?).await?;
    }
    Ok(rows.len())
}

fn to_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt("negative integer column".into()))
}
