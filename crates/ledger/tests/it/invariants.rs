//! The invariant checks find damage done behind the ledger's back, and the database refuses an
//! overdraft even from raw SQL.

use oa_ledger::{AccountFlags, NewAccount, NewTransfer, Violation};

use crate::support::{L, T0, assert_sound, create_account, each_backend, msat, must_create};

async fn execute(ledger: &oa_ledger::Ledger, sql: &'static str) -> Result<u64, sqlx::Error> {
    let mut conn = ledger.db().writer().await.expect("conn");
    sqlx::query(sql)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
}

#[tokio::test]
async fn checks_detect_unbalanced_ledgers_and_mismatched_records() {
    each_backend(|ledger, backend| async move {
        create_account(&ledger, NewAccount::new("bank", L, 1)).await;
        create_account(&ledger, NewAccount::new("alice", L, 1)).await;
        must_create(&ledger, NewTransfer::single("t", "bank", "alice", msat(10), L, 1), T0).await;
        must_create(&ledger, NewTransfer::pending("p", "bank", "alice", msat(5), L, 1, None), T0).await;
        must_create(&ledger, NewTransfer::void("v", "p"), T0).await;
        assert_sound(&ledger).await;

        execute(&ledger, "UPDATE ledger_accounts SET credits_posted = credits_posted + 1 WHERE id = 'alice'")
            .await
            .expect("tamper");
        let found = ledger.check_invariants().await.expect("check");
        assert_eq!(
            found,
            [Violation::Unbalanced { ledger: L, pending_difference_msat: 0, posted_difference_msat: -1 }],
            "{backend}"
        );
        let audit = ledger.audit().await.expect("audit");
        assert!(
            audit.iter().any(|v| matches!(v, Violation::BalanceMismatch { account_id, .. } if account_id == "alice")),
            "{backend}: {audit:?}"
        );
        execute(&ledger, "UPDATE ledger_accounts SET credits_posted = credits_posted - 1 WHERE id = 'alice'")
            .await
            .expect("repair");
        execute(&ledger, "UPDATE ledger_transfers SET pending_state = 'posted' WHERE id = 'p'")
            .await
            .expect("tamper");
        let audit = ledger.audit().await.expect("audit");
        assert!(
            audit.contains(&Violation::ResolutionMismatch { transfer_id: "v".into() }),
            "{backend}: {audit:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_database_refuses_an_overdraft_written_behind_the_ledger() {
    each_backend(|ledger, backend| async move {
        create_account(&ledger, NewAccount::new("bank", L, 1)).await;
        create_account(
            &ledger,
            NewAccount::new("alice", L, 1).with_flags(AccountFlags::no_overdraft()),
        )
        .await;
        must_create(
            &ledger,
            NewTransfer::single("t", "bank", "alice", msat(10), L, 1),
            T0,
        )
        .await;
        let r = execute(
            &ledger,
            "UPDATE ledger_accounts SET debits_pending = 11 WHERE id = 'alice'",
        )
        .await;
        assert!(
            r.is_err(),
            "{backend}: CHECK constraint must refuse the overdraft"
        );
        assert_sound(&ledger).await;
    })
    .await;
}
