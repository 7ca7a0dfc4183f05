//! `apply` against a real wallet-executor on the simulated network, and its recovery paths
//! against a scripted one.

use std::time::Duration;

use lightning_ops::{
    apply::{ACTION_RECEIPT_SCHEMA, EXECUTOR_POLICY_SCHEMA, action_key},
    plan::{Fees, Observed},
    store,
};
use oa_proto::wallet;
use oa_receipts::Hash;
use oa_service::ManualClock;
use oa_store::receipt_log;
use serde_json::Value;

use crate::{
    fake::{Answer, Fake, scid},
    harness::*,
};

fn summary(v: &Value) -> Vec<(String, String, String)> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["channel_id"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn strs(v: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    v.iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect()
}

/// What every apply of the sim policy reports without executing: 100x1x0's rebalance (it is
/// above its band and no other channel has room below half its capacity) and the health flags.
const NOTHING_TO_EXECUTE: [(&str, &str, &str); 3] = [
    ("rebalance", "100x1x0", "skipped"),
    ("flag", "100x1x0", "skipped"),
    ("flag", "102x1x0", "skipped"),
];

#[tokio::test]
async fn apply_converges_the_sim_with_linked_receipts_and_a_second_apply_changes_nothing() {
    let (folder, exec, policy) = sim_setup().await;
    let clock = ManualClock::new(T0);
    let app = folder
        .ops(
            &[flag("policy-file", policy.display()), exec.url_flag()],
            &clock,
            None,
        )
        .await;
    let before = exec.policies(&folder).await;
    assert_ne!(before, converged());

    // Without a token, or with a read-only one, apply is refused and changes nothing.
    let body = r#"{"idempotency_key":"apply-1"}"#;
    let (status, v) = call(&app.router, "POST", "/v1/ops/apply", None, Some(body)).await;
    assert_eq!(status, 401, "{v}");
    let reader = folder.token(&["ops:read"]);
    let (status, v) = call(
        &app.router,
        "POST",
        "/v1/ops/apply",
        Some(&reader),
        Some(body),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str()),
        (403, Some("FORBIDDEN"))
    );
    assert_eq!(exec.policies(&folder).await, before);
    assert_eq!(count(&app.db, "ops_actions").await, 0);
    assert_eq!(count(&app.db, "idempotency_keys").await, 0);

    // With ops:apply: every policy change is applied, and the open intent (dave) is executed;
    // the rest is reported, not executed.
    let applier = folder.token(&["ops:apply"]);
    let (status, first) = call(
        &app.router,
        "POST",
        "/v1/ops/apply",
        Some(&applier),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["dry_run"], false);
    assert_eq!(
        summary(&first),
        strs(&[
            ("set_policy", "100x1x0", "applied"),
            NOTHING_TO_EXECUTE[0],
            NOTHING_TO_EXECUTE[1],
            ("set_policy", "102x1x0", "applied"),
            NOTHING_TO_EXECUTE[2],
            ("set_policy", "103x1x0", "applied"),
            ("open", "", "applied"),
        ])
    );
    assert_eq!(
        first["results"][1]["reason"],
        lightning_ops::plan::NO_DESTINATION,
        "{first}"
    );
    assert_eq!(exec.policies(&folder).await, converged());
    // The open is under way: its funding transaction waits for confirmations.
    let pending = exec.sim.pending_channels();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (
            pending[0].remote_pubkey.as_str(),
            pending[0].capacity.as_u64()
        ),
        (exec.pubkey("dave").as_str(), 1_000_000_000)
    );

    // Each applied action has lightning-ops's receipt, linking the executor's receipt for the
    // same channel and policy.
    let executor_receipts: Vec<Value> = reqwest::Client::new()
        .get(format!("http://{}/v1/receipts", exec.http_addr))
        .bearer_auth(
            folder
                .ring
                .operator_token(
                    "wallet-executor",
                    &["receipts:read"],
                    Duration::from_secs(60),
                )
                .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["receipts"]
        .as_array()
        .unwrap()
        .clone();
    let mut conn = app.db.pool().acquire().await.unwrap();
    for r in first["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "applied" && r["action"] == "set_policy")
    {
        let ours = receipt_log::get_by_hash(
            &mut conn,
            &Hash::parse(r["receipt_hash"].as_str().unwrap()).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
        ours.verify().unwrap();
        assert_eq!(ours.schema, ACTION_RECEIPT_SCHEMA);
        assert_eq!(ours.idempotency_key, r["idempotency_key"].as_str().unwrap());
        assert_eq!(ours.body["channel_id"], r["channel_id"]);
        let linked = r["executor_receipt_hash"].as_str().unwrap();
        assert_eq!(ours.links, vec![Hash::parse(linked).unwrap()]);
        assert_eq!(ours.body["executor_receipt"], linked);
        let theirs = executor_receipts
            .iter()
            .find(|e| e["hash"] == linked)
            .unwrap_or_else(|| panic!("{linked} is not in the executor's log"));
        assert_eq!(theirs["schema"], EXECUTOR_POLICY_SCHEMA);
        assert_eq!(theirs["body"]["chan_id"], ours.body["chan_id"]);
        assert_eq!(theirs["body"]["fee_rate_ppm"], ours.body["fee_rate_ppm"]);
        assert_eq!(theirs["idempotency_key"], ours.idempotency_key);
    }
    // Three policy changes and one open, at the executor and at lightning-ops.
    assert_eq!(executor_receipts.len(), 4);
    // An auditor with both logs: every receipt verifies and every link rule holds (the ops
    // receipt's channel and policy equal the executor's).
    let theirs: Vec<oa_receipts::Receipt> = executor_receipts
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect();
    let ours = receipt_log::list(&mut conn, "lightning-ops", 0, 100)
        .await
        .unwrap();
    assert_eq!(ours.len(), 4);
    assert_eq!(
        ours.iter().map(|r| r.schema.as_str()).collect::<Vec<_>>(),
        [
            ACTION_RECEIPT_SCHEMA,
            ACTION_RECEIPT_SCHEMA,
            ACTION_RECEIPT_SCHEMA,
            lightning_ops::lifecycle::OPEN_RECEIPT_SCHEMA
        ]
    );
    let issuers = [theirs[0].issuer.clone(), ours[0].issuer.clone()];
    let mut export = Vec::new();
    oa_receipts::write_export(&mut export, &issuers, &[theirs, ours].concat()).unwrap();
    let report = oa_receipts::verify_export(export.as_slice());
    assert!(report.is_ok(), "{report}");
    // SQLite runs on one connection: give it back before the service needs it.
    drop(conn);

    // The same key and body replays the answer; the same key with another body is a conflict.
    let (status, again) = call(
        &app.router,
        "POST",
        "/v1/ops/apply",
        Some(&applier),
        Some(body),
    )
    .await;
    assert_eq!((status.as_u16(), &again), (200, &first));
    let (status, v) = call(
        &app.router,
        "POST",
        "/v1/ops/apply",
        Some(&applier),
        Some(r#"{"idempotency_key":"apply-1","dry_run":true}"#),
    )
    .await;
    assert_eq!(status, 200, "a dry run does not claim the key: {v}");
    let (status, v) = call(
        &app.router,
        "POST",
        "/v1/ops/apply",
        Some(&applier),
        Some(r#"{"idempotency_key":"apply-1","dry_run":false}"#),
    )
    .await;
    assert_eq!(status, 200, "same request, defaults spelled out: {v}");

    // A second apply under a new key: the node already matches and the open is under way, so
    // nothing is executed (the open is not proposed again).
    let (status, second) = call(
        &app.router,
        "POST",
        "/v1/ops/apply",
        Some(&applier),
        Some(r#"{"idempotency_key":"apply-2"}"#),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(summary(&second), strs(&NOTHING_TO_EXECUTE));
    assert_eq!(count(&app.db, "ops_actions").await, 4);
    assert_eq!(
        receipt_log::size(&mut app.db.pool().acquire().await.unwrap(), "lightning-ops")
            .await
            .unwrap(),
        4
    );
    assert_eq!(exec.policies(&folder).await, converged());
    assert_eq!(exec.sim.pending_channels().len(), 1, "one open, not two");
    exec.stop().await;
}

#[tokio::test]
async fn an_update_inside_the_rate_limit_window_is_deferred_then_applied_not_dropped() {
    let (folder, exec, policy) = sim_setup().await;
    let clock = ManualClock::new(T0);
    let app = folder
        .ops(
            &[flag("policy-file", policy.display()), exec.url_flag()],
            &clock,
            None,
        )
        .await;
    let first = app.ops.apply(false).await.unwrap();
    let key_before = first
        .iter()
        .find(|r| r.channel_id == "103x1x0" && r.action == "set_policy")
        .unwrap()
        .idempotency_key
        .clone();
    assert_eq!(exec.policies(&folder).await, converged());

    // Someone changes hub's channel by hand (a fee war) ten minutes later.
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
    clock.advance(10 * 60_000);

    // Inside the hour since the last change: deferred with the time it becomes due, stored.
    let deferred_at = |results: &[oa_proto::ops::ActionResult]| {
        results
            .iter()
            .find(|r| r.action == "set_policy")
            .map(|r| (r.channel_id.clone(), r.status.clone(), r.not_before_ms))
    };
    let due = T0 + HOUR_MS;
    let dry = app.ops.apply(true).await.unwrap();
    assert_eq!(
        deferred_at(&dry),
        Some(("103x1x0".into(), "deferred".into(), due))
    );
    assert_eq!(
        count(&app.db, "ops_deferred").await,
        0,
        "a dry run stores nothing"
    );
    let r = app.ops.apply(false).await.unwrap();
    assert_eq!(
        deferred_at(&r),
        Some(("103x1x0".into(), "deferred".into(), due))
    );
    clock.advance(20 * 60_000);
    let r = app.ops.apply(false).await.unwrap();
    assert_eq!(
        deferred_at(&r),
        Some(("103x1x0".into(), "deferred".into(), due))
    );
    let waiting = store::deferrals(&mut app.db.pool().acquire().await.unwrap())
        .await
        .unwrap();
    assert_eq!(waiting.len(), 1, "one waiting row per channel, refreshed");
    assert_eq!(
        (
            waiting[0].channel_id.as_str(),
            waiting[0].status.as_str(),
            waiting[0].not_before_ms
        ),
        ("103x1x0", "waiting", due)
    );
    let deferred_events = events(&app.db, "ops.actions")
        .await
        .iter()
        .filter(|(k, _)| k == "policy_deferred")
        .count();
    assert_eq!(deferred_events, 1, "journaled once, not on every run");
    assert_eq!(exec.policies(&folder).await[2].1.fee_rate_ppm, 5_000);

    // Once the window has passed, the next apply executes it.
    clock.set(due);
    let r = app.ops.apply(false).await.unwrap();
    let applied = r.iter().find(|r| r.action == "set_policy").unwrap();
    assert_eq!(
        (applied.channel_id.as_str(), applied.status.as_str()),
        ("103x1x0", "applied")
    );
    assert_eq!(exec.policies(&folder).await, converged());
    // Going back to a policy the channel had before is a new change with a new executor key
    // (the executor would otherwise replay its first answer and change nothing).
    assert_ne!(applied.idempotency_key, key_before);
    assert_eq!(
        applied.idempotency_key,
        action_key(hub, 1, &HUB_FEES).unwrap()
    );
    let rows = store::deferrals(&mut app.db.pool().acquire().await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        (rows[0].status.as_str(), rows[0].action_id.as_deref()),
        ("applied", Some(applied.action_id.as_str()))
    );
    exec.stop().await;
}

fn fake_channel(chan_id: u64, fee_rate_ppm: u32) -> Observed {
    Observed {
        chan_id,
        remote_pubkey: "02aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .into(),
        local_balance_msat: 500_000,
        remote_balance_msat: 500_000,
        active: true,
        local_policy: Fees {
            fee_rate_ppm,
            ..DEFAULT_FEES
        },
    }
}

const FIXED_POLICY: &str = r#"version = 1
[fees.default]
strategy = "fixed"
base_fee_msat = 2000
fee_ppm = 250
min_htlc_msat = 1000
max_htlc_msat = 50000000
time_lock_delta = 40
"#;

/// The executor acted but the answer was lost: the action stays pending and the next run
/// re-drives it with the same key; the executor replays, the action finishes once, with one
/// receipt.
#[tokio::test]
async fn an_apply_interrupted_after_the_executor_acted_finishes_on_the_next_run_with_the_same_key()
{
    let folder = Folder::new();
    let policy = folder.write("policy.toml", FIXED_POLICY);
    let fake = Fake::new(vec![fake_channel(scid(1, 1, 0), 1)]);
    fake.set_answer(Answer::ApplyThenUnavailable);
    let clock = ManualClock::new(T0);
    let app = folder
        .ops(
            &[flag("policy-file", policy.display())],
            &clock,
            Some(fake.dyn_channels()),
        )
        .await;
    let r = app.ops.apply(false).await.unwrap();
    assert_eq!(r[0].status, "failed");
    assert!(r[0].reason.contains("EXECUTOR_UNAVAILABLE"), "{:?}", r[0]);
    let rows = store::all_actions(&mut app.db.pool().acquire().await.unwrap())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "pending");

    let r = app.ops.apply(false).await.unwrap();
    assert_eq!(r.len(), 1, "re-driven, then nothing left to plan: {r:?}");
    assert_eq!(r[0].status, "applied");
    assert_eq!(r[0].idempotency_key, rows[0].idempotency_key);
    let calls = fake.with(|s| s.calls.clone());
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].0, calls[1].0, "the same key both times");
    assert_eq!(fake.with(|s| s.done.len()), 1, "the executor acted once");
    assert_eq!(
        receipt_log::size(&mut app.db.pool().acquire().await.unwrap(), "lightning-ops")
            .await
            .unwrap(),
        1
    );
    assert!(app.ops.apply(false).await.unwrap().is_empty());
}

/// A refusal finishes the action as failed (no receipt); it is retried once the rate-limit
/// window has passed, under a new key. A receipt about something else is refused too.
#[tokio::test]
async fn refusals_and_bad_executor_receipts_fail_the_action_without_a_receipt() {
    let folder = Folder::new();
    let policy = folder.write("policy.toml", FIXED_POLICY);
    let fake = Fake::new(vec![fake_channel(scid(1, 1, 0), 1)]);
    fake.set_answer(Answer::Refuse);
    let clock = ManualClock::new(T0);
    let app = folder
        .ops(
            &[flag("policy-file", policy.display())],
            &clock,
            Some(fake.dyn_channels()),
        )
        .await;
    let r = app.ops.apply(false).await.unwrap();
    assert_eq!(
        (
            r[0].status.as_str(),
            r[0].reason.starts_with("INVALID_REQUEST")
        ),
        ("failed", true),
        "{r:?}"
    );
    // Inside the window after the refusal, the retry waits.
    clock.advance(60_000);
    let r = app.ops.apply(false).await.unwrap();
    assert_eq!(r[0].status, "deferred");
    clock.advance(HOUR_MS);
    fake.set_answer(Answer::WrongReceipt);
    let r = app.ops.apply(false).await.unwrap();
    assert_eq!(r[0].status, "failed");
    assert!(r[0].reason.starts_with("BAD_EXECUTOR_RECEIPT"), "{r:?}");
    let rows = store::all_actions(&mut app.db.pool().acquire().await.unwrap())
        .await
        .unwrap();
    let statuses: Vec<(&str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.status.as_str(), r.error_code.as_deref()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("failed", Some("INVALID_REQUEST")),
            ("failed", Some("BAD_EXECUTOR_RECEIPT"))
        ]
    );
    assert_ne!(rows[0].idempotency_key, rows[1].idempotency_key);
    assert_eq!(
        receipt_log::size(&mut app.db.pool().acquire().await.unwrap(), "lightning-ops")
            .await
            .unwrap(),
        0
    );
}

#[test]
fn action_keys_are_deterministic_in_channel_generation_and_policy() {
    let a = action_key(42, 0, &DEFAULT_FEES).unwrap();
    assert_eq!(a, action_key(42, 0, &DEFAULT_FEES).unwrap());
    assert!(a.starts_with("ops-policy-42-0-"), "{a}");
    assert_ne!(a, action_key(43, 0, &DEFAULT_FEES).unwrap());
    assert_ne!(a, action_key(42, 1, &DEFAULT_FEES).unwrap());
    assert_ne!(a, action_key(42, 0, &HUB_FEES).unwrap());
    oa_store::idempotency::validate_key(&action_key(u64::MAX, u64::MAX, &HUB_FEES).unwrap())
        .unwrap();
}
