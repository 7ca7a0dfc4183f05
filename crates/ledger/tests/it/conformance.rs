//! Every transfer result code, produced on each backend by both paths (the single-transfer fast
//! path and the batch path), with nothing changed by any refusal.

use std::collections::BTreeSet;

use oa_ledger::{
    AccountFlags, Balances, Ledger, MAX_BALANCE_MSAT, NewAccount, NewTransfer, Outcome,
    TransferError as E, create_transfers, create_transfers_batched,
};
use oa_money::Msat;

use crate::support::{
    L, T0, code_of, count_transfers, create_account, each_backend, msat, must_create,
};

const LEDGER_2: u32 = 2;
const BIG: u32 = 3;
const PENDING_TIMEOUT_MS: u64 = 1_000_000;

/// Accounts and transfers that the cases refer to.
async fn fixture(ledger: &Ledger) {
    for a in [
        NewAccount::new("bank", L, 1),
        NewAccount::new("alice", L, 2).with_flags(AccountFlags::no_overdraft()),
        NewAccount::new("bob", L, 2),
        NewAccount::new("line", L, 3).with_flags(AccountFlags {
            credits_must_not_exceed_debits: true,
            ..AccountFlags::default()
        }),
        NewAccount::new("elsewhere", LEDGER_2, 1),
        NewAccount::new("closed", L, 2),
        NewAccount::new("big-debit", BIG, 1),
        NewAccount::new("big-credit", BIG, 1),
    ] {
        create_account(ledger, a).await;
    }
    for i in 0..4 {
        create_account(ledger, NewAccount::new(format!("sink-{i}"), BIG, 1)).await;
        create_account(ledger, NewAccount::new(format!("source-{i}"), BIG, 1)).await;
    }
    ledger
        .close_account("closed")
        .await
        .expect("close")
        .expect("closed account exists");
    must_create(
        ledger,
        NewTransfer::single("fund-alice", "bank", "alice", msat(1_000), L, 1),
        T0,
    )
    .await;
    must_create(
        ledger,
        NewTransfer::single("t-single", "bank", "bob", msat(5), L, 1).with_user_data("u", 7),
        T0,
    )
    .await;
    must_create(
        ledger,
        NewTransfer::pending(
            "t-pending",
            "bank",
            "bob",
            msat(5),
            L,
            1,
            Some(PENDING_TIMEOUT_MS),
        ),
        T0,
    )
    .await;
    must_create(
        ledger,
        NewTransfer::pending(
            "p-posted",
            "bank",
            "bob",
            msat(5),
            L,
            1,
            Some(PENDING_TIMEOUT_MS),
        ),
        T0,
    )
    .await;
    must_create(ledger, NewTransfer::post("t-post", "p-posted", None), T0).await;
    must_create(
        ledger,
        NewTransfer::pending(
            "p-voided",
            "bank",
            "bob",
            msat(5),
            L,
            1,
            Some(PENDING_TIMEOUT_MS),
        ),
        T0,
    )
    .await;
    must_create(ledger, NewTransfer::void("t-void", "p-voided"), T0).await;
    must_create(
        ledger,
        NewTransfer::pending("p-short", "bank", "bob", msat(5), L, 1, Some(10)),
        T0,
    )
    .await;
    // Three maximal amounts: the fourth would cross MAX_BALANCE_MSAT on one side.
    for i in 0..3 {
        must_create(
            ledger,
            NewTransfer::single(
                format!("big-d-{i}"),
                "big-debit",
                format!("sink-{i}"),
                Msat::MAX,
                BIG,
                1,
            ),
            T0,
        )
        .await;
        must_create(
            ledger,
            NewTransfer::single(
                format!("big-c-{i}"),
                format!("source-{i}"),
                "big-credit",
                Msat::MAX,
                BIG,
                1,
            ),
            T0,
        )
        .await;
    }
    assert!(3 * Msat::MAX.as_u64() <= MAX_BALANCE_MSAT);
    assert!(4 * Msat::MAX.as_u64() > MAX_BALANCE_MSAT);
}

/// One case: a batch, which of its transfers reports `expected`, and the clock.
struct Case {
    name: &'static str,
    batch: Vec<NewTransfer>,
    index: usize,
    expected: E,
    now_ms: u64,
}

fn case(name: &'static str, t: NewTransfer, expected: E) -> Case {
    Case {
        name,
        batch: vec![t],
        index: 0,
        expected,
        now_ms: T0 + 1,
    }
}

fn single(id: &str, dr: &str, cr: &str, amount: u64) -> NewTransfer {
    NewTransfer::single(id, dr, cr, msat(amount), L, 1)
}

fn cases() -> Vec<Case> {
    let original = || single("t-single", "bank", "bob", 5).with_user_data("u", 7);
    let mut c = vec![
        case("empty id", single("", "bank", "bob", 1), E::InvalidId),
        case(
            "id with a space",
            single("a b", "bank", "bob", 1),
            E::InvalidId,
        ),
        case(
            "user data too long",
            single("n1", "bank", "bob", 1)
                .with_user_data("x".repeat(oa_ledger::MAX_USER_DATA_LEN + 1), 0),
            E::UserDataTooLong,
        ),
        case(
            "same account",
            single("n1", "bob", "bob", 1),
            E::AccountsMustBeDifferent,
        ),
        case(
            "zero amount",
            NewTransfer::single("n1", "bank", "bob", Msat::ZERO, L, 1),
            E::AmountMustNotBeZero,
        ),
        case(
            "zero post amount",
            NewTransfer::post("n1", "t-pending", Some(Msat::ZERO)),
            E::AmountMustNotBeZero,
        ),
        case(
            "ledger zero",
            NewTransfer::single("n1", "bank", "bob", msat(1), 0, 1),
            E::LedgerMustNotBeZero,
        ),
        case(
            "code zero",
            NewTransfer::single("n1", "bank", "bob", msat(1), L, 0),
            E::CodeMustNotBeZero,
        ),
        case(
            "timeout zero",
            NewTransfer::pending("n1", "bank", "bob", msat(1), L, 1, Some(0)),
            E::TimeoutMustNotBeZero,
        ),
        case(
            "timeout overflow",
            NewTransfer::pending("n1", "bank", "bob", msat(1), L, 1, Some(i64::MAX as u64)),
            E::OverflowsTimeout,
        ),
        case(
            "post itself",
            NewTransfer::post("n1", "n1", None),
            E::PendingIdMustBeDifferent,
        ),
        case(
            "void itself",
            NewTransfer::void("n1", "n1"),
            E::PendingIdMustBeDifferent,
        ),
        case(
            "same id, pending instead of single",
            NewTransfer::pending("t-single", "bank", "bob", msat(5), L, 1, None)
                .with_user_data("u", 7),
            E::ExistsWithDifferentFlags,
        ),
        case(
            "same id, partial instead of full post",
            NewTransfer::post("t-post", "p-posted", Some(msat(5))),
            E::ExistsWithDifferentFlags,
        ),
        case(
            "same post id, other pending",
            NewTransfer::post("t-post", "t-pending", None),
            E::ExistsWithDifferentPendingId,
        ),
        case(
            "same void id, other pending",
            NewTransfer::void("t-void", "t-pending"),
            E::ExistsWithDifferentPendingId,
        ),
        case(
            "same id, other timeout",
            NewTransfer::pending(
                "t-pending",
                "bank",
                "bob",
                msat(5),
                L,
                1,
                Some(PENDING_TIMEOUT_MS + 1),
            ),
            E::ExistsWithDifferentTimeout,
        ),
        case(
            "same id, other debit account",
            single("t-single", "alice", "bob", 5).with_user_data("u", 7),
            E::ExistsWithDifferentDebitAccountId,
        ),
        case(
            "same id, other credit account",
            single("t-single", "bank", "alice", 5).with_user_data("u", 7),
            E::ExistsWithDifferentCreditAccountId,
        ),
        case(
            "same id, other amount",
            single("t-single", "bank", "bob", 6).with_user_data("u", 7),
            E::ExistsWithDifferentAmount,
        ),
        case(
            "same id, other user data",
            single("t-single", "bank", "bob", 5).with_user_data("u", 8),
            E::ExistsWithDifferentUserData,
        ),
        case(
            "same id, other ledger",
            NewTransfer::single("t-single", "bank", "bob", msat(5), LEDGER_2, 1)
                .with_user_data("u", 7),
            E::ExistsWithDifferentLedger,
        ),
        case(
            "same id, other code",
            NewTransfer::single("t-single", "bank", "bob", msat(5), L, 2).with_user_data("u", 7),
            E::ExistsWithDifferentCode,
        ),
        case(
            "unknown debit account",
            single("n1", "nobody", "bob", 1),
            E::DebitAccountNotFound,
        ),
        case(
            "unknown credit account",
            single("n1", "bank", "nobody", 1),
            E::CreditAccountNotFound,
        ),
        case(
            "across assets",
            single("n1", "bank", "elsewhere", 1),
            E::AccountsMustHaveTheSameLedger,
        ),
        case(
            "transfer ledger differs from accounts",
            NewTransfer::single("n1", "bank", "bob", msat(1), LEDGER_2, 1),
            E::TransferMustHaveTheSameLedgerAsAccounts,
        ),
        case(
            "from a closed account",
            single("n1", "closed", "bob", 1),
            E::DebitAccountClosed,
        ),
        case(
            "to a closed account",
            single("n1", "bank", "closed", 1),
            E::CreditAccountClosed,
        ),
        case(
            "post unknown pending",
            NewTransfer::post("n1", "nothing", None),
            E::PendingTransferNotFound,
        ),
        case(
            "void unknown pending",
            NewTransfer::void("n1", "nothing"),
            E::PendingTransferNotFound,
        ),
        case(
            "post a single-phase transfer",
            NewTransfer::post("n1", "t-single", None),
            E::PendingTransferNotPending,
        ),
        case(
            "post twice",
            NewTransfer::post("n1", "p-posted", None),
            E::PendingTransferAlreadyPosted,
        ),
        case(
            "void after post",
            NewTransfer::void("n1", "p-posted"),
            E::PendingTransferAlreadyPosted,
        ),
        case(
            "post after void",
            NewTransfer::post("n1", "p-voided", None),
            E::PendingTransferAlreadyVoided,
        ),
        case(
            "post more than pending",
            NewTransfer::post("n1", "t-pending", Some(msat(6))),
            E::ExceedsPendingTransferAmount,
        ),
        case(
            "debits past the ceiling",
            NewTransfer::single("n1", "big-debit", "sink-3", Msat::MAX, BIG, 1),
            E::OverflowsDebits,
        ),
        case(
            "credits past the ceiling",
            NewTransfer::single("n1", "source-3", "big-credit", Msat::MAX, BIG, 1),
            E::OverflowsCredits,
        ),
        case(
            "overdraft",
            single("n1", "alice", "bob", 1_001),
            E::ExceedsCredits,
        ),
        case(
            "reservation beyond balance",
            NewTransfer::pending("n1", "alice", "bob", msat(1_001), L, 1, None),
            E::ExceedsCredits,
        ),
        case(
            "credit beyond debits",
            single("n1", "bank", "line", 1),
            E::ExceedsDebits,
        ),
    ];
    for (name, t) in [
        (
            "post at the deadline",
            NewTransfer::post("n1", "p-short", None),
        ),
        (
            "void after the deadline",
            NewTransfer::void("n1", "p-short"),
        ),
    ] {
        c.push(Case {
            name,
            batch: vec![t],
            index: 0,
            expected: E::PendingTransferExpired,
            now_ms: T0 + 10,
        });
    }
    c.push(Case {
        name: "same id, now linked",
        batch: vec![original().linked(), single("n9", "bank", "bob", 1)],
        index: 0,
        expected: E::ExistsWithDifferentFlags,
        now_ms: T0 + 1,
    });
    c.push(Case {
        name: "a linked chain with a failing member",
        batch: vec![
            single("n1", "bank", "bob", 1).linked(),
            single("n2", "alice", "bob", 5_000),
        ],
        index: 0,
        expected: E::LinkedEventFailed,
        now_ms: T0 + 1,
    });
    c.push(Case {
        name: "a failing member of a linked chain",
        batch: vec![
            single("n1", "bank", "bob", 1).linked(),
            single("n2", "alice", "bob", 5_000),
        ],
        index: 1,
        expected: E::ExceedsCredits,
        now_ms: T0 + 1,
    });
    c.push(Case {
        name: "a chain left open",
        batch: vec![
            single("n1", "bank", "bob", 1).linked(),
            single("n2", "bank", "bob", 1).linked(),
        ],
        index: 1,
        expected: E::LinkedEventChainOpen,
        now_ms: T0 + 1,
    });
    c
}

/// Everything a refusal must leave untouched.
async fn snapshot(ledger: &Ledger) -> (Vec<(String, Balances, u64, bool)>, i64, Vec<String>) {
    let mut conn = ledger.db().pool().acquire().await.expect("conn");
    let ids: Vec<String> =
        sqlx::query_scalar::<sqlx::Any, String>("SELECT id FROM ledger_accounts ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .expect("ids");
    let accounts = oa_ledger::get_accounts(&mut conn, &ids)
        .await
        .expect("accounts")
        .into_iter()
        .map(|a| (a.id, a.balances, a.version, a.closed))
        .collect();
    let states: Vec<String> = sqlx::query_scalar::<sqlx::Any, String>(
        "SELECT id || ':' || COALESCE(pending_state, '-') FROM ledger_transfers ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("states");
    drop(conn);
    (accounts, count_transfers(ledger).await, states)
}

#[tokio::test]
async fn every_transfer_result_code_is_produced_by_both_paths_and_changes_nothing() {
    each_backend(|ledger, backend| async move {
        fixture(&ledger).await;
        let before = snapshot(&ledger).await;
        let mut produced = BTreeSet::new();
        for case in cases() {
            // Fast path where the batch is one unlinked transfer; the batch path always.
            for batched in [false, true] {
                let mut tx = ledger.db().begin().await.expect("begin");
                let results = if batched {
                    create_transfers_batched(&mut tx, &case.batch, case.now_ms).await
                } else {
                    create_transfers(&mut tx, &case.batch, case.now_ms).await
                }
                .expect("ledger call");
                tx.commit().await.expect("commit");
                assert_eq!(
                    code_of(&results[case.index]),
                    Some(case.expected),
                    "{backend}: {} (batched: {batched}): {results:?}",
                    case.name
                );
                assert!(
                    results.iter().all(Result::is_err),
                    "{backend}: {}: nothing in a refused case may succeed: {results:?}",
                    case.name
                );
                assert_eq!(
                    snapshot(&ledger).await,
                    before,
                    "{backend}: {} changed state",
                    case.name
                );
                produced.insert(case.expected);
            }
        }
        let missing: Vec<_> = E::ALL.iter().filter(|e| !produced.contains(e)).collect();
        assert!(
            missing.is_empty(),
            "result codes without a test: {missing:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_retry_returns_the_original_unchanged() {
    each_backend(|ledger, backend| async move {
        fixture(&ledger).await;
        let before = snapshot(&ledger).await;
        for batched in [false, true] {
            for (req, id) in [
                (
                    single("t-single", "bank", "bob", 5).with_user_data("u", 7),
                    "t-single",
                ),
                (
                    NewTransfer::pending(
                        "t-pending",
                        "bank",
                        "bob",
                        msat(5),
                        L,
                        1,
                        Some(PENDING_TIMEOUT_MS),
                    ),
                    "t-pending",
                ),
                (NewTransfer::post("t-post", "p-posted", None), "t-post"),
                (NewTransfer::void("t-void", "p-voided"), "t-void"),
            ] {
                let original = ledger.get_transfer(id).await.expect("get").expect("stored");
                let mut tx = ledger.db().begin().await.expect("begin");
                // A later clock: the original's timestamps must come back, not the retry's.
                let now = T0 + 5;
                let mut r = if batched {
                    create_transfers_batched(&mut tx, std::slice::from_ref(&req), now).await
                } else {
                    create_transfers(&mut tx, std::slice::from_ref(&req), now).await
                }
                .expect("ledger call");
                tx.commit().await.expect("commit");
                assert_eq!(
                    r.pop(),
                    Some(Ok(Outcome::Exists(original))),
                    "{backend}: {id} batched={batched}"
                );
            }
        }
        assert_eq!(
            snapshot(&ledger).await,
            before,
            "{backend}: a retry changed state"
        );
    })
    .await;
}
