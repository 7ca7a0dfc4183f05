//! The same actions on PostgreSQL (run when `OA_TEST_POSTGRES_URL` names a server; skipped
//! otherwise): policy changes, a rebalance in flight then applied within the budget, an open and
//! a close, through lightning-ops's SQL (`store.rs`, migrations 0001 and 0002).

use lightning_ops::{
    plan::{Fees, Observed},
    rebalance::budget_day,
    store::{self, Subject},
};
use oa_money::Msat;
use oa_service::ManualClock;
use oa_store::testing::TestDb;

use crate::{
    fake::{Fake, scid},
    harness::*,
};

const PEER: &str = "02bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

#[tokio::test]
async fn policy_rebalance_open_and_close_actions_run_on_postgres() {
    let Some(pg) = TestDb::postgres(&[]).await.unwrap() else {
        eprintln!("OA_TEST_POSTGRES_URL is not set: skipped");
        return;
    };
    let folder = Folder::new();
    let policy_file = folder.write(
        "policy.toml",
        &format!(
            r#"version = 1
[fees.default]
strategy = "fixed"
base_fee_msat = 2000
fee_ppm = 250
inbound_fee_ppm = -10
min_htlc_msat = 1000
max_htlc_msat = 50000000
time_lock_delta = 40

[[channels]]
channel_id = "1x1x0"
local_balance_min_pct = 40
local_balance_max_pct = 60

[rebalance]
max_fee_ppm = 300
budget_msat_per_day = 1000

[[intents.open]]
peer = "{PEER}"
capacity_sat = 100000

[[intents.close]]
channel_id = "3x1x0"
"#
        ),
    );
    let channel = |chan_id: u64, capacity: u64, local: u64| Observed {
        chan_id,
        remote_pubkey: format!("02{}", "a".repeat(64)),
        local_balance_msat: local,
        remote_balance_msat: capacity - local,
        active: true,
        local_policy: Fees::default(),
    };
    let (a, b, c) = (scid(1, 1, 0), scid(2, 1, 0), scid(3, 1, 0));
    // 1x1x0 needs 400_000 from 2x1x0; fee limit ceil(400_000 * 300 / 1e6) = 120.
    let fake = Fake::new(vec![
        channel(a, 1_000_000, 100_000),
        channel(b, 2_000_000, 1_800_000),
        channel(c, 1_000_000, 500_000),
    ]);
    fake.with(|s| {
        s.in_flight = true;
        s.rebalance_fee_msat = 80;
    });
    let clock = ManualClock::new(T0);
    let mut config = folder.config(&[flag("policy-file", policy_file.display())]);
    config.common.database_url = pg.url.clone();
    let app = lightning_ops::build_with(
        &config,
        std::sync::Arc::new(clock.clone()),
        Some(fake.dyn_channels()),
    )
    .await
    .unwrap();

    let first = app.ops.apply(false).await.unwrap();
    assert_eq!(
        statuses(&first),
        triples(&[
            ("set_policy", "1x1x0", "applied"),
            ("rebalance", "1x1x0", "pending"),
            ("set_policy", "2x1x0", "applied"),
            ("open", "", "applied"),
            ("close", "3x1x0", "applied"),
        ])
    );
    let (day_start, day_end) = budget_day(T0);
    let mut conn = app.db.pool().acquire().await.unwrap();
    assert_eq!(
        store::rebalance_spent(&mut conn, day_start, day_end)
            .await
            .unwrap(),
        Msat::new(120).unwrap()
    );
    assert_eq!(
        store::opening_peers(&mut conn, 0).await.unwrap(),
        vec![PEER.to_owned()]
    );
    assert_eq!(store::closing_channels(&mut conn).await.unwrap(), vec![c]);
    let h = store::history(&mut conn, store::SET_POLICY, Subject::Channel(a))
        .await
        .unwrap();
    assert_eq!(
        (h.finished, h.last_finished_ms, h.last_failed_ms),
        (1, Some(T0), None)
    );
    let h = store::history(&mut conn, store::OPEN, Subject::Peer(PEER))
        .await
        .unwrap();
    assert_eq!(h.finished, 1);
    drop(conn);

    fake.with(|s| s.in_flight = false);
    let second = app.ops.apply(false).await.unwrap();
    assert_eq!(
        statuses(&second),
        triples(&[("rebalance", "1x1x0", "applied")])
    );
    let mut conn = app.db.pool().acquire().await.unwrap();
    assert_eq!(
        store::rebalance_spent(&mut conn, day_start, day_end)
            .await
            .unwrap(),
        Msat::new(80).unwrap()
    );
    assert_eq!(
        store::rebalance_costs(&mut conn, 0, u64::MAX >> 1)
            .await
            .unwrap(),
        vec![(a, Msat::new(80).unwrap())]
    );
    drop(conn);
    assert!(app.ops.apply(false).await.unwrap().is_empty());
    assert_eq!(ops_receipts(&app.db).await.len(), 5);
    app.db.close().await;
    pg.cleanup().await.unwrap();
}
