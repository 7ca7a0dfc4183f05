//! Shared fixtures: backends, amounts, and a few assertions about the whole ledger.

use oa_ledger::{
    Account, Ledger, MIGRATIONS, NewAccount, NewTransfer, Outcome, Transfer, TransferError,
    TransferResult,
};
use oa_money::Msat;
use oa_store::testing::{TestDb, all_backends};

/// The ledger (asset) most tests use.
pub const L: u32 = 1;
/// A clock value comfortably inside the i64 range.
pub const T0: u64 = 1_700_000_000_000;

pub fn msat(v: u64) -> Msat {
    Msat::new(v).expect("test amount within supply")
}

/// Runs `f` on every configured backend, then drops the PostgreSQL database.
pub async fn each_backend<F, Fut>(f: F)
where
    F: Fn(Ledger, &'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for t in all_backends(&[&MIGRATIONS]).await.expect("test database") {
        let name = backend_name(&t);
        f(Ledger::new(t.db.clone()), name).await;
        t.cleanup().await.expect("cleanup");
    }
}

pub fn backend_name(t: &TestDb) -> &'static str {
    match t.db.backend() {
        oa_store::Backend::Sqlite => "sqlite",
        oa_store::Backend::Postgres => "postgres",
    }
}

pub async fn create_account(ledger: &Ledger, account: NewAccount) -> Account {
    let mut r = ledger
        .create_accounts(std::slice::from_ref(&account), T0)
        .await
        .expect("create account");
    match r.pop() {
        Some(Ok(outcome)) => outcome.into_inner(),
        other => panic!("account {} not created: {other:?}", account.id),
    }
}

/// Creates a transfer that must succeed as new.
pub async fn must_create(ledger: &Ledger, t: NewTransfer, now_ms: u64) -> Transfer {
    match ledger
        .create_transfer(&t, now_ms)
        .await
        .expect("ledger call")
    {
        Ok(Outcome::Created(t)) => t,
        other => panic!("transfer {} not created: {other:?}", t.id),
    }
}

pub fn code_of(r: &TransferResult) -> Option<TransferError> {
    r.as_ref().err().copied()
}

/// Conservation, limits, balances recomputed from transfers and pending resolutions all hold.
pub async fn assert_sound(ledger: &Ledger) {
    let violations = ledger.audit().await.expect("audit");
    assert!(violations.is_empty(), "ledger violations: {violations:?}");
}

pub async fn balances(ledger: &Ledger, id: &str) -> oa_ledger::Balances {
    ledger
        .get_account(id)
        .await
        .expect("lookup")
        .unwrap_or_else(|| panic!("account {id} missing"))
        .balances
}

pub async fn count_transfers(ledger: &Ledger) -> i64 {
    let mut conn = ledger.db().pool().acquire().await.expect("conn");
    sqlx::query_scalar::<sqlx::Any, i64>("SELECT COUNT(*) FROM ledger_transfers")
        .fetch_one(&mut *conn)
        .await
        .expect("count")
}
