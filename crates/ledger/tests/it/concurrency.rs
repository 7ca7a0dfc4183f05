//! Many writers reserving against one no-overdraft account: 64 tasks in this process, and two
//! separate OS processes. The total reserved never exceeds the balance and every id lands exactly
//! once, even though each id is submitted twice concurrently.
//!
//! These run on SQLite always and on PostgreSQL when `OA_TEST_POSTGRES_URL` is set (the case that
//! matters: real row locks and many connections). Without it the PostgreSQL half is skipped with
//! a note on stderr.

use std::{collections::BTreeMap, path::Path, time::Duration};

use oa_ledger::{
    AccountFlags, Ledger, MIGRATIONS, NewAccount, NewTransfer, Outcome, TransferError,
};
use oa_store::{Db, DbOptions, testing::all_backends};

use crate::support::{L, T0, assert_sound, backend_name, create_account, msat, must_create};

const AMOUNT_MSAT: u64 = 1_000;
/// Reservations the hot account can hold; fewer than the distinct ids attempted.
const CAPACITY: u64 = 100;
const TASKS: usize = 64;
const IDS_PER_TASK: usize = 4;

/// Child-process mode of `child_reserver`: set by the parent test.
const CHILD_URL_ENV: &str = "OA_LEDGER_CHILD_URL";
const CHILD_OUT_ENV: &str = "OA_LEDGER_CHILD_OUT";
const CHILD_GO_ENV: &str = "OA_LEDGER_CHILD_GO";
/// Ids each child process attempts; both children attempt all of them.
const PROCESS_IDS: usize = 160;
const CHILD_TASKS: usize = 32;
/// Upper bound on a child's run, so a hung child fails the test instead of hanging it.
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

async fn hot_account(ledger: &Ledger) {
    create_account(ledger, NewAccount::new("bank", L, 1)).await;
    create_account(
        ledger,
        NewAccount::new("hot", L, 2).with_flags(AccountFlags::no_overdraft()),
    )
    .await;
    create_account(ledger, NewAccount::new("escrow", L, 3)).await;
    must_create(
        ledger,
        NewTransfer::single("fund", "bank", "hot", msat(CAPACITY * AMOUNT_MSAT), L, 1),
        T0,
    )
    .await;
}

fn reservation(id: &str) -> NewTransfer {
    NewTransfer::pending(id, "hot", "escrow", msat(AMOUNT_MSAT), L, 7, None)
}

/// `created`, `exists` or the error code.
fn label(r: &oa_ledger::TransferResult) -> String {
    match r {
        Ok(Outcome::Created(_)) => "created".into(),
        Ok(Outcome::Exists(_)) => "exists".into(),
        Err(e) => e.code().into(),
    }
}

/// Checks the outcomes of every attempt against each other and against the database.
async fn verify(ledger: &Ledger, attempts: &[(String, String)], backend: &str) {
    let mut by_id: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, outcome) in attempts {
        by_id.entry(id).or_default().push(outcome);
    }
    let mut created = Vec::new();
    for (id, outcomes) in &by_id {
        let n_created = outcomes.iter().filter(|o| **o == "created").count();
        assert!(n_created <= 1, "{backend}: {id} created {n_created} times");
        for o in outcomes {
            match *o {
                "created" => {}
                "exists" => {
                    assert_eq!(n_created, 1, "{backend}: {id} exists but was never created")
                }
                code => assert_eq!(
                    code,
                    TransferError::ExceedsCredits.code(),
                    "{backend}: {id}"
                ),
            }
        }
        if n_created == 1 {
            created.push(id.to_string());
        }
    }
    assert_eq!(
        created.len() as u64,
        CAPACITY,
        "{backend}: every unit of balance is reserved once"
    );
    let hot = ledger.get_account("hot").await.expect("get").expect("hot");
    assert_eq!(
        hot.balances.debits_pending_msat,
        CAPACITY * AMOUNT_MSAT,
        "{backend}"
    );
    assert!(
        hot.balances.debits_pending_msat + hot.balances.debits_posted_msat
            <= hot.balances.credits_posted_msat
    );
    let mut stored = Vec::new();
    let mut after = 0;
    loop {
        let page = ledger
            .account_transfers("hot", after, oa_ledger::MAX_PAGE_SIZE)
            .await
            .expect("page");
        stored.extend(
            page.items
                .into_iter()
                .filter(|t| t.id != "fund")
                .map(|t| t.id),
        );
        match page.next_after_version {
            Some(v) => after = v,
            None => break,
        }
    }
    stored.sort();
    created.sort();
    assert_eq!(
        stored, created,
        "{backend}: exactly the created ids are stored"
    );
    assert_sound(ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_never_overdraw_one_account_and_each_id_lands_once() {
    for t in all_backends(&[&MIGRATIONS]).await.expect("test database") {
        let backend = backend_name(&t);
        let ledger = Ledger::new(t.db.clone());
        hot_account(&ledger).await;
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for k in 0..IDS_PER_TASK {
                    // Tasks t and t + 32 submit the same ids: one must win, the other see it.
                    let id = format!("r-{}-{k}", task % (TASKS / 2));
                    let r = ledger
                        .create_transfer(&reservation(&id), T0 + 1)
                        .await
                        .expect("ledger call");
                    out.push((id, label(&r)));
                }
                out
            }));
        }
        let mut attempts = Vec::new();
        for task in tasks {
            attempts.extend(task.await.expect("task"));
        }
        verify(&ledger, &attempts, backend).await;
        t.cleanup().await.expect("cleanup");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_overdraw_one_account_and_each_id_lands_once() {
    // The same test, started by itself with the child environment, is one of the two processes.
    if std::env::var_os(CHILD_URL_ENV).is_some() {
        return child_reserver().await;
    }
    let exe = std::env::current_exe().expect("test binary");
    for t in all_backends(&[&MIGRATIONS]).await.expect("test database") {
        let backend = backend_name(&t);
        let ledger = Ledger::new(t.db.clone());
        hot_account(&ledger).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let go = dir.path().join("go");
        let mut children = Vec::new();
        let mut outputs = Vec::new();
        for n in 0..2 {
            let out = dir.path().join(format!("child-{n}.txt"));
            let child = tokio::process::Command::new(&exe)
                .args([
                    "--exact",
                    "concurrency::two_processes_never_overdraw_one_account_and_each_id_lands_once",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_URL_ENV, &t.url)
                .env(CHILD_OUT_ENV, &out)
                .env(CHILD_GO_ENV, &go)
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn child");
            children.push(child);
            outputs.push(out);
        }
        std::fs::write(&go, b"go").expect("start signal");
        for mut child in children {
            let status = tokio::time::timeout(CHILD_DEADLINE, child.wait())
                .await
                .expect("child finished in time")
                .expect("child status");
            assert!(status.success(), "{backend}: child failed: {status}");
        }
        let mut attempts = Vec::new();
        for out in &outputs {
            let text = std::fs::read_to_string(out).expect("child output");
            for line in text.lines() {
                let (id, outcome) = line.split_once(' ').expect("id outcome");
                attempts.push((id.to_owned(), outcome.to_owned()));
            }
        }
        assert_eq!(
            attempts.len(),
            2 * PROCESS_IDS,
            "{backend}: every attempt reported"
        );
        verify(&ledger, &attempts, backend).await;
        t.cleanup().await.expect("cleanup");
    }
}

/// The body of each child process of the test above. Each child reserves every id of the shared
/// set with `CHILD_TASKS` tasks.
async fn child_reserver() {
    let (Ok(url), Ok(out), Ok(go)) = (
        std::env::var(CHILD_URL_ENV),
        std::env::var(CHILD_OUT_ENV),
        std::env::var(CHILD_GO_ENV),
    ) else {
        panic!("child environment incomplete");
    };
    let db = Db::connect(&url, &DbOptions::default())
        .await
        .expect("connect");
    let ledger = Ledger::new(db);
    wait_for(Path::new(&go)).await;
    let mut tasks = Vec::new();
    for task in 0..CHILD_TASKS {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for k in (task..PROCESS_IDS).step_by(CHILD_TASKS) {
                let id = format!("x-{k}");
                let r = ledger
                    .create_transfer(&reservation(&id), T0 + 1)
                    .await
                    .expect("ledger call");
                out.push(format!("{id} {}\n", label(&r)));
            }
            out
        }));
    }
    let mut lines = String::new();
    for task in tasks {
        lines.extend(task.await.expect("task"));
    }
    std::fs::write(out, lines).expect("write outcomes");
    ledger.db().close().await;
}

/// Bounded poll for the parent's start signal, so both children start reserving together.
async fn wait_for(path: &Path) {
    for _ in 0..1_000 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no start signal at {}", path.display());
}
