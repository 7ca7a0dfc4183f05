//! Ledger throughput, on SQLite and (when `OA_TEST_POSTGRES_URL` is set) on PostgreSQL:
//!
//! 1. batched transfers/s: batches of `MAX_BATCH_SIZE` single-phase transfers between random
//!    pairs of 1,000 accounts, then the same as two-phase (a batch of pending transfers, then a
//!    batch posting them), each batch in its own transaction;
//! 2. contended reservations/s: 64 tasks creating pending transfers against one hot account with
//!    the no-overdraft flag, each reservation in its own transaction (the fast path), funded for
//!    all but the last few hundred attempts so that the run also proves zero overdraft.
//!
//! Run in release mode: `cargo bench -p oa-ledger --bench ledger` (see BENCHMARKS.md).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use oa_ledger::{
    AccountFlags, Ledger, MAX_BATCH_SIZE, MIGRATIONS, NewAccount, NewTransfer, Outcome,
    TransferError,
};
use oa_money::Msat;
use oa_store::{Backend, Db, DbOptions, testing::TestDb};

const LEDGER: u32 = 1;
const T0: u64 = 1_700_000_000_000;
/// Accounts the batched transfers spread over.
const ACCOUNTS: usize = 1_000;
/// Batches per batched run.
const BATCHES: usize = 10;
/// Concurrent tasks in the contended run (the number).
const TASKS: u64 = 64;
/// Attempts beyond the hot account's funding: these must all be refused.
const OVERSHOOT: u64 = 500;
const RESERVATION_MSAT: u64 = 1_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator, so every run moves the same money.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

fn msat(v: u64) -> Msat {
    Msat::new(v).expect("bench amount within supply")
}

fn rate(n: u64, elapsed: Duration) -> u64 {
    let micros = elapsed.as_micros().max(1);
    u64::try_from(u128::from(n) * 1_000_000 / micros).unwrap_or(u64::MAX)
}

async fn batched(ledger: &Ledger, backend: &str) {
    let accounts: Vec<NewAccount> = (0..ACCOUNTS)
        .map(|i| NewAccount::new(format!("acct-{i}"), LEDGER, 1))
        .collect();
    let created = ledger
        .create_accounts(&accounts, T0)
        .await
        .expect("accounts");
    assert!(created.iter().all(Result::is_ok));
    let mut rng = Lcg(42);
    let mut pair = || {
        let d = rng.next() as usize % ACCOUNTS;
        let c = (d + 1 + rng.next() as usize % (ACCOUNTS - 1)) % ACCOUNTS;
        (
            format!("acct-{d}"),
            format!("acct-{c}"),
            1 + rng.next() % 1_000,
        )
    };
    let batches: Vec<Vec<NewTransfer>> = (0..BATCHES)
        .map(|b| {
            (0..MAX_BATCH_SIZE)
                .map(|i| {
                    let (d, c, amount) = pair();
                    NewTransfer::single(format!("s-{b}-{i}"), d, c, msat(amount), LEDGER, 1)
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    for batch in &batches {
        let results = ledger.create_transfers(batch, T0).await.expect("batch");
        assert!(results.iter().all(|r| matches!(r, Ok(Outcome::Created(_)))));
    }
    let elapsed = start.elapsed();
    let n = (BATCHES * MAX_BATCH_SIZE) as u64;
    println!(
        "| {backend} | batched single-phase transfers | {n} in {BATCHES} batches of {MAX_BATCH_SIZE} | {:.2} s | {} transfers/s |",
        elapsed.as_secs_f64(),
        rate(n, elapsed)
    );

    let half = BATCHES / 2;
    let pendings: Vec<Vec<NewTransfer>> = (0..half)
        .map(|b| {
            (0..MAX_BATCH_SIZE)
                .map(|i| {
                    let (d, c, amount) = pair();
                    NewTransfer::pending(
                        format!("p-{b}-{i}"),
                        d,
                        c,
                        msat(amount),
                        LEDGER,
                        2,
                        Some(60_000),
                    )
                })
                .collect()
        })
        .collect();
    let posts: Vec<Vec<NewTransfer>> = (0..half)
        .map(|b| {
            (0..MAX_BATCH_SIZE)
                .map(|i| NewTransfer::post(format!("q-{b}-{i}"), format!("p-{b}-{i}"), None))
                .collect()
        })
        .collect();
    let start = Instant::now();
    for batch in pendings.iter().chain(&posts) {
        let results = ledger.create_transfers(batch, T0 + 1).await.expect("batch");
        assert!(results.iter().all(|r| matches!(r, Ok(Outcome::Created(_)))));
    }
    let elapsed = start.elapsed();
    let n = (2 * half * MAX_BATCH_SIZE) as u64;
    println!(
        "| {backend} | batched two-phase (pending batch, then post batch) | {n} transfers in {} batches | {:.2} s | {} transfers/s |",
        2 * half,
        elapsed.as_secs_f64(),
        rate(n, elapsed)
    );
    let violations = ledger.check_invariants().await.expect("check");
    assert!(violations.is_empty(), "{violations:?}");
}

async fn contended(ledger: &Ledger, backend: &str, attempts: u64) {
    let capacity = attempts - OVERSHOOT;
    let setup = [
        NewAccount::new("bank", LEDGER, 1),
        NewAccount::new("hot", LEDGER, 2).with_flags(AccountFlags::no_overdraft()),
        NewAccount::new("escrow", LEDGER, 3),
    ];
    let created = ledger.create_accounts(&setup, T0).await.expect("accounts");
    assert!(created.iter().all(Result::is_ok));
    let fund = NewTransfer::single(
        "fund",
        "bank",
        "hot",
        msat(capacity * RESERVATION_MSAT),
        LEDGER,
        1,
    );
    assert!(
        ledger
            .create_transfer(&fund, T0)
            .await
            .expect("fund")
            .is_ok()
    );

    let next = Arc::new(AtomicU64::new(0));
    let reserved = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (ledger, next, reserved, refused) = (
            ledger.clone(),
            next.clone(),
            reserved.clone(),
            refused.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= attempts {
                    break;
                }
                let t = NewTransfer::pending(
                    format!("r-{i}"),
                    "hot",
                    "escrow",
                    msat(RESERVATION_MSAT),
                    LEDGER,
                    7,
                    Some(600_000),
                );
                match ledger
                    .create_transfer(&t, T0 + 1)
                    .await
                    .expect("ledger call")
                {
                    Ok(Outcome::Created(_)) => reserved.fetch_add(1, Ordering::Relaxed),
                    Err(TransferError::ExceedsCredits) => refused.fetch_add(1, Ordering::Relaxed),
                    other => panic!("unexpected {other:?}"),
                };
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = start.elapsed();
    let reserved = reserved.load(Ordering::Relaxed);
    let refused = refused.load(Ordering::Relaxed);
    let hot = ledger.get_account("hot").await.expect("get").expect("hot");
    let b = hot.balances;
    let overdraft =
        (b.debits_pending_msat + b.debits_posted_msat).saturating_sub(b.credits_posted_msat);
    assert_eq!(
        reserved, capacity,
        "every funded reservation succeeds, no more"
    );
    assert_eq!(refused, OVERSHOOT);
    assert_eq!(overdraft, 0);
    let violations = ledger.check_invariants().await.expect("check");
    assert!(violations.is_empty(), "{violations:?}");
    println!(
        "| {backend} | contended reservations, {TASKS} tasks, one hot no-overdraft account | {reserved} reserved + {refused} refused | {:.2} s | {} reservations/s ({} attempts/s), overdraft {overdraft} msat |",
        elapsed.as_secs_f64(),
        rate(reserved, elapsed),
        rate(reserved + refused, elapsed)
    );
}

async fn run(db: TestDb, backend: &str, attempts: u64) {
    let ledger = Ledger::new(db.db.clone());
    if std::env::var("OA_BENCH_SKIP_BATCHED").is_err() {
        batched(&ledger, backend).await;
    }
    // PostgreSQL: the pool the 64 tasks share (default 16, DbOptions' default).
    let pool = env_u64(
        "OA_BENCH_PG_POOL",
        u64::from(DbOptions::default().max_connections),
    );
    let contended_ledger = match db.db.backend() {
        Backend::Postgres => {
            let opts = DbOptions {
                max_connections: u32::try_from(pool).expect("pool size"),
                ..DbOptions::default()
            };
            Ledger::new(Db::connect(&db.url, &opts).await.expect("connect"))
        }
        Backend::Sqlite => ledger.clone(),
    };
    contended(&contended_ledger, backend, attempts).await;
    if db.db.backend() == Backend::Postgres {
        contended_ledger.db().close().await;
    }
    db.cleanup().await.expect("cleanup");
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!("| backend | workload | size | time | rate |");
        println!("|---|---|---|---|---|");
        let sqlite = TestDb::sqlite(&[&MIGRATIONS]).await.expect("sqlite");
        run(
            sqlite,
            "SQLite",
            env_u64("OA_BENCH_SQLITE_RESERVATIONS", 20_000),
        )
        .await;
        match TestDb::postgres(&[&MIGRATIONS]).await.expect("postgres") {
            Some(pg) => {
                run(
                    pg,
                    "PostgreSQL",
                    env_u64("OA_BENCH_PG_RESERVATIONS", 10_000),
                )
                .await
            }
            None => eprintln!("OA_TEST_POSTGRES_URL is not set: PostgreSQL skipped"),
        }
    });
}
