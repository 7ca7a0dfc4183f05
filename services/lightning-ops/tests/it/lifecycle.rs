//! Channel opens and closes from the policy's intents, against a real wallet-executor on the
//! simulated network; opens and rebalances in doubt, against a scripted one.

use lightning_ops::{
    lifecycle::{CLOSE_RECEIPT_SCHEMA, EXECUTOR_CHANNEL_ACTION_SCHEMA, OPEN_RECEIPT_SCHEMA},
    plan::{Fees, Observed},
    store,
};
use oa_proto::wallet;
use oa_service::ManualClock;
use wallet_executor::node::sim::FUNDING_CONFIRMATIONS;

use crate::{
    fake::{Fake, scid},
    harness::*,
};

fn policy(dave: &str, extra: &str) -> String {
    format!(
        r#"version = 1
[fees.default]
strategy = "fixed"
base_fee_msat = 2000
fee_ppm = 250
min_htlc_msat = 1000
max_htlc_msat = 50000000
time_lock_delta = 40

[[intents.open]]
peer = "{dave}"
capacity_sat = 1000000
{extra}"#
    )
}

#[tokio::test]
async fn open_and_close_intents_are_executed_once_with_linked_receipts_and_not_proposed_again() {
    let folder = Folder::new();
    let exec = Executor::start(&folder).await;
    let dave = exec.pubkey("dave");
    let policy_file = folder.write(
        "policy.toml",
        &policy(
            &dave,
            "[[intents.close]]\nchannel_id = \"102x1x0\"\nforce = true\n",
        ),
    );
    let clock = ManualClock::new(T0);
    let app = folder
        .ops(
            &[flag("policy-file", policy_file.display()), exec.url_flag()],
            &clock,
            None,
        )
        .await;
    let c102 = chan_id(&exec, &folder, "102x1x0").await;

    // The channel to be closed gets no policy change; the open and the close are executed.
    let first = app.ops.apply(false).await.unwrap();
    assert_eq!(
        statuses(&first),
        triples(&[
            ("set_policy", "100x1x0", "applied"),
            ("flag", "100x1x0", "skipped"),
            ("flag", "102x1x0", "skipped"),
            ("set_policy", "103x1x0", "applied"),
            ("open", "", "applied"),
            ("close", "102x1x0", "applied"),
        ])
    );
    let (open, close) = (&first[4], &first[5]);
    assert_eq!(
        open.description,
        format!("open a 1000000 sat channel to {dave}")
    );
    assert!(
        open.idempotency_key
            .starts_with(&format!("ops-open-{dave}-0-"))
    );
    assert!(
        close
            .idempotency_key
            .starts_with(&format!("ops-close-{c102}-0-"))
    );
    // At the node: a channel to dave waits for its funding confirmations; 102x1x0 is closing.
    let pending = exec.sim.pending_channels();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (
            pending[0].remote_pubkey.as_str(),
            pending[0].capacity.as_u64()
        ),
        (dave.as_str(), 1_000_000_000)
    );
    assert!(open.reason.contains(&pending[0].funding_txid), "{open:?}");
    assert!(
        exec.channels(&folder)
            .await
            .iter()
            .all(|c| c.chan_id != c102),
        "102x1x0 is closing"
    );

    // Receipts: ours for the open and the close link the executor's channel-action receipts.
    let theirs = executor_receipts(&exec, &folder).await;
    let ours = ops_receipts(&app.db).await;
    let ops_open = only(&ours, OPEN_RECEIPT_SCHEMA);
    let ops_close = only(&ours, CLOSE_RECEIPT_SCHEMA);
    for (r, result) in [(ops_open, open), (ops_close, close)] {
        assert_eq!(r.hash.to_string(), result.receipt_hash);
        let linked = theirs.iter().find(|t| r.links == [t.hash]).unwrap();
        assert_eq!(linked.schema, EXECUTOR_CHANNEL_ACTION_SCHEMA);
        assert_eq!(linked.hash.to_string(), result.executor_receipt_hash);
        assert_eq!(linked.body["action"], r.body["action"]);
    }
    assert_eq!(ops_open.body["remote_pubkey"], dave.as_str());
    assert_eq!(ops_open.body["local_funding_msat"], "1000000000");
    assert_eq!(
        ops_open.body["funding_txid"],
        pending[0].funding_txid.as_str()
    );
    assert_eq!(ops_close.body["chan_id"], c102.to_string().as_str());
    assert_eq!(ops_close.body["force"], true);
    audit(&theirs, &ours);

    // A second apply proposes neither again: the open is under way (lightning-ops's own record:
    // the executor lists no pending channels) and the channel is closing.
    let second = app.ops.apply(false).await.unwrap();
    assert_eq!(
        statuses(&second),
        triples(&[("flag", "100x1x0", "skipped")])
    );
    let reader = folder.token(&["ops:read"]);
    let (_, plan) = call(
        &app.router,
        "POST",
        "/v1/ops/plan",
        Some(&reader),
        Some("{}"),
    )
    .await;
    assert_eq!(plan["actions"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(count(&app.db, "ops_actions").await, 4);
    assert_eq!(exec.sim.pending_channels().len(), 1, "one open, not two");

    // Blocks: the channel to dave is open and listed, the close confirmed (a force close).
    exec.sim.mine_blocks(FUNDING_CONFIRMATIONS).unwrap();
    let dave_chan = exec
        .channels(&folder)
        .await
        .into_iter()
        .find(|c| c.remote_pubkey == dave)
        .expect("the channel to dave is listed");
    let closed = exec
        .client(&folder)
        .await
        .list_closed_channels(wallet::ListClosedChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels;
    assert_eq!(
        closed
            .iter()
            .map(|c| (c.chan_id, c.close_type.as_str()))
            .collect::<Vec<_>>(),
        [(c102, "LOCAL_FORCE")]
    );
    // What the plan knows is under way: 102x1x0 closed (by the executor's list and our record),
    // no open (the channel to dave was observed since).
    app.ops.observe().await.unwrap();
    let known = app
        .ops
        .known(app.ops.policy.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (
            known.closing.into_iter().collect::<Vec<_>>(),
            known.opening.len()
        ),
        (vec![c102], 0)
    );
    // The new channel gets the policy (its first change is never deferred); nothing else.
    let third = app.ops.apply(false).await.unwrap();
    let dave_id = lightning_ops::plan::channel_id(dave_chan.chan_id);
    assert_eq!(
        statuses(&third),
        triples(&[
            ("flag", "100x1x0", "skipped"),
            ("set_policy", &dave_id, "applied"),
            ("flag", &dave_id, "skipped"),
        ])
    );
    assert_eq!(
        app.ops.apply(false).await.unwrap().len(),
        2,
        "only the two flags"
    );
    audit(
        &executor_receipts(&exec, &folder).await,
        &ops_receipts(&app.db).await,
    );
    exec.stop().await;
}

/// The node refuses an open (the peer is offline): the action fails with the node's reason and
/// no receipt; it is tried again after the interval, under a new key, and succeeds.
#[tokio::test]
async fn a_refused_open_is_retried_after_the_interval_under_a_new_key() {
    let folder = Folder::new();
    let exec = Executor::start(&folder).await;
    let dave = exec.pubkey("dave");
    let policy_file = folder.write("policy.toml", &policy(&dave, ""));
    let clock = ManualClock::new(T0);
    let app = folder
        .ops(
            &[flag("policy-file", policy_file.display()), exec.url_flag()],
            &clock,
            None,
        )
        .await;
    exec.sim.set_online("dave", false).unwrap();
    let open =
        |r: &[oa_proto::ops::ActionResult]| r.iter().find(|r| r.action == "open").cloned().unwrap();
    let first = open(&app.ops.apply(false).await.unwrap());
    assert_eq!(first.status, "failed");
    assert!(
        first.reason.starts_with("NODE_REFUSED") && first.reason.contains("offline"),
        "{first:?}"
    );
    clock.advance(60_000);
    let waiting = open(&app.ops.apply(false).await.unwrap());
    assert_eq!(
        (waiting.status.as_str(), waiting.not_before_ms),
        ("deferred", T0 + HOUR_MS)
    );
    exec.sim.set_online("dave", true).unwrap();
    clock.set(T0 + HOUR_MS);
    let done = open(&app.ops.apply(false).await.unwrap());
    assert_eq!(done.status, "applied", "{done:?}");
    assert!(
        done.idempotency_key
            .starts_with(&format!("ops-open-{dave}-1-"))
    );
    let rows = store::all_actions(&mut app.db.pool().acquire().await.unwrap())
        .await
        .unwrap();
    let opens: Vec<(&str, Option<&str>, bool)> = rows
        .iter()
        .filter(|r| r.kind == "open")
        .map(|r| {
            (
                r.status.as_str(),
                r.error_code.as_deref(),
                r.receipt_hash.is_some(),
            )
        })
        .collect();
    assert_eq!(
        opens,
        [
            ("failed", Some("NODE_REFUSED"), false),
            ("applied", None, true)
        ]
    );
    let theirs = executor_receipts(&exec, &folder).await;
    assert_eq!(
        theirs
            .iter()
            .filter(|r| r.schema == EXECUTOR_CHANNEL_ACTION_SCHEMA)
            .count(),
        1,
        "the refused open issued no receipt"
    );
    assert_eq!(exec.sim.pending_channels().len(), 1);
    exec.stop().await;
}

const IN_DOUBT_PEER: &str = "02bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// The executor stopped while asking the node for an open and a rebalance, so it answers
/// `IDEMPOTENCY_IN_PROGRESS` and will not ask again. lightning-ops keeps both actions pending
/// (the rebalance's fee limit held against the budget), proposes neither again, and asks with
/// the same keys on every run; once an operator settled them at the executor, they finish once.
#[tokio::test]
async fn an_open_or_rebalance_in_doubt_stays_pending_blocks_new_ones_and_finishes_once_settled() {
    let folder = Folder::new();
    let policy_file = folder.write(
        "policy.toml",
        &format!(
            r#"version = 1
[[channels]]
channel_id = "1x1x0"
local_balance_min_pct = 40
local_balance_max_pct = 60

[rebalance]
max_fee_ppm = 300
budget_msat_per_day = 1000

[[intents.open]]
peer = "{IN_DOUBT_PEER}"
capacity_sat = 100000
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
    let (a, b) = (scid(1, 1, 0), scid(2, 1, 0));
    // 1x1x0 at 10% of its band 40-60%: 400_000 from 2x1x0 (excess 800_000), fee limit
    // ceil(400_000 * 300 / 1e6) = 120.
    let fake = Fake::new(vec![
        channel(a, 1_000_000, 100_000),
        channel(b, 2_000_000, 1_800_000),
    ]);
    fake.with(|s| {
        s.in_doubt = true;
        s.rebalance_fee_msat = 100;
    });
    let clock = ManualClock::new(T0);
    let app = folder
        .ops(
            &[flag("policy-file", policy_file.display())],
            &clock,
            Some(fake.dyn_channels()),
        )
        .await;
    let first = app.ops.apply(false).await.unwrap();
    assert_eq!(
        statuses(&first),
        triples(&[("rebalance", "1x1x0", "pending"), ("open", "", "pending")])
    );
    for r in &first {
        assert!(
            r.reason.starts_with(
                "IDEMPOTENCY_IN_PROGRESS: the executor does not know whether the node"
            ),
            "{r:?}"
        );
        assert!(r.reason.contains("section 6"), "{r:?}");
    }
    let (day_start, day_end) = lightning_ops::rebalance::budget_day(T0);
    let held = |app: &lightning_ops::App| {
        let db = app.db.clone();
        async move {
            store::rebalance_spent(&mut db.pool().acquire().await.unwrap(), day_start, day_end)
                .await
                .unwrap()
                .as_u64()
        }
    };
    assert_eq!(
        held(&app).await,
        120,
        "the fee limit is held while in doubt"
    );

    // Every run asks again with the same keys, and plans nothing new for them.
    clock.advance(60_000);
    let second = app.ops.apply(false).await.unwrap();
    assert_eq!(
        statuses(&second),
        triples(&[("rebalance", "1x1x0", "pending"), ("open", "", "pending")])
    );
    assert!(app.ops.plan_now().await.unwrap().is_empty());
    let calls = fake.with(|s| s.channel_calls.clone());
    assert_eq!(calls.len(), 4);
    assert_eq!((&calls[0], &calls[1]), (&calls[2], &calls[3]));
    assert_eq!(count(&app.db, "ops_actions").await, 2);

    // Settled at the executor ("nothing happened": its key released): the next run finishes
    // both, once, with receipts; the rebalance's fee (100 msat) is charged to 1x1x0.
    fake.with(|s| s.in_doubt = false);
    let third = app.ops.apply(false).await.unwrap();
    assert_eq!(
        statuses(&third),
        triples(&[("rebalance", "1x1x0", "applied"), ("open", "", "applied")])
    );
    assert_eq!(
        fake.with(|s| s.channel_calls.clone())[4..],
        calls[..2],
        "the same keys once more"
    );
    assert_eq!(held(&app).await, 100);
    let mut conn = app.db.pool().acquire().await.unwrap();
    assert_eq!(
        store::rebalance_costs(&mut conn, 0, u64::MAX >> 1)
            .await
            .unwrap(),
        vec![(a, oa_money::Msat::new(100).unwrap())]
    );
    drop(conn);
    assert_eq!(ops_receipts(&app.db).await.len(), 2);
    // Nothing left: 1x1x0 is at 50%, and the open is under way.
    assert!(app.ops.apply(false).await.unwrap().is_empty());
    assert_eq!(fake.with(|s| s.channel_calls.len()), 6);
}

/// A rebalance the node leaves in flight stays pending (its fee limit held), is asked about
/// again with the same key on each run, and ends once, with its cost, when the executor reports
/// its end.
#[tokio::test]
async fn a_rebalance_in_flight_stays_pending_and_finishes_on_a_later_run() {
    let folder = Folder::new();
    let policy_file = folder.write(
        "policy.toml",
        r#"version = 1
[[channels]]
channel_id = "1x1x0"
local_balance_min_pct = 40
local_balance_max_pct = 60

[rebalance]
max_fee_ppm = 300
budget_msat_per_day = 1000
"#,
    );
    let channel = |chan_id: u64, capacity: u64, local: u64| Observed {
        chan_id,
        remote_pubkey: format!("02{}", "a".repeat(64)),
        local_balance_msat: local,
        remote_balance_msat: capacity - local,
        active: true,
        local_policy: Fees::default(),
    };
    let (a, b) = (scid(1, 1, 0), scid(2, 1, 0));
    let fake = Fake::new(vec![
        channel(a, 1_000_000, 100_000),
        channel(b, 2_000_000, 1_800_000),
    ]);
    fake.with(|s| {
        s.in_flight = true;
        s.rebalance_fee_msat = 90;
    });
    let clock = ManualClock::new(T0);
    let app = folder
        .ops(
            &[flag("policy-file", policy_file.display())],
            &clock,
            Some(fake.dyn_channels()),
        )
        .await;
    for _ in 0..2 {
        let r = app.ops.apply(false).await.unwrap();
        assert_eq!(statuses(&r), triples(&[("rebalance", "1x1x0", "pending")]));
        assert!(
            r[0].reason.starts_with("IN_FLIGHT: the rebalance payment"),
            "{r:?}"
        );
        clock.advance(60_000);
    }
    let keys: Vec<String> = fake.with(|s| s.channel_calls.iter().map(|c| c.1.clone()).collect());
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);
    fake.with(|s| s.in_flight = false);
    let r = app.ops.apply(false).await.unwrap();
    assert_eq!(statuses(&r), triples(&[("rebalance", "1x1x0", "applied")]));
    assert_eq!(r[0].idempotency_key, keys[0]);
    let mut conn = app.db.pool().acquire().await.unwrap();
    assert_eq!(
        store::rebalance_costs(&mut conn, 0, u64::MAX >> 1)
            .await
            .unwrap(),
        vec![(a, oa_money::Msat::new(90).unwrap())]
    );
    drop(conn);
    assert!(app.ops.apply(false).await.unwrap().is_empty());
}
