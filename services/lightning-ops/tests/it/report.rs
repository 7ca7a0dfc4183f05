//! P&L and channel health for a scripted scenario, checked against a table computed by hand.

use lightning_ops::{
    executor::Forward,
    plan::{Fees, Observed},
    report,
    store::Rebalance,
};
use oa_money::Msat;
use oa_proto::ops;
use oa_service::ManualClock;

use crate::{
    fake::{Fake, scid},
    harness::*,
};

const W0: u64 = T0;
const W1: u64 = T0 + 24 * HOUR_MS;

fn pk(c: char) -> String {
    format!("02{}", c.to_string().repeat(64))
}

fn channel(chan_id: u64, peer: char, local: u64, remote: u64, active: bool) -> Observed {
    Observed {
        chan_id,
        remote_pubkey: pk(peer),
        local_balance_msat: local,
        remote_balance_msat: remote,
        active,
        local_policy: Fees {
            base_fee_msat: 1_000,
            fee_rate_ppm: 1,
            min_htlc_msat: 1,
            max_htlc_msat: 1_000_000,
            time_lock_delta: 40,
            ..Fees::default()
        },
    }
}

fn forward(index: u64, t: u64, chan_in: u64, chan_out: u64, out: u64, fee: u64) -> Forward {
    Forward {
        index,
        timestamp_ms: t,
        chan_id_in: chan_in,
        chan_id_out: chan_out,
        amt_in_msat: out + fee,
        amt_out_msat: out,
        fee_msat: fee,
    }
}

fn rebalance(id: &str, at_ms: u64, from: u64, to: u64, amount: u64, fee: u64) -> Rebalance {
    Rebalance {
        rebalance_id: id.into(),
        at_ms,
        chan_id_out: from,
        chan_id_in: to,
        amount_msat: Msat::new(amount).unwrap(),
        fee_msat: Msat::new(fee).unwrap(),
        executor_receipt_hash: None,
    }
}

struct Scenario {
    _folder: Folder,
    app: lightning_ops::App,
    fake: std::sync::Arc<Fake>,
    reader: String,
}

/// Three channels A = 1x1x0, B = 2x1x0, C = 3x1x0 (and D = 4x1x0, opened just before the
/// report), five forwards, four rebalances and five observations; see the table in
/// [`the_pnl_of_a_scripted_scenario_matches_the_hand_computed_table`].
async fn scenario() -> Scenario {
    let (a, b, c, d) = (scid(1, 1, 0), scid(2, 1, 0), scid(3, 1, 0), scid(4, 1, 0));
    let folder = Folder::new();
    let all_up = vec![
        channel(a, 'a', 500_000, 500_000, true),
        channel(b, 'b', 500_000, 500_000, true),
        channel(c, 'c', 500_000, 500_000, true),
    ];
    let fake = Fake::new(all_up.clone());
    fake.with(|s| {
        s.forwards = vec![
            forward(0, W0 + HOUR_MS, b, a, 1_000_000, 1_100),
            forward(1, W0 + 2 * HOUR_MS, c, a, 2_000_000, 2_200),
            forward(2, W0 + 3 * HOUR_MS, a, b, 500_000, 50),
            // Before the window, and at its (exclusive) end: not counted.
            forward(3, W0 - 1, a, c, 3_000_000, 600),
            forward(4, W1, b, c, 400_000, 40),
        ];
    });
    let clock = ManualClock::new(W0);
    let app = folder
        .ops(
            &[flag("forwards-page-size", 2)],
            &clock,
            Some(fake.dyn_channels()),
        )
        .await;
    // Observations: hour 0 all up; hours 1 and 2 B down; a second one in hour 2 all up; hour 3
    // C down.
    let down = |which: u64| {
        all_up
            .iter()
            .map(|ch| Observed {
                active: ch.chan_id != which,
                ..ch.clone()
            })
            .collect::<Vec<_>>()
    };
    for (at, channels) in [
        (W0, all_up.clone()),
        (W0 + HOUR_MS, down(b)),
        (W0 + 2 * HOUR_MS, down(b)),
        (W0 + 2 * HOUR_MS + 30 * 60_000, all_up.clone()),
        (W0 + 3 * HOUR_MS, down(c)),
    ] {
        clock.set(at);
        fake.with(|s| s.channels = channels);
        app.ops.observe().await.unwrap();
    }
    for (r, new) in [
        (
            rebalance("r1", W0 + 4 * HOUR_MS, a, b, 1_000_000, 300),
            true,
        ),
        (
            rebalance("r2", W0 + 5 * HOUR_MS, c, a, 2_000_000, 1_000),
            true,
        ),
        (rebalance("r3", W0 + 6 * HOUR_MS, a, c, 500_000, 700), true),
        (rebalance("r4", W1 + 1, a, b, 1_000_000, 9_999), true),
        // Recording the same rebalance again records nothing.
        (
            rebalance("r1", W0 + 4 * HOUR_MS, a, b, 1_000_000, 300),
            false,
        ),
    ] {
        assert_eq!(app.ops.record_rebalance(&r).await.unwrap(), new, "{r:?}");
    }
    // The node at report time (after the window, so the report's own observation is outside it).
    clock.set(W1 + 2 * HOUR_MS);
    fake.with(|s| {
        s.channels = vec![
            channel(a, 'a', 800_000, 200_000, true),
            channel(b, 'b', 30_000, 970_000, false),
            channel(c, 'c', 990_000, 10_000, true),
            channel(d, 'd', 50_000, 950_000, true),
        ];
    });
    let reader = folder.token(&["ops:read"]);
    Scenario {
        _folder: folder,
        app,
        fake,
        reader,
    }
}

#[allow(clippy::too_many_arguments)]
fn expected(
    chan_id: u64,
    peer: char,
    (forwards_out, forwarded_out_msat, fee_revenue_msat, forwarded_in_msat): (u64, u64, u64, u64),
    (rebalance_cost_msat, pnl_msat): (u64, i64),
    (uptime_permille, observations): (u32, u64),
    (local_balance_msat, remote_balance_msat, balance_permille): (u64, u64, u32),
) -> ops::ChannelReport {
    ops::ChannelReport {
        channel_id: lightning_ops::plan::channel_id(chan_id),
        chan_id,
        remote_pubkey: pk(peer),
        forwards_out,
        forwarded_out_msat,
        fee_revenue_msat,
        forwarded_in_msat,
        rebalance_cost_msat,
        pnl_msat,
        uptime_permille,
        observations,
        local_balance_msat,
        remote_balance_msat,
        balance_permille,
    }
}

#[tokio::test]
async fn the_pnl_of_a_scripted_scenario_matches_the_hand_computed_table() {
    let s = scenario().await;
    let (a, b, c, d) = (scid(1, 1, 0), scid(2, 1, 0), scid(3, 1, 0), scid(4, 1, 0));
    let report = s.app.ops.report(W0, W1).await.unwrap();
    assert_eq!(report.sync_error, "");
    assert_eq!(report.forwards_cursor, 5, "every forward ingested");
    // Computed by hand:
    // A: out = fwd0 + fwd1 = 1,000,000 + 2,000,000; revenue 1,100 + 2,200 = 3,300;
    //    in = fwd2's 500,050; cost r2 = 1,000 (A received r2's liquidity); P&L 2,300;
    //    up 5/5 = 1000 permille; balance 800,000 / 1,000,000 = 800 permille.
    // B: out = fwd2 500,000, revenue 50; in = fwd0's 1,001,100 (fwd4 is at the window's end);
    //    cost r1 = 300 (r4 is after the window); P&L -250; up 3/5 = 600; 30 / 1000 = 30.
    // C: no forward out in the window (fwd3 is before it, fwd4 at its end); in = fwd1's
    //    2,002,200; cost r3 = 700; P&L -700; up 4/5 = 800; balance 990.
    // D: opened after the window: nothing, uptime unknown (0 observations); balance 50.
    assert_eq!(
        report.channels,
        vec![
            expected(
                a,
                'a',
                (2, 3_000_000, 3_300, 500_050),
                (1_000, 2_300),
                (1000, 5),
                (800_000, 200_000, 800)
            ),
            expected(
                b,
                'b',
                (1, 500_000, 50, 1_001_100),
                (300, -250),
                (600, 5),
                (30_000, 970_000, 30)
            ),
            expected(
                c,
                'c',
                (0, 0, 0, 2_002_200),
                (700, -700),
                (800, 5),
                (990_000, 10_000, 990)
            ),
            expected(d, 'd', (0, 0, 0, 0), (0, 0), (0, 0), (50_000, 950_000, 50)),
        ]
    );
    // Totals: revenue 3,350 - cost 2,000 = 1,350; local 1,870,000 of 4,000,000 = 467 permille.
    let totals = report.totals.clone().unwrap();
    assert_eq!(
        (
            totals.forwards_out,
            totals.forwarded_out_msat,
            totals.fee_revenue_msat,
            totals.forwarded_in_msat,
            totals.rebalance_cost_msat,
            totals.pnl_msat,
            totals.balance_permille
        ),
        (3, 3_500_000, 3_350, 3_503_350, 2_000, 1_350, 467)
    );

    // The same over HTTP (proto JSON: 64-bit integers as strings).
    let (status, v) = call(
        &s.app.router,
        "GET",
        &format!("/v1/ops/report?from_ms={W0}&to_ms={W1}"),
        Some(&s.reader),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["totals"]["pnl_msat"], "1350");
    assert_eq!(v["channels"][1]["pnl_msat"], "-250");
    assert_eq!(v["channels"][1]["uptime_permille"], 600);
    let over_http: ops::ReportResponse = serde_json::from_value(v).unwrap();
    assert_eq!(over_http.channels, report.channels);

    // CSV: a header row, one row per channel, CRLF line ends; unknown uptime is empty.
    let csv = report::to_csv(&report);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(
        lines[0],
        "channel_id,chan_id,remote_pubkey,forwards_out,forwarded_out_msat,fee_revenue_msat,forwarded_in_msat,rebalance_cost_msat,pnl_msat,uptime_permille,observations,local_balance_msat,remote_balance_msat,balance_permille"
    );
    assert_eq!(
        lines[2],
        format!(
            "2x1x0,{b},{},1,500000,50,1001100,300,-250,600,5,30000,970000,30",
            pk('b')
        )
    );
    assert_eq!(
        lines[4],
        format!("4x1x0,{d},{},0,0,0,0,0,0,,0,50000,950000,50", pk('d'))
    );
    assert_eq!((lines.len(), lines[5]), (6, ""), "rows end with CRLF");
    let table = report::to_table(&report);
    assert!(table.contains("2x1x0"), "{table}");
    let total_line = table.lines().find(|l| l.starts_with("total")).unwrap();
    assert!(
        total_line.contains("1350") && total_line.contains("46.7%"),
        "{table}"
    );
}

#[tokio::test]
async fn each_health_flag_is_raised_by_its_own_condition() {
    let s = scenario().await;
    let (status, v) = call(
        &s.app.router,
        "GET",
        &format!("/v1/ops/channels?from_ms={W0}&to_ms={W1}"),
        Some(&s.reader),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let resp: ops::ChannelsResponse = serde_json::from_value(v).unwrap();
    let flags: Vec<(&str, Vec<&str>, i64)> = resp
        .channels
        .iter()
        .map(|c| {
            (
                c.channel_id.as_str(),
                c.flags.iter().map(String::as_str).collect(),
                c.pnl_msat,
            )
        })
        .collect();
    assert_eq!(
        flags,
        vec![
            // Healthy: active, 80% local, earning.
            ("1x1x0", vec![], 2_300),
            // Peer offline; 3% local (< 5%); P&L -250 over the window.
            (
                "2x1x0",
                vec!["inactive", "depleted_local", "losing_money"],
                -250
            ),
            // 1% remote; P&L -700.
            ("3x1x0", vec!["depleted_remote", "losing_money"], -700),
            // Exactly 5% local is not depleted; no P&L is not a loss.
            ("4x1x0", vec![], 0),
        ]
    );
    // Over the next hour the picture changes: C earns fwd4's 40 msat and pays nothing; B pays
    // r4's 9,999 msat.
    let later = W1 + HOUR_MS;
    let (_, v) = call(
        &s.app.router,
        "GET",
        &format!("/v1/ops/channels?from_ms={W1}&to_ms={later}"),
        Some(&s.reader),
        None,
    )
    .await;
    let resp: ops::ChannelsResponse = serde_json::from_value(v).unwrap();
    let pnl: Vec<(i64, bool)> = resp
        .channels
        .iter()
        .map(|c| (c.pnl_msat, c.flags.iter().any(|f| f == "losing_money")))
        .collect();
    assert_eq!(pnl, [(0, false), (-9_999, true), (40, false), (0, false)]);
    let _ = &s.fake;
}

#[test]
fn csv_fields_are_quoted_only_when_needed() {
    let row = ops::ChannelReport {
        channel_id: "1x1x0".into(),
        remote_pubkey: "a,\"b\"".into(),
        observations: 1,
        uptime_permille: 1000,
        ..Default::default()
    };
    let csv = report::to_csv(&ops::ReportResponse {
        channels: vec![row],
        ..Default::default()
    });
    assert_eq!(
        csv.split("\r\n").nth(1).unwrap(),
        "1x1x0,0,\"a,\"\"b\"\"\",0,0,0,0,0,0,1000,1,0,0,0"
    );
}

#[test]
fn permille_is_floored_integer_arithmetic() {
    assert_eq!(report::permille(1, 3), 333);
    assert_eq!(report::permille(2, 3), 666);
    assert_eq!(report::permille(5, 0), 0);
    assert_eq!(report::permille(u64::MAX, u64::MAX), 1000);
}
