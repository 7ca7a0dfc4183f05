//! Aegis's accounts in the ledger (`crates/ledger`, on Aegis's own database, in the transaction
//! of the state change they belong to).
//!
//! | account | flags | what its balance means |
//! |---|---|---|
//! | `external` | none | money entering Aegis's books from outside (premiums, fees, stakes) |
//! | `premiums` | none | liability premiums collected |
//! | `verification_fees` | none | verification fees collected with a warranty |
//! | `pool` | none | Aegis's underwriting capital: debited by coverage reserved, credited by bond draws; a net debit is capital the operator commits outside the ledger |
//! | `reserve:<warranty_id>` | no overdraft | the warranty's coverage not yet paid out; a claim being paid holds its payout as a pending debit, so no two claims can pay more than the coverage |
//! | `claims_paid` | none | payouts sent to claimants through Hydra |
//! | `routing_fees` | none | Lightning routing fees Hydra charged for payouts (from `pool`) |
//! | `provider:<provider_id>` | no overdraft | a provider's stake held by Aegis; a bond is a pending transfer from it to `pool` |
//!
//! Transfers (ids are derived from the record they belong to, so a replayed step is the ledger's
//! `Exists`, never a second movement):
//! - warranty issue: `external -> premiums` (premium), `external -> verification_fees` (fee),
//!   `pool -> reserve:<w>` (coverage), as one linked chain;
//! - bond reserve: `external -> provider:<p>` (the part of the stake the provider's account does
//!   not hold yet), then pending `provider:<p> -> pool` (the stake); release voids it; a draw
//!   posts `min(stake, payout)` of it (the rest returns to the provider);
//! - claim paying: pending `reserve:<w> -> claims_paid` (the payout); paid posts it, a failed
//!   payment voids it; the routing fee is `pool -> routing_fees`.

use oa_ledger::{AccountFlags, NewAccount, NewTransfer, Outcome, Transfer, TransferError};
use oa_money::Msat;
use sqlx::AnyConnection;

use crate::error::{AegisError, corrupt};

/// Asset code of millisatoshis in Aegis's ledger.
pub const LEDGER_MSAT: u32 = 1;

pub const EXTERNAL: &str = "external";
pub const PREMIUMS: &str = "premiums";
pub const VERIFICATION_FEES: &str = "verification_fees";
pub const POOL: &str = "pool";
pub const CLAIMS_PAID: &str = "claims_paid";
pub const ROUTING_FEES: &str = "routing_fees";

// Account codes.
const CODE_EXTERNAL: u16 = 1;
const CODE_INCOME: u16 = 2;
const CODE_POOL: u16 = 3;
const CODE_RESERVE: u16 = 4;
const CODE_PAID: u16 = 5;
const CODE_PROVIDER: u16 = 6;

// Transfer codes.
pub const T_PREMIUM: u16 = 1;
pub const T_FEE: u16 = 2;
pub const T_COVERAGE: u16 = 3;
pub const T_STAKE_DEPOSIT: u16 = 4;
pub const T_BOND: u16 = 5;
pub const T_PAYOUT: u16 = 6;
pub const T_ROUTING_FEE: u16 = 7;

pub fn reserve(warranty_id: &str) -> String {
    format!("reserve:{warranty_id}")
}

pub fn provider(provider_id: &str) -> String {
    format!("provider:{provider_id}")
}

fn ledger_err(e: impl std::fmt::Display) -> AegisError {
    corrupt(format!("ledger: {e}"))
}

/// Creates Aegis's fixed accounts and `extra` (id, code, no-overdraft) if missing.
async fn ensure(
    conn: &mut AnyConnection,
    extra: &[(&str, u16, bool)],
    now_ms: u64,
) -> Result<(), AegisError> {
    let fixed = [
        (EXTERNAL, CODE_EXTERNAL, false),
        (PREMIUMS, CODE_INCOME, false),
        (VERIFICATION_FEES, CODE_INCOME, false),
        (POOL, CODE_POOL, false),
        (CLAIMS_PAID, CODE_PAID, false),
        (ROUTING_FEES, CODE_PAID, false),
    ];
    let accounts: Vec<NewAccount> = fixed
        .iter()
        .chain(extra)
        .map(|(id, code, limited)| {
            let a = NewAccount::new(*id, LEDGER_MSAT, *code);
            if *limited {
                a.with_flags(AccountFlags::no_overdraft().with_history())
            } else {
                a
            }
        })
        .collect();
    for r in oa_ledger::create_accounts(conn, &accounts, now_ms)
        .await
        .map_err(ledger_err)?
    {
        r.map_err(ledger_err)?;
    }
    Ok(())
}

pub async fn ensure_reserve(
    conn: &mut AnyConnection,
    warranty_id: &str,
    now_ms: u64,
) -> Result<(), AegisError> {
    ensure(conn, &[(&reserve(warranty_id), CODE_RESERVE, true)], now_ms).await
}

pub async fn ensure_provider(
    conn: &mut AnyConnection,
    provider_id: &str,
    now_ms: u64,
) -> Result<(), AegisError> {
    ensure(
        conn,
        &[(&provider(provider_id), CODE_PROVIDER, true)],
        now_ms,
    )
    .await
}

/// Applies `transfers` (the caller links them when they must go together). `Ok(Err(code))` is
/// the ledger's refusal of the first failing one: nothing was applied of its chain.
pub async fn apply(
    conn: &mut AnyConnection,
    transfers: &[NewTransfer],
    now_ms: u64,
) -> Result<Result<Vec<Transfer>, TransferError>, AegisError> {
    let results = oa_ledger::create_transfers(conn, transfers, now_ms)
        .await
        .map_err(ledger_err)?;
    let mut out = Vec::with_capacity(results.len());
    let mut first_err = None;
    for r in results {
        match r {
            Ok(Outcome::Created(t) | Outcome::Exists(t)) => out.push(t),
            // A linked chain reports its cause once and LINKED_EVENT_FAILED for the others.
            Err(TransferError::LinkedEventFailed) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Ok(match first_err {
        Some(e) => Err(e),
        None if out.len() == transfers.len() => Ok(out),
        None => Err(TransferError::LinkedEventFailed),
    })
}

/// Posted credits minus posted and pending debits of `account` (zero if it does not exist).
pub async fn available(conn: &mut AnyConnection, account: &str) -> Result<Msat, AegisError> {
    let a = oa_ledger::get_account(conn, account)
        .await
        .map_err(ledger_err)?;
    Msat::new(a.map_or(0, |a| a.balances.available_msat())).map_err(ledger_err)
}

/// Links every transfer but the last, so they apply as one chain.
pub fn chain(mut transfers: Vec<NewTransfer>) -> Vec<NewTransfer> {
    let n = transfers.len();
    for t in transfers.iter_mut().take(n.saturating_sub(1)) {
        t.linked = true;
    }
    transfers
}

/// An unexpected ledger refusal (a bug or a broken invariant: a `500`, logged once).
pub fn refused(what: &str, e: TransferError) -> AegisError {
    corrupt(format!("ledger refused {what}: {}", e.code()))
}
