//! The continuous reconcile loop against the simulated network.

use std::time::Duration;

use lightning_ops::store;
use oa_proto::wallet;
use oa_service::ManualClock;
use oa_testkit::wait_until;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

#[tokio::test]
async fn a_dry_run_loop_records_its_plan_and_changes_nothing() {
    let (folder, exec, policy) = sim_setup().await;
    let clock = ManualClock::new(T0);
    let extra = [
        flag("policy-file", policy.display()),
        exec.url_flag(),
        flag("reconcile-interval-secs", 1),
        "--dry-run".to_owned(),
    ];
    let app = folder.ops(&extra, &clock, None).await;
    let before = exec.policies(&folder).await;
    let loops = lightning_ops::background(&folder.config(&extra), app.ops.clone());
    let recorded = wait_until(WAIT, POLL, || async {
        events(&app.db, "ops.reconcile")
            .await
            .into_iter()
            .find(|(kind, _)| kind == "dry_run_plan")
    })
    .await
    .expect("a dry-run tick records its plan");
    loops.stop().await;
    let planned: Vec<(&str, &str)> = recorded
        .1
        .get("results")
        .and_then(|r| r.as_array())
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "set_policy")
        .map(|r| {
            (
                r["channel_id"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        planned,
        [
            ("100x1x0", "planned"),
            ("102x1x0", "planned"),
            ("103x1x0", "planned")
        ]
    );
    assert_eq!(exec.policies(&folder).await, before);
    for table in ["ops_actions", "ops_deferred", "idempotency_keys"] {
        assert_eq!(count(&app.db, table).await, 0, "{table}");
    }
    exec.stop().await;
}

#[tokio::test]
async fn the_loop_converges_the_sim_and_executes_a_deferred_update_when_it_comes_due() {
    let (folder, exec, policy) = sim_setup().await;
    let clock = ManualClock::new(T0);
    let extra = [
        flag("policy-file", policy.display()),
        exec.url_flag(),
        flag("reconcile-interval-secs", 1),
    ];
    let app = folder.ops(&extra, &clock, None).await;
    let loops = lightning_ops::background(&folder.config(&extra), app.ops.clone());
    wait_until(WAIT, POLL, || async {
        (exec.policies(&folder).await == converged()).then_some(())
    })
    .await
    .expect("the loop converges the node to the policy");

    // A change by hand inside the window: the loop defers its correction ...
    let hub = exec
        .channels(&folder)
        .await
        .iter()
        .find(|c| lightning_ops::plan::channel_id(c.chan_id) == "103x1x0")
        .unwrap()
        .chan_id;
    exec.client(&folder)
        .await
        .update_channel_policy(wallet::UpdateChannelPolicyRequest {
            idempotency_key: "by-hand-1".into(),
            chan_id: hub,
            policy: Some(wallet::ChannelPolicy {
                base_fee_msat: 0,
                fee_rate_ppm: 5_000,
                min_htlc_msat: 1_000,
                max_htlc_msat: 50_000_000,
                time_lock_delta: 40,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let waiting = wait_until(WAIT, POLL, || async {
        store::deferrals(&mut app.db.pool().acquire().await.unwrap())
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.status == "waiting")
    })
    .await
    .expect("the correction is deferred");
    assert_eq!(
        (waiting.channel_id.as_str(), waiting.not_before_ms),
        ("103x1x0", T0 + HOUR_MS)
    );
    assert_eq!(exec.policies(&folder).await[2].1.fee_rate_ppm, 5_000);

    // ... and executes it on the first tick after the window.
    clock.set(T0 + HOUR_MS);
    wait_until(WAIT, POLL, || async {
        (exec.policies(&folder).await == converged()).then_some(())
    })
    .await
    .expect("the deferred update is executed, not dropped");
    loops.stop().await;
    let rows = store::deferrals(&mut app.db.pool().acquire().await.unwrap())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "applied");
    // Three policy changes, the deferred correction, and the open intent's one open.
    assert_eq!(count(&app.db, "ops_actions").await, 5);
    assert_eq!(exec.sim.pending_channels().len(), 1);
    exec.stop().await;
}
