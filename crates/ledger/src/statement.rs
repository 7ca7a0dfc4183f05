//! Statements: per account, the posted balance at the start of a period, the posted debits and
//! credits during it, and the balance at its end, computed from the immutable transfers (so a
//! statement of a closed period never changes). Balances are signed net credits
//! (`credits - debits`); per ledger they sum to zero, as double entry requires.

use sqlx::{Any, AnyConnection, Row};

use crate::LedgerError;

/// One account's line of a statement.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StatementLine {
    pub account_id: String,
    pub ledger: u32,
    pub code: u16,
    /// Net posted credits before the period.
    pub opening_balance_msat: i128,
    pub period_debits_msat: u64,
    pub period_credits_msat: u64,
    /// Net posted credits at the end of the period.
    pub closing_balance_msat: i128,
}

/// Most accounts one statement covers; a service with more pages by account id (not needed yet).
pub const MAX_STATEMENT_ACCOUNTS: u32 = 100_000;

/// The statement of every account for `[from_ms, to_ms)`.
pub async fn statement(
    conn: &mut AnyConnection,
    from_ms: u64,
    to_ms: u64,
) -> Result<Vec<StatementLine>, LedgerError> {
    let from = i64::try_from(from_ms).unwrap_or(i64::MAX);
    let to = i64::try_from(to_ms).unwrap_or(i64::MAX);
    // Posted money moves only by single-phase transfers and posts; pending transfers, voids and
    // expiries change pending balances only.
    let rows = sqlx::query::<Any>(
        "SELECT a.id, a.ledger, a.code,
            CAST(COALESCE((SELECT SUM(t.amount) FROM ledger_transfers t WHERE t.debit_account_id = a.id
                AND t.kind IN ('single', 'post') AND t.created_at_ms < $1), 0) AS BIGINT) AS open_debits,
            CAST(COALESCE((SELECT SUM(t.amount) FROM ledger_transfers t WHERE t.credit_account_id = a.id
                AND t.kind IN ('single', 'post') AND t.created_at_ms < $1), 0) AS BIGINT) AS open_credits,
            CAST(COALESCE((SELECT SUM(t.amount) FROM ledger_transfers t WHERE t.debit_account_id = a.id
                AND t.kind IN ('single', 'post') AND t.created_at_ms >= $1 AND t.created_at_ms < $2), 0) AS BIGINT) AS period_debits,
            CAST(COALESCE((SELECT SUM(t.amount) FROM ledger_transfers t WHERE t.credit_account_id = a.id
                AND t.kind IN ('single', 'post') AND t.created_at_ms >= $1 AND t.created_at_ms < $2), 0) AS BIGINT) AS period_credits
         FROM ledger_accounts a ORDER BY a.id LIMIT $3",
    )
    .bind(from)
    .bind(to)
    .bind(i64::from(MAX_STATEMENT_ACCOUNTS))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let n = |col: &str| -> Result<u64, LedgerError> {
                let v: i64 = r.try_get(col)?;
                u64::try_from(v).map_err(|_| LedgerError::Corrupt(format!("negative {col}")))
            };
            let (open_d, open_c, per_d, per_c) = (
                n("open_debits")?,
                n("open_credits")?,
                n("period_debits")?,
                n("period_credits")?,
            );
            let opening = i128::from(open_c) - i128::from(open_d);
            let ledger: i64 = r.try_get("ledger")?;
            let code: i64 = r.try_get("code")?;
            Ok(StatementLine {
                account_id: r.try_get("id")?,
                ledger: u32::try_from(ledger)
                    .map_err(|_| LedgerError::Corrupt("ledger code".into()))?,
                code: u16::try_from(code)
                    .map_err(|_| LedgerError::Corrupt("account code".into()))?,
                opening_balance_msat: opening,
                period_debits_msat: per_d,
                period_credits_msat: per_c,
                closing_balance_msat: opening + i128::from(per_c) - i128::from(per_d),
            })
        })
        .collect()
}

/// The statement as CSV with a header row. Account ids are printable ASCII without spaces
/// (`is_valid_id`), but quotes and commas are allowed, so every id is quoted.
pub fn statement_csv(lines: &[StatementLine]) -> String {
    let mut out = String::from(
        "account_id,ledger,code,opening_balance_msat,period_debits_msat,period_credits_msat,closing_balance_msat\n",
    );
    for l in lines {
        out.push_str(&format!(
            "\"{}\",{},{},{},{},{},{}\n",
            l.account_id.replace('"', "\"\""),
            l.ledger,
            l.code,
            l.opening_balance_msat,
            l.period_debits_msat,
            l.period_credits_msat,
            l.closing_balance_msat
        ));
    }
    out
}
