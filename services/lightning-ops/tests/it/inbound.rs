//! Inbound fees: planned, applied through the executor, carried by both receipts (the auditor's
//! link rule checks them), effective on a forward, and converged: a second apply is a no-op.

use lightning_ops::{apply::ACTION_RECEIPT_SCHEMA, plan::Fees};
use oa_service::ManualClock;

use crate::harness::*;

/// A discount of 500 msat + 100 ppm on HTLCs that arrive over any of our channels.
const INBOUND_POLICY: &str = r#"version = 1
[fees.default]
strategy = "fixed"
base_fee_msat = 2000
fee_ppm = 250
inbound_base_fee_msat = -500
inbound_fee_ppm = -100
min_htlc_msat = 1000
max_htlc_msat = 50000000
time_lock_delta = 40
"#;

const WITH_INBOUND: Fees = Fees {
    inbound_base_fee_msat: -500,
    inbound_fee_ppm: -100,
    ..DEFAULT_FEES
};

#[tokio::test]
async fn inbound_fees_are_applied_receipted_and_effective_and_a_second_apply_changes_nothing() {
    let folder = Folder::new();
    let exec = Executor::start(&folder).await;
    let policy = folder.write("policy.toml", INBOUND_POLICY);
    let clock = ManualClock::new(T0);
    let app = folder
        .ops(
            &[flag("policy-file", policy.display()), exec.url_flag()],
            &clock,
            None,
        )
        .await;
    let reader = folder.token(&["ops:read"]);

    // The plan shows the inbound change of each channel.
    let (status, plan) = call(
        &app.router,
        "POST",
        "/v1/ops/plan",
        Some(&reader),
        Some("{}"),
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    let described: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "set_policy")
        .map(|a| a["description"].as_str().unwrap())
        .collect();
    assert_eq!(described.len(), 3);
    for d in described {
        assert!(d.ends_with(", inbound 0/0 -> -500/-100 msat/ppm"), "{d}");
    }

    // Applied: the node's policies now carry the inbound discount.
    let first = app.ops.apply(false).await.unwrap();
    assert_eq!(
        statuses(&first),
        triples(&[
            ("set_policy", "100x1x0", "applied"),
            ("flag", "100x1x0", "skipped"),
            ("set_policy", "102x1x0", "applied"),
            ("flag", "102x1x0", "skipped"),
            ("set_policy", "103x1x0", "applied"),
        ])
    );
    let policies = exec.policies(&folder).await;
    assert!(
        policies.iter().all(|(_, p)| *p == WITH_INBOUND),
        "{policies:?}"
    );

    // Both receipts carry them, as signed decimal strings, and agree (the auditor checks).
    let theirs = executor_receipts(&exec, &folder).await;
    let ours = ops_receipts(&app.db).await;
    assert_eq!((theirs.len(), ours.len()), (3, 3));
    for r in &ours {
        assert_eq!(r.schema, ACTION_RECEIPT_SCHEMA);
        assert_eq!(r.body["inbound_base_fee_msat"], "-500");
        assert_eq!(r.body["inbound_fee_rate_ppm"], "-100");
        assert_eq!(r.body["previous_inbound_base_fee_msat"], "0");
        let linked = theirs.iter().find(|t| r.links == [t.hash]).unwrap();
        assert_eq!(linked.body["inbound_base_fee_msat"], "-500");
        assert_eq!(linked.body["inbound_fee_rate_ppm"], "-100");
    }
    audit(&theirs, &ours);

    // Converged: a second apply executes nothing (only the health flags are reported).
    let second = app.ops.apply(false).await.unwrap();
    assert_eq!(
        statuses(&second),
        triples(&[
            ("flag", "100x1x0", "skipped"),
            ("flag", "102x1x0", "skipped"),
        ])
    );
    assert_eq!(count(&app.db, "ops_actions").await, 3);
    assert_eq!(executor_receipts(&exec, &folder).await.len(), 3);

    // Effective: hub pays carol 1_000_000 msat through us, in over 103x1x0, out over 102x1x0.
    // Our fee: outbound on 102x1x0 = 2000 + ceil(1_000_000 * 250 / 1e6) = 2250; inbound on
    // 103x1x0, on 1_000_000 + 2250 = 1_002_250: -500 + ceil(1_002_250 * -100 / 1e6)
    // = -500 + ceil(-100.225) = -500 - 100 = -600. Total 2250 - 600 = 1650 msat.
    exec.forward("carol", 1_000_000);
    let fwd = exec.sim.forwards_at("wallet").unwrap();
    assert_eq!(fwd.len(), 1);
    assert_eq!(
        (fwd[0].amt_out.as_u64(), fwd[0].fee.as_u64()),
        (1_000_000, 1_650)
    );
    // Still nothing to change.
    let third = app.ops.apply(false).await.unwrap();
    assert!(third.iter().all(|r| r.action == "flag"), "{third:?}");
    exec.stop().await;
}
