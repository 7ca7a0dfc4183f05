//! The reference state machine: applies transfers, posts, voids and expiries to accounts and
//! transfers held in memory, and decides every result code.
//!
//! The batch path loads (and locks) everything a batch touches, runs it through this engine and
//! writes the net effect back in a few bulk statements. The single-transfer fast path in
//! [`crate::fast`] does not use it on success, but falls back to it whenever one of its guards
//! fails, so the engine alone decides every refusal. Keeping the rules in pure code is what makes
//! them unit-testable and lets the property tests check the fast path against them.

use std::collections::HashMap;

use oa_money::Msat;

use crate::{
    codes::TransferError,
    error::{LedgerError, corrupt},
    types::{
        Account, BalanceChange, BalanceSnapshot, Balances, MAX_BALANCE_MSAT, MAX_USER_DATA_LEN,
        Movement, NewTransfer, Outcome, PendingState, Transfer, TransferKind, TransferOp,
        is_valid_id,
    },
};

/// The result of one transfer request.
pub type TransferResult = Result<Outcome<Transfer>, TransferError>;

/// Checks what can be checked from the request and the clock alone.
pub(crate) fn validate_request(req: &NewTransfer, now_ms: u64) -> Result<(), TransferError> {
    if !is_valid_id(&req.id) {
        return Err(TransferError::InvalidId);
    }
    if req.user_data.len() > MAX_USER_DATA_LEN {
        return Err(TransferError::UserDataTooLong);
    }
    match &req.op {
        TransferOp::Single(m) => validate_movement(m),
        TransferOp::Pending {
            movement,
            timeout_ms,
        } => {
            validate_movement(movement)?;
            match timeout_ms {
                None => Ok(()),
                Some(0) => Err(TransferError::TimeoutMustNotBeZero),
                Some(t) => match now_ms.checked_add(*t) {
                    Some(expires) if i64::try_from(expires).is_ok() => Ok(()),
                    _ => Err(TransferError::OverflowsTimeout),
                },
            }
        }
        TransferOp::PostPending {
            pending_id,
            amount_msat,
        } => {
            if *pending_id == req.id {
                Err(TransferError::PendingIdMustBeDifferent)
            } else if amount_msat.is_some_and(Msat::is_zero) {
                Err(TransferError::AmountMustNotBeZero)
            } else {
                Ok(())
            }
        }
        TransferOp::VoidPending { pending_id } => {
            if *pending_id == req.id {
                Err(TransferError::PendingIdMustBeDifferent)
            } else {
                Ok(())
            }
        }
    }
}

fn validate_movement(m: &Movement) -> Result<(), TransferError> {
    if m.debit_account_id == m.credit_account_id {
        Err(TransferError::AccountsMustBeDifferent)
    } else if m.amount_msat.is_zero() {
        Err(TransferError::AmountMustNotBeZero)
    } else if m.ledger == 0 {
        Err(TransferError::LedgerMustNotBeZero)
    } else if m.code == 0 {
        Err(TransferError::CodeMustNotBeZero)
    } else {
        Ok(())
    }
}

/// Compares a request with the stored transfer of the same id: `None` if it is the same request.
pub(crate) fn compare_existing(req: &NewTransfer, e: &Transfer) -> Option<TransferError> {
    use TransferError as E;
    if req.linked != e.linked {
        return Some(E::ExistsWithDifferentFlags);
    }
    let check_movement = |m: &Movement, timeout: Option<u64>| -> Option<TransferError> {
        if e.timeout_ms != timeout {
            Some(E::ExistsWithDifferentTimeout)
        } else if m.debit_account_id != e.debit_account_id {
            Some(E::ExistsWithDifferentDebitAccountId)
        } else if m.credit_account_id != e.credit_account_id {
            Some(E::ExistsWithDifferentCreditAccountId)
        } else if m.amount_msat != e.amount_msat {
            Some(E::ExistsWithDifferentAmount)
        } else {
            None
        }
    };
    let body = match &req.op {
        TransferOp::Single(m) if e.kind == TransferKind::Single => check_movement(m, None),
        TransferOp::Pending {
            movement,
            timeout_ms,
        } if e.kind == TransferKind::Pending => check_movement(movement, *timeout_ms),
        TransferOp::PostPending {
            pending_id,
            amount_msat,
        } if e.kind == TransferKind::PostPending && amount_msat.is_none() == e.post_full_amount => {
            if e.pending_id.as_deref() != Some(pending_id.as_str()) {
                Some(E::ExistsWithDifferentPendingId)
            } else if amount_msat.is_some_and(|a| a != e.amount_msat) {
                Some(E::ExistsWithDifferentAmount)
            } else {
                None
            }
        }
        TransferOp::VoidPending { pending_id } if e.kind == TransferKind::VoidPending => {
            (e.pending_id.as_deref() != Some(pending_id.as_str()))
                .then_some(E::ExistsWithDifferentPendingId)
        }
        _ => Some(E::ExistsWithDifferentFlags),
    };
    if body.is_some() {
        return body;
    }
    if req.user_data != e.user_data || req.user_data_64 != e.user_data_64 {
        return Some(E::ExistsWithDifferentUserData);
    }
    let (ledger, code) = match &req.op {
        TransferOp::Single(m)
        | TransferOp::Pending {
            movement: m,
            timeout_ms: _,
        } => (m.ledger, m.code),
        // A post or void inherits both from its pending transfer, so they cannot differ.
        TransferOp::PostPending { .. } | TransferOp::VoidPending { .. } => (e.ledger, e.code),
    };
    if ledger != e.ledger {
        Some(E::ExistsWithDifferentLedger)
    } else if code != e.code {
        Some(E::ExistsWithDifferentCode)
    } else {
        None
    }
}

/// An entry of the undo log, restoring one thing to how it was before a linked chain started.
enum Undo {
    Account(Account),
    Created(String),
    Pending {
        id: String,
        state: Option<PendingState>,
        resolved_at_ms: Option<u64>,
    },
    History,
}

/// Everything the batch path must write back.
pub(crate) struct Writes {
    /// New transfers, sorted by id (a fixed insert order keeps concurrent batches from
    /// deadlocking on each other's uncommitted ids).
    pub new_transfers: Vec<Transfer>,
    /// Pending transfers loaded from the database that left the pending state.
    pub resolved: Vec<(String, PendingState, u64)>,
    /// Changed accounts with the version they had when loaded (the write guard).
    pub accounts: Vec<(Account, u64)>,
    pub history: Vec<BalanceSnapshot>,
}

/// The in-memory ledger state of one batch.
pub(crate) struct Engine {
    now_ms: u64,
    accounts: HashMap<String, Account>,
    loaded_accounts: HashMap<String, Account>,
    transfers: HashMap<String, Transfer>,
    loaded_pending: HashMap<String, PendingState>,
    created: Vec<String>,
    history: Vec<BalanceSnapshot>,
    undo: Vec<Undo>,
}

impl Engine {
    /// `accounts` and `transfers` must include every account and every stored transfer (by id
    /// and by pending id) that the requests name, locked against concurrent change.
    pub fn new(now_ms: u64, accounts: Vec<Account>, transfers: Vec<Transfer>) -> Engine {
        let accounts: HashMap<_, _> = accounts.into_iter().map(|a| (a.id.clone(), a)).collect();
        let loaded_pending = transfers
            .iter()
            .filter_map(|t| t.pending_state.map(|s| (t.id.clone(), s)))
            .collect();
        Engine {
            now_ms,
            loaded_accounts: accounts.clone(),
            accounts,
            transfers: transfers.into_iter().map(|t| (t.id.clone(), t)).collect(),
            loaded_pending,
            created: Vec::new(),
            history: Vec::new(),
            undo: Vec::new(),
        }
    }

    /// Applies a batch in order. Linked chains succeed or fail as a whole: in a failed chain the
    /// failing transfer reports its own code and every other one `LinkedEventFailed`.
    pub fn apply_batch(
        &mut self,
        reqs: &[NewTransfer],
    ) -> Result<Vec<TransferResult>, LedgerError> {
        let mut results: Vec<TransferResult> = Vec::with_capacity(reqs.len());
        let mut start = 0;
        while start < reqs.len() {
            let mut end = start;
            while end < reqs.len() && reqs[end].linked {
                end += 1;
            }
            if end == reqs.len() {
                // The batch ends inside a chain: nothing of it applies.
                for i in start..reqs.len() {
                    results.push(Err(if i + 1 == reqs.len() {
                        TransferError::LinkedEventChainOpen
                    } else {
                        TransferError::LinkedEventFailed
                    }));
                }
                break;
            }
            let mark = self.undo.len();
            let mut failed = None;
            for (i, req) in reqs.iter().enumerate().take(end + 1).skip(start) {
                let result = self.apply(req)?;
                if let Err(e) = result {
                    failed = Some((i, e));
                    break;
                }
                results.push(result);
            }
            if let Some((failed_at, error)) = failed {
                self.rollback(mark);
                results.truncate(start);
                for i in start..=end {
                    results.push(Err(if i == failed_at {
                        error
                    } else {
                        TransferError::LinkedEventFailed
                    }));
                }
            }
            self.undo.clear();
            start = end + 1;
        }
        Ok(results)
    }

    fn rollback(&mut self, mark: usize) {
        while self.undo.len() > mark {
            match self.undo.pop() {
                Some(Undo::Account(a)) => {
                    self.accounts.insert(a.id.clone(), a);
                }
                Some(Undo::Created(id)) => {
                    self.transfers.remove(&id);
                    self.created.pop();
                }
                Some(Undo::Pending {
                    id,
                    state,
                    resolved_at_ms,
                }) => {
                    if let Some(t) = self.transfers.get_mut(&id) {
                        t.pending_state = state;
                        t.pending_resolved_at_ms = resolved_at_ms;
                    }
                }
                Some(Undo::History) => {
                    self.history.pop();
                }
                None => break,
            }
        }
    }

    /// Applies one request; an `Err(TransferError)` leaves the state untouched.
    pub fn apply(&mut self, req: &NewTransfer) -> Result<TransferResult, LedgerError> {
        if let Err(e) = validate_request(req, self.now_ms) {
            return Ok(Err(e));
        }
        if let Some(existing) = self.transfers.get(&req.id) {
            return Ok(match compare_existing(req, existing) {
                None => Ok(Outcome::Exists(existing.clone())),
                Some(e) => Err(e),
            });
        }
        match &req.op {
            TransferOp::Single(m) => self.apply_movement(req, m, None),
            TransferOp::Pending {
                movement,
                timeout_ms,
            } => self.apply_movement(req, movement, Some(*timeout_ms)),
            TransferOp::PostPending {
                pending_id,
                amount_msat,
            } => self.resolve(req, pending_id, Some(*amount_msat)),
            TransferOp::VoidPending { pending_id } => self.resolve(req, pending_id, None),
        }
    }

    /// A single-phase (`timeout: None`) or pending (`timeout: Some(..)`) transfer.
    fn apply_movement(
        &mut self,
        req: &NewTransfer,
        m: &Movement,
        timeout: Option<Option<u64>>,
    ) -> Result<TransferResult, LedgerError> {
        use TransferError as E;
        let Some(dr) = self.accounts.get(&m.debit_account_id) else {
            return Ok(Err(E::DebitAccountNotFound));
        };
        let Some(cr) = self.accounts.get(&m.credit_account_id) else {
            return Ok(Err(E::CreditAccountNotFound));
        };
        let amount = m.amount_msat.as_u64();
        let (d, c) = (dr.balances, cr.balances);
        let check = if dr.ledger != cr.ledger {
            Err(E::AccountsMustHaveTheSameLedger)
        } else if m.ledger != dr.ledger {
            Err(E::TransferMustHaveTheSameLedgerAsAccounts)
        } else if dr.closed {
            Err(E::DebitAccountClosed)
        } else if cr.closed {
            Err(E::CreditAccountClosed)
        } else if total(d.debits_pending_msat, d.debits_posted_msat, amount) > MAX_BALANCE_MSAT {
            Err(E::OverflowsDebits)
        } else if total(c.credits_pending_msat, c.credits_posted_msat, amount) > MAX_BALANCE_MSAT {
            Err(E::OverflowsCredits)
        } else if dr.flags.debits_must_not_exceed_credits
            && total(d.debits_pending_msat, d.debits_posted_msat, amount) > d.credits_posted_msat
        {
            Err(E::ExceedsCredits)
        } else if cr.flags.credits_must_not_exceed_debits
            && total(c.credits_pending_msat, c.credits_posted_msat, amount) > c.debits_posted_msat
        {
            Err(E::ExceedsDebits)
        } else {
            Ok(())
        };
        if let Err(e) = check {
            return Ok(Err(e));
        }
        let pending = timeout.is_some();
        let debit_version =
            self.change_account(&m.debit_account_id, &req.id, BalanceChange::Transfer, |b| {
                if pending {
                    b.debits_pending_msat += amount;
                } else {
                    b.debits_posted_msat += amount;
                }
                Ok(())
            })?;
        let credit_version = self.change_account(
            &m.credit_account_id,
            &req.id,
            BalanceChange::Transfer,
            |b| {
                if pending {
                    b.credits_pending_msat += amount;
                } else {
                    b.credits_posted_msat += amount;
                }
                Ok(())
            },
        )?;
        let timeout_ms = timeout.flatten();
        let transfer = Transfer {
            id: req.id.clone(),
            kind: if pending {
                TransferKind::Pending
            } else {
                TransferKind::Single
            },
            debit_account_id: m.debit_account_id.clone(),
            credit_account_id: m.credit_account_id.clone(),
            amount_msat: m.amount_msat,
            pending_id: None,
            ledger: m.ledger,
            code: m.code,
            linked: req.linked,
            post_full_amount: false,
            timeout_ms,
            // validate_request checked that this neither overflows nor leaves the i64 range.
            expires_at_ms: timeout_ms.map(|t| self.now_ms.saturating_add(t)),
            pending_state: pending.then_some(PendingState::Pending),
            pending_resolved_at_ms: None,
            user_data: req.user_data.clone(),
            user_data_64: req.user_data_64,
            created_at_ms: self.now_ms,
            debit_account_version: debit_version,
            credit_account_version: credit_version,
        };
        Ok(Ok(Outcome::Created(self.record(transfer))))
    }

    /// A post (`post: Some(amount)`) or a void (`post: None`) of a pending transfer.
    fn resolve(
        &mut self,
        req: &NewTransfer,
        pending_id: &str,
        post: Option<Option<Msat>>,
    ) -> Result<TransferResult, LedgerError> {
        use TransferError as E;
        let Some(p) = self.transfers.get(pending_id) else {
            return Ok(Err(E::PendingTransferNotFound));
        };
        if p.kind != TransferKind::Pending {
            return Ok(Err(E::PendingTransferNotPending));
        }
        match p.pending_state {
            Some(PendingState::Pending) => {}
            Some(PendingState::Posted) => return Ok(Err(E::PendingTransferAlreadyPosted)),
            Some(PendingState::Voided) => return Ok(Err(E::PendingTransferAlreadyVoided)),
            Some(PendingState::Expired) => return Ok(Err(E::PendingTransferExpired)),
            None => {
                return Err(corrupt(format!(
                    "pending transfer {pending_id} has no state"
                )));
            }
        }
        if p.expires_at_ms.is_some_and(|at| at <= self.now_ms) {
            return Ok(Err(E::PendingTransferExpired));
        }
        let pending_amount = p.amount_msat;
        let posted = match post {
            Some(amount) => {
                let amount = amount.unwrap_or(pending_amount);
                if amount > pending_amount {
                    return Ok(Err(E::ExceedsPendingTransferAmount));
                }
                Some(amount)
            }
            None => None,
        };
        let p = p.clone();
        let dr = self.account(&p.debit_account_id)?;
        let cr = self.account(&p.credit_account_id)?;
        if posted.is_some() {
            // A void still goes through to a closed account: it only releases money.
            if dr.closed {
                return Ok(Err(E::DebitAccountClosed));
            }
            if cr.closed {
                return Ok(Err(E::CreditAccountClosed));
            }
        }
        let released = pending_amount.as_u64();
        let post_amount = posted.map_or(0, Msat::as_u64);
        let debit_version =
            self.change_account(&p.debit_account_id, &req.id, BalanceChange::Transfer, |b| {
                b.debits_pending_msat = b
                    .debits_pending_msat
                    .checked_sub(released)
                    .ok_or_else(|| corrupt("debits_pending below a pending amount"))?;
                b.debits_posted_msat += post_amount;
                Ok(())
            })?;
        let credit_version = self.change_account(
            &p.credit_account_id,
            &req.id,
            BalanceChange::Transfer,
            |b| {
                b.credits_pending_msat = b
                    .credits_pending_msat
                    .checked_sub(released)
                    .ok_or_else(|| corrupt("credits_pending below a pending amount"))?;
                b.credits_posted_msat += post_amount;
                Ok(())
            },
        )?;
        let new_state = if posted.is_some() {
            PendingState::Posted
        } else {
            PendingState::Voided
        };
        self.set_pending_state(pending_id, new_state);
        let transfer = Transfer {
            id: req.id.clone(),
            kind: if posted.is_some() {
                TransferKind::PostPending
            } else {
                TransferKind::VoidPending
            },
            debit_account_id: p.debit_account_id.clone(),
            credit_account_id: p.credit_account_id.clone(),
            amount_msat: posted.unwrap_or(pending_amount),
            pending_id: Some(pending_id.to_owned()),
            ledger: p.ledger,
            code: p.code,
            linked: req.linked,
            post_full_amount: matches!(post, Some(None)),
            timeout_ms: None,
            expires_at_ms: None,
            pending_state: None,
            pending_resolved_at_ms: None,
            user_data: req.user_data.clone(),
            user_data_64: req.user_data_64,
            created_at_ms: self.now_ms,
            debit_account_version: debit_version,
            credit_account_version: credit_version,
        };
        Ok(Ok(Outcome::Created(self.record(transfer))))
    }

    /// Expires a pending transfer whose timeout has passed, releasing its pending amounts.
    /// Returns the updated pending transfer, or `None` if it is not (or no longer) expirable.
    pub fn expire(&mut self, pending_id: &str) -> Result<Option<Transfer>, LedgerError> {
        let Some(p) = self.transfers.get(pending_id) else {
            return Ok(None);
        };
        let expirable = p.pending_state == Some(PendingState::Pending)
            && p.expires_at_ms.is_some_and(|at| at <= self.now_ms);
        if !expirable {
            return Ok(None);
        }
        let p = p.clone();
        let released = p.amount_msat.as_u64();
        self.change_account(
            &p.debit_account_id,
            pending_id,
            BalanceChange::Expiry,
            |b| {
                b.debits_pending_msat = b
                    .debits_pending_msat
                    .checked_sub(released)
                    .ok_or_else(|| corrupt("debits_pending below a pending amount"))?;
                Ok(())
            },
        )?;
        self.change_account(
            &p.credit_account_id,
            pending_id,
            BalanceChange::Expiry,
            |b| {
                b.credits_pending_msat = b
                    .credits_pending_msat
                    .checked_sub(released)
                    .ok_or_else(|| corrupt("credits_pending below a pending amount"))?;
                Ok(())
            },
        )?;
        self.set_pending_state(pending_id, PendingState::Expired);
        self.undo.clear();
        Ok(self.transfers.get(pending_id).cloned())
    }

    fn account(&self, id: &str) -> Result<Account, LedgerError> {
        self.accounts
            .get(id)
            .cloned()
            .ok_or_else(|| corrupt(format!("account {id} of a stored transfer is missing")))
    }

    /// Changes one account's balances, bumps its version and records history; returns the new
    /// version.
    fn change_account(
        &mut self,
        id: &str,
        transfer_id: &str,
        cause: BalanceChange,
        change: impl FnOnce(&mut Balances) -> Result<(), LedgerError>,
    ) -> Result<u64, LedgerError> {
        let account = self
            .accounts
            .get_mut(id)
            .ok_or_else(|| corrupt(format!("account {id} was not loaded")))?;
        let before = account.clone();
        change(&mut account.balances)?;
        account.version += 1;
        let version = account.version;
        if account.flags.history {
            self.history.push(BalanceSnapshot {
                account_id: id.to_owned(),
                version,
                transfer_id: transfer_id.to_owned(),
                cause,
                balances: account.balances,
                timestamp_ms: self.now_ms,
            });
            self.undo.push(Undo::Account(before));
            self.undo.push(Undo::History);
        } else {
            self.undo.push(Undo::Account(before));
        }
        Ok(version)
    }

    fn set_pending_state(&mut self, id: &str, state: PendingState) {
        if let Some(t) = self.transfers.get_mut(id) {
            self.undo.push(Undo::Pending {
                id: id.to_owned(),
                state: t.pending_state,
                resolved_at_ms: t.pending_resolved_at_ms,
            });
            t.pending_state = Some(state);
            t.pending_resolved_at_ms = Some(self.now_ms);
        }
    }

    fn record(&mut self, transfer: Transfer) -> Transfer {
        self.undo.push(Undo::Created(transfer.id.clone()));
        self.created.push(transfer.id.clone());
        self.transfers.insert(transfer.id.clone(), transfer.clone());
        transfer
    }

    /// The net effect of everything applied, after checking in code that each ledger's debits
    /// and credits moved by the same amounts and that no flagged account crossed its limit.
    pub fn into_writes(mut self) -> Result<Writes, LedgerError> {
        let mut deltas: HashMap<u32, [i128; 4]> = HashMap::new();
        let mut accounts = Vec::new();
        for (id, account) in &self.accounts {
            let loaded = self
                .loaded_accounts
                .get(id)
                .ok_or_else(|| corrupt(format!("account {id} appeared from nowhere")))?;
            if account.version == loaded.version {
                continue;
            }
            if !account.balances.within_limits(account.flags) {
                return Err(LedgerError::InvariantViolated(format!(
                    "account {id} would cross its limit: {:?}",
                    account.balances
                )));
            }
            let (n, o) = (account.balances, loaded.balances);
            let d = deltas.entry(account.ledger).or_default();
            d[0] += i128::from(n.debits_pending_msat) - i128::from(o.debits_pending_msat);
            d[1] += i128::from(n.credits_pending_msat) - i128::from(o.credits_pending_msat);
            d[2] += i128::from(n.debits_posted_msat) - i128::from(o.debits_posted_msat);
            d[3] += i128::from(n.credits_posted_msat) - i128::from(o.credits_posted_msat);
            accounts.push((account.clone(), loaded.version));
        }
        for (ledger, d) in deltas {
            if d[0] != d[1] || d[2] != d[3] {
                return Err(LedgerError::InvariantViolated(format!(
                    "ledger {ledger} would be unbalanced: pending {} vs {}, posted {} vs {}",
                    d[0], d[1], d[2], d[3]
                )));
            }
        }
        let mut new_transfers = Vec::with_capacity(self.created.len());
        for id in &self.created {
            let t = self
                .transfers
                .remove(id)
                .ok_or_else(|| corrupt(format!("created transfer {id} vanished")))?;
            new_transfers.push(t);
        }
        new_transfers.sort_by(|a, b| a.id.cmp(&b.id));
        let mut resolved = Vec::new();
        for (id, before) in &self.loaded_pending {
            if let Some(t) = self.transfers.get(id)
                && let (Some(state), Some(at)) = (t.pending_state, t.pending_resolved_at_ms)
                && state != *before
            {
                resolved.push((id.clone(), state, at));
            }
        }
        resolved.sort_by(|a, b| a.0.cmp(&b.0));
        accounts.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(Writes {
            new_transfers,
            resolved,
            accounts,
            history: std::mem::take(&mut self.history),
        })
    }
}

/// `pending + posted + amount`, saturating: inputs are bounded far below `u64::MAX`, and a
/// saturated result still compares as "too large".
fn total(pending: u64, posted: u64, amount: u64) -> u64 {
    pending.saturating_add(posted).saturating_add(amount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::AccountFlags;

    const L: u32 = 1;

    fn account(id: &str, flags: AccountFlags) -> Account {
        Account {
            id: id.into(),
            ledger: L,
            code: 1,
            flags,
            closed: false,
            balances: Balances::default(),
            version: 0,
            user_data: String::new(),
            user_data_64: 0,
            created_at_ms: 0,
        }
    }

    fn msat(v: u64) -> Msat {
        Msat::new(v).expect("test amount")
    }

    fn engine(now_ms: u64) -> Engine {
        Engine::new(
            now_ms,
            vec![
                account("bank", AccountFlags::default()),
                account("alice", AccountFlags::no_overdraft().with_history()),
                account("hold", AccountFlags::default()),
            ],
            vec![],
        )
    }

    fn code(r: &TransferResult) -> Option<TransferError> {
        r.as_ref().err().copied()
    }

    #[test]
    fn pending_then_partial_post_moves_only_the_posted_amount() {
        let mut e = engine(1_000);
        let fund = NewTransfer::single("f", "bank", "alice", msat(100), L, 1);
        let hold = NewTransfer::pending("p", "alice", "hold", msat(60), L, 2, Some(500));
        let post = NewTransfer::post("q", "p", Some(msat(40)));
        let results = e.apply_batch(&[fund, hold, post]).expect("batch");
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let alice = &e.accounts["alice"].balances;
        assert_eq!(alice.debits_pending_msat, 0);
        assert_eq!(alice.debits_posted_msat, 40);
        assert_eq!(alice.available_msat(), 60);
        let writes = e.into_writes().expect("balanced");
        assert_eq!(writes.new_transfers.len(), 3);
        // alice changed three times and keeps history.
        assert_eq!(writes.history.len(), 3);
    }

    #[test]
    fn a_failing_link_undoes_the_whole_chain() {
        let mut e = engine(0);
        let ok = NewTransfer::single("a", "bank", "alice", msat(5), L, 1).linked();
        let too_much = NewTransfer::single("b", "alice", "hold", msat(50), L, 1);
        let after = NewTransfer::single("c", "bank", "hold", msat(1), L, 1);
        let r = e.apply_batch(&[ok, too_much, after]).expect("batch");
        assert_eq!(code(&r[0]), Some(TransferError::LinkedEventFailed));
        assert_eq!(code(&r[1]), Some(TransferError::ExceedsCredits));
        assert!(r[2].is_ok());
        assert_eq!(e.accounts["alice"].balances, Balances::default());
        assert_eq!(e.accounts["alice"].version, 0);
        let writes = e.into_writes().expect("balanced");
        assert_eq!(writes.new_transfers.len(), 1);
        assert!(writes.history.is_empty());
    }

    #[test]
    fn an_open_chain_applies_nothing() {
        let mut e = engine(0);
        let a = NewTransfer::single("a", "bank", "hold", msat(5), L, 1).linked();
        let b = NewTransfer::single("b", "bank", "hold", msat(5), L, 1).linked();
        let r = e.apply_batch(&[a, b]).expect("batch");
        assert_eq!(code(&r[0]), Some(TransferError::LinkedEventFailed));
        assert_eq!(code(&r[1]), Some(TransferError::LinkedEventChainOpen));
        assert!(e.into_writes().expect("ok").new_transfers.is_empty());
    }

    #[test]
    fn a_repeated_id_in_one_batch_is_exists_or_conflict() {
        let mut e = engine(0);
        let a = NewTransfer::single("a", "bank", "hold", msat(5), L, 1);
        let mut b = a.clone();
        b.user_data = "other".into();
        let r = e.apply_batch(&[a.clone(), a, b]).expect("batch");
        assert!(matches!(r[0], Ok(Outcome::Created(_))));
        assert!(matches!(r[1], Ok(Outcome::Exists(_))));
        assert_eq!(
            code(&r[2]),
            Some(TransferError::ExistsWithDifferentUserData)
        );
    }

    #[test]
    fn expiry_releases_and_blocks_later_posts() {
        let mut e = engine(0);
        let fund = NewTransfer::single("f", "bank", "alice", msat(10), L, 1);
        let hold = NewTransfer::pending("p", "alice", "hold", msat(10), L, 2, Some(5));
        assert!(
            e.apply_batch(&[fund, hold])
                .expect("batch")
                .iter()
                .all(Result::is_ok)
        );
        let mut later = Engine::new(
            5,
            e.accounts.values().cloned().collect(),
            e.transfers.values().cloned().collect(),
        );
        let r = later
            .apply(&NewTransfer::post("q", "p", None))
            .expect("apply");
        assert_eq!(code(&r), Some(TransferError::PendingTransferExpired));
        assert!(later.expire("p").expect("expire").is_some());
        assert_eq!(later.accounts["alice"].balances.available_msat(), 10);
        let r = later.apply(&NewTransfer::void("v", "p")).expect("apply");
        assert_eq!(code(&r), Some(TransferError::PendingTransferExpired));
    }

    #[test]
    fn static_checks_come_first() {
        let e = |req: NewTransfer| validate_request(&req, 0).err();
        assert_eq!(
            e(NewTransfer::single("", "a", "b", msat(1), L, 1)),
            Some(TransferError::InvalidId)
        );
        assert_eq!(
            e(NewTransfer::single("x", "a", "a", msat(1), L, 1)),
            Some(TransferError::AccountsMustBeDifferent)
        );
        assert_eq!(
            e(NewTransfer::single("x", "a", "b", Msat::ZERO, L, 1)),
            Some(TransferError::AmountMustNotBeZero)
        );
        assert_eq!(
            e(NewTransfer::single("x", "a", "b", msat(1), 0, 1)),
            Some(TransferError::LedgerMustNotBeZero)
        );
        assert_eq!(
            e(NewTransfer::single("x", "a", "b", msat(1), L, 0)),
            Some(TransferError::CodeMustNotBeZero)
        );
        assert_eq!(
            e(NewTransfer::pending("x", "a", "b", msat(1), L, 1, Some(0))),
            Some(TransferError::TimeoutMustNotBeZero)
        );
        assert_eq!(
            e(NewTransfer::pending(
                "x",
                "a",
                "b",
                msat(1),
                L,
                1,
                Some(u64::MAX)
            )),
            Some(TransferError::OverflowsTimeout)
        );
        assert_eq!(
            e(NewTransfer::post("x", "x", None)),
            Some(TransferError::PendingIdMustBeDifferent)
        );
        assert_eq!(
            e(NewTransfer::post("x", "p", Some(Msat::ZERO))),
            Some(TransferError::AmountMustNotBeZero)
        );
        assert_eq!(
            e(NewTransfer::void("x", "x")),
            Some(TransferError::PendingIdMustBeDifferent)
        );
        assert_eq!(
            e(
                NewTransfer::single("x", "a", "b", msat(1), L, 1)
                    .with_user_data("u".repeat(257), 0)
            ),
            Some(TransferError::UserDataTooLong)
        );
    }
}
