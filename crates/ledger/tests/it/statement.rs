//! Statements: opening balance, period flows and closing balance per account, from posted money.

use oa_ledger::{AccountFlags, NewAccount, NewTransfer, statement, statement_csv};

use crate::support::{L, T0, create_account, each_backend, msat, must_create};

#[tokio::test]
async fn statements_split_posted_money_by_period_and_balance_to_zero() {
    each_backend(|ledger, backend| async move {
        create_account(&ledger, NewAccount::new("funding", L, 1)).await;
        create_account(&ledger, NewAccount::new("budget", L, 2).with_flags(AccountFlags::no_overdraft())).await;
        create_account(&ledger, NewAccount::new("spent", L, 3)).await;
        // Before the period: fund 10_000.
        must_create(&ledger, NewTransfer::single("f1", "funding", "budget", msat(10_000), L, 1), T0).await;
        // In the period: reserve 3_000 and post 2_500 of it; reserve 1_000 and void it; a reservation
        // still pending at the end counts nothing.
        let p = T0 + 1_000;
        must_create(&ledger, NewTransfer::pending("r1", "budget", "spent", msat(3_000), L, 3, None), p).await;
        must_create(&ledger, NewTransfer::post("r1:post", "r1", Some(msat(2_500))), p + 1).await;
        must_create(&ledger, NewTransfer::pending("r2", "budget", "spent", msat(1_000), L, 3, None), p + 2).await;
        must_create(&ledger, NewTransfer::void("r2:void", "r2"), p + 3).await;
        must_create(&ledger, NewTransfer::pending("r3", "budget", "spent", msat(700), L, 3, None), p + 4).await;
        // After the period: spend 100 more.
        must_create(&ledger, NewTransfer::single("s9", "budget", "spent", msat(100), L, 3), T0 + 5_000).await;

        let mut conn = ledger.db().pool().acquire().await.unwrap();
        let lines = statement(&mut conn, T0 + 500, T0 + 4_000).await.unwrap();
        let line = |id: &str| lines.iter().find(|l| l.account_id == id).unwrap().clone();
        let budget = line("budget");
        assert_eq!((budget.opening_balance_msat, budget.period_debits_msat, budget.period_credits_msat, budget.closing_balance_msat), (10_000, 2_500, 0, 7_500), "{backend}");
        let spent = line("spent");
        assert_eq!((spent.opening_balance_msat, spent.period_credits_msat, spent.closing_balance_msat), (0, 2_500, 2_500), "{backend}");
        assert_eq!(line("funding").closing_balance_msat, -10_000, "{backend}");
        let (open, close): (i128, i128) = lines.iter().fold((0, 0), |(o, c), l| (o + l.opening_balance_msat, c + l.closing_balance_msat));
        assert_eq!((open, close), (0, 0), "{backend}: double entry sums to zero");
        // A statement of a closed period never changes.
        assert_eq!(statement(&mut conn, T0 + 500, T0 + 4_000).await.unwrap(), lines);

        let csv = statement_csv(&lines);
        let mut rows = csv.lines();
        assert_eq!(rows.next(), Some("account_id,ledger,code,opening_balance_msat,period_debits_msat,period_credits_msat,closing_balance_msat"));
        assert!(csv.contains("\"budget\",1,2,10000,2500,0,7500\n"), "{csv}");
        assert!(csv.contains("\"funding\",1,1,-10000,0,0,-10000\n"), "{csv}");
    })
    .await;
}
