//! The ledger's data: accounts, transfers, the requests that create them, and pages of lookups.
//!
//! Requests ([`NewAccount`], [`NewTransfer`]) are what a service asks for; records ([`Account`],
//! [`Transfer`]) are what the ledger stored. A transfer's body never changes once stored; only a
//! pending transfer's [`PendingState`] moves, once, from `Pending` to `Posted`, `Voided` or
//! `Expired`.

use oa_money::Msat;
use serde::{Deserialize, Serialize};

/// Longest account or transfer id: room for a UUID plus a service prefix such as
/// `envelope:reserve:`, short enough to keep the primary-key indexes compact.
pub const MAX_ID_LEN: usize = 128;

/// Longest `user_data` string: enough for a couple of ids or a receipt hash that links a transfer
/// to the service's own records, small enough that it never dominates a row.
pub const MAX_USER_DATA_LEN: usize = 256;

/// Ceiling on `debits_pending + debits_posted` (and on the credit side) of any account.
///
/// Balances are stored in signed 64-bit columns. With every side's total at most this value and
/// every amount at most [`Msat::MAX`], the largest sum any statement computes
/// (`pending + posted + amount`) is at most `i64::MAX`, so SQL arithmetic can never overflow on
/// PostgreSQL (which would raise an error) or on SQLite (which would silently switch to floating
/// point). It is about 71 million BTC of lifetime flow through one side of one account.
pub const MAX_BALANCE_MSAT: u64 = i64::MAX as u64 - Msat::MAX.as_u64();

/// Checks an id: 1..=[`MAX_ID_LEN`] printable ASCII characters without spaces.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Balance-limit and bookkeeping flags of an account, fixed when it is created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccountFlags {
    /// `debits_pending + debits_posted <= credits_posted` at all times: the account cannot
    /// spend or reserve more than it has received (a budget, a balance, a bond).
    pub debits_must_not_exceed_credits: bool,
    /// `credits_pending + credits_posted <= debits_posted` at all times: the mirror image, for
    /// accounts that may only receive what was taken from them (a credit line's repayments).
    pub credits_must_not_exceed_debits: bool,
    /// Keep a row of balances after every change, readable with `account_history`.
    pub history: bool,
}

// Bit values in the `flags` column. The migration's CHECK constraints repeat 1 and 2.
pub(crate) const FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS: i64 = 1;
pub(crate) const FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS: i64 = 2;
pub(crate) const FLAG_HISTORY: i64 = 4;
pub(crate) const FLAG_CLOSED: i64 = 8;

impl AccountFlags {
    /// The usual flag set for a balance that must never go negative.
    pub const fn no_overdraft() -> AccountFlags {
        AccountFlags {
            debits_must_not_exceed_credits: true,
            credits_must_not_exceed_debits: false,
            history: false,
        }
    }

    pub const fn with_history(mut self) -> AccountFlags {
        self.history = true;
        self
    }

    pub(crate) fn bits(self) -> i64 {
        let mut bits = 0;
        if self.debits_must_not_exceed_credits {
            bits |= FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS;
        }
        if self.credits_must_not_exceed_debits {
            bits |= FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS;
        }
        if self.history {
            bits |= FLAG_HISTORY;
        }
        bits
    }

    pub(crate) fn from_bits(bits: i64) -> AccountFlags {
        AccountFlags {
            debits_must_not_exceed_credits: bits & FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS != 0,
            credits_must_not_exceed_debits: bits & FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS != 0,
            history: bits & FLAG_HISTORY != 0,
        }
    }
}

/// A request to create an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAccount {
    pub id: String,
    /// Asset code (TigerBeetle's `ledger`): money moves only between accounts of one ledger.
    /// Must not be zero.
    pub ledger: u32,
    /// The kind of account, chosen by the service (budget, reserve, pool, ...). Must not be zero.
    pub code: u16,
    pub flags: AccountFlags,
    pub user_data: String,
    pub user_data_64: i64,
}

impl NewAccount {
    pub fn new(id: impl Into<String>, ledger: u32, code: u16) -> NewAccount {
        NewAccount {
            id: id.into(),
            ledger,
            code,
            flags: AccountFlags::default(),
            user_data: String::new(),
            user_data_64: 0,
        }
    }

    pub fn with_flags(mut self, flags: AccountFlags) -> NewAccount {
        self.flags = flags;
        self
    }

    pub fn with_user_data(mut self, user_data: impl Into<String>, user_data_64: i64) -> NewAccount {
        self.user_data = user_data.into();
        self.user_data_64 = user_data_64;
        self
    }
}

/// The four balances of an account, in millisatoshis.
///
/// They are `u64` rather than [`Msat`] because a balance accumulates lifetime flow, which may
/// exceed the bitcoin supply that bounds a single amount; see [`MAX_BALANCE_MSAT`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Balances {
    pub debits_pending_msat: u64,
    pub debits_posted_msat: u64,
    pub credits_pending_msat: u64,
    pub credits_posted_msat: u64,
}

impl Balances {
    /// Posted credits minus posted and pending debits, floored at zero: what an account with
    /// `debits_must_not_exceed_credits` can still spend or reserve.
    pub fn available_msat(&self) -> u64 {
        self.credits_posted_msat
            .saturating_sub(self.debits_posted_msat)
            .saturating_sub(self.debits_pending_msat)
    }

    /// True when the balances respect the limits that `flags` asks for.
    pub fn within_limits(&self, flags: AccountFlags) -> bool {
        let debits = u128::from(self.debits_pending_msat) + u128::from(self.debits_posted_msat);
        let credits = u128::from(self.credits_pending_msat) + u128::from(self.credits_posted_msat);
        (!flags.debits_must_not_exceed_credits || debits <= u128::from(self.credits_posted_msat))
            && (!flags.credits_must_not_exceed_debits
                || credits <= u128::from(self.debits_posted_msat))
            && debits <= u128::from(MAX_BALANCE_MSAT)
            && credits <= u128::from(MAX_BALANCE_MSAT)
    }
}

/// A stored account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub ledger: u32,
    pub code: u16,
    pub flags: AccountFlags,
    /// A closed account refuses new transfers and posts; voids and expiries still release its
    /// pending amounts.
    pub closed: bool,
    pub balances: Balances,
    /// Number of balance changes so far; the cursor for its transfers and history.
    pub version: u64,
    pub user_data: String,
    pub user_data_64: i64,
    pub created_at_ms: u64,
}

/// The debit and credit side of a single-phase or pending transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    pub debit_account_id: String,
    pub credit_account_id: String,
    /// Must not be zero.
    pub amount_msat: Msat,
    /// Must equal both accounts' ledger; must not be zero.
    pub ledger: u32,
    /// Why the money moves (reservation, settlement, fee, ...), chosen by the service; not zero.
    pub code: u16,
}

/// What a transfer request does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferOp {
    /// Moves `amount_msat` into the posted balances at once.
    Single(Movement),
    /// Reserves `amount_msat` in the pending balances until a post, a void or the timeout.
    /// `timeout_ms: None` never expires; `Some(0)` is refused.
    Pending {
        movement: Movement,
        timeout_ms: Option<u64>,
    },
    /// Posts a pending transfer: releases its whole pending amount and posts `amount_msat`
    /// (`None`: the full pending amount; `Some(a)`: a partial amount, `0 < a <= pending`).
    /// Accounts, ledger and code are the pending transfer's.
    PostPending {
        pending_id: String,
        amount_msat: Option<Msat>,
    },
    /// Voids a pending transfer: releases its whole pending amount, posts nothing.
    VoidPending { pending_id: String },
}

/// A request to create a transfer. The id is chosen by the client and is the idempotency key: a
/// retry with the same body returns the stored transfer, a different body is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTransfer {
    pub id: String,
    pub op: TransferOp,
    /// Links this transfer to the next one in the batch: a chain of linked transfers (ending with
    /// the first one without `linked`) is applied all together or not at all.
    pub linked: bool,
    pub user_data: String,
    pub user_data_64: i64,
}

impl NewTransfer {
    fn with_op(id: impl Into<String>, op: TransferOp) -> NewTransfer {
        NewTransfer {
            id: id.into(),
            op,
            linked: false,
            user_data: String::new(),
            user_data_64: 0,
        }
    }

    pub fn single(
        id: impl Into<String>,
        debit_account_id: impl Into<String>,
        credit_account_id: impl Into<String>,
        amount_msat: Msat,
        ledger: u32,
        code: u16,
    ) -> NewTransfer {
        NewTransfer::with_op(
            id,
            TransferOp::Single(Movement {
                debit_account_id: debit_account_id.into(),
                credit_account_id: credit_account_id.into(),
                amount_msat,
                ledger,
                code,
            }),
        )
    }

    pub fn pending(
        id: impl Into<String>,
        debit_account_id: impl Into<String>,
        credit_account_id: impl Into<String>,
        amount_msat: Msat,
        ledger: u32,
        code: u16,
        timeout_ms: Option<u64>,
    ) -> NewTransfer {
        NewTransfer::with_op(
            id,
            TransferOp::Pending {
                movement: Movement {
                    debit_account_id: debit_account_id.into(),
                    credit_account_id: credit_account_id.into(),
                    amount_msat,
                    ledger,
                    code,
                },
                timeout_ms,
            },
        )
    }

    pub fn post(
        id: impl Into<String>,
        pending_id: impl Into<String>,
        amount_msat: Option<Msat>,
    ) -> NewTransfer {
        NewTransfer::with_op(
            id,
            TransferOp::PostPending {
                pending_id: pending_id.into(),
                amount_msat,
            },
        )
    }

    pub fn void(id: impl Into<String>, pending_id: impl Into<String>) -> NewTransfer {
        NewTransfer::with_op(
            id,
            TransferOp::VoidPending {
                pending_id: pending_id.into(),
            },
        )
    }

    /// Links this transfer to the next one in its batch.
    pub fn linked(mut self) -> NewTransfer {
        self.linked = true;
        self
    }

    pub fn with_user_data(
        mut self,
        user_data: impl Into<String>,
        user_data_64: i64,
    ) -> NewTransfer {
        self.user_data = user_data.into();
        self.user_data_64 = user_data_64;
        self
    }
}

/// The kind of a stored transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransferKind {
    Single,
    Pending,
    PostPending,
    VoidPending,
}

impl TransferKind {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            TransferKind::Single => "single",
            TransferKind::Pending => "pending",
            TransferKind::PostPending => "post",
            TransferKind::VoidPending => "void",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<TransferKind> {
        Some(match s {
            "single" => TransferKind::Single,
            "pending" => TransferKind::Pending,
            "post" => TransferKind::PostPending,
            "void" => TransferKind::VoidPending,
            _ => return None,
        })
    }
}

/// Where a pending transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PendingState {
    Pending,
    Posted,
    Voided,
    Expired,
}

impl PendingState {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            PendingState::Pending => "pending",
            PendingState::Posted => "posted",
            PendingState::Voided => "voided",
            PendingState::Expired => "expired",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<PendingState> {
        Some(match s {
            "pending" => PendingState::Pending,
            "posted" => PendingState::Posted,
            "voided" => PendingState::Voided,
            "expired" => PendingState::Expired,
            _ => return None,
        })
    }
}

// Bit values of the transfer `flags` column.
pub(crate) const TRANSFER_FLAG_LINKED: i64 = 1;
pub(crate) const TRANSFER_FLAG_POST_FULL: i64 = 2;

/// A stored transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: String,
    pub kind: TransferKind,
    pub debit_account_id: String,
    pub credit_account_id: String,
    /// For a post, the posted amount; for a void, the released pending amount.
    pub amount_msat: Msat,
    /// Post and void: the pending transfer they resolve.
    pub pending_id: Option<String>,
    pub ledger: u32,
    pub code: u16,
    pub linked: bool,
    /// Post only: the request asked for the full pending amount (`amount_msat: None`).
    pub post_full_amount: bool,
    pub timeout_ms: Option<u64>,
    /// Pending only: `created_at_ms + timeout_ms`; at or after this instant it is expired.
    pub expires_at_ms: Option<u64>,
    /// Pending only: the one mutable field of a transfer.
    pub pending_state: Option<PendingState>,
    pub pending_resolved_at_ms: Option<u64>,
    pub user_data: String,
    pub user_data_64: i64,
    pub created_at_ms: u64,
    /// The debit account's version after this transfer (its position in that account's list).
    pub debit_account_version: u64,
    pub credit_account_version: u64,
}

/// Why an account's balances changed, in its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BalanceChange {
    /// A transfer (of any kind) with this id.
    Transfer,
    /// The expiry of the pending transfer with this id.
    Expiry,
}

impl BalanceChange {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            BalanceChange::Transfer => "transfer",
            BalanceChange::Expiry => "expiry",
        }
    }
}

/// An account's balances right after one change (accounts with the `history` flag).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceSnapshot {
    pub account_id: String,
    pub version: u64,
    pub transfer_id: String,
    pub cause: BalanceChange,
    pub balances: Balances,
    pub timestamp_ms: u64,
}

/// One page of a lookup, oldest first. Pass `next_after_version` back to read the next page;
/// `None` means this page was the last one (for now: versions only grow, so a follower can poll
/// with the last cursor it saw).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after_version: Option<u64>,
}

/// A successful create: a new record, or the one stored by an earlier identical request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome<T> {
    Created(T),
    /// The id existed with the same body: nothing changed, here is the original.
    Exists(T),
}

impl<T> Outcome<T> {
    pub fn into_inner(self) -> T {
        match self {
            Outcome::Created(t) | Outcome::Exists(t) => t,
        }
    }

    pub fn get(&self) -> &T {
        match self {
            Outcome::Created(t) | Outcome::Exists(t) => t,
        }
    }

    pub fn is_created(&self) -> bool {
        matches!(self, Outcome::Created(_))
    }
}
