//! Cross-service link rules, and walking the links of one payment.
//!
//! Each receipt class that depends on another names it in `links`. [`LINK_RULES`] says, per pair
//! of classes, when the link is mandatory and which body fields must agree across it; the
//! auditor ([`crate::verify_export`]) applies every rule to every receipt. Adding a receipt class
//! that links another is one new entry in that table.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value};

use crate::hash::Hash;
use crate::receipt::Receipt;

/// What must hold between a receipt of class `from` and the receipt of class `to` it links.
#[derive(Debug, Clone, Copy)]
pub struct LinkRule {
    /// Schema of the linking receipt.
    pub from: &'static str,
    /// Schema of the linked receipt.
    pub to: &'static str,
    /// The link is mandatory when this body field of `from` has one of these values.
    pub required_when: (&'static str, &'static [&'static str]),
    /// A body field of `from` holding the linked receipt's hash, if the class has one; when
    /// present and non-empty it must equal the hash of the linked receipt.
    pub hash_field: Option<&'static str>,
    /// Pairs of body fields (`from`'s, `to`'s) that must be equal strings.
    pub equal: &'static [(&'static str, &'static str)],
    /// Sums of decimal-string amount fields (`from`'s, `to`'s) that must be equal.
    pub equal_totals: &'static [(&'static [&'static str], &'static [&'static str])],
}

/// Hydra's invoice pay receipt.
pub const HYDRA_INVOICE_PAY: &str = "oa.hydra.invoice_pay_receipt.v1";
/// The wallet-executor's payment receipt.
pub const EXECUTOR_PAYMENT: &str = "oa.wallet_executor.payment_receipt.v1";
/// Treasury's payment attempt receipt.
pub const TREASURY_ATTEMPT: &str = "oa.treasury.payment_attempt_receipt.v1";
/// Hydra's credit envelope receipts: issue, settlement, default (or expiry).
pub const HYDRA_ENVELOPE_ISSUE: &str = "oa.hydra.envelope_issue_receipt.v1";
pub const HYDRA_ENVELOPE_SETTLEMENT: &str = "oa.hydra.envelope_settlement_receipt.v1";
pub const HYDRA_ENVELOPE_DEFAULT: &str = "oa.hydra.envelope_default_receipt.v1";
/// Aegis's verification receipt.
pub const AEGIS_VERIFICATION: &str = "oa.aegis.verification_receipt.v1";
/// lightning-ops's receipt for a channel action it executed through the executor.
pub const OPS_CHANNEL_ACTION: &str = "oa.ops.channel_action_receipt.v1";
/// The wallet-executor's receipt for a channel policy change.
pub const EXECUTOR_CHANNEL_POLICY: &str = "oa.wallet_executor.channel_policy_receipt.v1";
/// lightning-ops's receipts for a rebalance, a channel open and a channel close it executed
/// through the executor.
pub const OPS_REBALANCE: &str = "oa.ops.rebalance_receipt.v1";
pub const OPS_CHANNEL_OPEN: &str = "oa.ops.channel_open_receipt.v1";
pub const OPS_CHANNEL_CLOSE: &str = "oa.ops.channel_close_receipt.v1";
/// The wallet-executor's receipts for a channel open or close, and for a rebalance.
pub const EXECUTOR_CHANNEL_ACTION: &str = "oa.wallet_executor.channel_action_receipt.v1";
pub const EXECUTOR_REBALANCE: &str = "oa.wallet_executor.rebalance_receipt.v1";

/// Hydra's receipts for an agent's deposit (credited from an invoice settlement) and withdrawal.
pub const HYDRA_DEPOSIT: &str = "oa.hydra.deposit_receipt.v1";
pub const HYDRA_WITHDRAW: &str = "oa.hydra.withdraw_receipt.v1";
/// The wallet-executor's receipt for a settled invoice of our node.
pub const EXECUTOR_INVOICE_SETTLEMENT: &str = "oa.wallet_executor.invoice_settlement_receipt.v1";
/// Treasury's receipt for an attempt that paid through a Hydra credit envelope.
pub const TREASURY_ENVELOPE_ATTEMPT: &str = "oa.treasury.envelope_attempt_receipt.v1";
/// Aegis's receipt for a claim's resolution (paid, denied, payment failed).
pub const AEGIS_CLAIM_RESOLUTION: &str = "oa.aegis.claim_resolution_receipt.v1";

/// Every cross-service rule the auditor enforces.
pub const LINK_RULES: &[LinkRule] = &[
    // Hydra pays through the executor: a successful pay links the executor's receipt for the
    // same payment hash, amount and fee.
    LinkRule {
        from: HYDRA_INVOICE_PAY,
        to: EXECUTOR_PAYMENT,
        required_when: ("status", &["succeeded"]),
        hash_field: Some("executor_receipt"),
        equal: &[
            ("payment_hash", "payment_hash"),
            ("amount_msat", "amount_msat"),
            ("fee_msat", "fee_msat"),
        ],
        equal_totals: &[(&["amount_msat", "fee_msat"], &["amount_msat", "fee_msat"])],
    },
    // Treasury pays through Hydra: a successful attempt links Hydra's pay receipt for the same
    // payment hash, and what treasury spent (amount + fee) is what Hydra spent.
    LinkRule {
        from: TREASURY_ATTEMPT,
        to: HYDRA_INVOICE_PAY,
        required_when: ("state", &["succeeded"]),
        hash_field: Some("hydra_receipt"),
        equal: &[("payment_hash", "payment_hash")],
        equal_totals: &[(&["amount_msat", "fee_msat"], &["amount_msat", "fee_msat"])],
    },
    // A settled credit envelope paid the provider through the executor: same payment, amount
    // and routing fee.
    LinkRule {
        from: HYDRA_ENVELOPE_SETTLEMENT,
        to: EXECUTOR_PAYMENT,
        required_when: ("status", &["settled"]),
        hash_field: Some("executor_receipt"),
        equal: &[
            ("payment_hash", "payment_hash"),
            ("amount_msat", "amount_msat"),
            ("fee_msat", "fee_msat"),
        ],
        equal_totals: &[(&["amount_msat", "fee_msat"], &["amount_msat", "fee_msat"])],
    },
    // ... only after Aegis verified the envelope's work: a passed verification of its scope.
    LinkRule {
        from: HYDRA_ENVELOPE_SETTLEMENT,
        to: AEGIS_VERIFICATION,
        required_when: ("status", &["settled"]),
        hash_field: Some("verification_receipt"),
        equal: &[
            ("verification_id", "verification_id"),
            ("verification_verdict", "verdict"),
            ("scope", "scope"),
        ],
        equal_totals: &[],
    },
    // ... of an envelope Hydra issued, with the cap and credit fee it was issued with.
    LinkRule {
        from: HYDRA_ENVELOPE_SETTLEMENT,
        to: HYDRA_ENVELOPE_ISSUE,
        required_when: ("status", &["settled"]),
        hash_field: Some("issue_receipt"),
        equal: &[
            ("envelope_id", "envelope_id"),
            ("cap_msat", "cap_msat"),
            ("credit_fee_msat", "fee_msat"),
        ],
        equal_totals: &[],
    },
    // A default or an expiry ends an issued envelope ...
    LinkRule {
        from: HYDRA_ENVELOPE_DEFAULT,
        to: HYDRA_ENVELOPE_ISSUE,
        required_when: ("status", &["defaulted", "expired"]),
        hash_field: Some("issue_receipt"),
        equal: &[("envelope_id", "envelope_id"), ("cap_msat", "cap_msat")],
        equal_totals: &[],
    },
    // ... and a default for a failed verification rests on Aegis's failed verdict of its scope.
    LinkRule {
        from: HYDRA_ENVELOPE_DEFAULT,
        to: AEGIS_VERIFICATION,
        required_when: ("reason", &["verification_failed"]),
        hash_field: Some("verification_receipt"),
        equal: &[
            ("verification_id", "verification_id"),
            ("verification_verdict", "verdict"),
            ("scope", "scope"),
        ],
        equal_totals: &[],
    },
    // lightning-ops changes a channel's policy through the executor: the executor's receipt is
    // for the same channel and the same policy.
    LinkRule {
        from: OPS_CHANNEL_ACTION,
        to: EXECUTOR_CHANNEL_POLICY,
        required_when: ("action", &["set_policy"]),
        hash_field: Some("executor_receipt"),
        equal: &[
            ("chan_id", "chan_id"),
            ("base_fee_msat", "base_fee_msat"),
            ("fee_rate_ppm", "fee_rate_ppm"),
            ("min_htlc_msat", "min_htlc_msat"),
            ("max_htlc_msat", "max_htlc_msat"),
            ("time_lock_delta", "time_lock_delta"),
            ("inbound_base_fee_msat", "inbound_base_fee_msat"),
            ("inbound_fee_rate_ppm", "inbound_fee_rate_ppm"),
        ],
        equal_totals: &[],
    },
    // lightning-ops rebalances through the executor: the executor's receipt is for the same
    // channels, payment, outcome, amount, fee and fee limit (the fee lightning-ops charges to
    // the channel the liquidity came in over is the one the executor paid).
    LinkRule {
        from: OPS_REBALANCE,
        to: EXECUTOR_REBALANCE,
        required_when: ("action", &["rebalance"]),
        hash_field: Some("executor_receipt"),
        equal: &[
            ("out_chan_id", "out_chan_id"),
            ("in_chan_id", "in_chan_id"),
            ("payment_hash", "payment_hash"),
            ("status", "status"),
            ("amount_msat", "amount_msat"),
            ("fee_msat", "fee_msat"),
            ("fee_limit_msat", "fee_limit_msat"),
        ],
        equal_totals: &[(&["amount_msat", "fee_msat"], &["amount_msat", "fee_msat"])],
    },
    // lightning-ops opens a channel through the executor: the executor's receipt is an open to
    // the same peer, with the same funding, nothing pushed, and the same funding output.
    LinkRule {
        from: OPS_CHANNEL_OPEN,
        to: EXECUTOR_CHANNEL_ACTION,
        required_when: ("action", &["open"]),
        hash_field: Some("executor_receipt"),
        equal: &[
            ("action", "action"),
            ("remote_pubkey", "remote_pubkey"),
            ("local_funding_msat", "local_funding_msat"),
            ("push_msat", "push_msat"),
            ("funding_txid", "funding_txid"),
            ("funding_output_index", "funding_output_index"),
        ],
        equal_totals: &[],
    },
    // lightning-ops closes a channel through the executor: the executor's receipt is a close of
    // the same channel with the same closing transaction.
    LinkRule {
        from: OPS_CHANNEL_CLOSE,
        to: EXECUTOR_CHANNEL_ACTION,
        required_when: ("action", &["close"]),
        hash_field: Some("executor_receipt"),
        equal: &[
            ("action", "action"),
            ("chan_id", "chan_id"),
            ("closing_txid", "closing_txid"),
        ],
        equal_totals: &[],
    },
    // Aegis pays a claim through Hydra: a paid claim resolution links Hydra's invoice-pay receipt
    // for the claimant's invoice (same payment hash) and the payout (same amount).
    LinkRule {
        from: AEGIS_CLAIM_RESOLUTION,
        to: HYDRA_INVOICE_PAY,
        required_when: ("status", &["paid"]),
        hash_field: Some("hydra_receipt"),
        equal: &[
            ("payment_hash", "payment_hash"),
            ("amount_msat", "amount_msat"),
        ],
        equal_totals: &[],
    },
    // Hydra credits a deposit from the executor's settlement of its invoice: same invoice, same
    // amounts, same position in the settlement log.
    LinkRule {
        from: HYDRA_DEPOSIT,
        to: EXECUTOR_INVOICE_SETTLEMENT,
        required_when: ("status", &["credited"]),
        hash_field: Some("executor_receipt"),
        equal: &[
            ("payment_hash", "payment_hash"),
            ("amount_msat", "amount_msat"),
            ("amount_paid_msat", "amount_paid_msat"),
            ("settle_index", "settle_index"),
        ],
        equal_totals: &[],
    },
    // A withdrawal paid through the executor: same payment, amount and fee.
    LinkRule {
        from: HYDRA_WITHDRAW,
        to: EXECUTOR_PAYMENT,
        required_when: ("status", &["succeeded"]),
        hash_field: Some("executor_receipt"),
        equal: &[
            ("payment_hash", "payment_hash"),
            ("amount_msat", "amount_msat"),
            ("fee_msat", "fee_msat"),
        ],
        equal_totals: &[(&["amount_msat", "fee_msat"], &["amount_msat", "fee_msat"])],
    },
    // Treasury paid through a credit envelope: Hydra settled that envelope for the same invoice,
    // amount, routing fee and credit fee.
    LinkRule {
        from: TREASURY_ENVELOPE_ATTEMPT,
        to: HYDRA_ENVELOPE_SETTLEMENT,
        required_when: ("state", &["succeeded"]),
        hash_field: Some("hydra_receipt"),
        equal: &[
            ("envelope_id", "envelope_id"),
            ("payment_hash", "payment_hash"),
            ("amount_msat", "amount_msat"),
            ("fee_msat", "fee_msat"),
            ("credit_fee_msat", "credit_fee_msat"),
        ],
        equal_totals: &[],
    },
];

/// Whether any rule mentions `schema` (so the auditor keeps such receipts' bodies).
#[must_use]
pub fn has_rules(schema: &str) -> bool {
    LINK_RULES
        .iter()
        .any(|r| r.from == schema || r.to == schema)
}

fn text<'a>(body: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    body.get(field).and_then(Value::as_str)
}

fn total(body: &Map<String, Value>, fields: &[&str]) -> Result<u64, String> {
    fields.iter().try_fold(0u64, |acc, f| {
        let v = text(body, f)
            .and_then(crate::u64_string::parse)
            .ok_or_else(|| format!("{f} is not a decimal amount"))?;
        acc.checked_add(v)
            .ok_or_else(|| "amounts overflow u64".to_owned())
    })
}

/// A receipt's class and body, as the rules need them.
pub(crate) struct Linked<'a> {
    pub schema: &'a str,
    pub body: &'a Map<String, Value>,
}

/// Problems of receipt `from` (with `links`) under every rule. `resolve` finds a linked receipt
/// by hash (those missing from the export are reported elsewhere as unresolved links). Returns
/// `(missing_link, detail)` pairs: `true` for a mandatory link that is absent.
pub(crate) fn check<'a>(
    from: &Linked<'_>,
    links: &[Hash],
    resolve: impl Fn(&Hash) -> Option<Linked<'a>>,
) -> Vec<(bool, String)> {
    let mut problems = Vec::new();
    for rule in LINK_RULES.iter().filter(|r| r.from == from.schema) {
        let targets: Vec<(Hash, Linked<'a>)> = links
            .iter()
            .filter_map(|h| resolve(h).map(|l| (*h, l)))
            .filter(|(_, l)| l.schema == rule.to)
            .collect();
        let (field, values) = rule.required_when;
        let required = text(from.body, field).is_some_and(|v| values.contains(&v));
        if targets.is_empty() {
            if required {
                problems.push((
                    true,
                    format!(
                        "{field} {:?} requires a link to a {} receipt; none in the export",
                        text(from.body, field).unwrap_or(""),
                        rule.to
                    ),
                ));
            }
            continue;
        }
        for (hash, to) in &targets {
            if let Some(f) = rule.hash_field
                && let Some(named) = text(from.body, f).filter(|s| !s.is_empty())
                && named != hash.to_string()
            {
                problems.push((false, format!("body {f} {named} is not the linked {hash}")));
            }
            for (a, b) in rule.equal {
                let (x, y) = (text(from.body, a), text(to.body, b));
                if x.is_none() || x != y {
                    problems.push((
                        false,
                        format!(
                            "{a} {:?} differs from the linked {} receipt's {b} {:?}",
                            x.unwrap_or(""),
                            rule.to,
                            y.unwrap_or("")
                        ),
                    ));
                }
            }
            for (a, b) in rule.equal_totals {
                match (total(from.body, a), total(to.body, b)) {
                    (Ok(x), Ok(y)) if x == y => {}
                    (Ok(x), Ok(y)) => problems.push((
                        false,
                        format!(
                            "{} = {x} but the linked {} receipt's {} = {y}",
                            a.join(" + "),
                            rule.to,
                            b.join(" + ")
                        ),
                    )),
                    (Err(e), _) | (_, Err(e)) => problems.push((false, e)),
                }
            }
        }
    }
    problems
}

/// One receipt in a [`trace`], with its depth below the receipt that started the payment.
#[derive(Debug, Clone)]
pub struct TraceStep<'a> {
    /// 0 for the top (a receipt nothing else links), 1 for what it links, and so on.
    pub depth: usize,
    /// The receipt.
    pub receipt: &'a Receipt,
}

/// Body fields that identify a payment: a `trace` starts from every receipt whose body has one
/// of them equal to the needle.
pub const TRACE_FIELDS: &[&str] = &["payment_hash", "payment_id", "quote_id"];

/// "What happened to payment X": every receipt connected by links to a receipt whose body names
/// `needle` in one of [`TRACE_FIELDS`] (or whose hash or id is `needle`), ordered top-down from
/// the receipts nothing else links (for a payment: treasury's attempt, then Hydra's pay, then the
/// executor's payment), then by issue time.
#[must_use]
pub fn trace<'a>(receipts: &'a [Receipt], needle: &str) -> Vec<TraceStep<'a>> {
    let by_hash: HashMap<Hash, usize> = receipts
        .iter()
        .enumerate()
        .map(|(i, r)| (r.hash, i))
        .collect();
    let mut parents: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, r) in receipts.iter().enumerate() {
        for l in &r.links {
            if let Some(&j) = by_hash.get(l) {
                parents.entry(j).or_default().push(i);
            }
        }
    }
    let mut component = BTreeSet::new();
    let mut stack: Vec<usize> = receipts
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.receipt_id == needle
                || r.hash.to_string() == needle
                || TRACE_FIELDS
                    .iter()
                    .any(|f| text(&r.body, f) == Some(needle))
        })
        .map(|(i, _)| i)
        .collect();
    while let Some(i) = stack.pop() {
        if !component.insert(i) {
            continue;
        }
        stack.extend(receipts[i].links.iter().filter_map(|l| by_hash.get(l)));
        stack.extend(parents.get(&i).into_iter().flatten());
    }
    // Depth: longest chain of links from a top receipt within the component.
    let mut depth: HashMap<usize, usize> = HashMap::new();
    let mut order: Vec<usize> = component.iter().copied().collect();
    order.sort_by_key(|&i| (receipts[i].issued_at_ms, i));
    for _ in 0..order.len() {
        let mut changed = false;
        for &i in &order {
            let d = parents
                .get(&i)
                .into_iter()
                .flatten()
                .filter(|p| component.contains(p))
                .map(|p| depth.get(p).copied().unwrap_or(0) + 1)
                .max()
                .unwrap_or(0);
            if depth.get(&i) != Some(&d) {
                depth.insert(i, d);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut steps: Vec<TraceStep<'a>> = order
        .into_iter()
        .map(|i| TraceStep {
            depth: depth.get(&i).copied().unwrap_or(0),
            receipt: &receipts[i],
        })
        .collect();
    steps.sort_by_key(|s| (s.depth, s.receipt.issued_at_ms));
    steps
}
