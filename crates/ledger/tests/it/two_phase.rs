//! Two-phase transfers, expiry, linked batches and the caller-owned transaction.

use oa_ledger::{
    AccountFlags, BalanceChange, Balances, Ledger, LedgerError, NewAccount, NewTransfer, Outcome,
    PendingState, TransferError as E, create_transfer, create_transfers,
};

use crate::support::{
    L, T0, assert_sound, balances, code_of, count_transfers, create_account, each_backend, msat,
    must_create,
};

/// `bank` (unlimited) funds `alice` (no overdraft, history) with 1,000 msat; `shop` receives.
async fn funded(ledger: &Ledger) {
    create_account(ledger, NewAccount::new("bank", L, 1)).await;
    create_account(
        ledger,
        NewAccount::new("alice", L, 2).with_flags(AccountFlags::no_overdraft().with_history()),
    )
    .await;
    create_account(ledger, NewAccount::new("shop", L, 3)).await;
    must_create(
        ledger,
        NewTransfer::single("fund", "bank", "alice", msat(1_000), L, 1),
        T0,
    )
    .await;
}

fn b(dp: u64, dpo: u64, cp: u64, cpo: u64) -> Balances {
    Balances {
        debits_pending_msat: dp,
        debits_posted_msat: dpo,
        credits_pending_msat: cp,
        credits_posted_msat: cpo,
    }
}

#[tokio::test]
async fn pending_then_partial_post_posts_part_and_releases_the_rest() {
    each_backend(|ledger, backend| async move {
        funded(&ledger).await;
        let p = must_create(
            &ledger,
            NewTransfer::pending("p", "alice", "shop", msat(600), L, 9, Some(60_000)),
            T0,
        )
        .await;
        assert_eq!(p.pending_state, Some(PendingState::Pending));
        assert_eq!(p.expires_at_ms, Some(T0 + 60_000));
        assert_eq!(
            balances(&ledger, "alice").await,
            b(600, 0, 0, 1_000),
            "{backend}"
        );
        assert_eq!(balances(&ledger, "alice").await.available_msat(), 400);
        // The reservation holds: another 600 does not fit.
        let r = ledger
            .create_transfer(
                &NewTransfer::pending("p2", "alice", "shop", msat(600), L, 9, None),
                T0,
            )
            .await
            .expect("call");
        assert_eq!(code_of(&r), Some(E::ExceedsCredits));
        let post = must_create(
            &ledger,
            NewTransfer::post("q", "p", Some(msat(250))),
            T0 + 1,
        )
        .await;
        assert_eq!(post.amount_msat, msat(250));
        assert_eq!(
            (
                post.debit_account_id.as_str(),
                post.credit_account_id.as_str()
            ),
            ("alice", "shop")
        );
        assert_eq!((post.ledger, post.code), (L, 9));
        assert_eq!(balances(&ledger, "alice").await, b(0, 250, 0, 1_000));
        assert_eq!(balances(&ledger, "shop").await, b(0, 0, 0, 250));
        let stored = ledger
            .get_transfer("p")
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(stored.pending_state, Some(PendingState::Posted));
        assert_eq!(stored.pending_resolved_at_ms, Some(T0 + 1));
        assert_sound(&ledger).await;
    })
    .await;
}

#[tokio::test]
async fn full_post_and_void_resolve_exactly_once() {
    each_backend(|ledger, backend| async move {
        funded(&ledger).await;
        must_create(
            &ledger,
            NewTransfer::pending("p1", "alice", "shop", msat(100), L, 1, None),
            T0,
        )
        .await;
        must_create(
            &ledger,
            NewTransfer::pending("p2", "alice", "shop", msat(200), L, 1, None),
            T0,
        )
        .await;
        let post = must_create(&ledger, NewTransfer::post("post-1", "p1", None), T0).await;
        assert_eq!(post.amount_msat, msat(100));
        assert!(post.post_full_amount);
        let void = must_create(&ledger, NewTransfer::void("void-2", "p2"), T0).await;
        assert_eq!(void.amount_msat, msat(200));
        assert_eq!(
            balances(&ledger, "alice").await,
            b(0, 100, 0, 1_000),
            "{backend}"
        );
        for (req, code) in [
            (
                NewTransfer::void("void-1", "p1"),
                E::PendingTransferAlreadyPosted,
            ),
            (
                NewTransfer::post("post-2", "p2", None),
                E::PendingTransferAlreadyVoided,
            ),
        ] {
            let r = ledger.create_transfer(&req, T0).await.expect("call");
            assert_eq!(code_of(&r), Some(code), "{backend}");
        }
        assert_sound(&ledger).await;
    })
    .await;
}

#[tokio::test]
async fn a_closed_account_refuses_transfers_and_posts_but_voids_release() {
    each_backend(|ledger, backend| async move {
        funded(&ledger).await;
        must_create(
            &ledger,
            NewTransfer::pending("p1", "alice", "shop", msat(100), L, 1, None),
            T0,
        )
        .await;
        must_create(
            &ledger,
            NewTransfer::pending("p2", "alice", "shop", msat(100), L, 1, None),
            T0,
        )
        .await;
        ledger
            .close_account("alice")
            .await
            .expect("close")
            .expect("exists");
        let refused = [
            (
                NewTransfer::single("s", "alice", "shop", msat(1), L, 1),
                E::DebitAccountClosed,
            ),
            (
                NewTransfer::single("s", "bank", "alice", msat(1), L, 1),
                E::CreditAccountClosed,
            ),
            (NewTransfer::post("q1", "p1", None), E::DebitAccountClosed),
        ];
        for (req, code) in refused {
            let r = ledger.create_transfer(&req, T0).await.expect("call");
            assert_eq!(code_of(&r), Some(code), "{backend}");
        }
        must_create(&ledger, NewTransfer::void("v2", "p2"), T0).await;
        assert_eq!(balances(&ledger, "alice").await, b(100, 0, 0, 1_000));
        ledger
            .reopen_account("alice")
            .await
            .expect("reopen")
            .expect("exists");
        must_create(&ledger, NewTransfer::post("q1", "p1", None), T0).await;
        assert_sound(&ledger).await;
    })
    .await;
}

#[tokio::test]
async fn expiry_sweep_releases_reservations_once_on_a_test_clock() {
    each_backend(|ledger, backend| async move {
        funded(&ledger).await;
        must_create(
            &ledger,
            NewTransfer::pending("p-10", "alice", "shop", msat(300), L, 1, Some(10)),
            T0,
        )
        .await;
        must_create(
            &ledger,
            NewTransfer::pending("p-20", "alice", "shop", msat(300), L, 1, Some(20)),
            T0,
        )
        .await;
        must_create(
            &ledger,
            NewTransfer::pending("p-none", "alice", "shop", msat(300), L, 1, None),
            T0,
        )
        .await;
        // Before any deadline: nothing to do.
        assert!(
            ledger
                .expire_pending(T0 + 9, 10)
                .await
                .expect("sweep")
                .is_empty(),
            "{backend}"
        );
        // At the first deadline it can no longer be posted, but it still holds the money.
        let r = ledger
            .create_transfer(&NewTransfer::post("q", "p-10", None), T0 + 10)
            .await
            .expect("call");
        assert_eq!(code_of(&r), Some(E::PendingTransferExpired));
        assert_eq!(balances(&ledger, "alice").await.debits_pending_msat, 900);
        // A sweep with a limit takes the oldest deadline first.
        let expired = ledger.expire_pending(T0 + 25, 1).await.expect("sweep");
        assert_eq!(
            expired.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["p-10"]
        );
        assert_eq!(expired[0].pending_state, Some(PendingState::Expired));
        let expired = ledger.expire_pending(T0 + 25, 10).await.expect("sweep");
        assert_eq!(
            expired.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["p-20"]
        );
        assert!(
            ledger
                .expire_pending(T0 + 1_000_000, 10)
                .await
                .expect("sweep")
                .is_empty()
        );
        assert_eq!(balances(&ledger, "alice").await, b(300, 0, 0, 1_000));
        let r = ledger
            .create_transfer(&NewTransfer::void("v", "p-20"), T0 + 30)
            .await
            .expect("call");
        assert_eq!(code_of(&r), Some(E::PendingTransferExpired));
        // The history shows the expiries as their own changes.
        let history = ledger
            .account_history("alice", 0, 100)
            .await
            .expect("history");
        let causes: Vec<_> = history
            .items
            .iter()
            .map(|h| (h.transfer_id.as_str(), h.cause))
            .collect();
        assert_eq!(
            causes,
            [
                ("fund", BalanceChange::Transfer),
                ("p-10", BalanceChange::Transfer),
                ("p-20", BalanceChange::Transfer),
                ("p-none", BalanceChange::Transfer),
                ("p-10", BalanceChange::Expiry),
                ("p-20", BalanceChange::Expiry),
            ]
        );
        assert_sound(&ledger).await;
    })
    .await;
}

#[tokio::test]
async fn linked_chain_applies_all_or_nothing() {
    each_backend(|ledger, backend| async move {
        funded(&ledger).await;
        let before = count_transfers(&ledger).await;
        let chain = [
            NewTransfer::pending("c1", "alice", "shop", msat(500), L, 1, None).linked(),
            NewTransfer::post("c2", "c1", Some(msat(400))).linked(),
            NewTransfer::single("c3", "alice", "shop", msat(700), L, 1),
        ];
        let r = ledger.create_transfers(&chain, T0).await.expect("call");
        let codes: Vec<_> = r.iter().map(code_of).collect();
        assert_eq!(
            codes,
            [
                Some(E::LinkedEventFailed),
                Some(E::LinkedEventFailed),
                Some(E::ExceedsCredits)
            ],
            "{backend}"
        );
        assert_eq!(count_transfers(&ledger).await, before);
        assert_eq!(balances(&ledger, "alice").await, b(0, 0, 0, 1_000));
        // The same chain with an amount that fits goes through whole, and replays as Exists.
        let mut chain = chain.to_vec();
        chain[2] = NewTransfer::single("c3", "alice", "shop", msat(600), L, 1);
        let r = ledger.create_transfers(&chain, T0).await.expect("call");
        assert!(
            r.iter().all(|r| matches!(r, Ok(Outcome::Created(_)))),
            "{backend}: {r:?}"
        );
        assert_eq!(balances(&ledger, "alice").await, b(0, 1_000, 0, 1_000));
        let again = ledger.create_transfers(&chain, T0 + 1).await.expect("call");
        assert!(
            again.iter().all(|r| matches!(r, Ok(Outcome::Exists(_)))),
            "{backend}: {again:?}"
        );
        assert_sound(&ledger).await;
    })
    .await;
}

#[tokio::test]
async fn ledger_rows_commit_or_roll_back_with_the_callers_transaction() {
    each_backend(|ledger, backend| async move {
        funded(&ledger).await;
        let t = NewTransfer::pending("r1", "alice", "shop", msat(10), L, 1, None);
        let mut tx = ledger.db().begin().await.expect("begin");
        let r = create_transfer(&mut tx, &t, T0).await.expect("call");
        assert!(matches!(r, Ok(Outcome::Created(_))));
        tx.rollback().await.expect("rollback");
        assert!(
            ledger.get_transfer("r1").await.expect("get").is_none(),
            "{backend}"
        );
        assert_eq!(balances(&ledger, "alice").await, b(0, 0, 0, 1_000));
        // Outside a transaction a mutation is refused rather than half-committed.
        let mut conn = ledger.db().pool().acquire().await.expect("conn");
        let e = create_transfers(&mut conn, &[t], T0)
            .await
            .expect_err("needs a transaction");
        assert!(matches!(e, LedgerError::NotInTransaction));
        drop(conn);
        let too_many = vec![NewTransfer::void("v", "p"); oa_ledger::MAX_BATCH_SIZE + 1];
        let e = ledger
            .create_transfers(&too_many, T0)
            .await
            .expect_err("too large");
        assert!(matches!(e, LedgerError::BatchTooLarge { .. }));
    })
    .await;
}
