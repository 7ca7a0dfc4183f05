//! Idempotency records: what makes every mutation safe to retry.
//!
//! A mutation carries an `idempotency_key`. The first request with a key claims it inside the
//! mutation's transaction (`INSERT ... ON CONFLICT DO NOTHING`, so a concurrent duplicate waits
//! on the unique index and then sees the winner's row). The record stores a fingerprint of the
//! request (SHA-256 of its RFC 8785 canonical JSON) and, once the mutation finishes, the response.
//! A retry with the same fingerprint replays the stored response; a different request under the
//! same key is a conflict; a retry while the first is still running is told so.

use sha2::{Digest, Sha256};
use sqlx::{Any, Row};

use crate::{
    StoreError,
    sql::{is_sqlite, param, placeholders},
};

/// Longest accepted idempotency key: long enough for a UUID plus a caller prefix, short enough
/// to keep the unique index small.
pub const MAX_KEY_LEN: usize = 128;

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free; this request owns it now.
    New,
    /// The same request finished before: replay this response.
    Replay { status_code: u16, response: String },
    /// The same request is still being processed (or was interrupted and will be resumed).
    InProgress { resource_id: Option<String> },
    /// The key was used for a different request.
    Conflict,
}

/// Why a key is unacceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("idempotency_key is required")]
    Missing,
    #[error("idempotency_key is longer than {MAX_KEY_LEN} characters")]
    TooLong,
    #[error("idempotency_key may only contain printable ASCII without spaces")]
    BadCharacters,
}

/// Checks a caller-supplied key: 1..=128 printable ASCII characters.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        Err(KeyError::Missing)
    } else if key.len() > MAX_KEY_LEN {
        Err(KeyError::TooLong)
    } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
        Err(KeyError::BadCharacters)
    } else {
        Ok(())
    }
}

/// SHA-256 over the RFC 8785 canonical form, so key order and whitespace do not matter.
pub fn fingerprint<T: serde::Serialize>(request: &T) -> Result<String, StoreError> {
    let canonical = serde_json_canonicalizer::to_vec(request)
        .map_err(|e| StoreError::Corrupt(format!("request is not canonicalizable: {e}")))?;
    Ok(hex::encode(Sha256::digest(canonical)))
}

/// Claims `(scope, key)` for a request with `fingerprint`, inside the caller's transaction.
pub async fn claim(
    conn: &mut sqlx::AnyConnection,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now_ms: u64,
) -> Result<Claim, StoreError> {
    claim_for(conn, scope, key, fingerprint, None, now_ms).await
}

/// [`claim`], recording with a new claim the resource the request will create (as
/// [`set_resource`] would, in the same statement), when its id is known up front.
pub async fn claim_for(
    conn: &mut sqlx::AnyConnection,
    scope: &str,
    key: &str,
    fingerprint: &str,
    resource_id: Option<&str>,
    now_ms: u64,
) -> Result<Claim, StoreError> {
    let now = i64::try_from(now_ms).map_err(|_| StoreError::Corrupt("time overflow".into()))?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys
           (scope, key, fingerprint, state, resource_id, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, 'pending', $5, $4, $4)
         ON CONFLICT (scope, key) DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(fingerprint)
    .bind(now)
    .bind(resource_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    existing(conn, scope, key, fingerprint).await
}

/// What a request with `fingerprint` gets from a key already claimed.
async fn existing(
    conn: &mut sqlx::AnyConnection,
    scope: &str,
    key: &str,
    fingerprint: &str,
) -> Result<Claim, StoreError> {
    let row = sqlx::query::<Any>(
        "SELECT fingerprint, state, status_code, response, resource_id
         FROM idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    let stored: String = row.try_get("fingerprint")?;
    if stored != fingerprint {
        return Ok(Claim::Conflict);
    }
    let state: String = row.try_get("state")?;
    if state == "done" {
        let status: i64 = row.try_get::<Option<i64>, _>("status_code")?.unwrap_or(200);
        let status_code = u16::try_from(status)
            .map_err(|_| StoreError::Corrupt("stored status code out of range".into()))?;
        let response: Option<String> = row.try_get("response")?;
        return Ok(Claim::Replay {
            status_code,
            response: response.unwrap_or_default(),
        });
    }
    Ok(Claim::InProgress {
        resource_id: row.try_get("resource_id")?,
    })
}

/// One request's claim for [`claim_many`]: scope, key, fingerprint, and the resource it will
/// create if known.
pub type ClaimRequest<'a> = (&'a str, &'a str, &'a str, Option<&'a str>);

/// Keys claimed per statement at most (six parameters each; SQLite binds at most 32 766).
const CLAIM_BATCH: usize = 1_024;

/// [`claim_for`] for many requests, in order: the new keys are inserted in one statement (per
/// 1 024), and only keys already claimed are looked at one by one. A key that appears twice is
/// new for its first request only.
pub async fn claim_many(
    conn: &mut sqlx::AnyConnection,
    claims: &[ClaimRequest<'_>],
    now_ms: u64,
) -> Result<Vec<Claim>, StoreError> {
    if let [(scope, key, fingerprint, resource_id)] = *claims {
        // One claim: the plain statement, which every caller of `claim` prepares anyway.
        let claim = claim_for(conn, scope, key, fingerprint, resource_id, now_ms).await?;
        return Ok(vec![claim]);
    }
    let now = i64::try_from(now_ms).map_err(|_| StoreError::Corrupt("time overflow".into()))?;
    let sqlite = is_sqlite(conn);
    let mut out = Vec::with_capacity(claims.len());
    for chunk in claims.chunks(CLAIM_BATCH) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p = |k| param(sqlite, i * 6 + k);
                let (scope, key, fingerprint) = (p(1), p(2), p(3));
                let (resource, created, updated) = (p(4), p(5), p(6));
                format!(
                    "({scope}, {key}, {fingerprint}, 'pending', {resource}, {created}, {updated})"
                )
            })
            .collect();
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO idempotency_keys
               (scope, key, fingerprint, state, resource_id, created_at_ms, updated_at_ms)
             VALUES {} ON CONFLICT (scope, key) DO NOTHING RETURNING scope, key",
            values.join(", ")
        ));
        let mut q = sqlx::query::<Any>(sql);
        for &(scope, key, fingerprint, resource_id) in chunk {
            q = q
                .bind(scope)
                .bind(key)
                .bind(fingerprint)
                .bind(resource_id)
                .bind(now)
                .bind(now);
        }
        let mut inserted = std::collections::HashSet::new();
        for row in q.fetch_all(&mut *conn).await? {
            inserted.insert((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?));
        }
        for &(scope, key, fingerprint, _) in chunk {
            // Taking it out of the set: a second request for the same key is not new.
            if inserted.remove(&(scope.to_owned(), key.to_owned())) {
                out.push(Claim::New);
            } else {
                out.push(existing(conn, scope, key, fingerprint).await?);
            }
        }
    }
    Ok(out)
}

/// Whether `(scope, key)` has been claimed (pending or done): read outside any transaction, to
/// leave work a replay would not do (such as asking a peer for something) undone.
pub async fn is_claimed(
    conn: &mut sqlx::AnyConnection,
    scope: &str,
    key: &str,
) -> Result<bool, StoreError> {
    let found = sqlx::query("SELECT 1 FROM idempotency_keys WHERE scope = $1 AND key = $2")
        .bind(scope)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

/// Records which resource (payment, quote, ...) the claimed key created, so an interrupted
/// request can be resumed from it.
pub async fn set_resource(
    conn: &mut sqlx::AnyConnection,
    scope: &str,
    key: &str,
    resource_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE idempotency_keys SET resource_id = $3 WHERE scope = $1 AND key = $2")
        .bind(scope)
        .bind(key)
        .bind(resource_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Stores the final response; later retries replay it.
pub async fn complete(
    conn: &mut sqlx::AnyConnection,
    scope: &str,
    key: &str,
    status_code: u16,
    response: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let now = i64::try_from(now_ms).map_err(|_| StoreError::Corrupt("time overflow".into()))?;
    let updated = sqlx::query(
        "UPDATE idempotency_keys SET state = 'done', status_code = $3, response = $4, updated_at_ms = $5
         WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .bind(i64::from(status_code))
    .bind(response)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated != 1 {
        return Err(StoreError::Corrupt(format!(
            "idempotency record {scope}/{key} vanished before completion"
        )));
    }
    Ok(())
}

/// A key's final response, for [`complete_many`]: scope, key, status code and response.
pub type Completion<'a> = (&'a str, &'a str, u16, &'a str);

/// Keys completed per statement at most (four parameters each, and the time; SQLite binds at
/// most 32 766).
const COMPLETE_BATCH: usize = 1_024;

/// [`complete`] for many keys, in as few statements as fit (one, for up to 1 024 keys).
pub async fn complete_many(
    conn: &mut sqlx::AnyConnection,
    completions: &[Completion<'_>],
    now_ms: u64,
) -> Result<(), StoreError> {
    let now = i64::try_from(now_ms).map_err(|_| StoreError::Corrupt("time overflow".into()))?;
    let sqlite = is_sqlite(conn);
    for chunk in completions.chunks(COMPLETE_BATCH) {
        // `VALUES` names its columns column1.. on both backends. The time is the first
        // parameter, and the rows' follow in order.
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("({})", placeholders(sqlite, 2 + i * 4, 4)))
            .collect();
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE idempotency_keys SET state = 'done', status_code = v.column3, \
             response = v.column4, updated_at_ms = {} \
             FROM (VALUES {}) AS v \
             WHERE idempotency_keys.scope = v.column1 AND idempotency_keys.key = v.column2",
            param(sqlite, 1),
            values.join(", ")
        ));
        let mut q = sqlx::query::<sqlx::Any>(sql).bind(now);
        for &(scope, key, status_code, response) in chunk {
            q = q
                .bind(scope)
                .bind(key)
                .bind(i64::from(status_code))
                .bind(response);
        }
        let updated = q.execute(&mut *conn).await?.rows_affected();
        if updated != chunk.len() as u64 {
            return Err(StoreError::Corrupt(format!(
                "{} of {} idempotency records vanished before completion",
                chunk.len() as u64 - updated.min(chunk.len() as u64),
                chunk.len()
            )));
        }
    }
    Ok(())
}

/// Gives a pending key back, for a request that failed before it changed anything (for example a
/// dependency was down), so the caller may retry it with the same key.
pub async fn release(
    conn: &mut sqlx::AnyConnection,
    scope: &str,
    key: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND state = 'pending'")
        .bind(scope)
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Keys of requests that were claimed but never completed (for recovery after a crash).
pub async fn pending(
    conn: &mut sqlx::AnyConnection,
    scope: &str,
    limit: u32,
) -> Result<Vec<(String, Option<String>)>, StoreError> {
    let rows = sqlx::query::<Any>(
        "SELECT key, resource_id FROM idempotency_keys
         WHERE scope = $1 AND state = 'pending' ORDER BY created_at_ms LIMIT $2",
    )
    .bind(scope)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("key")?, r.try_get("resource_id")?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_keys() {
        assert_eq!(validate_key(""), Err(KeyError::Missing));
        assert_eq!(validate_key(&"k".repeat(129)), Err(KeyError::TooLong));
        assert_eq!(validate_key("a b"), Err(KeyError::BadCharacters));
        assert_eq!(validate_key("é"), Err(KeyError::BadCharacters));
        assert!(validate_key("pay-2026-11-21:abc").is_ok());
    }

    #[test]
    fn fingerprint_ignores_key_order() {
        let a = serde_json::json!({"a": 1, "b": "x"});
        let b = serde_json::json!({"b": "x", "a": 1});
        assert_eq!(fingerprint(&a).unwrap(), fingerprint(&b).unwrap());
        assert_ne!(
            fingerprint(&a).unwrap(),
            fingerprint(&serde_json::json!({"a": 2, "b": "x"})).unwrap()
        );
    }
}
