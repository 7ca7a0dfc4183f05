//! Account balances, an account's transfers paged by cursor, and balance history.

use oa_ledger::{AccountFlags, NewAccount, NewTransfer};

use crate::support::{L, T0, create_account, each_backend, msat, must_create};

#[tokio::test]
async fn transfers_of_an_account_page_in_balance_order_on_both_sides() {
    each_backend(|ledger, backend| async move {
        for id in ["hub", "left", "right"] {
            create_account(&ledger, NewAccount::new(id, L, 1)).await;
        }
        let mut expected = Vec::new();
        for i in 0..25u64 {
            // Alternate the hub between debit and credit side, and between the two paths.
            let t = if i % 2 == 0 {
                NewTransfer::single(format!("t{i:02}"), "hub", "left", msat(i + 1), L, 1)
            } else {
                NewTransfer::single(format!("t{i:02}"), "right", "hub", msat(i + 1), L, 1)
            };
            if i % 3 == 0 {
                let r = ledger
                    .create_transfers(
                        &[
                            t.clone(),
                            NewTransfer::single(format!("x{i}"), "left", "right", msat(1), L, 1),
                        ],
                        T0 + i,
                    )
                    .await
                    .expect("batch");
                assert!(r.iter().all(Result::is_ok));
            } else {
                must_create(&ledger, t.clone(), T0 + i).await;
            }
            expected.push(t.id);
        }
        let mut seen = Vec::new();
        let mut cursor = 0;
        let mut pages = 0;
        loop {
            let page = ledger
                .account_transfers("hub", cursor, 10)
                .await
                .expect("page");
            pages += 1;
            seen.extend(page.items.iter().map(|t| t.id.clone()));
            match page.next_after_version {
                Some(next) => cursor = next,
                None => break,
            }
        }
        assert_eq!(seen, expected, "{backend}");
        assert_eq!(pages, 3);
        let hub = ledger
            .get_account("hub")
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(hub.version, 25);
        assert!(
            ledger
                .account_transfers("nobody", 0, 10)
                .await
                .expect("page")
                .items
                .is_empty()
        );
        // Page size is capped, never unbounded.
        let page = ledger
            .account_transfers("hub", 0, usize::MAX)
            .await
            .expect("page");
        assert_eq!(page.items.len(), 25);
    })
    .await;
}

#[tokio::test]
async fn history_is_kept_only_for_flagged_accounts() {
    each_backend(|ledger, backend| async move {
        create_account(&ledger, NewAccount::new("bank", L, 1)).await;
        create_account(
            &ledger,
            NewAccount::new("kept", L, 1).with_flags(AccountFlags::default().with_history()),
        )
        .await;
        must_create(
            &ledger,
            NewTransfer::single("a", "bank", "kept", msat(10), L, 1),
            T0,
        )
        .await;
        must_create(
            &ledger,
            NewTransfer::pending("b", "kept", "bank", msat(4), L, 1, None),
            T0 + 1,
        )
        .await;
        must_create(&ledger, NewTransfer::post("c", "b", Some(msat(3))), T0 + 2).await;
        let h = ledger.account_history("kept", 0, 2).await.expect("history");
        assert_eq!(h.items.len(), 2, "{backend}");
        assert_eq!(h.next_after_version, Some(2));
        let rest = ledger.account_history("kept", 2, 2).await.expect("history");
        assert_eq!(rest.next_after_version, None);
        let all: Vec<_> = h.items.iter().chain(&rest.items).collect();
        assert_eq!(all.iter().map(|s| s.version).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(
            all.iter().map(|s| s.timestamp_ms).collect::<Vec<_>>(),
            [T0, T0 + 1, T0 + 2]
        );
        let last = all[2].balances;
        assert_eq!(
            (
                last.debits_pending_msat,
                last.debits_posted_msat,
                last.credits_posted_msat
            ),
            (0, 3, 10)
        );
        assert_eq!(
            ledger
                .get_account("kept")
                .await
                .expect("get")
                .expect("exists")
                .balances,
            last
        );
        assert!(
            ledger
                .account_history("bank", 0, 10)
                .await
                .expect("history")
                .items
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn batch_lookups_return_found_records_in_the_order_asked() {
    each_backend(|ledger, backend| async move {
        for id in ["a", "b", "c"] {
            create_account(&ledger, NewAccount::new(id, L, 1)).await;
        }
        must_create(
            &ledger,
            NewTransfer::single("t1", "a", "b", msat(1), L, 1),
            T0,
        )
        .await;
        must_create(
            &ledger,
            NewTransfer::single("t2", "b", "c", msat(1), L, 1),
            T0,
        )
        .await;
        let accounts = ledger
            .get_accounts(&["c", "missing", "a"])
            .await
            .expect("get");
        assert_eq!(
            accounts.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["c", "a"],
            "{backend}"
        );
        let transfers = ledger
            .get_transfers(&["t2", "nope", "t1"])
            .await
            .expect("get");
        assert_eq!(
            transfers.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["t2", "t1"]
        );
    })
    .await;
}
