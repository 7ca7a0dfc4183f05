//! Forwarding P&L and channel health, over a window `[from_ms, to_ms)`.
//!
//! Attribution rules (per channel):
//! - **forwarded volume** and **fee revenue** belong to the channel a forward *left* through:
//!   its outbound fee policy set the fee, and its local liquidity was spent. (An inbound fee or
//!   discount on the incoming channel is already included in the fee the node reports, and is
//!   attributed the same way.) The incoming channel's volume is reported as `forwarded_in_msat`
//!   and earns nothing.
//! - **rebalance cost** (the routing fee a rebalance paid) is charged to the channel that
//!   *received* local liquidity (the rebalance's incoming channel): that is the channel whose
//!   earning capacity the fee bought. Rebalances are recorded by [`record_rebalance_in`], which
//!   the rebalance action (`rebalance.rs`) calls in the transaction that ends it, with the fee the
//!   executor reported and signed.
//! - **P&L** = fee revenue - rebalance cost, in signed msat.
//! - **uptime** = observations that found the channel active / all observations, in permille, over
//!   the hours starting in the window (the node is observed on every reconcile tick, apply, report
//!   and health check; 0 observations means unknown).
//! - **balance ratio** = local / (local + remote) of the latest observation, in permille.
//!
//! Forwards are windowed by the node's timestamp, rebalances by when they happened. All money is
//! integer msat with checked arithmetic; ratios are integer permille (floored).
//!
//! Health flags: `inactive` (the peer is offline), `depleted_local` / `depleted_remote` (that side
//! holds less than [`DEPLETED_PERMILLE`] of the channel), `losing_money` (P&L below zero over the
//! window).

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
};

use oa_money::Msat;
use oa_proto::ops;
use oa_store::journal;
use serde_json::json;

use crate::{
    error::OpsError,
    ops::Ops,
    plan,
    store::{self, ChannelRow, Rebalance},
};

/// A side holding less than this share of the channel (permille: 5%) is depleted: too little to
/// forward typical payments (or, on the remote side, to receive them).
pub const DEPLETED_PERMILLE: u64 = 50;
/// Forwarding pages a report or health check ingests before answering (50,000 events with the
/// default page); the background ingester catches up on anything longer.
pub const SYNC_PAGES: u32 = 100;
/// Journal topic of recorded rebalance costs.
pub const REBALANCES_TOPIC: &str = "ops.rebalances";

pub const INACTIVE: &str = "inactive";
pub const DEPLETED_LOCAL: &str = "depleted_local";
pub const DEPLETED_REMOTE: &str = "depleted_remote";
pub const LOSING_MONEY: &str = "losing_money";

/// `part / whole` in permille, floored; 0 when `whole` is 0.
pub fn permille(part: u64, whole: u64) -> u32 {
    (u128::from(part) * 1000)
        .checked_div(u128::from(whole))
        .map_or(0, |p| u32::try_from(p).unwrap_or(u32::MAX))
}

/// The report window from the query parameters `from_ms` and `to_ms` (both optional, decimal
/// milliseconds): `to_ms` defaults to `now_ms`, `from_ms` to `to_ms - default_ms`. Anything else
/// in the query, a non-number, or an empty window is a typed 400.
pub fn parse_window(
    query: &HashMap<String, String>,
    now_ms: u64,
    default_ms: u64,
) -> Result<(u64, u64), OpsError> {
    if let Some(unknown) = query.keys().find(|k| *k != "from_ms" && *k != "to_ms") {
        return Err(OpsError::invalid(format!(
            "unknown query parameter {unknown:?} (expected from_ms, to_ms)"
        )));
    }
    let get = |name: &str| {
        query
            .get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    OpsError::invalid(format!(
                        "{name} must be milliseconds (a non-negative integer)"
                    ))
                })
            })
            .transpose()
    };
    let to_ms = get("to_ms")?.unwrap_or(now_ms);
    let from_ms = get("from_ms")?.unwrap_or_else(|| to_ms.saturating_sub(default_ms));
    if from_ms >= to_ms {
        return Err(OpsError::invalid("from_ms must be before to_ms"));
    }
    store::i(to_ms).map_err(|_| OpsError::invalid("to_ms is too large"))?;
    Ok((from_ms, to_ms))
}

/// What the P&L is computed from, as the store sums it over the window.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub channels: Vec<ChannelRow>,
    /// `(chan_id_out, forwards, amount out, fees)`.
    pub out: Vec<(u64, u64, Msat, Msat)>,
    /// `(chan_id_in, amount in)`.
    pub inbound: Vec<(u64, Msat)>,
    /// `(chan_id_in, fees paid)`.
    pub rebalances: Vec<(u64, Msat)>,
    /// `(chan_id, observations, active)`.
    pub uptime: Vec<(u64, u64, u64)>,
}

fn signed(m: Msat) -> Result<i64, OpsError> {
    // Msat is bounded by the 21M BTC supply, well inside i64.
    i64::try_from(m.as_u64()).map_err(|_| OpsError::Money(oa_money::MoneyError::Overflow))
}

fn add(a: u64, b: u64) -> Result<u64, OpsError> {
    Ok(Msat::new(a)?.checked_add(Msat::new(b)?)?.as_u64())
}

/// Per-channel P&L rows (every channel observed or named by a forward or rebalance, by channel
/// id) and their totals. Pure, so a hand-computed table can check it.
pub fn compute(inputs: &Inputs) -> Result<(Vec<ops::ChannelReport>, ops::ChannelReport), OpsError> {
    let mut rows: BTreeMap<u64, ops::ChannelReport> = BTreeMap::new();
    fn row(rows: &mut BTreeMap<u64, ops::ChannelReport>, chan_id: u64) -> &mut ops::ChannelReport {
        rows.entry(chan_id).or_insert_with(|| ops::ChannelReport {
            channel_id: plan::channel_id(chan_id),
            chan_id,
            ..Default::default()
        })
    }
    for c in &inputs.channels {
        let r = row(&mut rows, c.chan_id);
        r.remote_pubkey.clone_from(&c.remote_pubkey);
        r.local_balance_msat = c.local_balance_msat;
        r.remote_balance_msat = c.remote_balance_msat;
        r.balance_permille = permille(
            c.local_balance_msat,
            add(c.local_balance_msat, c.remote_balance_msat)?,
        );
    }
    for &(chan_id, n, amount, fee) in &inputs.out {
        let r = row(&mut rows, chan_id);
        r.forwards_out = n;
        r.forwarded_out_msat = amount.as_u64();
        r.fee_revenue_msat = fee.as_u64();
    }
    for &(chan_id, amount) in &inputs.inbound {
        row(&mut rows, chan_id).forwarded_in_msat = amount.as_u64();
    }
    for &(chan_id, fee) in &inputs.rebalances {
        row(&mut rows, chan_id).rebalance_cost_msat = fee.as_u64();
    }
    for &(chan_id, observations, active) in &inputs.uptime {
        let r = row(&mut rows, chan_id);
        r.observations = observations;
        r.uptime_permille = permille(active, observations);
    }
    let mut totals = ops::ChannelReport {
        channel_id: "total".into(),
        ..Default::default()
    };
    for r in rows.values_mut() {
        r.pnl_msat = signed(Msat::new(r.fee_revenue_msat)?)?
            .checked_sub(signed(Msat::new(r.rebalance_cost_msat)?)?)
            .ok_or(OpsError::Money(oa_money::MoneyError::Overflow))?;
        totals.forwards_out = totals
            .forwards_out
            .checked_add(r.forwards_out)
            .ok_or(OpsError::Money(oa_money::MoneyError::Overflow))?;
        totals.forwarded_out_msat = add(totals.forwarded_out_msat, r.forwarded_out_msat)?;
        totals.fee_revenue_msat = add(totals.fee_revenue_msat, r.fee_revenue_msat)?;
        totals.forwarded_in_msat = add(totals.forwarded_in_msat, r.forwarded_in_msat)?;
        totals.rebalance_cost_msat = add(totals.rebalance_cost_msat, r.rebalance_cost_msat)?;
        totals.local_balance_msat = add(totals.local_balance_msat, r.local_balance_msat)?;
        totals.remote_balance_msat = add(totals.remote_balance_msat, r.remote_balance_msat)?;
        totals.pnl_msat = totals
            .pnl_msat
            .checked_add(r.pnl_msat)
            .ok_or(OpsError::Money(oa_money::MoneyError::Overflow))?;
    }
    totals.balance_permille = permille(
        totals.local_balance_msat,
        add(totals.local_balance_msat, totals.remote_balance_msat)?,
    );
    Ok((rows.into_values().collect(), totals))
}

/// The health flags of one channel, given its latest observation and its P&L over the window.
pub fn flags(c: &plan::Observed, pnl_msat: i64) -> Vec<String> {
    let total = u128::from(c.local_balance_msat) + u128::from(c.remote_balance_msat);
    let below =
        |side: u64| u128::from(side) * 1000 < total * u128::from(DEPLETED_PERMILLE) || total == 0;
    let mut out = Vec::new();
    if !c.active {
        out.push(INACTIVE.to_owned());
    }
    if below(c.local_balance_msat) {
        out.push(DEPLETED_LOCAL.to_owned());
    }
    if below(c.remote_balance_msat) {
        out.push(DEPLETED_REMOTE.to_owned());
    }
    if pnl_msat < 0 {
        out.push(LOSING_MONEY.to_owned());
    }
    out
}

/// Records a rebalance's cost inside the caller's transaction (see the module docs). The
/// rebalance action calls this in the transaction that records its outcome and receipt. Returns
/// false if this `rebalance_id` was already recorded (recording is idempotent).
pub async fn record_rebalance_in(
    conn: &mut sqlx::AnyConnection,
    r: &Rebalance,
    now_ms: u64,
) -> Result<bool, OpsError> {
    if r.chan_id_in == r.chan_id_out {
        return Err(OpsError::invalid(
            "a rebalance moves liquidity between two different channels",
        ));
    }
    if r.amount_msat.is_zero() {
        return Err(OpsError::invalid("a rebalance moves a positive amount"));
    }
    if r.rebalance_id.is_empty() {
        return Err(OpsError::invalid("a rebalance needs an id"));
    }
    let inserted = store::insert_rebalance(conn, r, now_ms).await?;
    if inserted {
        journal::append(
            conn,
            REBALANCES_TOPIC,
            "rebalance_recorded",
            &json!({
                "rebalance_id": r.rebalance_id,
                "chan_id_in": r.chan_id_in.to_string(),
                "chan_id_out": r.chan_id_out.to_string(),
                "amount_msat": r.amount_msat,
                "fee_msat": r.fee_msat,
            }),
            now_ms,
        )
        .await?;
    }
    Ok(inserted)
}

impl Ops {
    /// Records a rebalance's cost in its own transaction (see [`record_rebalance_in`]).
    pub async fn record_rebalance(&self, r: &Rebalance) -> Result<bool, OpsError> {
        let mut tx = self.db.begin().await?;
        let inserted = record_rebalance_in(&mut tx, r, self.clock.now_ms()).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Brings the stored forwarding history and channel observations up to date (bounded), so a
    /// report is current. Returns why it could not, if it could not; the report then covers what
    /// was stored before.
    async fn sync(&self) -> String {
        if self.channels.is_none() {
            return "no --executor-url: the report covers stored data only".into();
        }
        let mut problems = Vec::new();
        if let Err(e) = self.ingest(SYNC_PAGES).await {
            problems.push(format!("forwarding history: {}", api_message(&e)));
        }
        if let Err(e) = self.observe().await {
            problems.push(format!("channels: {}", api_message(&e)));
        }
        problems.join("; ")
    }

    async fn inputs(&self, from_ms: u64, to_ms: u64) -> Result<Inputs, OpsError> {
        let mut conn = self.conn().await?;
        Ok(Inputs {
            channels: store::channels(&mut conn).await?,
            out: store::forwards_out(&mut conn, from_ms, to_ms).await?,
            inbound: store::forwards_in(&mut conn, from_ms, to_ms).await?,
            rebalances: store::rebalance_costs(&mut conn, from_ms, to_ms).await?,
            uptime: store::uptime(&mut conn, from_ms, to_ms).await?,
        })
    }

    /// `GET /v1/ops/report`: per-channel P&L over `[from_ms, to_ms)`.
    pub async fn report(&self, from_ms: u64, to_ms: u64) -> Result<ops::ReportResponse, OpsError> {
        let sync_error = self.sync().await;
        let (channels, totals) = compute(&self.inputs(from_ms, to_ms).await?)?;
        let forwards_cursor =
            store::cursor(&mut *self.conn().await?, store::FORWARDS_CURSOR).await?;
        Ok(ops::ReportResponse {
            from_ms,
            to_ms,
            channels,
            totals: Some(totals),
            forwards_cursor,
            sync_error,
        })
    }

    /// `GET /v1/ops/channels`: the node's channels now, with health flags (P&L over the window).
    pub async fn health(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<ops::ChannelsResponse, OpsError> {
        let observed = self.observe().await?;
        if let Err(e) = self.ingest(SYNC_PAGES).await {
            tracing::warn!(error = %api_message(&e), "forwarding history not ingested for a health check");
        }
        let (rows, _) = compute(&self.inputs(from_ms, to_ms).await?)?;
        let pnl: HashMap<u64, i64> = rows.iter().map(|r| (r.chan_id, r.pnl_msat)).collect();
        let mut observed = observed;
        observed.sort_by_key(|c| c.chan_id);
        let channels = observed
            .iter()
            .map(|c| {
                let pnl_msat = pnl.get(&c.chan_id).copied().unwrap_or(0);
                let total = c.local_balance_msat.saturating_add(c.remote_balance_msat);
                ops::ChannelHealth {
                    channel_id: plan::channel_id(c.chan_id),
                    chan_id: c.chan_id,
                    remote_pubkey: c.remote_pubkey.clone(),
                    active: c.active,
                    local_balance_msat: c.local_balance_msat,
                    remote_balance_msat: c.remote_balance_msat,
                    balance_permille: permille(c.local_balance_msat, total),
                    pnl_msat,
                    flags: flags(c, pnl_msat),
                }
            })
            .collect();
        Ok(ops::ChannelsResponse {
            from_ms,
            to_ms,
            channels,
        })
    }
}

fn api_message(e: &OpsError) -> String {
    let api = e.to_api();
    format!("{}: {}", api.code, api.message)
}

// ---------------------------------------------------------------------------------------------
// Rendering for operators (`oa ops report`)

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 14] = [
    "channel_id",
    "chan_id",
    "remote_pubkey",
    "forwards_out",
    "forwarded_out_msat",
    "fee_revenue_msat",
    "forwarded_in_msat",
    "rebalance_cost_msat",
    "pnl_msat",
    "uptime_permille",
    "observations",
    "local_balance_msat",
    "remote_balance_msat",
    "balance_permille",
];

/// RFC 4180 field: quoted (with doubled quotes) when it holds a comma, quote, CR or LF.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv_values(r: &ops::ChannelReport) -> [String; 14] {
    [
        r.channel_id.clone(),
        r.chan_id.to_string(),
        r.remote_pubkey.clone(),
        r.forwards_out.to_string(),
        r.forwarded_out_msat.to_string(),
        r.fee_revenue_msat.to_string(),
        r.forwarded_in_msat.to_string(),
        r.rebalance_cost_msat.to_string(),
        r.pnl_msat.to_string(),
        // Unknown uptime (no observations) is an empty field, not 0.
        if r.observations == 0 {
            String::new()
        } else {
            r.uptime_permille.to_string()
        },
        r.observations.to_string(),
        r.local_balance_msat.to_string(),
        r.remote_balance_msat.to_string(),
        r.balance_permille.to_string(),
    ]
}

/// The report as CSV (RFC 4180: a header row, CRLF line ends, quoting where needed), one row per
/// channel; totals are left to the spreadsheet.
pub fn to_csv(report: &ops::ReportResponse) -> String {
    let mut out = CSV_HEADER.join(",");
    out.push_str("\r\n");
    for r in &report.channels {
        let fields: Vec<String> = csv_values(r).iter().map(|f| csv_field(f)).collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

fn pct(permille: u32) -> String {
    format!("{}.{}%", permille / 10, permille % 10)
}

/// The report as a table for a terminal, with a totals line.
pub fn to_table(report: &ops::ReportResponse) -> String {
    let header = [
        "channel",
        "peer",
        "fwds",
        "out_msat",
        "revenue_msat",
        "rebal_msat",
        "pnl_msat",
        "uptime",
        "local",
    ];
    let line = |r: &ops::ChannelReport, total: bool| -> [String; 9] {
        [
            r.channel_id.clone(),
            r.remote_pubkey
                .get(..12)
                .unwrap_or(&r.remote_pubkey)
                .to_owned(),
            r.forwards_out.to_string(),
            r.forwarded_out_msat.to_string(),
            r.fee_revenue_msat.to_string(),
            r.rebalance_cost_msat.to_string(),
            r.pnl_msat.to_string(),
            if total || r.observations == 0 {
                "-".into()
            } else {
                pct(r.uptime_permille)
            },
            pct(r.balance_permille),
        ]
    };
    let mut lines: Vec<[String; 9]> = vec![header.map(str::to_owned)];
    lines.extend(report.channels.iter().map(|r| line(r, false)));
    let totals = report.totals.clone().unwrap_or_default();
    lines.push(line(&totals, true));
    let mut widths = [0usize; 9];
    for l in &lines {
        for (w, cell) in widths.iter_mut().zip(l) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = format!(
        "forwarding P&L from {} to {} ms (msat; fee revenue to the outgoing channel, rebalance cost to the channel that received liquidity)\n",
        report.from_ms, report.to_ms
    );
    let last = lines.len().saturating_sub(1);
    for (n, l) in lines.iter().enumerate() {
        if n == last {
            let rule: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            let _ = writeln!(out, "{}", "-".repeat(rule));
        }
        let cells: Vec<String> = l
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i < 2 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    if !report.sync_error.is_empty() {
        let _ = writeln!(out, "warning: not up to date: {}", report.sync_error);
    }
    out
}
