//! Invariants a service, a test or an auditor can check at any time.
//!
//! Every write path already asserts them in code before writing (balanced deltas per ledger,
//! limits of every changed account), and the table's CHECK constraints refuse a row that crosses
//! a limit. These functions check the stored state as a whole:
//!
//! - [`check_invariants`] (cheap, two aggregate queries): per ledger, total debits equal total
//!   credits, pending and posted separately; no flagged account crosses its limit.
//! - [`audit`] (reads every transfer): additionally recomputes each account's four balances from
//!   its transfers, and checks that every post or void matches the state of its pending transfer.

use serde::{Deserialize, Serialize};
use sqlx::{Any, AnyConnection, Row};

use crate::{
    error::{LedgerError, corrupt},
    sql::to_i64,
    types::{Balances, FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS, FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS},
};

/// Most violations of one kind reported by one call: enough to diagnose, bounded so a badly
/// broken database cannot produce an unbounded report.
pub const MAX_VIOLATIONS: usize = 100;

/// Something that must never be, found in the stored ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Violation {
    /// Over the accounts of `ledger`, debits minus credits is not zero.
    Unbalanced {
        ledger: u32,
        pending_difference_msat: i64,
        posted_difference_msat: i64,
    },
    /// A flagged account's balances cross its limit (or are negative).
    LimitCrossed { account_id: String },
    /// An account's stored balances differ from the sum of its transfers.
    BalanceMismatch {
        account_id: String,
        stored: Balances,
        from_transfers: Balances,
    },
    /// A post or void whose pending transfer is missing or in another state, or a posted or
    /// voided pending transfer without its post or void.
    ResolutionMismatch { transfer_id: String },
}

/// Conservation per ledger and limits of every account. Empty means all hold.
pub async fn check_invariants(conn: &mut AnyConnection) -> Result<Vec<Violation>, LedgerError> {
    let mut violations = Vec::new();
    // Differences rather than two totals: a total of lifetime flow could exceed a BIGINT, the
    // difference of a balanced ledger is zero.
    let rows = sqlx::query::<Any>(
        "SELECT ledger, \
           CAST(SUM(debits_pending - credits_pending) AS BIGINT) AS pending_difference, \
           CAST(SUM(debits_posted - credits_posted) AS BIGINT) AS posted_difference \
         FROM ledger_accounts GROUP BY ledger ORDER BY ledger",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let ledger: i64 = row.try_get("ledger")?;
        let pending: i64 = row.try_get("pending_difference")?;
        let posted: i64 = row.try_get("posted_difference")?;
        if pending != 0 || posted != 0 {
            violations.push(Violation::Unbalanced {
                ledger: u32::try_from(ledger).map_err(|_| corrupt("ledger out of range"))?,
                pending_difference_msat: pending,
                posted_difference_msat: posted,
            });
        }
    }
    let rows = sqlx::query::<Any>(
        "SELECT id FROM ledger_accounts \
         WHERE debits_pending < 0 OR debits_posted < 0 OR credits_pending < 0 OR credits_posted < 0 \
            OR ((flags & $1) <> 0 AND debits_pending + debits_posted > credits_posted) \
            OR ((flags & $2) <> 0 AND credits_pending + credits_posted > debits_posted) \
         ORDER BY id LIMIT $3",
    )
    .bind(FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS)
    .bind(FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS)
    .bind(to_i64(MAX_VIOLATIONS as u64, "limit")?)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        violations.push(Violation::LimitCrossed {
            account_id: row.try_get("id")?,
        });
    }
    Ok(violations)
}

/// [`check_invariants`] plus a recomputation of every balance from the transfers and a check of
/// every pending resolution. Reads every transfer: for audits and tests, not for a hot path.
pub async fn audit(conn: &mut AnyConnection) -> Result<Vec<Violation>, LedgerError> {
    let mut violations = check_invariants(conn).await?;
    // Pending amounts count while the pending transfer is pending; posted amounts are those of
    // single-phase transfers and posts. Voids and expiries only release.
    let rows = sqlx::query::<Any>(
        "SELECT a.id, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, \
           COALESCE(d.pending, 0) AS d_pending, COALESCE(d.posted, 0) AS d_posted, \
           COALESCE(c.pending, 0) AS c_pending, COALESCE(c.posted, 0) AS c_posted \
         FROM ledger_accounts a \
         LEFT JOIN (SELECT debit_account_id AS account_id, \
             CAST(SUM(CASE WHEN pending_state = 'pending' THEN amount ELSE 0 END) AS BIGINT) AS pending, \
             CAST(SUM(CASE WHEN kind IN ('single', 'post') THEN amount ELSE 0 END) AS BIGINT) AS posted \
           FROM ledger_transfers GROUP BY debit_account_id) d ON d.account_id = a.id \
         LEFT JOIN (SELECT credit_account_id AS account_id, \
             CAST(SUM(CASE WHEN pending_state = 'pending' THEN amount ELSE 0 END) AS BIGINT) AS pending, \
             CAST(SUM(CASE WHEN kind IN ('single', 'post') THEN amount ELSE 0 END) AS BIGINT) AS posted \
           FROM ledger_transfers GROUP BY credit_account_id) c ON c.account_id = a.id \
         WHERE a.debits_pending <> COALESCE(d.pending, 0) OR a.debits_posted <> COALESCE(d.posted, 0) \
            OR a.credits_pending <> COALESCE(c.pending, 0) OR a.credits_posted <> COALESCE(c.posted, 0) \
         ORDER BY a.id LIMIT $1",
    )
    .bind(to_i64(MAX_VIOLATIONS as u64, "limit")?)
    .fetch_all(&mut *conn)
    .await?;
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    for row in &rows {
        violations.push(Violation::BalanceMismatch {
            account_id: row.try_get("id")?,
            stored: Balances {
                debits_pending_msat: u(row.try_get("debits_pending")?),
                debits_posted_msat: u(row.try_get("debits_posted")?),
                credits_pending_msat: u(row.try_get("credits_pending")?),
                credits_posted_msat: u(row.try_get("credits_posted")?),
            },
            from_transfers: Balances {
                debits_pending_msat: u(row.try_get("d_pending")?),
                debits_posted_msat: u(row.try_get("d_posted")?),
                credits_pending_msat: u(row.try_get("c_pending")?),
                credits_posted_msat: u(row.try_get("c_posted")?),
            },
        });
    }
    let rows = sqlx::query::<Any>(
        "SELECT r.id FROM ledger_transfers r LEFT JOIN ledger_transfers p ON p.id = r.pending_id \
         WHERE r.pending_id IS NOT NULL AND (p.id IS NULL OR p.kind <> 'pending' \
            OR (r.kind = 'post' AND p.pending_state <> 'posted') \
            OR (r.kind = 'void' AND p.pending_state <> 'voided')) \
         UNION ALL \
         SELECT p.id FROM ledger_transfers p LEFT JOIN ledger_transfers r ON r.pending_id = p.id \
         WHERE p.pending_state IN ('posted', 'voided') AND r.id IS NULL \
         LIMIT $1",
    )
    .bind(to_i64(MAX_VIOLATIONS as u64, "limit")?)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        violations.push(Violation::ResolutionMismatch {
            transfer_id: row.try_get("id")?,
        });
    }
    Ok(violations)
}
