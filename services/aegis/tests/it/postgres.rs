//! The store-touching scenarios again on PostgreSQL (the production store, where row locks rather
//! than SQLite's single writer serialize verdicts). Each runs on a fresh database when
//! `OA_TEST_POSTGRES_URL` names a server, and is skipped otherwise.

use oa_store::testing::TestDb;

use crate::{
    cases,
    harness::Aegis,
    risk,
    underwriting::{self, FakeHydra, Mode},
    verification,
};

macro_rules! on_postgres {
    ($name:ident, $scenario:path) => {
        #[tokio::test]
        async fn $name() {
            let Some(pg) = TestDb::postgres(&[]).await.unwrap() else {
                eprintln!("OA_TEST_POSTGRES_URL is not set: skipping the PostgreSQL run");
                return;
            };
            let a = Aegis::start_on(Some(&pg.url), &[]).await;
            $scenario(&a).await;
            a.db.close().await;
            drop(a);
            pg.cleanup().await.unwrap();
        }
    };
}

/// An underwriting scenario on a fresh PostgreSQL database, paying claims through a fake Hydra
/// that starts in `$mode`.
macro_rules! on_postgres_paying {
    ($name:ident, $scenario:path, $mode:expr) => {
        #[tokio::test]
        async fn $name() {
            let Some(pg) = TestDb::postgres(&[]).await.unwrap() else {
                eprintln!("OA_TEST_POSTGRES_URL is not set: skipping the PostgreSQL run");
                return;
            };
            let hydra = FakeHydra::new($mode);
            let a = Aegis::start_full(
                Some(&pg.url),
                &[],
                aegis::Deps {
                    payer: Some(hydra.clone() as std::sync::Arc<dyn aegis::payer::Payer>),
                },
            )
            .await;
            $scenario(&a, &hydra).await;
            a.db.close().await;
            drop(a);
            pg.cleanup().await.unwrap();
        }
    };
}

on_postgres!(objective_pass_on_postgres, verification::objective_pass);
on_postgres!(
    objective_failures_on_postgres,
    verification::objective_failures
);
on_postgres!(quorum_pass_on_postgres, verification::quorum_pass);
on_postgres!(quorum_fail_on_postgres, verification::quorum_fail);
on_postgres!(decisions_on_postgres, verification::decisions);
on_postgres!(
    concurrent_verdicts_on_postgres,
    verification::concurrent_verdicts
);
on_postgres!(classification_on_postgres, risk::classification);
on_postgres!(budgets_on_postgres, risk::budgets);
on_postgres!(quotes_on_postgres, risk::quotes);
on_postgres!(cases_on_postgres, cases::cases_and_receipts);
on_postgres!(simulation_on_postgres, cases::simulation);
on_postgres!(warranty_issue_on_postgres, underwriting::warranty_issue);
on_postgres!(bonds_on_postgres, underwriting::bonds);
on_postgres_paying!(paid_claim_on_postgres, underwriting::paid_claim, Mode::Pay);
on_postgres_paying!(
    concurrent_resolves_on_postgres,
    underwriting::concurrent_resolves,
    Mode::Pay
);
on_postgres_paying!(
    denied_failed_in_doubt_on_postgres,
    underwriting::denied_failed_in_doubt,
    Mode::Fail
);
on_postgres_paying!(disputes_on_postgres, underwriting::disputes, Mode::Pay);
on_postgres_paying!(
    upheld_and_fault_on_postgres,
    underwriting::upheld_and_fault,
    Mode::Pay
);
on_postgres_paying!(
    dispute_sweeper_on_postgres,
    underwriting::dispute_sweeper,
    Mode::Pay
);
