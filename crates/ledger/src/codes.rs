//! Result codes: one typed variant per cause, each with a stable `UPPER_SNAKE` code that services
//! can pass on to their clients unchanged.
//!
//! They follow TigerBeetle's result codes where the semantics match, and are checked in the same
//! order (validation of the request alone, then the idempotency check against a stored transfer
//! with the same id, then accounts, then the pending transfer, then overflow, then limits), so one
//! request always yields the same code whatever path the ledger takes to evaluate it.
//!
//! `exists` is not an error here: a retry with the same body is `Ok(Outcome::Exists(original))`.

use std::fmt;

/// Defines a result-code enum with `ALL`, `code()` and `message()` from one list, so that the list
/// of codes can never miss a variant (the conformance tests iterate over `ALL`).
macro_rules! result_codes {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal, $message:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[doc = $message] $variant, )*
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The stable machine-readable code.
            pub const fn code(self) -> &'static str {
                match self { $($name::$variant => $code,)* }
            }

            /// A human-readable explanation, safe to show a client.
            pub const fn message(self) -> &'static str {
                match self { $($name::$variant => $message,)* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.message())
            }
        }

        impl std::error::Error for $name {}
    };
}

result_codes! {
    /// Why a transfer was not created.
    pub enum TransferError {
        // The request alone.
        InvalidId = "INVALID_ID", "the id must be 1 to 128 printable ASCII characters";
        UserDataTooLong = "USER_DATA_TOO_LONG", "user_data is longer than 256 bytes";
        AccountsMustBeDifferent = "ACCOUNTS_MUST_BE_DIFFERENT", "the debit and credit accounts must differ";
        AmountMustNotBeZero = "AMOUNT_MUST_NOT_BE_ZERO", "the amount must not be zero";
        LedgerMustNotBeZero = "LEDGER_MUST_NOT_BE_ZERO", "the ledger must not be zero";
        CodeMustNotBeZero = "CODE_MUST_NOT_BE_ZERO", "the code must not be zero";
        TimeoutMustNotBeZero = "TIMEOUT_MUST_NOT_BE_ZERO", "a timeout must be positive (leave it out for none)";
        OverflowsTimeout = "OVERFLOWS_TIMEOUT", "now plus the timeout overflows the clock";
        PendingIdMustBeDifferent = "PENDING_ID_MUST_BE_DIFFERENT", "a post or void must have its own id, not the pending transfer's";
        // A transfer with this id exists with a different body.
        ExistsWithDifferentFlags = "EXISTS_WITH_DIFFERENT_FLAGS", "the id exists with a different kind, linked flag or full/partial post";
        ExistsWithDifferentPendingId = "EXISTS_WITH_DIFFERENT_PENDING_ID", "the id exists with a different pending_id";
        ExistsWithDifferentTimeout = "EXISTS_WITH_DIFFERENT_TIMEOUT", "the id exists with a different timeout";
        ExistsWithDifferentDebitAccountId = "EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID", "the id exists with a different debit account";
        ExistsWithDifferentCreditAccountId = "EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID", "the id exists with a different credit account";
        ExistsWithDifferentAmount = "EXISTS_WITH_DIFFERENT_AMOUNT", "the id exists with a different amount";
        ExistsWithDifferentUserData = "EXISTS_WITH_DIFFERENT_USER_DATA", "the id exists with different user data";
        ExistsWithDifferentLedger = "EXISTS_WITH_DIFFERENT_LEDGER", "the id exists with a different ledger";
        ExistsWithDifferentCode = "EXISTS_WITH_DIFFERENT_CODE", "the id exists with a different code";
        // Accounts.
        DebitAccountNotFound = "DEBIT_ACCOUNT_NOT_FOUND", "the debit account does not exist";
        CreditAccountNotFound = "CREDIT_ACCOUNT_NOT_FOUND", "the credit account does not exist";
        AccountsMustHaveTheSameLedger = "ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER", "the debit and credit accounts are in different ledgers (assets)";
        TransferMustHaveTheSameLedgerAsAccounts = "TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS", "the transfer's ledger differs from its accounts' ledger";
        DebitAccountClosed = "DEBIT_ACCOUNT_CLOSED", "the debit account is closed";
        CreditAccountClosed = "CREDIT_ACCOUNT_CLOSED", "the credit account is closed";
        // The pending transfer of a post or void.
        PendingTransferNotFound = "PENDING_TRANSFER_NOT_FOUND", "the pending transfer does not exist";
        PendingTransferNotPending = "PENDING_TRANSFER_NOT_PENDING", "pending_id names a transfer that is not a pending transfer";
        PendingTransferAlreadyPosted = "PENDING_TRANSFER_ALREADY_POSTED", "the pending transfer was already posted";
        PendingTransferAlreadyVoided = "PENDING_TRANSFER_ALREADY_VOIDED", "the pending transfer was already voided";
        PendingTransferExpired = "PENDING_TRANSFER_EXPIRED", "the pending transfer has expired";
        ExceedsPendingTransferAmount = "EXCEEDS_PENDING_TRANSFER_AMOUNT", "the post amount exceeds the pending amount";
        // Balances.
        OverflowsDebits = "OVERFLOWS_DEBITS", "the debit account's total debits would exceed the balance ceiling";
        OverflowsCredits = "OVERFLOWS_CREDITS", "the credit account's total credits would exceed the balance ceiling";
        ExceedsCredits = "EXCEEDS_CREDITS", "the debit account's debits would exceed its credits (no overdraft)";
        ExceedsDebits = "EXCEEDS_DEBITS", "the credit account's credits would exceed its debits";
        // Linked chains.
        LinkedEventFailed = "LINKED_EVENT_FAILED", "another transfer in the linked chain failed";
        LinkedEventChainOpen = "LINKED_EVENT_CHAIN_OPEN", "the last transfer of the batch is linked: the chain is never closed";
    }
}

result_codes! {
    /// Why an account was not created (or closed, or reopened).
    pub enum AccountError {
        InvalidId = "INVALID_ID", "the id must be 1 to 128 printable ASCII characters";
        UserDataTooLong = "USER_DATA_TOO_LONG", "user_data is longer than 256 bytes";
        LedgerMustNotBeZero = "LEDGER_MUST_NOT_BE_ZERO", "the ledger must not be zero";
        CodeMustNotBeZero = "CODE_MUST_NOT_BE_ZERO", "the code must not be zero";
        FlagsAreMutuallyExclusive = "FLAGS_ARE_MUTUALLY_EXCLUSIVE", "debits_must_not_exceed_credits and credits_must_not_exceed_debits cannot both be set";
        ExistsWithDifferentFlags = "EXISTS_WITH_DIFFERENT_FLAGS", "the id exists with different flags";
        ExistsWithDifferentLedger = "EXISTS_WITH_DIFFERENT_LEDGER", "the id exists with a different ledger";
        ExistsWithDifferentCode = "EXISTS_WITH_DIFFERENT_CODE", "the id exists with a different code";
        ExistsWithDifferentUserData = "EXISTS_WITH_DIFFERENT_USER_DATA", "the id exists with different user data";
        AccountNotFound = "ACCOUNT_NOT_FOUND", "the account does not exist";
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn codes_are_unique_upper_snake_case() {
        let codes: BTreeSet<_> = TransferError::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), TransferError::ALL.len());
        let codes: BTreeSet<_> = AccountError::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), AccountError::ALL.len());
        for code in TransferError::ALL
            .iter()
            .map(|e| e.code())
            .chain(AccountError::ALL.iter().map(|e| e.code()))
        {
            assert!(
                code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{code}"
            );
        }
    }
}
