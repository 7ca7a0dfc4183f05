//! Rebalances against a real wallet-executor on the simulated network: executed within the
//! daily budget, with the executor's receipt linked and the cost charged to the channel that
//! received the liquidity; the P&L of forwards and a rebalance against a hand-computed table.
//!
//! The scenario. Our channels: 100x1x0 to router (1 BTC, all ours), 102x1x0 to carol (1 BTC,
//! made half ours by moving 0.5 BTC to carol's side), 103x1x0 to hub (0.5 BTC, half ours). The
//! only circular route out of 100x1x0 and back into 103x1x0 is wallet -> router -> merchant ->
//! hub -> wallet; merchant is given 0.4 BTC on its channel with hub so the route has liquidity.
//! The policy gives 103x1x0 a band of 60-80% and rebalances at most 200 ppm, 3_000_000 msat a day.
//!
//! 103x1x0 at 50% is below its band: the middle is 5e10 * 140 / 200 = 35_000_000_000 msat, so it
//! needs 10_000_000_000. The source is the channel with the most local above half its capacity:
//! 100x1x0 (1e11 - 5e10 = 5e10; 102x1x0 has 0). Fee limit: ceil(1e10 * 200 / 1e6) = 2_000_000.
//!
//! Its fee, hop by hop from the end (each node charges base + ceil(ppm * amount it forwards)):
//! - hub forwards out over 103x1x0 (its default policy, 1000 msat + 1 ppm) 1e10:
//!   1000 + 10_000 = 11_000;
//! - merchant forwards out over its channel with hub (default policy) 1e10 + 11_000:
//!   1000 + ceil(10_000.011) = 11_001;
//! - router forwards out over its channel with merchant (1 sat + 100 ppm) 1e10 + 22_001:
//!   1000 + ceil(1_000_002.2001) = 1_001_003.
//!
//! Total 1_023_004 msat, charged to 103x1x0.

use lightning_ops::{
    executor::RebalanceAsk,
    rebalance::{EXECUTOR_REBALANCE_SCHEMA, REBALANCE_RECEIPT_SCHEMA, rebalance_key},
    store,
};
use oa_money::Msat;
use oa_service::ManualClock;

use crate::harness::*;

const POLICY: &str = r#"version = 1
[fees.default]
strategy = "fixed"
base_fee_msat = 1000
fee_ppm = 100
min_htlc_msat = 1000
max_htlc_msat = 50000000000
time_lock_delta = 40

[[channels]]
channel_id = "103x1x0"
local_balance_min_pct = 60
local_balance_max_pct = 80

[rebalance]
max_fee_ppm = 200
budget_msat_per_day = 3000000
"#;

const BTC_MSAT: u64 = 100_000_000_000;
const FIRST_AMOUNT: u64 = 10_000_000_000;
const FIRST_FEE: u64 = 1_023_004;
/// T0 is 22:00 UTC, so the next budget day starts two hours later.
const NEXT_DAY: u64 = T0 + 2 * HOUR_MS;

struct Setup {
    folder: Folder,
    exec: Executor,
    app: lightning_ops::App,
    clock: ManualClock,
}

async fn setup() -> Setup {
    let folder = Folder::new();
    let exec = Executor::start(&folder).await;
    let msat = |v: u64| Msat::new(v).unwrap();
    assert_eq!(
        exec.sim
            .shift_liquidity("wallet", "carol", msat(BTC_MSAT / 2))
            .unwrap(),
        msat(BTC_MSAT / 2)
    );
    assert_eq!(
        exec.sim
            .shift_liquidity("hub", "merchant", msat(4 * BTC_MSAT / 10))
            .unwrap(),
        msat(4 * BTC_MSAT / 10)
    );
    let policy = folder.write("policy.toml", POLICY);
    let clock = ManualClock::new(T0);
    let app = folder
        .ops(
            &[flag("policy-file", policy.display()), exec.url_flag()],
            &clock,
            None,
        )
        .await;
    Setup {
        folder,
        exec,
        app,
        clock,
    }
}

/// Our local balance on each channel, by `BLOCKxTXxOUTPUT`.
async fn locals(s: &Setup) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = s
        .exec
        .channels(&s.folder)
        .await
        .iter()
        .map(|c| {
            (
                lightning_ops::plan::channel_id(c.chan_id),
                c.local_balance_msat,
            )
        })
        .collect();
    out.sort();
    out
}

fn pairs(v: &[(&str, u64)]) -> Vec<(String, u64)> {
    v.iter().map(|(a, b)| ((*a).to_owned(), *b)).collect()
}

#[tokio::test]
async fn a_rebalance_runs_within_the_daily_budget_with_linked_receipts_and_its_cost_charged_in() {
    let s = setup().await;
    let (c100, c103) = (
        chan_id(&s.exec, &s.folder, "100x1x0").await,
        chan_id(&s.exec, &s.folder, "103x1x0").await,
    );
    let first = s.app.ops.apply(false).await.unwrap();
    assert_eq!(
        statuses(&first),
        triples(&[
            ("set_policy", "100x1x0", "applied"),
            ("flag", "100x1x0", "skipped"),
            ("set_policy", "102x1x0", "applied"),
            ("set_policy", "103x1x0", "applied"),
            ("rebalance", "103x1x0", "applied"),
        ])
    );
    let rb = &first[4];
    assert_eq!(
        rb.description,
        "rebalance 103x1x0: local side 50% is outside 60-80%: move 10000000000 msat out over 100x1x0 and back in over 103x1x0, fee limit 2000000 msat"
    );
    let ask = RebalanceAsk {
        out_chan_id: c100,
        in_chan_id: c103,
        amount_msat: FIRST_AMOUNT,
        fee_limit_msat: 2_000_000,
    };
    assert_eq!(rb.idempotency_key, rebalance_key(c103, 0, &ask).unwrap());
    // The node moved the liquidity: 103x1x0 is at the middle of its band (70%), and 100x1x0
    // paid the amount and the fee.
    assert_eq!(
        locals(&s).await,
        pairs(&[
            ("100x1x0", BTC_MSAT - FIRST_AMOUNT - FIRST_FEE),
            ("102x1x0", BTC_MSAT / 2),
            ("103x1x0", 35_000_000_000),
        ])
    );
    // The action row holds its fee limit and fee; the cost is charged to 103x1x0 (in).
    let mut conn = s.app.db.pool().acquire().await.unwrap();
    let rows = store::all_actions(&mut conn).await.unwrap();
    let row = rows.iter().find(|r| r.kind == "rebalance").unwrap();
    assert_eq!(
        (
            row.status.as_str(),
            row.fee_limit_msat,
            row.fee_msat,
            row.chan_id
        ),
        ("applied", Some(2_000_000), Some(FIRST_FEE), c103)
    );
    assert_eq!(
        store::rebalance_costs(&mut conn, 0, u64::MAX >> 1)
            .await
            .unwrap(),
        vec![(c103, Msat::new(FIRST_FEE).unwrap())]
    );
    drop(conn);
    // lightning-ops's receipt links the executor's for the same move and fee; an auditor with
    // both logs finds every link rule satisfied.
    let theirs = executor_receipts(&s.exec, &s.folder).await;
    let ours = ops_receipts(&s.app.db).await;
    let executor_rb = only(&theirs, EXECUTOR_REBALANCE_SCHEMA);
    let ops_rb = only(&ours, REBALANCE_RECEIPT_SCHEMA);
    assert_eq!(ops_rb.links, vec![executor_rb.hash]);
    assert_eq!(rb.receipt_hash, ops_rb.hash.to_string());
    assert_eq!(rb.executor_receipt_hash, executor_rb.hash.to_string());
    assert_eq!(ops_rb.idempotency_key, rb.idempotency_key);
    for (field, value) in [
        ("status", "succeeded".to_owned()),
        ("out_chan_id", c100.to_string()),
        ("in_chan_id", c103.to_string()),
        ("amount_msat", FIRST_AMOUNT.to_string()),
        ("fee_msat", FIRST_FEE.to_string()),
        ("fee_limit_msat", "2000000".to_owned()),
    ] {
        assert_eq!(ops_rb.body[field], value.as_str(), "{field}");
        assert_eq!(executor_rb.body[field], value.as_str(), "{field}");
    }
    assert_eq!(
        ops_rb.body["payment_hash"],
        executor_rb.body["payment_hash"]
    );
    audit(&theirs, &ours);

    // In its band now (and 100x1x0 no longer depleted on one side): a second apply has nothing
    // to do.
    let second = s.app.ops.apply(false).await.unwrap();
    assert!(second.is_empty(), "{second:?}");

    // Liquidity leaves 103x1x0 (hub is paid 1.5e10 elsewhere): 40%, below its band again. It
    // needs 3.5e10 - 2e10 = 1.5e10 from 100x1x0, fee limit ceil(1.5e10 * 200 / 1e6) = 3_000_000;
    // today's rebalances hold 1_023_004 of the 3_000_000 budget, so it does not fit: deferred to
    // the next UTC day, nothing recorded, the executor not asked.
    s.exec
        .sim
        .shift_liquidity("wallet", "hub", Msat::new(15_000_000_000).unwrap())
        .unwrap();
    s.clock.advance(60_000);
    for dry_run in [true, false] {
        let r = s.app.ops.apply(dry_run).await.unwrap();
        let rb = r.iter().find(|r| r.action == "rebalance").unwrap();
        assert_eq!(
            (rb.status.as_str(), rb.not_before_ms),
            ("deferred", NEXT_DAY),
            "{rb:?}"
        );
        assert!(rb.reason.starts_with("BUDGET_EXHAUSTED: today's (UTC) rebalances hold 1023004 msat of the 3000000 msat daily budget and this one's fee limit of 3000000 msat does not fit"), "{}", rb.reason);
    }
    assert_eq!(count(&s.app.db, "ops_actions").await, 4);
    // (The executor also receipts the settlement of the invoice a rebalance pays to ourselves,
    // asynchronously; those are not counted here.)
    let asked = |receipts: Vec<oa_receipts::Receipt>| {
        receipts
            .iter()
            .filter(|r| !r.schema.ends_with("invoice_settlement_receipt.v1"))
            .count()
    };
    assert_eq!(asked(executor_receipts(&s.exec, &s.folder).await), 4);

    // The next day the budget is whole again; the fee limit fits exactly. The fee:
    // hub 1000 + ceil(1.5e10 / 1e6) = 16_000; merchant 1000 + ceil(15_000.016) = 16_001;
    // router 1000 + ceil((1.5e10 + 32_001) * 100 / 1e6) = 1000 + 1_500_004 = 1_501_004.
    // Total 1_533_005. A new key: the channel's second rebalance (generation 1).
    s.clock.set(NEXT_DAY);
    let r = s.app.ops.apply(false).await.unwrap();
    let rb = r.iter().find(|r| r.action == "rebalance").unwrap();
    assert_eq!(rb.status, "applied", "{rb:?}");
    let ask = RebalanceAsk {
        amount_msat: 15_000_000_000,
        fee_limit_msat: 3_000_000,
        ..ask
    };
    assert_eq!(rb.idempotency_key, rebalance_key(c103, 1, &ask).unwrap());
    assert_eq!(
        rb.reason,
        "moved 15000000000 msat for a fee of 1533005 msat"
    );
    assert_eq!(locals(&s).await[2], ("103x1x0".to_owned(), 35_000_000_000));
    let mut conn = s.app.db.pool().acquire().await.unwrap();
    assert_eq!(
        store::rebalance_costs(&mut conn, 0, u64::MAX >> 1)
            .await
            .unwrap(),
        vec![(c103, Msat::new(FIRST_FEE + 1_533_005).unwrap())]
    );
    let (day_start, day_end) = lightning_ops::rebalance::budget_day(NEXT_DAY);
    assert_eq!(
        store::rebalance_spent(&mut conn, day_start, day_end)
            .await
            .unwrap()
            .as_u64(),
        1_533_005
    );
    drop(conn);
    audit(
        &executor_receipts(&s.exec, &s.folder).await,
        &ops_receipts(&s.app.db).await,
    );
    s.exec.stop().await;
}

/// `(channel, forwards out, out msat, revenue, in msat, rebalance cost, P&L, local, balance‰)`.
type Row = (String, u64, u64, u64, u64, u64, i64, u64, u32);

/// The P&L of two forwards through our node and the rebalance above, per channel:
///
/// F1: hub pays carol 2_000_000 msat: in over 103x1x0, out over 102x1x0; our fee
///     1000 + ceil(2_000_000 * 100 / 1e6) = 1_200 (credited to 102x1x0); in 2_001_200.
/// F2: carol pays merchant 5_000_000 msat: in over 102x1x0, out over 100x1x0 to router (router
///     charges 1000 + 500 = 1_500, cheaper than hub's 2000 + 2500); our fee on 5_001_500:
///     1000 + ceil(500.15) = 1_501 (credited to 100x1x0); in 5_001_500 + 1_501 = 5_003_001.
///
/// | channel | fwds out | out msat  | revenue | in msat   | rebalance cost | P&L        |
/// |---------|----------|-----------|---------|-----------|----------------|------------|
/// | 100x1x0 | 1        | 5_001_500 | 1_501   | 0         | 0              | 1_501      |
/// | 102x1x0 | 1        | 2_000_000 | 1_200   | 5_003_001 | 0              | 1_200      |
/// | 103x1x0 | 0        | 0         | 0       | 2_001_200 | 1_023_004      | -1_023_004 |
/// | total   | 2        | 7_001_500 | 2_701   | 7_004_201 | 1_023_004      | -1_020_303 |
///
/// Balances after: 100x1x0 1e11 - 1e10 - 1_023_004 - 5_001_500 = 89_993_975_496 (899‰);
/// 102x1x0 5e10 - 2_000_000 + 5_003_001 = 50_003_003_001 (500‰); 103x1x0 3.5e10 + 2_001_200 =
/// 35_002_001_200 (700‰).
#[tokio::test]
async fn the_pnl_of_real_forwards_and_a_real_rebalance_matches_the_hand_computed_table() {
    let s = setup().await;
    let first = s.app.ops.apply(false).await.unwrap();
    assert_eq!(first[4].status, "applied", "{first:?}");
    s.exec.forward("carol", 2_000_000);
    let inv = s
        .exec
        .sim
        .create_invoice(
            "merchant",
            Some(Msat::new(5_000_000).unwrap()),
            "f2",
            std::time::Duration::from_secs(600),
        )
        .unwrap()
        .bolt11;
    let paid = s
        .exec
        .sim
        .pay_from("carol", &inv, Msat::new(1_000_000).unwrap())
        .unwrap();
    assert!(
        matches!(paid, wallet_executor::node::PayState::Succeeded { .. }),
        "{paid:?}"
    );

    let report = s.app.ops.report(0, u64::MAX >> 1).await.unwrap();
    assert_eq!(report.sync_error, "");
    assert_eq!(report.forwards_cursor, 2);
    let table: Vec<Row> = report
        .channels
        .iter()
        .map(|r| {
            (
                r.channel_id.clone(),
                r.forwards_out,
                r.forwarded_out_msat,
                r.fee_revenue_msat,
                r.forwarded_in_msat,
                r.rebalance_cost_msat,
                r.pnl_msat,
                r.local_balance_msat,
                r.balance_permille,
            )
        })
        .collect();
    let row = |id: &str, n, out, rev, inn, cost, pnl, local, pm| {
        (id.to_owned(), n, out, rev, inn, cost, pnl, local, pm)
    };
    assert_eq!(
        table,
        vec![
            row(
                "100x1x0",
                1,
                5_001_500,
                1_501,
                0,
                0,
                1_501,
                89_993_975_496,
                899
            ),
            row(
                "102x1x0",
                1,
                2_000_000,
                1_200,
                5_003_001,
                0,
                1_200,
                50_003_003_001,
                500
            ),
            row(
                "103x1x0",
                0,
                0,
                0,
                2_001_200,
                FIRST_FEE,
                -1_023_004,
                35_002_001_200,
                700
            ),
        ]
    );
    let t = report.totals.unwrap();
    assert_eq!(
        (
            t.forwards_out,
            t.forwarded_out_msat,
            t.fee_revenue_msat,
            t.forwarded_in_msat,
            t.rebalance_cost_msat,
            t.pnl_msat
        ),
        (2, 7_001_500, 2_701, 7_004_201, FIRST_FEE, -1_020_303)
    );
    // The revenue is what the node itself recorded, and the cost what the executor's receipt
    // says was paid.
    let node_fees: u64 = s
        .exec
        .sim
        .forwards_at("wallet")
        .unwrap()
        .iter()
        .map(|e| e.fee.as_u64())
        .sum();
    assert_eq!(node_fees, 2_701);
    let theirs = executor_receipts(&s.exec, &s.folder).await;
    assert_eq!(
        only(&theirs, EXECUTOR_REBALANCE_SCHEMA).body["fee_msat"],
        FIRST_FEE.to_string().as_str()
    );
    // The channel that bought liquidity and earned nothing yet is the one losing money.
    let health = s.app.ops.health(0, u64::MAX >> 1).await.unwrap();
    let flags: Vec<(String, Vec<String>)> = health
        .channels
        .iter()
        .map(|c| (c.channel_id.clone(), c.flags.clone()))
        .collect();
    assert_eq!(
        flags,
        vec![
            ("100x1x0".to_owned(), vec![]),
            ("102x1x0".to_owned(), vec![]),
            ("103x1x0".to_owned(), vec!["losing_money".to_owned()]),
        ]
    );
    s.exec.stop().await;
}
