//! Budgets on the ledger.
//!
//! Each agent has two ledger accounts: `budget:<agent>` (no overdraft: it can never reserve or
//! spend more than it was funded) and `spent:<agent>`. Setting a limit moves the difference
//! between the `funding` account and the budget account. A payment reserves amount + max fee with
//! a pending transfer `budget -> spent`, then posts the actual amount + fee (the rest returns to
//! the budget) or voids it. So under any concurrency:
//! `available = limit - reserved - spent`, and `available` never goes below zero.

use oa_ledger::{AccountFlags, NewAccount, NewTransfer, Outcome, TransferError};
use oa_money::Msat;
use oa_store::StoreError;
use sqlx::{Any, AnyConnection};

use crate::error::TreasuryError;

/// Asset code of millisatoshis in this service's ledger.
pub const LEDGER_MSAT: u32 = 1;
const ACCOUNT_BUDGET: u16 = 1;
const ACCOUNT_SPENT: u16 = 2;
const ACCOUNT_FUNDING: u16 = 3;
const TRANSFER_FUND: u16 = 1;
const TRANSFER_DEFUND: u16 = 2;
const TRANSFER_PAYMENT: u16 = 3;
const FUNDING: &str = "funding";

/// An agent's budget as callers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub agent_id: String,
    pub limit: Msat,
    pub reserved: Msat,
    pub spent: Msat,
    pub available: Msat,
}

/// Why a reservation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NoBudget,
    Exceeded,
}

impl Refusal {
    pub fn reason_code(self) -> &'static str {
        match self {
            Refusal::NoBudget => "no_budget",
            Refusal::Exceeded => "agent_budget_exceeded",
        }
    }
}

fn budget_account(agent: &str) -> String {
    format!("budget:{agent}")
}

fn spent_account(agent: &str) -> String {
    format!("spent:{agent}")
}

fn reservation_id(payment_id: &str) -> String {
    format!("pay:{payment_id}")
}

fn ledger_err(e: impl std::fmt::Display) -> TreasuryError {
    TreasuryError::Store(StoreError::Corrupt(format!("ledger: {e}")))
}

fn msat(v: u64) -> Result<Msat, TreasuryError> {
    Msat::new(v).map_err(ledger_err)
}

async fn ensure_accounts(
    conn: &mut AnyConnection,
    agent: &str,
    now_ms: u64,
) -> Result<(), TreasuryError> {
    let accounts = [
        NewAccount::new(budget_account(agent), LEDGER_MSAT, ACCOUNT_BUDGET)
            .with_flags(AccountFlags::no_overdraft().with_history()),
        NewAccount::new(spent_account(agent), LEDGER_MSAT, ACCOUNT_SPENT),
        NewAccount::new(FUNDING, LEDGER_MSAT, ACCOUNT_FUNDING),
    ];
    for r in oa_ledger::create_accounts(conn, &accounts, now_ms)
        .await
        .map_err(ledger_err)?
    {
        r.map_err(ledger_err)?;
    }
    Ok(())
}

async fn stored_limit(
    conn: &mut AnyConnection,
    agent: &str,
) -> Result<Option<Msat>, TreasuryError> {
    let v: Option<i64> = sqlx::query_scalar::<Any, i64>(
        "SELECT limit_msat FROM treasury_budgets WHERE agent_id = $1",
    )
    .bind(agent)
    .fetch_optional(&mut *conn)
    .await?;
    v.map(|v| Msat::from_i64(v).map_err(ledger_err)).transpose()
}

/// Sets an agent's limit, moving the difference from or back to the funding account. Lowering it
/// below what is reserved or spent is refused (`Ok(false)`) and changes nothing.
pub async fn set_limit(
    conn: &mut AnyConnection,
    agent: &str,
    limit: Msat,
    now_ms: u64,
) -> Result<bool, TreasuryError> {
    ensure_accounts(conn, agent, now_ms).await?;
    let current = stored_limit(conn, agent).await?.unwrap_or(Msat::ZERO);
    let id = format!("limit_{}", uuid::Uuid::now_v7().simple());
    let transfer = if limit > current {
        Some(NewTransfer::single(
            id,
            FUNDING,
            budget_account(agent),
            limit.checked_sub(current).map_err(ledger_err)?,
            LEDGER_MSAT,
            TRANSFER_FUND,
        ))
    } else if limit < current {
        Some(NewTransfer::single(
            id,
            budget_account(agent),
            FUNDING,
            current.checked_sub(limit).map_err(ledger_err)?,
            LEDGER_MSAT,
            TRANSFER_DEFUND,
        ))
    } else {
        None
    };
    if let Some(t) = transfer {
        match oa_ledger::create_transfer(conn, &t, now_ms)
            .await
            .map_err(ledger_err)?
        {
            Ok(_) => {}
            Err(TransferError::ExceedsCredits) => return Ok(false),
            Err(e) => return Err(ledger_err(e)),
        }
    }
    sqlx::query(
        "INSERT INTO treasury_budgets (agent_id, limit_msat, updated_at_ms) VALUES ($1, $2, $3)
         ON CONFLICT (agent_id) DO UPDATE SET limit_msat = $2, updated_at_ms = $3",
    )
    .bind(agent)
    .bind(limit.as_i64())
    .bind(i64::try_from(now_ms).map_err(ledger_err)?)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Gives an agent `limit` if it has no budget yet (the configured default).
pub async fn ensure_default(
    conn: &mut AnyConnection,
    agent: &str,
    limit: Msat,
    now_ms: u64,
) -> Result<(), TreasuryError> {
    if stored_limit(conn, agent).await?.is_none() {
        set_limit(conn, agent, limit, now_ms).await?;
    }
    Ok(())
}

/// Reserves `amount` for a payment: a pending transfer that the no-overdraft flag refuses when
/// the budget lacks room, however many payments race for it.
pub async fn reserve(
    conn: &mut AnyConnection,
    agent: &str,
    payment_id: &str,
    amount: Msat,
    now_ms: u64,
) -> Result<Result<(), Refusal>, TreasuryError> {
    let t = NewTransfer::pending(
        reservation_id(payment_id),
        budget_account(agent),
        spent_account(agent),
        amount,
        LEDGER_MSAT,
        TRANSFER_PAYMENT,
        None,
    );
    match oa_ledger::create_transfer(conn, &t, now_ms)
        .await
        .map_err(ledger_err)?
    {
        Ok(_) => Ok(Ok(())),
        Err(TransferError::ExceedsCredits) => Ok(Err(Refusal::Exceeded)),
        Err(TransferError::DebitAccountNotFound | TransferError::CreditAccountNotFound) => {
            Ok(Err(Refusal::NoBudget))
        }
        Err(e) => Err(ledger_err(e)),
    }
}

/// Ends a payment's reservation: posts `spent` (the actual amount + fee) or, if `None`, voids it.
pub async fn settle(
    conn: &mut AnyConnection,
    payment_id: &str,
    spent: Option<Msat>,
    now_ms: u64,
) -> Result<(), TreasuryError> {
    let pending = reservation_id(payment_id);
    let t = match spent {
        Some(amount) => NewTransfer::post(format!("{pending}:post"), pending, Some(amount)),
        None => NewTransfer::void(format!("{pending}:void"), pending),
    };
    match oa_ledger::create_transfer(conn, &t, now_ms)
        .await
        .map_err(ledger_err)?
    {
        Ok(Outcome::Created(_) | Outcome::Exists(_)) => Ok(()),
        Err(e) => Err(ledger_err(e)),
    }
}

pub async fn get(conn: &mut AnyConnection, agent: &str) -> Result<Option<Budget>, TreasuryError> {
    let Some(limit) = stored_limit(conn, agent).await? else {
        return Ok(None);
    };
    let budget = oa_ledger::get_account(conn, &budget_account(agent))
        .await
        .map_err(ledger_err)?;
    let spent = oa_ledger::get_account(conn, &spent_account(agent))
        .await
        .map_err(ledger_err)?;
    let (Some(budget), Some(spent)) = (budget, spent) else {
        return Err(ledger_err(format!(
            "budget accounts of {agent} are missing"
        )));
    };
    Ok(Some(Budget {
        agent_id: agent.to_owned(),
        limit,
        reserved: msat(budget.balances.debits_pending_msat)?,
        spent: msat(spent.balances.credits_posted_msat)?,
        available: msat(budget.balances.available_msat())?,
    }))
}
