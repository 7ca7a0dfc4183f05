//! Budgets on the ledger: per org, per agent and per host (the app or API a payment is for), each
//! with a period (`period.rs`), a per-payment maximum and payee/host allow and deny lists.
//!
//! **Accounts.** Each window of a budget (today, this week, ..., or all time for `never`) is a
//! pair of ledger accounts: a no-overdraft budget account funded from `funding` with the limit,
//! and a spent account. Agent budgets are `budget:<agent>` / `spent:<agent>`, org budgets
//! `org-budget:<org>` / `org-spent:<org>`, host budgets `host-budget:<host>` / `host-spent:<host>`;
//! a window of a periodic budget adds `@<window key>` (`budget:agent-1@d2024-03-10`). `@` is not
//! allowed in subjects, so the names never collide. A window's accounts are created and funded
//! by whoever touches it first (a payment or the admin), recorded in `treasury_budget_windows`
//! in the same transaction; the row's primary key makes that happen once across processes.
//!
//! **A payment** reserves amount + fee allowance in every budget that applies to it, as one
//! linked chain of pending transfers `budget -> spent`: all of them or none (the no-overdraft flag
//! refuses the one without room, and the chain fails as a whole). Its outcome posts the actual
//! amount + fees in each (the rest returns) or voids them. So in every window, under any
//! concurrency: `available = funded - reserved - spent >= 0`.
//!
//! **Limits** change through [`set_budget`]: the current window's funding moves by the difference
//! (refused with `BUDGET_IN_USE` if that would go below what it has reserved or spent). Later
//! windows are funded with the limit in force when they are first touched; past windows keep
//! theirs.
//!
//! **Degraded risk** (`policy.rs`) may cap a budget at a fraction of its funding. The ledger only
//! knows the full funding, so a capped reservation first locks each window's row in
//! `treasury_budget_windows` (a guarded `UPDATE`), then checks `reserved + spent + amount <=
//! funded * bps / 10 000` under that lock: capped reservers of one window run one at a time.

use std::collections::BTreeMap;

use jiff::civil::Weekday;
use oa_ledger::{AccountFlags, NewAccount, NewTransfer, Outcome, TransferError};
use oa_money::Msat;
use oa_store::StoreError;
use sqlx::{Any, AnyConnection, Row, any::AnyRow};

use crate::{
    error::{TreasuryError, corrupt},
    known::KnownSet,
    period::{Calendar, Period, PeriodError, Window, parse_weekday, weekday_name},
};

/// Asset code of millisatoshis in this service's ledger.
pub const LEDGER_MSAT: u32 = 1;
const ACCOUNT_BUDGET: u16 = 1;
const ACCOUNT_SPENT: u16 = 2;
const ACCOUNT_FUNDING: u16 = 3;
const TRANSFER_FUND: u16 = 1;
const TRANSFER_DEFUND: u16 = 2;
const TRANSFER_PAYMENT: u16 = 3;
const FUNDING: &str = "funding";
/// Longest subject (agent id, org id, host): with the longest prefix and window key, a ledger id
/// stays well under the ledger's 128 characters.
pub const MAX_SUBJECT_LEN: usize = 64;
/// Most entries in one allow or deny list: lists are checked per payment, in memory.
pub const MAX_LIST_LEN: usize = 256;
/// Basis points in one whole.
pub const BPS: u32 = 10_000;

/// What a budget limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Org,
    Agent,
    Host,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Org, Kind::Agent, Kind::Host];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Org => "org",
            Kind::Agent => "agent",
            Kind::Host => "host",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    fn prefixes(self) -> (&'static str, &'static str) {
        match self {
            Kind::Agent => ("budget:", "spent:"),
            Kind::Org => ("org-budget:", "org-spent:"),
            Kind::Host => ("host-budget:", "host-spent:"),
        }
    }

    /// The reason code of a refusal by a budget of this kind.
    pub fn exceeded_reason(self) -> &'static str {
        match self {
            Kind::Agent => "agent_budget_exceeded",
            Kind::Org => "org_budget_exceeded",
            Kind::Host => "host_budget_exceeded",
        }
    }
}

/// Agent and org ids: 1..=64 characters of `[A-Za-z0-9._:-]`.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SUBJECT_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// Hosts: 1..=64 characters of lowercase `[a-z0-9.-]` (a DNS name or an app's name).
pub fn valid_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SUBJECT_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// A host pattern: a host, or `*.` followed by a host (any subdomain of it).
pub fn valid_host_pattern(s: &str) -> bool {
    valid_host(s.strip_prefix("*.").unwrap_or(s))
}

pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|head| head.ends_with('.') && head.len() > 1),
        None => pattern == host,
    }
}

/// A node public key: 66 lowercase hex digits starting with 02 or 03.
pub fn valid_pubkey(s: &str) -> bool {
    s.len() == 66
        && (s.starts_with("02") || s.starts_with("03"))
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn valid_subject(kind: Kind, s: &str) -> bool {
    match kind {
        Kind::Agent | Kind::Org => valid_id(s),
        Kind::Host => valid_host(s),
    }
}

/// A budget as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    pub kind: Kind,
    pub subject: String,
    pub period: Period,
    pub limit: Msat,
    pub time_zone: String,
    pub week_start: Weekday,
    pub per_payment_max: Option<Msat>,
    pub payee_allow: Vec<String>,
    pub payee_deny: Vec<String>,
    pub host_allow: Vec<String>,
    pub host_deny: Vec<String>,
    pub updated_at_ms: u64,
}

impl BudgetConfig {
    /// A budget that never resets, with no lists: what `PUT /v1/treasury/budgets/{agent}` sets.
    pub fn simple(kind: Kind, subject: &str, limit: Msat) -> Self {
        Self {
            kind,
            subject: subject.to_owned(),
            period: Period::Never,
            limit,
            time_zone: "UTC".into(),
            week_start: Weekday::Monday,
            per_payment_max: None,
            payee_allow: Vec::new(),
            payee_deny: Vec::new(),
            host_allow: Vec::new(),
            host_deny: Vec::new(),
            updated_at_ms: 0,
        }
    }

    /// `agent:agent-1:daily`: names the budget in decisions and errors.
    pub fn label(&self) -> String {
        format!(
            "{}:{}:{}",
            self.kind.as_str(),
            self.subject,
            self.period.as_str()
        )
    }

    pub fn calendar(&self) -> Result<Calendar, TreasuryError> {
        Calendar::new(self.period, &self.time_zone, self.week_start).map_err(period_err)
    }

    pub fn window(&self, now_ms: u64) -> Result<Window, TreasuryError> {
        self.calendar()?.window(now_ms).map_err(period_err)
    }

    /// The budget and spent accounts of `window`.
    pub fn accounts(&self, window: &Window) -> (String, String) {
        let (b, s) = self.kind.prefixes();
        if window.key.is_empty() {
            (
                format!("{b}{}", self.subject),
                format!("{s}{}", self.subject),
            )
        } else {
            (
                format!("{b}{}@{}", self.subject, window.key),
                format!("{s}{}@{}", self.subject, window.key),
            )
        }
    }
}

fn period_err(e: PeriodError) -> TreasuryError {
    match e {
        PeriodError::UnknownTimeZone(_) => {
            TreasuryError::invalid("INVALID_TIME_ZONE", e.to_string())
        }
        PeriodError::OutOfRange => corrupt("the clock is outside the civil calendar"),
    }
}

/// A budget's current window as callers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetStatus {
    pub config: BudgetConfig,
    pub window: Window,
    /// What the current window was funded with (the limit, unless the window predates a change).
    pub funded: Msat,
    pub reserved: Msat,
    pub spent: Msat,
    pub available: Msat,
}

/// Why a reservation was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No budget applies to the payment.
    NoBudget,
    /// This budget has no room (or, when capped for degraded risk, no room under the cap).
    Exceeded {
        kind: Kind,
        label: String,
        capped: bool,
    },
}

impl Refusal {
    pub fn reason_code(&self) -> &'static str {
        match self {
            Refusal::NoBudget => "no_budget",
            Refusal::Exceeded { kind, .. } => kind.exceeded_reason(),
        }
    }

    /// The rule that refused: `budget:<kind>:<subject>:<period>`, or `budget:none`.
    pub fn rule(&self) -> String {
        match self {
            Refusal::NoBudget => "budget:none".into(),
            Refusal::Exceeded { label, .. } => format!("budget:{label}"),
        }
    }
}

fn ledger_err(e: impl std::fmt::Display) -> TreasuryError {
    TreasuryError::Store(StoreError::Corrupt(format!("ledger: {e}")))
}

fn msat(v: u64) -> Result<Msat, TreasuryError> {
    Msat::new(v).map_err(ledger_err)
}

fn to_i64(v: u64) -> Result<i64, TreasuryError> {
    i64::try_from(v).map_err(ledger_err)
}

fn list_json(v: &[String]) -> Result<String, TreasuryError> {
    serde_json::to_string(v).map_err(ledger_err)
}

fn list_from(s: &str) -> Result<Vec<String>, TreasuryError> {
    serde_json::from_str(s).map_err(|e| corrupt(&format!("budget list: {e}")))
}

const COLUMNS: &str = "kind, subject, period, limit_msat, time_zone, week_start, per_payment_max_msat, \
    payee_allow, payee_deny, host_allow, host_deny, updated_at_ms";

fn decode(r: &AnyRow) -> Result<BudgetConfig, TreasuryError> {
    let kind: String = r.try_get("kind")?;
    let period: String = r.try_get("period")?;
    let week_start: String = r.try_get("week_start")?;
    let per_payment_max = Msat::from_i64(r.try_get("per_payment_max_msat")?).map_err(ledger_err)?;
    Ok(BudgetConfig {
        kind: Kind::parse(&kind).ok_or_else(|| corrupt(&format!("budget kind {kind}")))?,
        subject: r.try_get("subject")?,
        period: Period::parse(&period).ok_or_else(|| corrupt(&format!("period {period}")))?,
        limit: Msat::from_i64(r.try_get("limit_msat")?).map_err(ledger_err)?,
        time_zone: r.try_get("time_zone")?,
        week_start: parse_weekday(&week_start)
            .ok_or_else(|| corrupt(&format!("week start {week_start}")))?,
        per_payment_max: (!per_payment_max.is_zero()).then_some(per_payment_max),
        payee_allow: list_from(&r.try_get::<String, _>("payee_allow")?)?,
        payee_deny: list_from(&r.try_get::<String, _>("payee_deny")?)?,
        host_allow: list_from(&r.try_get::<String, _>("host_allow")?)?,
        host_deny: list_from(&r.try_get::<String, _>("host_deny")?)?,
        updated_at_ms: u64::try_from(r.try_get::<i64, _>("updated_at_ms")?).map_err(ledger_err)?,
    })
}

/// Every budget of one subject, in period order.
pub async fn list(
    conn: &mut AnyConnection,
    kind: Kind,
    subject: &str,
) -> Result<Vec<BudgetConfig>, TreasuryError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM treasury_budget_configs WHERE kind = $1 AND subject = $2"
    ));
    let mut v: Vec<BudgetConfig> = sqlx::query::<Any>(sql)
        .bind(kind.as_str())
        .bind(subject)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(decode)
        .collect::<Result<_, _>>()?;
    v.sort_by_key(|c| c.period);
    Ok(v)
}

/// The budgets that apply to a payment by `agent` (of `org`, for `host`): org, agent, host order.
pub async fn applicable(
    conn: &mut AnyConnection,
    agent: &str,
    org: Option<&str>,
    host: Option<&str>,
) -> Result<Vec<BudgetConfig>, TreasuryError> {
    let mut one = applicable_many(conn, &[(agent, org, host)]).await?;
    one.pop()
        .ok_or_else(|| corrupt("one payment's budgets gave no answer"))
}

/// Whose budgets apply to a payment: the agent, its org, the host.
pub type Payer<'a> = (&'a str, Option<&'a str>, Option<&'a str>);

/// The subjects whose budgets apply to `payer`, in the order they apply: org, agent, host.
fn subjects_of<'a>(&(agent, org, host): &Payer<'a>) -> impl Iterator<Item = (Kind, &'a str)> {
    [
        (Kind::Org, org),
        (Kind::Agent, Some(agent)),
        (Kind::Host, host),
    ]
    .into_iter()
    .filter_map(|(kind, subject)| Some((kind, subject?)))
}

/// Budget subjects read per statement at most (two parameters each).
const SUBJECTS_BATCH: usize = 1_024;

/// [`applicable`] for many payments, read in one statement (per 1 024 subjects).
pub async fn applicable_many(
    conn: &mut AnyConnection,
    payers: &[Payer<'_>],
) -> Result<Vec<Vec<BudgetConfig>>, TreasuryError> {
    let subjects: std::collections::BTreeSet<(Kind, &str)> =
        payers.iter().flat_map(subjects_of).collect();
    let subjects: Vec<(Kind, &str)> = subjects.into_iter().collect();
    let mut found: BTreeMap<(Kind, String), Vec<BudgetConfig>> = BTreeMap::new();
    for chunk in subjects.chunks(SUBJECTS_BATCH) {
        let sqlite = oa_store::sql::is_sqlite(conn);
        let p = |n| oa_store::sql::param(sqlite, n);
        let wheres: Vec<String> = (0..chunk.len())
            .map(|i| format!("(kind = {} AND subject = {})", p(2 * i + 1), p(2 * i + 2)))
            .collect();
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM treasury_budget_configs WHERE {}",
            wheres.join(" OR ")
        ));
        let mut q = sqlx::query::<Any>(sql);
        for (kind, subject) in chunk {
            q = q.bind(kind.as_str()).bind(*subject);
        }
        for row in q.fetch_all(&mut *conn).await? {
            let cfg = decode(&row)?;
            found
                .entry((cfg.kind, cfg.subject.clone()))
                .or_default()
                .push(cfg);
        }
    }
    for configs in found.values_mut() {
        configs.sort_by_key(|c| c.period);
    }
    Ok(payers
        .iter()
        .map(|payer| {
            subjects_of(payer)
                .flat_map(|(kind, subject)| {
                    found
                        .get(&(kind, subject.to_owned()))
                        .cloned()
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect())
}

async fn upsert_config(conn: &mut AnyConnection, c: &BudgetConfig) -> Result<(), TreasuryError> {
    sqlx::query(
        "INSERT INTO treasury_budget_configs (kind, subject, period, limit_msat, time_zone, week_start,
            per_payment_max_msat, payee_allow, payee_deny, host_allow, host_deny, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (kind, subject, period) DO UPDATE SET limit_msat = $4, time_zone = $5,
            week_start = $6, per_payment_max_msat = $7, payee_allow = $8, payee_deny = $9,
            host_allow = $10, host_deny = $11, updated_at_ms = $12",
    )
    .bind(c.kind.as_str())
    .bind(&c.subject)
    .bind(c.period.as_str())
    .bind(c.limit.as_i64())
    .bind(&c.time_zone)
    .bind(weekday_name(c.week_start))
    .bind(c.per_payment_max.unwrap_or(Msat::ZERO).as_i64())
    .bind(list_json(&c.payee_allow)?)
    .bind(list_json(&c.payee_deny)?)
    .bind(list_json(&c.host_allow)?)
    .bind(list_json(&c.host_deny)?)
    .bind(to_i64(c.updated_at_ms)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn create_window_accounts(
    conn: &mut AnyConnection,
    budget: &str,
    spent: &str,
    now_ms: u64,
) -> Result<(), TreasuryError> {
    let accounts = [
        NewAccount::new(budget, LEDGER_MSAT, ACCOUNT_BUDGET)
            .with_flags(AccountFlags::no_overdraft().with_history()),
        NewAccount::new(spent, LEDGER_MSAT, ACCOUNT_SPENT),
        NewAccount::new(FUNDING, LEDGER_MSAT, ACCOUNT_FUNDING),
    ];
    for r in oa_ledger::create_accounts(conn, &accounts, now_ms)
        .await
        .map_err(ledger_err)?
    {
        r.map_err(ledger_err)?;
    }
    Ok(())
}

/// Makes sure `window`'s accounts exist and are funded; returns whether this call funded them.
/// The window row's primary key decides who funds: a concurrent caller waits for the winner's
/// commit and then finds the row.
async fn ensure_window(
    conn: &mut AnyConnection,
    cfg: &BudgetConfig,
    window: &Window,
    now_ms: u64,
) -> Result<bool, TreasuryError> {
    let (budget, spent) = cfg.accounts(window);
    let inserted = sqlx::query(
        "INSERT INTO treasury_budget_windows (account_id, funded_msat, created_at_ms) VALUES ($1, $2, $3)
         ON CONFLICT (account_id) DO NOTHING",
    )
    .bind(&budget)
    .bind(cfg.limit.as_i64())
    .bind(to_i64(now_ms)?)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        return Ok(false);
    }
    create_window_accounts(conn, &budget, &spent, now_ms).await?;
    if !cfg.limit.is_zero() {
        let t = NewTransfer::single(
            format!("fund:{budget}"),
            FUNDING,
            budget.as_str(),
            cfg.limit,
            LEDGER_MSAT,
            TRANSFER_FUND,
        );
        match oa_ledger::create_transfer(conn, &t, now_ms)
            .await
            .map_err(ledger_err)?
        {
            Ok(_) => {}
            Err(e) => return Err(ledger_err(e)),
        }
    }
    Ok(true)
}

/// Locks a window's row until the transaction ends and returns its funding.
async fn lock_window(conn: &mut AnyConnection, account: &str) -> Result<Msat, TreasuryError> {
    // A guarded UPDATE takes the row lock on PostgreSQL (SQLite holds the write lock already):
    // funding changes and capped reservations of this window queue behind it.
    let v: i64 = sqlx::query_scalar::<Any, i64>(
        "UPDATE treasury_budget_windows SET funded_msat = funded_msat WHERE account_id = $1 RETURNING funded_msat",
    )
    .bind(account)
    .fetch_one(&mut *conn)
    .await?;
    Msat::from_i64(v).map_err(ledger_err)
}

/// Creates or replaces a budget and moves the current window's funding to the new limit. Lowering
/// it below what the window has reserved or spent is refused ([`TreasuryError::BudgetInUse`]);
/// the caller's transaction then changes nothing.
pub async fn set_budget(
    conn: &mut AnyConnection,
    cfg: &BudgetConfig,
    now_ms: u64,
) -> Result<(), TreasuryError> {
    upsert_config(conn, cfg).await?;
    let window = cfg.window(now_ms)?;
    if ensure_window(conn, cfg, &window, now_ms).await? {
        return Ok(());
    }
    let (budget, _) = cfg.accounts(&window);
    let current = lock_window(conn, &budget).await?;
    let id = format!("limit_{}", uuid::Uuid::now_v7().simple());
    let transfer = if cfg.limit > current {
        Some(NewTransfer::single(
            id,
            FUNDING,
            budget.as_str(),
            cfg.limit.checked_sub(current).map_err(ledger_err)?,
            LEDGER_MSAT,
            TRANSFER_FUND,
        ))
    } else if cfg.limit < current {
        Some(NewTransfer::single(
            id,
            budget.as_str(),
            FUNDING,
            current.checked_sub(cfg.limit).map_err(ledger_err)?,
            LEDGER_MSAT,
            TRANSFER_DEFUND,
        ))
    } else {
        None
    };
    if let Some(t) = transfer {
        match oa_ledger::create_transfer(conn, &t, now_ms)
            .await
            .map_err(ledger_err)?
        {
            Ok(_) => {}
            Err(TransferError::ExceedsCredits) => return Err(TreasuryError::BudgetInUse),
            Err(e) => return Err(ledger_err(e)),
        }
    }
    sqlx::query("UPDATE treasury_budget_windows SET funded_msat = $2 WHERE account_id = $1")
        .bind(&budget)
        .bind(cfg.limit.as_i64())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Gives an agent a budget of `limit` that never resets, if it has no agent budget at all (the
/// configured default).
pub async fn ensure_default(
    conn: &mut AnyConnection,
    agent: &str,
    limit: Msat,
    now_ms: u64,
) -> Result<(), TreasuryError> {
    if list(conn, Kind::Agent, agent).await?.is_empty() {
        let mut cfg = BudgetConfig::simple(Kind::Agent, agent, limit);
        cfg.updated_at_ms = now_ms;
        set_budget(conn, &cfg, now_ms).await?;
    }
    Ok(())
}

/// A budget's current window, read only (a window nobody touched yet shows its full limit).
pub async fn status(
    conn: &mut AnyConnection,
    cfg: &BudgetConfig,
    now_ms: u64,
) -> Result<BudgetStatus, TreasuryError> {
    let window = cfg.window(now_ms)?;
    let (budget, spent) = cfg.accounts(&window);
    let funded: Option<i64> = sqlx::query_scalar::<Any, i64>(
        "SELECT funded_msat FROM treasury_budget_windows WHERE account_id = $1",
    )
    .bind(&budget)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(funded) = funded else {
        return Ok(BudgetStatus {
            config: cfg.clone(),
            window,
            funded: cfg.limit,
            reserved: Msat::ZERO,
            spent: Msat::ZERO,
            available: cfg.limit,
        });
    };
    let b = oa_ledger::get_account(conn, &budget)
        .await
        .map_err(ledger_err)?;
    let s = oa_ledger::get_account(conn, &spent)
        .await
        .map_err(ledger_err)?;
    let (Some(b), Some(s)) = (b, s) else {
        return Err(ledger_err(format!("accounts of {budget} are missing")));
    };
    Ok(BudgetStatus {
        config: cfg.clone(),
        window,
        funded: Msat::from_i64(funded).map_err(ledger_err)?,
        reserved: msat(b.balances.debits_pending_msat)?,
        spent: msat(s.balances.credits_posted_msat)?,
        available: msat(b.balances.available_msat())?,
    })
}

/// Creates and funds the current windows of `budgets`, in the caller's (short) transaction.
/// Payments call it before their own transaction, so that the one moving money from the shared
/// `funding` account never also holds budget accounts a concurrent limit change is waiting on:
/// every transaction that funds locks the window row, then the accounts in id order.
pub async fn prepare_windows(
    conn: &mut AnyConnection,
    budgets: &[BudgetConfig],
    now_ms: u64,
) -> Result<(), TreasuryError> {
    for cfg in budgets {
        let window = cfg.window(now_ms)?;
        ensure_window(conn, cfg, &window, now_ms).await?;
    }
    Ok(())
}

/// Most windows [`KnownWindows`] remembers; past that it forgets them all and relearns.
const MAX_KNOWN_WINDOWS: usize = 100_000;

/// Budget windows this process has seen committed. Windows are never deleted, so a payment whose
/// windows are all known skips the transaction that creates them, and its reservation skips
/// re-checking them: on SQLite, two fewer trips through the one writer per payment.
#[derive(Debug)]
pub struct KnownWindows(KnownSet);

impl Default for KnownWindows {
    fn default() -> Self {
        Self::new(MAX_KNOWN_WINDOWS)
    }
}

impl KnownWindows {
    /// Remembers at most `max` windows.
    pub fn new(max: usize) -> Self {
        Self(KnownSet::new(max))
    }

    fn contains(&self, account: &str) -> bool {
        self.0.contains(account)
    }

    /// Whether the current window (at `now_ms`) of every budget in `budgets` is known to exist.
    pub fn all_known(&self, budgets: &[BudgetConfig], now_ms: u64) -> Result<bool, TreasuryError> {
        for cfg in budgets {
            if !self.contains(&cfg.accounts(&cfg.window(now_ms)?).0) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Remembers the current windows of `budgets`: call only once a transaction that ran
    /// [`prepare_windows`] for them has committed.
    pub fn remember(&self, budgets: &[BudgetConfig], now_ms: u64) -> Result<(), TreasuryError> {
        for cfg in budgets {
            self.0.insert(cfg.accounts(&cfg.window(now_ms)?).0);
        }
        Ok(())
    }
}

/// Whether `amount` fits in `status` now (under a cap of `cap_bps` of the funding if given).
pub fn fits(status: &BudgetStatus, amount: Msat, cap_bps: Option<u32>) -> bool {
    match cap_bps {
        None => amount <= status.available,
        Some(bps) => {
            let used = u128::from(status.reserved.as_u64()) + u128::from(status.spent.as_u64());
            let cap = u128::from(status.funded.as_u64()) * u128::from(bps) / u128::from(BPS);
            amount <= status.available && used + u128::from(amount.as_u64()) <= cap
        }
    }
}

/// What one reservation asks for: `amount` in every budget of `budgets`, for a payment, in the
/// windows current at its request's time (ms).
pub type Request<'a> = (&'a str, &'a [BudgetConfig], Msat, u64);

/// Why a reservation was refused, or its pending transfer ids (to settle later).
pub type Reserved = Result<Vec<String>, Refusal>;

/// Reserves `amount` in every budget of `budgets` for a payment, all or nothing, with each budget
/// capped at `bps` of its funding (degraded risk). Returns the pending transfer ids (to settle
/// later), or why it was refused. Windows in `known` are not created again. `now_ms` stamps the
/// ledger's transfers. Without a cap, see [`reserve_many`].
pub async fn reserve_capped(
    conn: &mut AnyConnection,
    known: &KnownWindows,
    (payment_id, budgets, amount, at_ms): Request<'_>,
    bps: u32,
    now_ms: u64,
) -> Result<Reserved, TreasuryError> {
    if budgets.is_empty() {
        return Ok(Err(Refusal::NoBudget));
    }
    let windows = windows_of(conn, known, budgets, at_ms).await?;
    // Lock in account order, as every writer of these rows does, so capped reservers never
    // deadlock each other.
    let mut order: Vec<&(&BudgetConfig, (String, String))> = windows.iter().collect();
    order.sort_by(|a, b| a.1.0.cmp(&b.1.0));
    for (cfg, (budget, _)) in order {
        let funded = lock_window(conn, budget).await?;
        let b = oa_ledger::get_account(conn, budget)
            .await
            .map_err(ledger_err)?
            .ok_or_else(|| ledger_err(format!("{budget} is missing")))?;
        let status = BudgetStatus {
            config: (*cfg).clone(),
            window: Window::all_time(),
            funded,
            reserved: msat(b.balances.debits_pending_msat)?,
            // Funding minus what is available is what this window reserved or spent.
            spent: funded
                .checked_sub(msat(b.balances.available_msat())?)
                .unwrap_or(Msat::ZERO)
                .checked_sub(msat(b.balances.debits_pending_msat)?)
                .unwrap_or(Msat::ZERO),
            available: msat(b.balances.available_msat())?,
        };
        if !fits(&status, amount, Some(bps)) {
            return Ok(Err(Refusal::Exceeded {
                kind: cfg.kind,
                label: cfg.label(),
                capped: true,
            }));
        }
    }
    let transfers = chain(payment_id, &windows, amount);
    let results = oa_ledger::create_transfers(conn, &transfers, now_ms)
        .await
        .map_err(ledger_err)?;
    outcome(&windows, &transfers, &results)
}

/// Reserves for several payments, without a cap, in order: each all or nothing (see
/// [`reserve_capped`]) and each seeing the ones before it, in as few ledger batches as fit (one,
/// for any batch of new payments). A ledger batch locks every account it touches in id order, so
/// concurrent ones cannot deadlock. `now_ms` stamps the ledger's transfers.
pub async fn reserve_many(
    conn: &mut AnyConnection,
    known: &KnownWindows,
    requests: &[Request<'_>],
    now_ms: u64,
) -> Result<Vec<Reserved>, TreasuryError> {
    let mut out: Vec<Option<Reserved>> = Vec::with_capacity(requests.len());
    // Per request with budgets: its windows and its transfers.
    let mut chains = Vec::new();
    for (i, &(payment_id, budgets, amount, at_ms)) in requests.iter().enumerate() {
        if budgets.is_empty() {
            out.push(Some(Err(Refusal::NoBudget)));
            continue;
        }
        out.push(None);
        let windows = windows_of(conn, known, budgets, at_ms).await?;
        let transfers = chain(payment_id, &windows, amount);
        chains.push((i, windows, transfers));
    }
    let mut rest = chains.as_slice();
    while !rest.is_empty() {
        // As many whole chains as one ledger batch takes.
        let mut take = 0;
        let mut len = 0;
        while take < rest.len()
            && (take == 0 || len + rest[take].2.len() <= oa_ledger::MAX_BATCH_SIZE)
        {
            len += rest[take].2.len();
            take += 1;
        }
        let (batch, next) = rest.split_at(take);
        rest = next;
        let transfers: Vec<NewTransfer> = batch
            .iter()
            .flat_map(|(_, _, t)| t.iter().cloned())
            .collect();
        let results = oa_ledger::create_transfers(conn, &transfers, now_ms)
            .await
            .map_err(ledger_err)?;
        let mut at = 0;
        for (i, windows, chain) in batch {
            let mine = results
                .get(at..at + chain.len())
                .ok_or_else(|| ledger_err("a batch gave fewer results than transfers"))?;
            at += chain.len();
            out[*i] = Some(outcome(windows, chain, mine)?);
        }
    }
    out.into_iter()
        .map(|o| o.ok_or_else(|| corrupt("a reservation gave no answer")))
        .collect()
}

/// Each budget's window current at `now_ms` (created unless in `known`) with its accounts.
async fn windows_of<'a>(
    conn: &mut AnyConnection,
    known: &KnownWindows,
    budgets: &'a [BudgetConfig],
    now_ms: u64,
) -> Result<Vec<(&'a BudgetConfig, (String, String))>, TreasuryError> {
    let mut windows = Vec::with_capacity(budgets.len());
    for cfg in budgets {
        let window = cfg.window(now_ms)?;
        let accounts = cfg.accounts(&window);
        if !known.contains(&accounts.0) {
            ensure_window(conn, cfg, &window, now_ms).await?;
        }
        windows.push((cfg, accounts));
    }
    Ok(windows)
}

/// A payment's reservation: one pending transfer per window, linked (all or nothing).
fn chain(
    payment_id: &str,
    windows: &[(&BudgetConfig, (String, String))],
    amount: Msat,
) -> Vec<NewTransfer> {
    let n = windows.len();
    windows
        .iter()
        .enumerate()
        .map(|(i, (_, (budget, spent)))| {
            let t = NewTransfer::pending(
                format!("pay:{payment_id}:{i}"),
                budget.as_str(),
                spent.as_str(),
                amount,
                LEDGER_MSAT,
                TRANSFER_PAYMENT,
                None,
            );
            if i + 1 < n { t.linked() } else { t }
        })
        .collect()
}

/// What the ledger's `results` for a reservation's `transfers` mean.
fn outcome(
    windows: &[(&BudgetConfig, (String, String))],
    transfers: &[NewTransfer],
    results: &[oa_ledger::TransferResult],
) -> Result<Reserved, TreasuryError> {
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(_) | Err(TransferError::LinkedEventFailed) => {}
            Err(TransferError::ExceedsCredits) => {
                let cfg = windows[i].0;
                return Ok(Err(Refusal::Exceeded {
                    kind: cfg.kind,
                    label: cfg.label(),
                    capped: false,
                }));
            }
            Err(e) => return Err(ledger_err(e)),
        }
    }
    if results.iter().any(Result::is_err) {
        return Err(ledger_err("a linked reservation failed without a cause"));
    }
    Ok(Ok(transfers.iter().map(|t| t.id.clone()).collect()))
}

/// Ends a payment's reservations: posts `spent` (the actual amount + fees) in each or, if `None`,
/// voids them. Safe to repeat.
pub async fn settle(
    conn: &mut AnyConnection,
    reservations: &[String],
    spent: Option<Msat>,
    now_ms: u64,
) -> Result<(), TreasuryError> {
    settle_many(conn, [(reservations, spent)], now_ms).await
}

/// [`settle`] for several payments at once: one ledger batch (which locks every account it
/// touches in id order, so concurrent batches cannot deadlock) instead of one per reservation.
pub async fn settle_many<'a>(
    conn: &mut AnyConnection,
    payments: impl IntoIterator<Item = (&'a [String], Option<Msat>)>,
    now_ms: u64,
) -> Result<(), TreasuryError> {
    let transfers: Vec<NewTransfer> = payments
        .into_iter()
        .flat_map(|(reservations, spent)| {
            reservations.iter().map(move |pending| match spent {
                Some(amount) if !amount.is_zero() => {
                    NewTransfer::post(format!("{pending}:post"), pending.as_str(), Some(amount))
                }
                _ => NewTransfer::void(format!("{pending}:void"), pending.as_str()),
            })
        })
        .collect();
    for chunk in transfers.chunks(oa_ledger::MAX_BATCH_SIZE) {
        for r in oa_ledger::create_transfers(conn, chunk, now_ms)
            .await
            .map_err(ledger_err)?
        {
            match r {
                Ok(Outcome::Created(_) | Outcome::Exists(_)) => {}
                Err(e) => return Err(ledger_err(e)),
            }
        }
    }
    Ok(())
}

/// The statuses of `budgets` at `now_ms`, keyed by label.
pub async fn statuses(
    conn: &mut AnyConnection,
    budgets: &[BudgetConfig],
    now_ms: u64,
) -> Result<BTreeMap<String, BudgetStatus>, TreasuryError> {
    let mut out = BTreeMap::new();
    for cfg in budgets {
        out.insert(cfg.label(), status(conn, cfg, now_ms).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_match_the_host_or_its_subdomains() {
        assert!(host_matches("api.example.com", "api.example.com"));
        assert!(!host_matches("api.example.com", "x.api.example.com"));
        assert!(host_matches("*.example.com", "api.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "badexample.com"));
        assert!(valid_host_pattern("*.example.com"));
        assert!(!valid_host_pattern("*example.com"));
        assert!(!valid_host("Example.com"));
    }

    #[test]
    fn window_accounts_are_distinct_per_kind_and_window() {
        let mut c = BudgetConfig::simple(Kind::Agent, "a1", Msat::ZERO);
        assert_eq!(
            c.accounts(&Window::all_time()),
            ("budget:a1".into(), "spent:a1".into())
        );
        c.kind = Kind::Org;
        c.period = Period::Daily;
        let w = c.window(0).unwrap_or_else(|_| Window::all_time());
        assert_eq!(c.accounts(&w).0, "org-budget:a1@d1970-01-01");
    }

    #[test]
    fn known_windows_follow_the_calendar_and_forget_when_full() {
        let day_ms = 86_400_000;
        let mut daily = BudgetConfig::simple(Kind::Agent, "a1", Msat::ZERO);
        daily.period = Period::Daily;
        let never = BudgetConfig::simple(Kind::Org, "o1", Msat::ZERO);
        let both = [daily.clone(), never.clone()];
        let known = KnownWindows::new(2);
        assert!(known.all_known(&[], 0).is_ok_and(|k| k));
        assert!(known.all_known(&both, 0).is_ok_and(|k| !k));
        assert!(known.remember(&both, 0).is_ok());
        assert!(known.all_known(&both, day_ms - 1).is_ok_and(|k| k));
        // The next day is a new window of the daily budget, not yet created.
        assert!(known.all_known(&both, day_ms).is_ok_and(|k| !k));
        assert!(
            known
                .all_known(std::slice::from_ref(&never), day_ms)
                .is_ok_and(|k| k)
        );
        // A third window does not fit: the set starts again with it.
        assert!(known.remember(&[daily], day_ms).is_ok());
        assert!(known.all_known(&[never], 0).is_ok_and(|k| !k));
    }
}
