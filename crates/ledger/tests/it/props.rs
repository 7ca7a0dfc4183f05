//! Property tests: random sequences of transfers, posts, voids, retries, linked chains and expiry
//! sweeps keep conservation and every limit after each step; the fast path and the batch path
//! give identical results and balances; and replaying any prefix of the created transfers
//! changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use oa_ledger::{
    AccountFlags, Balances, Ledger, MIGRATIONS, NewAccount, NewTransfer, Outcome, TransferResult,
    create_transfers, create_transfers_batched,
};
use oa_store::testing::{TestDb, all_backends};
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};

use crate::support::{L, backend_name, msat};

/// Cases per backend: enough to find ordering bugs, small enough to keep the suite fast.
const SQLITE_CASES: u32 = 32;
const POSTGRES_CASES: u32 = 8;
const MAX_STEPS: usize = 30;

/// Account roles: an unlimited bank, two no-overdraft accounts (one with history), one account
/// whose credits may not exceed its debits, and an unlimited sink.
const NAMES: [&str; 5] = ["bank", "a", "b", "c", "d"];

/// Each run gets its own clock range, lower than every earlier run's, so that an expiry sweep of
/// one run (sweeps are global) never reaches the pending transfers of another.
static RUN: AtomicU64 = AtomicU64::new(0);
/// What the generated sequences actually exercised, so the test fails if they go degenerate.
static CREATED: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static EXPIRED: AtomicU64 = AtomicU64::new(0);
const CLOCK_TOP_MS: u64 = 4_000_000_000_000_000;
const RUN_SPAN_MS: u64 = 1_000_000;

#[derive(Clone, Debug)]
enum Op {
    Single {
        dr: usize,
        cr: usize,
        amount: u64,
    },
    Pending {
        dr: usize,
        cr: usize,
        amount: u64,
        timeout: Option<u64>,
    },
    Post {
        target: usize,
        amount: Option<u64>,
    },
    Void {
        target: usize,
    },
    Advance {
        ms: u64,
        limit: usize,
    },
    Retry {
        target: usize,
    },
    Conflict {
        target: usize,
    },
    Chain {
        ops: Vec<Op>,
        closed: bool,
    },
}

fn leaf() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..5usize, 0..5usize, 1..400u64)
            .prop_map(|(dr, cr, amount)| Op::Single { dr, cr, amount }),
        3 => (0..5usize, 0..5usize, 1..400u64, proptest::option::of(1..50u64))
            .prop_map(|(dr, cr, amount, timeout)| Op::Pending { dr, cr, amount, timeout }),
        2 => (any::<usize>(), proptest::option::of(1..400u64))
            .prop_map(|(target, amount)| Op::Post { target, amount }),
        1 => any::<usize>().prop_map(|target| Op::Void { target }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => leaf(),
        2 => (1..40u64, 1..4usize).prop_map(|(ms, limit)| Op::Advance { ms, limit }),
        1 => any::<usize>().prop_map(|target| Op::Retry { target }),
        1 => any::<usize>().prop_map(|target| Op::Conflict { target }),
        1 => (proptest::collection::vec(leaf(), 2..4), proptest::bool::weighted(0.85))
            .prop_map(|(ops, closed)| Op::Chain { ops, closed }),
    ]
}

enum Step {
    Submit(Vec<NewTransfer>),
    Advance { ms: u64, limit: usize },
}

/// Turns ops into requests under `prefix`, the same way for every run.
fn build(ops: &[Op], prefix: &str) -> Vec<Step> {
    let account = |i: usize| format!("{prefix}{}", NAMES[i]);
    let mut pending: Vec<String> = Vec::new();
    let mut standalone: Vec<NewTransfer> = Vec::new();
    let leaf = |op: &Op, id: String, pending: &mut Vec<String>| -> Option<NewTransfer> {
        Some(match op {
            Op::Single { dr, cr, amount } => {
                NewTransfer::single(id, account(*dr), account(*cr), msat(*amount), L, 1)
            }
            Op::Pending {
                dr,
                cr,
                amount,
                timeout,
            } => {
                pending.push(id.clone());
                NewTransfer::pending(
                    id,
                    account(*dr),
                    account(*cr),
                    msat(*amount),
                    L,
                    2,
                    *timeout,
                )
            }
            Op::Post { target, amount } => {
                let p = pick(pending, *target, prefix);
                NewTransfer::post(id, p, amount.map(msat))
            }
            Op::Void { target } => NewTransfer::void(id, pick(pending, *target, prefix)),
            _ => return None,
        })
    };
    let mut steps = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let id = format!("{prefix}t{i}");
        match op {
            Op::Advance { ms, limit } => steps.push(Step::Advance {
                ms: *ms,
                limit: *limit,
            }),
            Op::Retry { target } | Op::Conflict { target } => {
                if standalone.is_empty() {
                    continue;
                }
                let mut t = standalone[*target % standalone.len()].clone();
                if matches!(op, Op::Conflict { .. }) {
                    t.user_data_64 += 1;
                }
                steps.push(Step::Submit(vec![t]));
            }
            Op::Chain { ops, closed } => {
                let mut chain: Vec<NewTransfer> = ops
                    .iter()
                    .enumerate()
                    .filter_map(|(k, op)| leaf(op, format!("{id}.{k}"), &mut pending))
                    .map(NewTransfer::linked)
                    .collect();
                if *closed && let Some(last) = chain.last_mut() {
                    last.linked = false;
                }
                steps.push(Step::Submit(chain));
            }
            leaf_op => {
                if let Some(t) = leaf(leaf_op, id, &mut pending) {
                    standalone.push(t.clone());
                    steps.push(Step::Submit(vec![t]));
                }
            }
        }
    }
    steps
}

fn pick(pending: &[String], target: usize, prefix: &str) -> String {
    if pending.is_empty() {
        format!("{prefix}missing")
    } else {
        pending[target % pending.len()].clone()
    }
}

/// A result with ids made independent of the run's prefix.
fn normalize(r: &TransferResult, prefix: &str) -> String {
    match r {
        Ok(o) => {
            let t = o.get();
            format!(
                "{} {} {:?} {} {:?} {:?} {}/{}",
                if o.is_created() { "created" } else { "exists" },
                t.id.trim_start_matches(prefix),
                t.kind,
                t.amount_msat.as_u64(),
                t.pending_state,
                t.pending_id
                    .as_deref()
                    .map(|p| p.trim_start_matches(prefix)),
                t.debit_account_version,
                t.credit_account_version
            )
        }
        Err(e) => e.code().to_owned(),
    }
}

struct Run {
    prefix: String,
    log: Vec<String>,
    accounts: Vec<(Balances, u64)>,
    /// Submitted batches whose every transfer was created or existed.
    succeeded: Vec<Vec<NewTransfer>>,
    now_ms: u64,
}

async fn setup(ledger: &Ledger, prefix: &str, now_ms: u64) -> Result<(), TestCaseError> {
    let flags = [
        AccountFlags::default(),
        AccountFlags::no_overdraft().with_history(),
        AccountFlags::no_overdraft(),
        AccountFlags {
            credits_must_not_exceed_debits: true,
            ..AccountFlags::default()
        },
        AccountFlags::default(),
    ];
    let accounts: Vec<NewAccount> = NAMES
        .iter()
        .zip(flags)
        .map(|(n, f)| NewAccount::new(format!("{prefix}{n}"), L, 1).with_flags(f))
        .collect();
    let r = ledger
        .create_accounts(&accounts, now_ms)
        .await
        .map_err(fail)?;
    prop_assert!(r.iter().all(Result::is_ok), "{r:?}");
    let funding = [
        NewTransfer::single(
            format!("{prefix}fund-a"),
            format!("{prefix}bank"),
            format!("{prefix}a"),
            msat(1_000),
            L,
            1,
        ),
        NewTransfer::single(
            format!("{prefix}fund-b"),
            format!("{prefix}bank"),
            format!("{prefix}b"),
            msat(500),
            L,
            1,
        ),
        NewTransfer::single(
            format!("{prefix}fund-c"),
            format!("{prefix}c"),
            format!("{prefix}d"),
            msat(300),
            L,
            1,
        ),
    ];
    let r = ledger
        .create_transfers(&funding, now_ms)
        .await
        .map_err(fail)?;
    prop_assert!(r.iter().all(Result::is_ok), "{r:?}");
    Ok(())
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

async fn run(ledger: &Ledger, ops: &[Op], tag: char, batched: bool) -> Result<Run, TestCaseError> {
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("r{n}{tag}-");
    let mut now_ms = CLOCK_TOP_MS - n * RUN_SPAN_MS;
    setup(ledger, &prefix, now_ms).await?;
    let mut log = Vec::new();
    let mut succeeded = Vec::new();
    for step in build(ops, &prefix) {
        match step {
            Step::Submit(batch) => {
                let mut tx = ledger.db().begin().await.map_err(fail)?;
                let results = if batched {
                    create_transfers_batched(&mut tx, &batch, now_ms).await
                } else {
                    create_transfers(&mut tx, &batch, now_ms).await
                }
                .map_err(fail)?;
                tx.commit().await.map_err(fail)?;
                for r in &results {
                    let counter = if r.as_ref().is_ok_and(Outcome::is_created) {
                        &CREATED
                    } else {
                        &REFUSED
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                log.extend(results.iter().map(|r| normalize(r, &prefix)));
                if results.iter().all(Result::is_ok) {
                    succeeded.push(batch);
                }
            }
            Step::Advance { ms, limit } => {
                now_ms += ms;
                let expired = ledger.expire_pending(now_ms, limit).await.map_err(fail)?;
                for t in expired {
                    EXPIRED.fetch_add(1, Ordering::Relaxed);
                    prop_assert!(
                        t.id.starts_with(&prefix),
                        "a sweep reached another run: {}",
                        t.id
                    );
                    log.push(format!("expired {}", t.id.trim_start_matches(&prefix)));
                }
            }
        }
        let violations = ledger.check_invariants().await.map_err(fail)?;
        prop_assert!(violations.is_empty(), "after a step: {violations:?}");
    }
    let mut accounts = Vec::new();
    for name in NAMES {
        let a = ledger
            .get_account(&format!("{prefix}{name}"))
            .await
            .map_err(fail)?
            .ok_or_else(|| fail("account vanished"))?;
        prop_assert!(
            a.balances.within_limits(a.flags),
            "{name}: {:?}",
            a.balances
        );
        accounts.push((a.balances, a.version));
    }
    Ok(Run {
        prefix,
        log,
        accounts,
        succeeded,
        now_ms,
    })
}

/// Everything a replay must leave as it was.
async fn snapshot(ledger: &Ledger, prefix: &str) -> Result<(Vec<String>, i64), TestCaseError> {
    let mut conn = ledger.db().pool().acquire().await.map_err(fail)?;
    let accounts = sqlx::query_scalar::<sqlx::Any, String>(
        "SELECT id || ':' || CAST(debits_pending AS TEXT) || ':' || CAST(debits_posted AS TEXT) \
         || ':' || CAST(credits_pending AS TEXT) || ':' || CAST(credits_posted AS TEXT) \
         || ':' || CAST(version AS TEXT) FROM ledger_accounts WHERE id LIKE $1 ORDER BY id",
    )
    .bind(format!("{prefix}%"))
    .fetch_all(&mut *conn)
    .await
    .map_err(fail)?;
    let rows = sqlx::query_scalar::<sqlx::Any, i64>(
        "SELECT (SELECT COUNT(*) FROM ledger_transfers) + (SELECT COUNT(*) FROM ledger_account_history)",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(fail)?;
    Ok((accounts, rows))
}

async fn replay(ledger: &Ledger, run: &Run, percent: usize) -> Result<(), TestCaseError> {
    let k = run.succeeded.len() * percent / 100;
    let prefix_batches = &run.succeeded[..k];
    let before = snapshot(ledger, &run.prefix).await?;
    let later = run.now_ms + 1;
    // One call per original batch (lone transfers take the fast path)...
    for batch in prefix_batches {
        let r = ledger.create_transfers(batch, later).await.map_err(fail)?;
        prop_assert!(
            r.iter().all(|r| matches!(r, Ok(Outcome::Exists(_)))),
            "replay: {r:?}"
        );
    }
    // ...and the whole prefix again as one batch.
    let all: Vec<NewTransfer> = prefix_batches.iter().flatten().cloned().collect();
    if !all.is_empty() {
        let mut tx = ledger.db().begin().await.map_err(fail)?;
        let r = create_transfers_batched(&mut tx, &all, later)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        prop_assert!(
            r.iter().all(|r| matches!(r, Ok(Outcome::Exists(_)))),
            "batched replay: {r:?}"
        );
    }
    prop_assert_eq!(
        snapshot(ledger, &run.prefix).await?,
        before,
        "a replay changed state"
    );
    Ok(())
}

async fn case(ledger: &Ledger, ops: &[Op], percent: usize) -> Result<(), TestCaseError> {
    let fast = run(ledger, ops, 'f', false).await?;
    let batched = run(ledger, ops, 'b', true).await?;
    prop_assert_eq!(&fast.log, &batched.log, "fast and batch paths disagree");
    prop_assert_eq!(
        &fast.accounts,
        &batched.accounts,
        "fast and batch paths end with other balances"
    );
    replay(ledger, &fast, percent).await?;
    let violations = ledger.audit().await.map_err(fail)?;
    prop_assert!(violations.is_empty(), "audit: {violations:?}");
    Ok(())
}

#[test]
fn random_operation_sequences_keep_conservation_limits_and_replay_safety() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dbs: Vec<TestDb> = rt
        .block_on(all_backends(&[&MIGRATIONS]))
        .expect("test database");
    for t in dbs {
        let cases = match t.db.backend() {
            oa_store::Backend::Sqlite => SQLITE_CASES,
            oa_store::Backend::Postgres => POSTGRES_CASES,
        };
        let ledger = Ledger::new(t.db.clone());
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = (proptest::collection::vec(op(), 1..MAX_STEPS), 0..=100usize);
        let result = runner.run(&strategy, |(ops, percent)| {
            rt.block_on(case(&ledger, &ops, percent))
        });
        if let Err(e) = result {
            panic!("{}: {e}", backend_name(&t));
        }
        rt.block_on(t.cleanup()).expect("cleanup");
    }
    for (what, counter) in [
        ("created", &CREATED),
        ("refused", &REFUSED),
        ("expired", &EXPIRED),
    ] {
        assert!(
            counter.load(Ordering::Relaxed) > 0,
            "no transfer was ever {what}"
        );
    }
}
