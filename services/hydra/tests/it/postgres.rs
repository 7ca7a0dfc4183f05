//! The store-heavy scenarios again on PostgreSQL (the production store, where row locks rather
//! than SQLite's single writer decide races). Each runs on a fresh database when
//! `OA_TEST_POSTGRES_URL` names a server, and is skipped otherwise.

use oa_store::testing::TestDb;

use crate::{breakers, credit, deposits, fx, harness::Hydra, liquidity, routing, withdrawals};

macro_rules! on_postgres {
    ($name:ident, $scenario:path, $args:expr) => {
        #[tokio::test]
        async fn $name() {
            let Some(pg) = TestDb::postgres(&[]).await.unwrap() else {
                eprintln!("OA_TEST_POSTGRES_URL is not set: skipping the PostgreSQL run");
                return;
            };
            let h = Hydra::start_on(Some(&pg.url), $args).await;
            $scenario(&h).await;
            h.app_db.close().await;
            drop(h);
            pg.cleanup().await.unwrap();
        }
    };
}

on_postgres!(quote_and_pay_on_postgres, liquidity::quote_and_pay, &[]);
on_postgres!(concurrent_pays_on_postgres, liquidity::concurrent_pays, &[]);
on_postgres!(envelope_lifecycle_on_postgres, credit::lifecycle, &[]);
on_postgres!(underwriting_on_postgres, credit::underwriting, &[]);
on_postgres!(
    failed_verification_on_postgres,
    credit::failed_verification,
    &[]
);
on_postgres!(expiry_on_postgres, credit::expiry, &[]);
on_postgres!(
    open_envelope_limit_on_postgres,
    credit::open_limit,
    &["--max-open-envelopes=2"]
);
on_postgres!(
    pool_limit_on_postgres,
    credit::pool_limit,
    &["--credit-pool-msat=15000000"]
);
on_postgres!(
    concurrent_settles_on_postgres,
    credit::concurrent_settles,
    &[]
);
on_postgres!(envelope_audit_on_postgres, credit::audit, &[]);
on_postgres!(
    routing_learning_on_postgres,
    routing::learning,
    &["--routing-half-life-secs=3600"]
);
on_postgres!(fx_on_postgres, fx::quotes_and_settlement, &fx::FX_ARGS);
on_postgres!(
    payment_breaker_on_postgres,
    breakers::payment_breaker,
    &breakers::PAYMENT_BREAKER_ARGS
);
on_postgres!(deposit_credit_on_postgres, deposits::credit_once, &[]);
on_postgres!(deposit_replicas_on_postgres, deposits::replicas, &[]);
on_postgres!(withdrawal_on_postgres, withdrawals::pays_once, &[]);
on_postgres!(
    concurrent_withdrawals_on_postgres,
    withdrawals::concurrent,
    &[]
);
on_postgres!(
    withdrawal_throttle_on_postgres,
    withdrawals::throttle_thresholds,
    &withdrawals::THROTTLE_ARGS
);
on_postgres!(pool_pays_on_postgres, withdrawals::pool_pays, &[]);
