//! Hydra's books in the ledger (`crates/ledger`): the credit pool, what agents draw on credit
//! envelopes, credit fees, and the FX positions. Every function takes the caller's transaction,
//! so ledger rows commit with the state change and the receipt they belong to.
//!
//! **Assets** (the ledger's `ledger` field): [`LEDGER_BTC`] = 1 holds millisatoshis; each fiat
//! currency has its own ledger numbered by its ISO 4217 numeric code (USD 840, EUR 978, GBP 826,
//! CHF 756, CAD 124, JPY 392) and holds amounts in the currency's minor units (cents, yen). The
//! ledger's amount type is `Msat`, which here only carries the integer; money never moves
//! between ledgers, so conservation holds per asset.
//!
//! **Accounts** (BTC ledger):
//! - `funding`: where the pool's capital comes from (the configured pool size is moved from it at
//!   start-up).
//! - `pool` (no overdraft, with history): Hydra's own capital. An envelope's cap and a liquidity
//!   pay's amount + fee limit are reserved from it by pending transfers, so the pool can never
//!   promise more than it holds, under any concurrency.
//! - `agent:<agent_id>:credit`: what an agent drew on credit: posted credits are what Hydra paid
//!   providers for it (amount + routing fee) plus credit fees; pending credits are its open
//!   envelopes' caps (its exposure).
//! - `credit_fees`: the counterpart of credit fees charged; its debits are the fees earned.
//! - `agent:<agent_id>:balance` (no overdraft, with history): what Hydra owes an agent: credited
//!   by its deposits, debited by its withdrawals (pending while a withdrawal is queued or in
//!   flight, so the same money can never be withdrawn twice, under any concurrency).
//! - `deposits`: the counterpart of deposits; its net debits are what agents paid in.
//! - `withdrawals`: the counterpart of withdrawals; its credits are what left to agents' invoices
//!   (amount + routing fee).
//! - `payments`: the counterpart of liquidity pays; its credits are what the pool paid out
//!   (amount + routing fee).
//!
//! **Envelope transfers** (ids derive from the envelope id, so every retry is idempotent):
//! `env:<id>:reserve` (pending, pool -> agent, the cap, no ledger timeout: the envelope's own
//! expiry sweeper voids it, and a settlement that started before the expiry must still be able
//! to post after it), then either `env:<id>:post` (posts amount + routing fee; the rest returns to
//! the pool) linked with `env:<id>:fee` (credit_fees -> agent, the credit fee), or
//! `env:<id>:void`.
//!
//! **Liquidity pays** draw from the pool (whoever `payer_ref` names: treasury keeps the agents'
//! budgets, Hydra pays from its own capital): `pay:<quote_id>:reserve` (pending, pool ->
//! payments, amount + fee limit) when the payment starts, then `pay:<quote_id>:post` (amount +
//! routing fee) or `pay:<quote_id>:void`, in the transaction that records the outcome. The pool's
//! balance is therefore what Hydra still holds of its capital.
//!
//! **Deposits and withdrawals**: `dep:<deposit_id>` (deposits -> agent, what the payer paid),
//! once per deposit; `wd:<withdrawal_id>:reserve` (pending, agent -> withdrawals, amount + fee
//! limit), then `wd:<withdrawal_id>:post` (amount + routing fee) or `wd:<withdrawal_id>:void`.
//!
//! **FX** (per asset): `fx:<CUR>` is Hydra's FX book and `agent:<agent_id>:fx:<CUR>` the agent's
//! position; neither has a balance limit (fiat is funded outside the Lightning ledger). A
//! settlement is a linked pair: the sold asset from the agent to the book, the bought asset from
//! the book to the agent.

use oa_ledger::{
    Account, AccountFlags, NewAccount, NewTransfer, Outcome, TransferError, TransferResult,
};
use oa_money::Msat;
use oa_store::StoreError;
use sqlx::AnyConnection;

use crate::error::HydraError;

/// The bitcoin ledger (millisatoshis).
pub const LEDGER_BTC: u32 = 1;

const ACCOUNT_FUNDING: u16 = 1;
const ACCOUNT_POOL: u16 = 2;
const ACCOUNT_AGENT_CREDIT: u16 = 3;
const ACCOUNT_CREDIT_FEES: u16 = 4;
const ACCOUNT_FX_BOOK: u16 = 5;
const ACCOUNT_AGENT_FX: u16 = 6;
/// The code of agents' balance accounts (summed for the withdrawal throttle's liabilities).
pub const ACCOUNT_AGENT_BALANCE: u16 = 7;
const ACCOUNT_DEPOSITS: u16 = 8;
const ACCOUNT_WITHDRAWALS: u16 = 9;
const ACCOUNT_PAYMENTS: u16 = 10;

const TRANSFER_FUND: u16 = 1;
const TRANSFER_DEFUND: u16 = 2;
const TRANSFER_ENVELOPE: u16 = 3;
const TRANSFER_CREDIT_FEE: u16 = 4;
const TRANSFER_FX_SELL: u16 = 5;
const TRANSFER_FX_BUY: u16 = 6;
const TRANSFER_DEPOSIT: u16 = 7;
const TRANSFER_WITHDRAWAL: u16 = 8;
const TRANSFER_PAY: u16 = 9;

pub const FUNDING: &str = "funding";
pub const POOL: &str = "pool";
pub const CREDIT_FEES: &str = "credit_fees";
pub const DEPOSITS: &str = "deposits";
pub const WITHDRAWALS: &str = "withdrawals";
pub const PAYMENTS: &str = "payments";

/// The ledger of an asset: [`LEDGER_BTC`] or a fiat currency's ISO 4217 numeric code.
pub fn ledger_of(currency: &str) -> Option<u32> {
    Some(match currency {
        crate::fx::BTC => LEDGER_BTC,
        "USD" => 840,
        "EUR" => 978,
        "GBP" => 826,
        "CHF" => 756,
        "CAD" => 124,
        "JPY" => 392,
        _ => return None,
    })
}

pub fn agent_credit_account(agent: &str) -> String {
    format!("agent:{agent}:credit")
}

pub fn agent_balance_account(agent: &str) -> String {
    format!("agent:{agent}:balance")
}

pub fn withdrawal_reservation_id(withdrawal_id: &str) -> String {
    format!("wd:{withdrawal_id}:reserve")
}

pub fn pay_reservation_id(quote_id: &str) -> String {
    format!("pay:{quote_id}:reserve")
}

fn fx_book_account(currency: &str) -> String {
    format!("fx:{currency}")
}

fn agent_fx_account(agent: &str, currency: &str) -> String {
    format!("agent:{agent}:fx:{currency}")
}

pub fn reservation_id(envelope_id: &str) -> String {
    format!("env:{envelope_id}:reserve")
}

fn ledger_err(e: impl std::fmt::Display) -> HydraError {
    HydraError::Store(StoreError::Corrupt(format!("ledger: {e}")))
}

async fn ensure(
    conn: &mut AnyConnection,
    accounts: &[NewAccount],
    now_ms: u64,
) -> Result<(), HydraError> {
    for r in oa_ledger::create_accounts(conn, accounts, now_ms)
        .await
        .map_err(ledger_err)?
    {
        r.map_err(ledger_err)?;
    }
    Ok(())
}

/// Creates Hydra's own accounts and moves the pool to `pool_size` (from or back to `funding`).
/// The transfer id names the old and new size, so replicas starting together move it once.
/// Shrinking below what is reserved or drawn is refused and logged; the pool keeps its size.
pub async fn init(
    conn: &mut AnyConnection,
    pool_size: Msat,
    now_ms: u64,
) -> Result<(), HydraError> {
    ensure(
        conn,
        &[
            NewAccount::new(FUNDING, LEDGER_BTC, ACCOUNT_FUNDING),
            NewAccount::new(POOL, LEDGER_BTC, ACCOUNT_POOL)
                .with_flags(AccountFlags::no_overdraft().with_history()),
            NewAccount::new(CREDIT_FEES, LEDGER_BTC, ACCOUNT_CREDIT_FEES),
            NewAccount::new(DEPOSITS, LEDGER_BTC, ACCOUNT_DEPOSITS),
            NewAccount::new(WITHDRAWALS, LEDGER_BTC, ACCOUNT_WITHDRAWALS),
            NewAccount::new(PAYMENTS, LEDGER_BTC, ACCOUNT_PAYMENTS),
        ],
        now_ms,
    )
    .await?;
    let funding = account(conn, FUNDING).await?;
    // `funding` only ever moves money to and from the pool, so its net debits are the pool size.
    let current = funding
        .balances
        .debits_posted_msat
        .checked_sub(funding.balances.credits_posted_msat)
        .ok_or_else(|| ledger_err("funding account has more credits than debits"))?;
    let current = Msat::new(current).map_err(ledger_err)?;
    let id = format!("pool:size:{}:{}", current.as_u64(), pool_size.as_u64());
    let transfer = if pool_size > current {
        NewTransfer::single(
            id,
            FUNDING,
            POOL,
            pool_size.checked_sub(current).map_err(ledger_err)?,
            LEDGER_BTC,
            TRANSFER_FUND,
        )
    } else if pool_size < current {
        NewTransfer::single(
            id,
            POOL,
            FUNDING,
            current.checked_sub(pool_size).map_err(ledger_err)?,
            LEDGER_BTC,
            TRANSFER_DEFUND,
        )
    } else {
        return Ok(());
    };
    match oa_ledger::create_transfer(conn, &transfer, now_ms)
        .await
        .map_err(ledger_err)?
    {
        Ok(_) => Ok(()),
        Err(TransferError::ExceedsCredits) => {
            tracing::warn!(
                current_msat = current.as_u64(),
                wanted_msat = pool_size.as_u64(),
                "the credit pool cannot shrink below what is reserved or drawn; keeping its size"
            );
            Ok(())
        }
        Err(e) => Err(ledger_err(e)),
    }
}

async fn account(conn: &mut AnyConnection, id: &str) -> Result<Account, HydraError> {
    oa_ledger::get_account(conn, id)
        .await
        .map_err(ledger_err)?
        .ok_or_else(|| ledger_err(format!("account {id} is missing")))
}

/// The pool's balances.
pub async fn pool(conn: &mut AnyConnection) -> Result<oa_ledger::Balances, HydraError> {
    Ok(account(conn, POOL).await?.balances)
}

/// Why a reservation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The pool has less available than the cap (or a pay's amount + fee limit).
    PoolExhausted,
}

/// A withdrawal's amount + fee limit is more than the agent's available balance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsufficientBalance;

/// What Hydra owes agents in total: the sum of their balance accounts' posted credits minus posted
/// debits. Only deposits credit those accounts (from `deposits`) and only withdrawals debit them
/// (to `withdrawals`), so the sum is `deposits`' posted debits minus `withdrawals`' posted
/// credits: two account reads instead of a scan of every agent's account. (Tests check it
/// against the scan.)
pub async fn agent_liabilities(conn: &mut AnyConnection) -> Result<Msat, HydraError> {
    let deposits = account(conn, DEPOSITS).await?.balances;
    let withdrawals = account(conn, WITHDRAWALS).await?.balances;
    let owed = deposits
        .debits_posted_msat
        .checked_sub(withdrawals.credits_posted_msat)
        .ok_or_else(|| ledger_err("more was withdrawn than deposited"))?;
    Msat::new(owed).map_err(ledger_err)
}

/// An agent's balance account, if it has one (it is created by its first deposit).
pub async fn agent_balance(
    conn: &mut AnyConnection,
    agent: &str,
) -> Result<Option<oa_ledger::Balances>, HydraError> {
    Ok(oa_ledger::get_account(conn, &agent_balance_account(agent))
        .await
        .map_err(ledger_err)?
        .map(|a| a.balances))
}

/// Credits a settled deposit to the agent's balance, once per deposit id.
pub async fn credit_deposit(
    conn: &mut AnyConnection,
    agent: &str,
    deposit_id: &str,
    amount: Msat,
    now_ms: u64,
) -> Result<String, HydraError> {
    ensure(
        conn,
        &[NewAccount::new(
            agent_balance_account(agent),
            LEDGER_BTC,
            ACCOUNT_AGENT_BALANCE,
        )
        .with_flags(AccountFlags::no_overdraft().with_history())],
        now_ms,
    )
    .await?;
    let id = format!("dep:{deposit_id}");
    let t = NewTransfer::single(
        id.clone(),
        DEPOSITS,
        agent_balance_account(agent),
        amount,
        LEDGER_BTC,
        TRANSFER_DEPOSIT,
    );
    expect_ok(
        oa_ledger::create_transfer(conn, &t, now_ms)
            .await
            .map_err(ledger_err)?,
    )?;
    Ok(id)
}

/// Reserves a withdrawal's amount + fee limit from the agent's balance (pending transfer; the
/// no-overdraft flag refuses it when the balance lacks room, and an agent without a balance
/// account has nothing to withdraw).
pub async fn reserve_withdrawal(
    conn: &mut AnyConnection,
    agent: &str,
    withdrawal_id: &str,
    amount: Msat,
    now_ms: u64,
) -> Result<Result<(), InsufficientBalance>, HydraError> {
    let t = NewTransfer::pending(
        withdrawal_reservation_id(withdrawal_id),
        agent_balance_account(agent),
        WITHDRAWALS,
        amount,
        LEDGER_BTC,
        TRANSFER_WITHDRAWAL,
        None,
    );
    match oa_ledger::create_transfer(conn, &t, now_ms)
        .await
        .map_err(ledger_err)?
    {
        Ok(_) => Ok(Ok(())),
        Err(TransferError::ExceedsCredits | TransferError::DebitAccountNotFound) => {
            Ok(Err(InsufficientBalance))
        }
        Err(e) => Err(ledger_err(e)),
    }
}

/// Ends a withdrawal's reservation: posts `used` (amount + routing fee) when paid, or voids it.
pub async fn resolve_withdrawal(
    conn: &mut AnyConnection,
    withdrawal_id: &str,
    used: Option<Msat>,
    now_ms: u64,
) -> Result<(), HydraError> {
    let pending = withdrawal_reservation_id(withdrawal_id);
    let t = match used {
        Some(used) => NewTransfer::post(format!("wd:{withdrawal_id}:post"), pending, Some(used)),
        None => NewTransfer::void(format!("wd:{withdrawal_id}:void"), pending),
    };
    expect_ok(
        oa_ledger::create_transfer(conn, &t, now_ms)
            .await
            .map_err(ledger_err)?,
    )
}

/// A liquidity pay's movement in the ledger, applied with [`apply_pays`].
pub enum PayMove<'a> {
    /// Reserves the pay's amount + fee limit from the pool (a pending transfer).
    Reserve { quote_id: &'a str, amount: Msat },
    /// Ends the reservation: posts `used` (amount + routing fee) when paid, or voids it.
    Resolve {
        quote_id: &'a str,
        used: Option<Msat>,
    },
}

/// Applies liquidity pays' movements in order, as one ledger batch (a lone one takes the
/// ledger's fast path). Refuses with [`Refusal::PoolExhausted`] if the pool cannot cover a
/// reservation; the caller must then roll the transaction back, since the others were applied.
/// A quote that started paying before pays drew from the pool has no reservation: nothing to
/// resolve.
pub async fn apply_pays(
    conn: &mut AnyConnection,
    moves: &[PayMove<'_>],
    now_ms: u64,
) -> Result<Result<(), Refusal>, HydraError> {
    if moves.is_empty() {
        return Ok(Ok(()));
    }
    let transfers: Vec<NewTransfer> = moves
        .iter()
        .map(|m| match *m {
            PayMove::Reserve { quote_id, amount } => NewTransfer::pending(
                pay_reservation_id(quote_id),
                POOL,
                PAYMENTS,
                amount,
                LEDGER_BTC,
                TRANSFER_PAY,
                None,
            ),
            PayMove::Resolve {
                quote_id,
                used: Some(used),
            } => NewTransfer::post(
                format!("pay:{quote_id}:post"),
                pay_reservation_id(quote_id),
                Some(used),
            ),
            PayMove::Resolve {
                quote_id,
                used: None,
            } => NewTransfer::void(format!("pay:{quote_id}:void"), pay_reservation_id(quote_id)),
        })
        .collect();
    let results = oa_ledger::create_transfers(conn, &transfers, now_ms)
        .await
        .map_err(ledger_err)?;
    for (m, r) in moves.iter().zip(results) {
        match (m, r) {
            (_, Ok(_)) => {}
            (PayMove::Reserve { .. }, Err(TransferError::ExceedsCredits)) => {
                return Ok(Err(Refusal::PoolExhausted));
            }
            (PayMove::Resolve { quote_id, .. }, Err(TransferError::PendingTransferNotFound)) => {
                tracing::warn!(%quote_id, "a quote paid without a pool reservation (started before pays drew from the pool)");
            }
            (_, Err(e)) => return Err(ledger_err(e)),
        }
    }
    Ok(Ok(()))
}

/// Reserves an envelope's cap from the pool (pending transfer; the no-overdraft flag refuses it
/// when the pool lacks room).
pub async fn reserve_envelope(
    conn: &mut AnyConnection,
    agent: &str,
    envelope_id: &str,
    cap: Msat,
    now_ms: u64,
) -> Result<Result<(), Refusal>, HydraError> {
    ensure(
        conn,
        &[NewAccount::new(
            agent_credit_account(agent),
            LEDGER_BTC,
            ACCOUNT_AGENT_CREDIT,
        )],
        now_ms,
    )
    .await?;
    let t = NewTransfer::pending(
        reservation_id(envelope_id),
        POOL,
        agent_credit_account(agent),
        cap,
        LEDGER_BTC,
        TRANSFER_ENVELOPE,
        None,
    );
    match oa_ledger::create_transfer(conn, &t, now_ms)
        .await
        .map_err(ledger_err)?
    {
        Ok(_) => Ok(Ok(())),
        Err(TransferError::ExceedsCredits) => Ok(Err(Refusal::PoolExhausted)),
        Err(e) => Err(ledger_err(e)),
    }
}

fn expect_ok(r: TransferResult) -> Result<(), HydraError> {
    match r {
        Ok(Outcome::Created(_) | Outcome::Exists(_)) => Ok(()),
        Err(e) => Err(ledger_err(e)),
    }
}

/// Settles an envelope: posts `used` (amount + routing fee, at most the cap; the rest returns to
/// the pool) and, linked with it, charges the credit fee to the agent.
pub async fn settle_envelope(
    conn: &mut AnyConnection,
    agent: &str,
    envelope_id: &str,
    used: Msat,
    credit_fee: Msat,
    now_ms: u64,
) -> Result<(), HydraError> {
    let post = NewTransfer::post(
        format!("env:{envelope_id}:post"),
        reservation_id(envelope_id),
        Some(used),
    );
    let mut batch = Vec::with_capacity(2);
    if credit_fee.is_zero() {
        batch.push(post);
    } else {
        batch.push(post.linked());
        batch.push(NewTransfer::single(
            format!("env:{envelope_id}:fee"),
            CREDIT_FEES,
            agent_credit_account(agent),
            credit_fee,
            LEDGER_BTC,
            TRANSFER_CREDIT_FEE,
        ));
    }
    for r in oa_ledger::create_transfers(conn, &batch, now_ms)
        .await
        .map_err(ledger_err)?
    {
        expect_ok(r)?;
    }
    Ok(())
}

/// Releases an envelope's reservation in full (default or expiry).
pub async fn release_envelope(
    conn: &mut AnyConnection,
    envelope_id: &str,
    now_ms: u64,
) -> Result<(), HydraError> {
    let t = NewTransfer::void(
        format!("env:{envelope_id}:void"),
        reservation_id(envelope_id),
    );
    expect_ok(
        oa_ledger::create_transfer(conn, &t, now_ms)
            .await
            .map_err(ledger_err)?,
    )
}

/// One leg of an FX settlement: an asset's ledger and the integer amount in its smallest unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leg<'a> {
    pub currency: &'a str,
    pub ledger: u32,
    pub amount: Msat,
}

/// Settles an FX quote: `sold` from the agent to Hydra's book, `bought` from the book to the
/// agent, as one linked chain. Returns the two transfer ids.
pub async fn settle_fx(
    conn: &mut AnyConnection,
    agent: &str,
    fx_quote_id: &str,
    sold: Leg<'_>,
    bought: Leg<'_>,
    now_ms: u64,
) -> Result<(String, String), HydraError> {
    let mut accounts = Vec::with_capacity(4);
    for leg in [sold, bought] {
        accounts.push(NewAccount::new(
            fx_book_account(leg.currency),
            leg.ledger,
            ACCOUNT_FX_BOOK,
        ));
        accounts.push(NewAccount::new(
            agent_fx_account(agent, leg.currency),
            leg.ledger,
            ACCOUNT_AGENT_FX,
        ));
    }
    ensure(conn, &accounts, now_ms).await?;
    let sell_id = format!("fx:{fx_quote_id}:sell");
    let buy_id = format!("fx:{fx_quote_id}:buy");
    let batch = [
        NewTransfer::single(
            sell_id.clone(),
            agent_fx_account(agent, sold.currency),
            fx_book_account(sold.currency),
            sold.amount,
            sold.ledger,
            TRANSFER_FX_SELL,
        )
        .linked(),
        NewTransfer::single(
            buy_id.clone(),
            fx_book_account(bought.currency),
            agent_fx_account(agent, bought.currency),
            bought.amount,
            bought.ledger,
            TRANSFER_FX_BUY,
        ),
    ];
    for r in oa_ledger::create_transfers(conn, &batch, now_ms)
        .await
        .map_err(ledger_err)?
    {
        expect_ok(r)?;
    }
    Ok((sell_id, buy_id))
}
