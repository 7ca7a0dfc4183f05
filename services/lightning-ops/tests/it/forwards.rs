//! Forwarding-history ingestion: gapless, exactly once, across restarts.

use lightning_ops::{executor::Forward, store};
use oa_service::ManualClock;

use crate::{
    fake::{Fake, scid},
    harness::*,
};

async fn stored(app: &lightning_ops::App) -> Vec<Forward> {
    store::forwards(&mut app.db.pool().acquire().await.unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn ingestion_survives_a_restart_mid_stream_with_no_gap_and_no_double_count() {
    let (folder, exec, _policy) = sim_setup().await;
    let clock = ManualClock::new(T0);
    let extra = [exec.url_flag(), flag("forwards-page-size", 2)];
    // hub pays carol (forwarded 103x1x0 -> 102x1x0) and dave (103x1x0 -> 100x1x0, then router).
    for amount in [20_000, 21_000, 22_000] {
        exec.forward("carol", amount);
    }
    exec.forward("dave", 5_000_000);
    exec.forward("dave", 6_000_000);

    let app = folder.ops(&extra, &clock, None).await;
    let first = app.ops.ingest(1).await.unwrap();
    assert_eq!((first.pages, first.events, first.cursor), (1, 2, 2));
    assert_eq!(stored(&app).await.len(), 2);
    // Stop mid-stream, and forward more while lightning-ops is down.
    app.db.close().await;
    drop(app);
    exec.forward("carol", 23_000);
    exec.forward("dave", 7_000_000);

    let app = folder.ops(&extra, &clock, None).await;
    let rest = app.ops.ingest(u32::MAX).await.unwrap();
    assert_eq!((rest.events, rest.cursor), (5, 7), "{rest:?}");
    // Nothing more to read: a second run adds nothing.
    let again = app.ops.ingest(u32::MAX).await.unwrap();
    assert_eq!((again.events, again.cursor), (0, 7));

    // Exactly the node's own records, each once, and the sums match.
    let sim: Vec<Forward> = exec
        .sim
        .forwards_at("wallet")
        .unwrap()
        .iter()
        .map(|e| Forward {
            index: e.index,
            timestamp_ms: e.timestamp_ms,
            chan_id_in: e.chan_id_in,
            chan_id_out: e.chan_id_out,
            amt_in_msat: e.amt_in.as_u64(),
            amt_out_msat: e.amt_out.as_u64(),
            fee_msat: e.fee.as_u64(),
        })
        .collect();
    assert_eq!(sim.len(), 7);
    assert_eq!(stored(&app).await, sim);
    let fee_sum: u64 = sim.iter().map(|f| f.fee_msat).sum();
    let out_sum: u64 = sim.iter().map(|f| f.amt_out_msat).sum();
    let report = app.ops.report(0, i64::MAX as u64).await.unwrap();
    assert_eq!(report.sync_error, "");
    assert_eq!(report.forwards_cursor, 7);
    let totals = report.totals.unwrap();
    assert_eq!(
        (
            totals.forwards_out,
            totals.fee_revenue_msat,
            totals.forwarded_out_msat
        ),
        (7, fee_sum, out_sum)
    );
    // Per channel: the sim's default policy on our side is 1000 msat + 1 ppm (rounded up), so
    // each forward to carol (the last hop: out = her invoice's amount) earned 1000 + 1.
    let row = |id: &str| {
        report
            .channels
            .iter()
            .find(|c| c.channel_id == id)
            .unwrap()
            .clone()
    };
    let to_carol = row("102x1x0");
    assert_eq!(to_carol.forwards_out, 4);
    assert_eq!(
        to_carol.forwarded_out_msat,
        20_000 + 21_000 + 22_000 + 23_000
    );
    assert_eq!(to_carol.fee_revenue_msat, 4 * 1_001);
    let to_router = row("100x1x0");
    assert_eq!(to_router.forwards_out, 3);
    let from_hub = row("103x1x0");
    assert_eq!(from_hub.forwards_out, 0);
    assert_eq!(from_hub.forwarded_in_msat, {
        sim.iter().map(|f| f.amt_in_msat).sum::<u64>()
    });
    exec.stop().await;
}

#[tokio::test]
async fn a_page_with_a_gap_is_refused_and_nothing_of_it_is_stored() {
    let folder = Folder::new();
    let fake = Fake::new(vec![]);
    fake.with(|s| {
        s.forwards = (0..4)
            .map(|index| Forward {
                index,
                timestamp_ms: T0 + index,
                chan_id_in: scid(1, 1, 0),
                chan_id_out: scid(2, 1, 0),
                amt_in_msat: 1_010,
                amt_out_msat: 1_000,
                fee_msat: 10,
            })
            .collect();
        s.gap = true;
    });
    let clock = ManualClock::new(T0);
    let app = folder
        .ops(
            &[flag("forwards-page-size", 3)],
            &clock,
            Some(fake.dyn_channels()),
        )
        .await;
    let e = app.ops.ingest(10).await.unwrap_err();
    assert_eq!(e.to_api().code, "FORWARDING_GAP", "{e}");
    assert!(stored(&app).await.is_empty());
    // The next run reads the same page again, whole this time.
    let done = app.ops.ingest(10).await.unwrap();
    assert_eq!((done.events, done.cursor), (4, 4));
    assert_eq!(stored(&app).await.len(), 4);
}
