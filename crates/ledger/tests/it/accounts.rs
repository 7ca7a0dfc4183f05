//! Account creation, idempotency, closing and every account result code.

use std::collections::BTreeSet;

use oa_ledger::{AccountError as E, AccountFlags, NewAccount, Outcome};

use crate::support::{L, T0, create_account, each_backend};

#[tokio::test]
async fn every_account_result_code_is_produced() {
    each_backend(|ledger, backend| async move {
        let original = NewAccount::new("acct", L, 7)
            .with_flags(AccountFlags::no_overdraft())
            .with_user_data("owner", 1);
        create_account(&ledger, original.clone()).await;
        let both = AccountFlags {
            debits_must_not_exceed_credits: true,
            credits_must_not_exceed_debits: true,
            history: false,
        };
        let cases = [
            (NewAccount::new("", L, 1), E::InvalidId),
            (
                NewAccount::new("x".repeat(oa_ledger::MAX_ID_LEN + 1), L, 1),
                E::InvalidId,
            ),
            (
                NewAccount::new("n", L, 1)
                    .with_user_data("u".repeat(oa_ledger::MAX_USER_DATA_LEN + 1), 0),
                E::UserDataTooLong,
            ),
            (NewAccount::new("n", 0, 1), E::LedgerMustNotBeZero),
            (NewAccount::new("n", L, 0), E::CodeMustNotBeZero),
            (
                NewAccount::new("n", L, 1).with_flags(both),
                E::FlagsAreMutuallyExclusive,
            ),
            (
                original.clone().with_flags(AccountFlags::default()),
                E::ExistsWithDifferentFlags,
            ),
            (
                original.clone().with_user_data("someone else", 1),
                E::ExistsWithDifferentUserData,
            ),
            (
                NewAccount {
                    ledger: 2,
                    ..original.clone()
                },
                E::ExistsWithDifferentLedger,
            ),
            (
                NewAccount {
                    code: 8,
                    ..original.clone()
                },
                E::ExistsWithDifferentCode,
            ),
        ];
        let mut produced = BTreeSet::new();
        let requests: Vec<NewAccount> = cases.iter().map(|(a, _)| a.clone()).collect();
        let results = ledger
            .create_accounts(&requests, T0 + 1)
            .await
            .expect("create");
        for ((_, expected), result) in cases.iter().zip(&results) {
            assert_eq!(
                result.as_ref().err(),
                Some(expected),
                "{backend}: {result:?}"
            );
            produced.insert(*expected);
        }
        assert_eq!(
            ledger.close_account("nobody").await.expect("close"),
            Err(E::AccountNotFound)
        );
        assert_eq!(
            ledger.reopen_account("nobody").await.expect("reopen"),
            Err(E::AccountNotFound)
        );
        produced.insert(E::AccountNotFound);
        let missing: Vec<_> = E::ALL.iter().filter(|e| !produced.contains(e)).collect();
        assert!(
            missing.is_empty(),
            "account codes without a test: {missing:?}"
        );
        assert!(
            ledger.get_account("n").await.expect("get").is_none(),
            "{backend}: a refused account was created"
        );
    })
    .await;
}

#[tokio::test]
async fn creating_an_account_twice_returns_the_original() {
    each_backend(|ledger, backend| async move {
        let a =
            NewAccount::new("acct", L, 7).with_flags(AccountFlags::no_overdraft().with_history());
        // The same id twice in one batch, then again later.
        let first = ledger
            .create_accounts(&[a.clone(), a.clone()], T0)
            .await
            .expect("create");
        let Ok(Outcome::Created(created)) = &first[0] else {
            panic!("{backend}: {first:?}")
        };
        assert_eq!(first[1], Ok(Outcome::Exists(created.clone())));
        assert_eq!(created.created_at_ms, T0);
        let again = ledger.create_accounts(&[a], T0 + 99).await.expect("create");
        assert_eq!(
            again,
            vec![Ok(Outcome::Exists(created.clone()))],
            "{backend}"
        );
        assert_eq!(
            ledger.get_account("acct").await.expect("get").as_ref(),
            Some(created)
        );
    })
    .await;
}

#[tokio::test]
async fn closing_and_reopening_is_idempotent_and_does_not_touch_balances() {
    each_backend(|ledger, backend| async move {
        create_account(&ledger, NewAccount::new("acct", L, 1)).await;
        let closed = ledger
            .close_account("acct")
            .await
            .expect("close")
            .expect("exists");
        assert!(closed.closed, "{backend}");
        let again = ledger
            .close_account("acct")
            .await
            .expect("close")
            .expect("exists");
        assert_eq!(again, closed);
        let open = ledger
            .reopen_account("acct")
            .await
            .expect("reopen")
            .expect("exists");
        assert!(!open.closed);
        assert_eq!(open.version, closed.version);
        assert_eq!(open.flags, closed.flags);
    })
    .await;
}
