//! Spending policy as versioned data, and the one function that decides a payment.
//!
//! A policy is a TOML document (`policy.example.toml` documents every field). It is loaded at
//! start (`--policy-file`) or replaced with `PUT /v1/treasury/policy`; either way it is stored
//! with its **bundle id**, `sha256:` + hex SHA-256 of the RFC 8785 canonical JSON of the parsed
//! policy with every default filled in (amounts as decimal strings), so the same rules spelt
//! differently have the same id, and any JCS implementation reproduces it. Every decision records
//! the bundle id and the rule that fired.
//!
//! [`decide`] is pure: the same policy and facts give the same decision, which is what makes
//! `POST /v1/treasury/policy/evaluate` (a dry run) and `POST /v1/treasury/payments` agree. The
//! order of checks, first deciding one wins:
//!
//! 1. **budget lists and caps** of every budget that applies (org, agent, host): payee deny,
//!    host deny, payee allow, host allow, per-payment maximum (`amount + max_fee`); no budget at
//!    all is a denial too. Rule `budget:<kind>:<subject>:<period>` (`budget:none`).
//! 2. **risk**, when the policy reads it (`[risk] source = "aegis"`): Aegis unreadable and
//!    `on_unavailable = "deny"` denies (rule `risk:unavailable`); degraded (Aegis says elevated or
//!    exhausted for the agent or its org, or unreadable with `on_unavailable = "degraded"`) may
//!    deny outright (`risk:degraded`) or above a lower per-payment cap (`risk:degraded_cap`,
//!    the smaller of the policy's cap and, with `use_aegis_cap`, Aegis's effective cap).
//! 3. **rules**, in order, the first whose `when` matches (every condition given must hold):
//!    `deny`, `require_approval` or `pay`, with the rails to use. No match denies
//!    (`no_rule_matched`).
//! 4. **approvals** for a `pay`: degraded risk above `risk.degraded.approval_above_msat`
//!    (`risk:degraded_approval`), then above `approvals.above_msat` (`approvals:above_threshold`),
//!    then an unknown payee with `approvals.unknown_payee` (`approvals:unknown_payee`).
//!
//! After the decision, the payment reserves in every budget; a budget without room denies with
//! rule `budget:<kind>:<subject>:<period>` (under degraded risk, budgets count as
//! `budget_limit_bps` of their funding). That part depends on balances, so `evaluate` reports
//! whether the reservation would fit now.

use std::collections::{BTreeMap, BTreeSet};

use oa_money::Msat;
use oa_receipts::Hash;
use serde::{Deserialize, Serialize};

use crate::{
    budget::{self, BPS, BudgetConfig},
    error::TreasuryError,
};

/// Largest accepted policy document: a few hundred rules fit comfortably.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;
/// Most rules in a policy: each payment walks them in order.
pub const MAX_RULES: usize = 256;
/// Longest rule id, reason code or org id.
pub const MAX_NAME_LEN: usize = 64;
/// Longest time an approval may wait: a week.
pub const MAX_APPROVAL_TTL_SECS: u64 = 7 * 86_400;
/// Shortest and longest credit-envelope lifetime (Hydra needs at least 60 s to offer and accept).
pub const MIN_ENVELOPE_TTL_SECS: u64 = 60;
pub const MAX_ENVELOPE_TTL_SECS: u64 = 30 * 86_400;
/// Longest time a risk reading from Aegis is reused.
pub const MAX_RISK_CACHE_MS: u64 = 3_600_000;

/// A whole number of millisatoshis in a policy: a TOML integer or a decimal string, written as a
/// string in the canonical form (RFC 8785 numbers are doubles, exact only below 2^53).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(pub u64);

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(v) => Ok(Amount(v)),
            Raw::Str(s) => s.parse().map(Amount).map_err(|_| {
                serde::de::Error::custom("an amount is a non-negative integer of millisatoshis")
            }),
        }
    }
}

impl Amount {
    pub fn msat(self) -> Result<Msat, TreasuryError> {
        Msat::new(self.0).map_err(|e| {
            TreasuryError::invalid("INVALID_POLICY", format!("amount {}: {e}", self.0))
        })
    }
}

/// A way to pay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rail {
    /// Hydra pays the invoice from its pooled liquidity now (`quote_pay`, `pay`).
    DirectLiquidity,
    /// Hydra issues a credit envelope and pays the provider once Aegis has verified the work.
    CreditEnvelope,
}

impl Rail {
    pub fn as_str(self) -> &'static str {
        match self {
            Rail::DirectLiquidity => "direct_liquidity",
            Rail::CreditEnvelope => "credit_envelope",
        }
    }

    pub fn parse(s: &str) -> Option<Rail> {
        [Rail::DirectLiquidity, Rail::CreditEnvelope]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Deny,
    RequireApproval,
    #[default]
    Pay,
}

/// How the rails of a rule are ordered: as written, or by Hydra's routing score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Choose {
    #[default]
    Order,
    Score,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Bolt11,
    L402,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Bolt11 => "bolt11",
            Source::L402 => "l402",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    Normal,
    Degraded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RiskSourceKind {
    /// Risk is not consulted.
    #[default]
    None,
    /// Aegis's risk budget status of the agent and its org.
    Aegis,
}

/// What to assume when Aegis cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Assume {
    Normal,
    #[default]
    Degraded,
    Deny,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Payees {
    /// Node public keys that count as known (no unknown-payee approval).
    #[serde(default)]
    pub known: Vec<String>,
}

fn default_approval_ttl() -> u64 {
    3_600
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvals {
    /// Payments of more than this amount wait for an approver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above_msat: Option<Amount>,
    /// A payee never paid before, not in `payees.known` nor in a budget's allow list, waits.
    #[serde(default)]
    pub unknown_payee: bool,
    /// How long a payment waits for approval before it is denied (`approval_expired`).
    #[serde(default = "default_approval_ttl")]
    pub ttl_secs: u64,
    /// Whether the identity that asked for a payment may approve it.
    #[serde(default)]
    pub allow_self_approval: bool,
}

impl Default for Approvals {
    fn default() -> Self {
        Self {
            above_msat: None,
            unknown_payee: false,
            ttl_secs: default_approval_ttl(),
            allow_self_approval: false,
        }
    }
}

fn default_routing_policy() -> String {
    "balanced".into()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// Hydra's routing-score policy: lowest_cost | balanced | reliability_first.
    #[serde(default = "default_routing_policy")]
    pub policy: String,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            policy: default_routing_policy(),
        }
    }
}

fn default_credit_fee_bps() -> u32 {
    100
}
fn default_envelope_ttl() -> u64 {
    3_600
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeTerms {
    /// The most credit fee the envelope rail may cost, in basis points of the envelope's cap
    /// (amount + max fee). Reserved on top of amount + max fee when the rail may be used; an
    /// offer asking more is refused (and the next rail tried).
    #[serde(default = "default_credit_fee_bps")]
    pub max_credit_fee_bps: u32,
    /// How long an envelope may wait for its verification before it expires.
    #[serde(default = "default_envelope_ttl")]
    pub ttl_secs: u64,
}

impl Default for EnvelopeTerms {
    fn default() -> Self {
        Self {
            max_credit_fee_bps: default_credit_fee_bps(),
            ttl_secs: default_envelope_ttl(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Degraded {
    /// Deny every payment while degraded.
    #[serde(default)]
    pub deny: bool,
    /// A lower per-payment cap (amount + max fee) while degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payment_msat: Option<Amount>,
    /// Budgets count as this share of their funding while degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_limit_bps: Option<u32>,
    /// Payments above this wait for approval while degraded (0: every payment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_above_msat: Option<Amount>,
}

fn default_risk_cache_ms() -> u64 {
    5_000
}
fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskPolicy {
    #[serde(default)]
    pub source: RiskSourceKind,
    #[serde(default)]
    pub on_unavailable: Assume,
    /// How long a reading from Aegis is reused.
    #[serde(default = "default_risk_cache_ms")]
    pub cache_ms: u64,
    /// While degraded, cap each payment at Aegis's effective cap too (0 when exhausted).
    #[serde(default = "yes")]
    pub use_aegis_cap: bool,
    #[serde(default)]
    pub degraded: Degraded,
}

impl Default for RiskPolicy {
    fn default() -> Self {
        Self {
            source: RiskSourceKind::None,
            on_unavailable: Assume::Degraded,
            cache_ms: default_risk_cache_ms(),
            use_aegis_cap: true,
            degraded: Degraded::default(),
        }
    }
}

/// Conditions of a rule; every one given must hold. Lists match any of their entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Agent ids, or prefixes ending in `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub org: Vec<String>,
    /// Hosts, or `*.domain` for any subdomain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host: Vec<String>,
    /// Payee node public keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payee: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_msat_gte: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_msat_lt: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<RiskLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payee_known: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    #[serde(default)]
    pub when: When,
    pub action: Action,
    /// For `deny`: the reason code callers see (default `policy_denied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// For `pay` and `require_approval`: the rails allowed, in fallback order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rails: Vec<Rail>,
    #[serde(default)]
    pub choose: Choose,
    /// When a rail fails before paying (or the direct payment fails), try the next one.
    #[serde(default)]
    pub fallback: bool,
}

/// A whole policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub name: String,
    /// Org id -> the agents in it (ids, or prefixes ending in `*`). An agent belongs to the first
    /// org, in name order, that lists it.
    #[serde(default)]
    pub orgs: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub payees: Payees,
    #[serde(default)]
    pub approvals: Approvals,
    #[serde(default)]
    pub routing: Routing,
    #[serde(default)]
    pub envelope: EnvelopeTerms,
    #[serde(default)]
    pub risk: RiskPolicy,
    pub rules: Vec<Rule>,
}

/// The policy used when none was ever loaded: pay directly, no approvals, risk not consulted.
pub const DEFAULT_POLICY_TOML: &str = r#"name = "default"

[[rules]]
id = "default"
action = "pay"
rails = ["direct_liquidity"]
"#;

fn bad(message: impl Into<String>) -> TreasuryError {
    TreasuryError::invalid("INVALID_POLICY", message)
}

fn valid_name(s: &str) -> bool {
    crate::budget::valid_id(s) && s.len() <= MAX_NAME_LEN
}

fn valid_reason(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn valid_agent_pattern(s: &str) -> bool {
    match s.strip_suffix('*') {
        Some(prefix) => prefix.is_empty() || budget::valid_id(prefix),
        None => budget::valid_id(s),
    }
}

fn agent_matches(pattern: &str, agent: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => agent.starts_with(prefix),
        None => pattern == agent,
    }
}

impl Policy {
    /// Parses and validates a TOML policy.
    pub fn from_toml(text: &str) -> Result<Policy, TreasuryError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(bad(format!(
                "the policy is larger than {MAX_POLICY_BYTES} bytes"
            )));
        }
        let p: Policy = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<(), TreasuryError> {
        if self.name.chars().count() > MAX_NAME_LEN {
            return Err(bad("name is longer than 64 characters"));
        }
        for (org, agents) in &self.orgs {
            if !valid_name(org) {
                return Err(bad(format!(
                    "org id {org:?} must be 1..=64 of [A-Za-z0-9._:-]"
                )));
            }
            if agents.len() > budget::MAX_LIST_LEN {
                return Err(bad(format!("org {org} lists too many agents")));
            }
            if let Some(a) = agents.iter().find(|a| !valid_agent_pattern(a)) {
                return Err(bad(format!(
                    "org {org}: {a:?} is not an agent id or prefix*"
                )));
            }
        }
        check_pubkeys("payees.known", &self.payees.known)?;
        if let Some(a) = self.approvals.above_msat {
            a.msat()?;
        }
        if self.approvals.ttl_secs == 0 || self.approvals.ttl_secs > MAX_APPROVAL_TTL_SECS {
            return Err(bad(format!(
                "approvals.ttl_secs must be 1..={MAX_APPROVAL_TTL_SECS}"
            )));
        }
        if !["lowest_cost", "balanced", "reliability_first"].contains(&self.routing.policy.as_str())
        {
            return Err(bad(
                "routing.policy must be lowest_cost, balanced or reliability_first",
            ));
        }
        if self.envelope.max_credit_fee_bps > BPS {
            return Err(bad("envelope.max_credit_fee_bps must be at most 10000"));
        }
        if !(MIN_ENVELOPE_TTL_SECS..=MAX_ENVELOPE_TTL_SECS).contains(&self.envelope.ttl_secs) {
            return Err(bad(format!(
                "envelope.ttl_secs must be {MIN_ENVELOPE_TTL_SECS}..={MAX_ENVELOPE_TTL_SECS}"
            )));
        }
        if self.risk.cache_ms > MAX_RISK_CACHE_MS {
            return Err(bad(format!(
                "risk.cache_ms must be at most {MAX_RISK_CACHE_MS}"
            )));
        }
        let d = &self.risk.degraded;
        for a in [d.max_payment_msat, d.approval_above_msat]
            .into_iter()
            .flatten()
        {
            a.msat()?;
        }
        if d.budget_limit_bps.is_some_and(|b| b > BPS) {
            return Err(bad("risk.degraded.budget_limit_bps must be at most 10000"));
        }
        if self.rules.is_empty() || self.rules.len() > MAX_RULES {
            return Err(bad(format!("a policy has 1..={MAX_RULES} rules")));
        }
        let mut ids = BTreeSet::new();
        for r in &self.rules {
            if !valid_name(&r.id) {
                return Err(bad(format!(
                    "rule id {:?} must be 1..=64 of [A-Za-z0-9._:-]",
                    r.id
                )));
            }
            if !ids.insert(r.id.as_str()) {
                return Err(bad(format!("rule id {} appears twice", r.id)));
            }
            r.validate()?;
        }
        Ok(())
    }

    /// The canonical JSON (RFC 8785) of the policy with its defaults filled in.
    pub fn canonical_json(&self) -> Result<String, TreasuryError> {
        let v = serde_json::to_value(self).map_err(|e| bad(e.to_string()))?;
        let bytes = oa_receipts::canonical_json(&v)?;
        String::from_utf8(bytes).map_err(|e| bad(e.to_string()))
    }

    /// `sha256:<hex>` of the canonical JSON.
    pub fn bundle_id(&self) -> Result<String, TreasuryError> {
        Ok(Hash::of(self.canonical_json()?.as_bytes()).to_string())
    }

    /// The org an agent belongs to: the first, in name order, that lists it.
    pub fn org_of(&self, agent: &str) -> Option<&str> {
        self.orgs
            .iter()
            .find(|(_, agents)| agents.iter().any(|p| agent_matches(p, agent)))
            .map(|(org, _)| org.as_str())
    }
}

fn check_pubkeys(field: &str, keys: &[String]) -> Result<(), TreasuryError> {
    if keys.len() > budget::MAX_LIST_LEN {
        return Err(bad(format!("{field} has too many entries")));
    }
    match keys.iter().find(|k| !budget::valid_pubkey(k)) {
        Some(k) => Err(bad(format!(
            "{field}: {k:?} is not a node public key (66 lowercase hex digits)"
        ))),
        None => Ok(()),
    }
}

impl Rule {
    fn validate(&self) -> Result<(), TreasuryError> {
        let id = &self.id;
        let w = &self.when;
        if let Some(a) = w.agent.iter().find(|a| !valid_agent_pattern(a)) {
            return Err(bad(format!(
                "rule {id}: agent {a:?} is not an id or prefix*"
            )));
        }
        if let Some(o) = w.org.iter().find(|o| !valid_name(o)) {
            return Err(bad(format!("rule {id}: org {o:?} is not an org id")));
        }
        if let Some(h) = w.host.iter().find(|h| !budget::valid_host_pattern(h)) {
            return Err(bad(format!(
                "rule {id}: host {h:?} is not a host or *.domain"
            )));
        }
        check_pubkeys(&format!("rule {id}: payee"), &w.payee)?;
        if w.purpose_prefix
            .as_ref()
            .is_some_and(|p| p.chars().count() > 256)
        {
            return Err(bad(format!("rule {id}: purpose_prefix is too long")));
        }
        for a in [w.amount_msat_gte, w.amount_msat_lt].into_iter().flatten() {
            a.msat()?;
        }
        if let Some(reason) = &self.reason_code
            && (self.action != Action::Deny || !valid_reason(reason))
        {
            return Err(bad(format!(
                "rule {id}: reason_code is for deny rules, 1..=64 of [a-z0-9_]"
            )));
        }
        let distinct: BTreeSet<Rail> = self.rails.iter().copied().collect();
        match self.action {
            Action::Deny
                if !self.rails.is_empty() || self.fallback || self.choose != Choose::Order =>
            {
                return Err(bad(format!("rule {id}: a deny rule has no rails")));
            }
            Action::Deny => {}
            Action::Pay | Action::RequireApproval => {
                if self.rails.is_empty() || distinct.len() != self.rails.len() {
                    return Err(bad(format!(
                        "rule {id}: give the rails to use, each once (direct_liquidity, credit_envelope)"
                    )));
                }
                if (self.fallback || self.choose == Choose::Score) && self.rails.len() < 2 {
                    return Err(bad(format!(
                        "rule {id}: fallback and choose = \"score\" need at least two rails"
                    )));
                }
            }
        }
        Ok(())
    }

    fn matches(&self, f: &Facts<'_>) -> bool {
        let w = &self.when;
        (w.agent.is_empty() || w.agent.iter().any(|p| agent_matches(p, f.agent_id)))
            && (w.org.is_empty() || f.org_id.is_some_and(|o| w.org.iter().any(|x| x == o)))
            && (w.host.is_empty()
                || f.host
                    .is_some_and(|h| w.host.iter().any(|p| budget::host_matches(p, h))))
            && (w.payee.is_empty() || w.payee.iter().any(|p| p == f.payee))
            && w.purpose_prefix
                .as_ref()
                .is_none_or(|p| f.purpose.starts_with(p.as_str()))
            && w.amount_msat_gte.is_none_or(|a| f.amount.as_u64() >= a.0)
            && w.amount_msat_lt.is_none_or(|a| f.amount.as_u64() < a.0)
            && w.risk.is_none_or(|r| r == f.risk.level)
            && w.payee_known.is_none_or(|k| k == f.payee_known)
            && w.source.is_none_or(|s| s == f.source)
    }
}

/// What risk looks like for a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiskView {
    pub level: RiskLevel,
    /// `not_consulted`, `normal`, `degraded` or `unavailable`.
    pub label: &'static str,
    /// Aegis's effective cap, the smaller of the agent's and the org's, when it set one.
    pub aegis_cap: Option<Msat>,
    /// Aegis could not be read (the policy's `on_unavailable` said what to assume).
    pub unavailable: bool,
    /// Human-readable, for the decision's reasons.
    pub detail: String,
}

impl RiskView {
    pub fn not_consulted() -> Self {
        Self {
            level: RiskLevel::Normal,
            label: "not_consulted",
            aegis_cap: None,
            unavailable: false,
            detail: String::new(),
        }
    }
}

/// What a decision is about.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub agent_id: &'a str,
    pub org_id: Option<&'a str>,
    pub host: Option<&'a str>,
    pub payee: &'a str,
    pub amount: Msat,
    pub max_fee: Msat,
    pub purpose: &'a str,
    pub source: Source,
    /// Paid before, or listed as known or allowed.
    pub payee_known: bool,
    pub risk: RiskView,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pay,
    RequireApproval,
    Deny,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pay => "pay",
            Outcome::RequireApproval => "require_approval",
            Outcome::Deny => "deny",
        }
    }
}

/// A decision, as recorded on the attempt and shown by `evaluate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: Outcome,
    pub policy_bundle_id: String,
    pub rule: String,
    /// Why a denial or an approval (`payee_denied`, `above_threshold`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    pub reasons: Vec<String>,
    pub rails: Vec<Rail>,
    pub choose: Choose,
    pub fallback: bool,
    pub risk: String,
    /// Under degraded risk, budgets count as this share of their funding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_cap_bps: Option<u32>,
    /// What the payment reserves in every budget: amount + max fee, plus the credit-fee allowance
    /// when the envelope rail may be used.
    pub reserve_msat: Msat,
    /// The most credit fee the envelope rail may cost (zero when it may not be used).
    pub credit_fee_allowance_msat: Msat,
    /// Hydra's routing-score policy, for `choose = "score"`.
    pub routing_policy: String,
    /// How long a credit envelope may wait for its verification.
    pub envelope_ttl_ms: u64,
}

impl Decision {
    /// Turns a decision into a denial by `rule` for `reason`.
    pub fn deny(&mut self, rule: String, reason: &str, why: String) {
        self.outcome = Outcome::Deny;
        self.rule = rule;
        self.reason_code = Some(reason.to_owned());
        self.reasons.push(why);
    }
}

/// The credit-fee allowance of the envelope rail on `cap` (amount + max fee).
pub fn credit_fee_allowance(policy: &Policy, cap: Msat) -> Result<Msat, TreasuryError> {
    cap.ppm_ceil(policy.envelope.max_credit_fee_bps.saturating_mul(100))
        .map_err(|e| TreasuryError::InvalidRequest(format!("amount plus fees: {e}")))
}

/// Decides a payment (steps 1-4 of the module docs). `budgets` are every budget that applies.
pub fn decide(
    policy: &Policy,
    bundle_id: &str,
    f: &Facts<'_>,
    budgets: &[BudgetConfig],
) -> Result<Decision, TreasuryError> {
    let cost = f
        .amount
        .checked_add(f.max_fee)
        .map_err(|_| TreasuryError::InvalidRequest("amount plus max fee overflows".into()))?;
    let mut d = Decision {
        outcome: Outcome::Deny,
        policy_bundle_id: bundle_id.to_owned(),
        rule: String::new(),
        reason_code: None,
        reasons: Vec::new(),
        rails: Vec::new(),
        choose: Choose::Order,
        fallback: false,
        risk: f.risk.label.to_owned(),
        budget_cap_bps: None,
        reserve_msat: cost,
        credit_fee_allowance_msat: Msat::ZERO,
        routing_policy: policy.routing.policy.clone(),
        envelope_ttl_ms: policy.envelope.ttl_secs.saturating_mul(1_000),
    };
    if !f.risk.detail.is_empty() {
        d.reasons.push(f.risk.detail.clone());
    }

    // 1. Budget lists and caps.
    if budgets.is_empty() {
        d.deny(
            "budget:none".into(),
            "no_budget",
            format!("no budget applies to agent {}", f.agent_id),
        );
        return Ok(d);
    }
    for b in budgets {
        let rule = format!("budget:{}", b.label());
        let host_in = |list: &[String]| {
            f.host
                .is_some_and(|h| list.iter().any(|p| budget::host_matches(p, h)))
        };
        let refusal = if b.payee_deny.iter().any(|p| p == f.payee) {
            Some((
                "payee_denied",
                format!("payee {} is on the deny list", f.payee),
            ))
        } else if host_in(&b.host_deny) {
            Some((
                "host_denied",
                format!("host {} is on the deny list", f.host.unwrap_or("")),
            ))
        } else if !b.payee_allow.is_empty() && !b.payee_allow.iter().any(|p| p == f.payee) {
            Some((
                "payee_not_allowed",
                format!("payee {} is not on the allow list", f.payee),
            ))
        } else if !b.host_allow.is_empty() && !host_in(&b.host_allow) {
            Some((
                "host_not_allowed",
                format!("host {:?} is not on the allow list", f.host.unwrap_or("")),
            ))
        } else if b.per_payment_max.is_some_and(|m| cost > m) {
            Some((
                "per_payment_max_exceeded",
                format!(
                    "amount + max fee {} is above the per-payment maximum {}",
                    cost.as_u64(),
                    b.per_payment_max.map_or(0, Msat::as_u64)
                ),
            ))
        } else {
            None
        };
        if let Some((reason, why)) = refusal {
            d.deny(rule, reason, format!("budget {}: {why}", b.label()));
            return Ok(d);
        }
    }

    // 2. Risk.
    let risk = &policy.risk;
    let degraded = f.risk.level == RiskLevel::Degraded;
    if f.risk.unavailable && risk.on_unavailable == Assume::Deny {
        d.deny(
            "risk:unavailable".into(),
            "risk_unavailable",
            "Aegis's risk state could not be read and the policy denies then".into(),
        );
        return Ok(d);
    }
    if degraded {
        if risk.degraded.deny {
            d.deny(
                "risk:degraded".into(),
                "risk_degraded",
                "risk is degraded and the policy denies every payment then".into(),
            );
            return Ok(d);
        }
        let policy_cap = risk.degraded.max_payment_msat.map(|a| a.0);
        let aegis_cap = f
            .risk
            .aegis_cap
            .filter(|_| risk.use_aegis_cap)
            .map(Msat::as_u64);
        let cap = [policy_cap, aegis_cap].into_iter().flatten().min();
        if let Some(cap) = cap
            && cost.as_u64() > cap
        {
            d.deny(
                "risk:degraded_cap".into(),
                "risk_cap_exceeded",
                format!(
                    "risk is degraded: amount + max fee {} is above the cap {cap}",
                    cost.as_u64()
                ),
            );
            return Ok(d);
        }
        if let Some(bps) = risk.degraded.budget_limit_bps {
            d.budget_cap_bps = Some(bps);
            d.reasons.push(format!(
                "risk is degraded: budgets count as {bps} bps of their funding"
            ));
        }
    }

    // 3. Rules.
    let Some(rule) = policy.rules.iter().find(|r| r.matches(f)) else {
        d.deny(
            "no_rule_matched".into(),
            "no_rule_matched",
            "no rule of the policy matches this payment".into(),
        );
        return Ok(d);
    };
    d.rule = rule.id.clone();
    match rule.action {
        Action::Deny => {
            let reason = rule.reason_code.as_deref().unwrap_or("policy_denied");
            d.deny(rule.id.clone(), reason, format!("rule {} denies", rule.id));
            return Ok(d);
        }
        Action::RequireApproval => {
            d.outcome = Outcome::RequireApproval;
            d.reason_code = Some("policy_rule".into());
            d.reasons
                .push(format!("rule {} requires approval", rule.id));
        }
        Action::Pay => {
            d.outcome = Outcome::Pay;
            d.reasons.push(format!("rule {} pays", rule.id));
        }
    }
    d.rails = rule.rails.clone();
    d.choose = rule.choose;
    d.fallback = rule.fallback;
    if d.rails.contains(&Rail::CreditEnvelope) {
        let allowance = credit_fee_allowance(policy, cost)?;
        d.credit_fee_allowance_msat = allowance;
        d.reserve_msat = cost
            .checked_add(allowance)
            .map_err(|_| TreasuryError::InvalidRequest("amount plus fees overflows".into()))?;
    }

    // 4. Approvals.
    if d.outcome == Outcome::Pay {
        let approval = if let Some(above) = risk.degraded.approval_above_msat.filter(|_| degraded)
            && f.amount.as_u64() > above.0
        {
            Some((
                "risk:degraded_approval",
                "risk_degraded",
                format!("risk is degraded: amounts above {} need approval", above.0),
            ))
        } else if let Some(above) = policy.approvals.above_msat
            && f.amount.as_u64() > above.0
        {
            Some((
                "approvals:above_threshold",
                "above_threshold",
                format!("amounts above {} need approval", above.0),
            ))
        } else if policy.approvals.unknown_payee && !f.payee_known {
            Some((
                "approvals:unknown_payee",
                "unknown_payee",
                format!("payee {} was never paid before", f.payee),
            ))
        } else {
            None
        };
        if let Some((rule, reason, why)) = approval {
            d.outcome = Outcome::RequireApproval;
            d.rule = rule.into();
            d.reason_code = Some(reason.into());
            d.reasons.push(why);
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_bundle_id_ignores_spelling_and_sees_every_default() {
        let a = Policy::from_toml(DEFAULT_POLICY_TOML).unwrap();
        let b = Policy::from_toml(
            "rules = [{ id = \"default\", action = \"pay\", rails = [\"direct_liquidity\"] }]\nname = \"default\"\n[approvals]\nttl_secs = 3600\n",
        )
        .unwrap();
        assert_eq!(a.bundle_id().unwrap(), b.bundle_id().unwrap());
        let c = Policy::from_toml(&DEFAULT_POLICY_TOML.replace("default\"\n\n", "other\"\n\n"))
            .unwrap();
        assert_ne!(a.bundle_id().unwrap(), c.bundle_id().unwrap());
        assert!(a.bundle_id().unwrap().starts_with("sha256:"));
        assert!(a.canonical_json().unwrap().contains("\"ttl_secs\":3600"));
    }

    #[test]
    fn invalid_policies_are_refused_with_a_reason() {
        for bad in [
            "",
            "rules = []",
            "name = 1\nrules = []",
            "[[rules]]\nid = \"a\"\naction = \"pay\"",
            "[[rules]]\nid = \"a\"\naction = \"fly\"",
            "[[rules]]\nid = \"a\"\naction = \"deny\"\nrails = [\"direct_liquidity\"]",
            "[[rules]]\nid = \"a\"\naction = \"pay\"\nrails = [\"direct_liquidity\", \"direct_liquidity\"]",
            "[[rules]]\nid = \"a\"\naction = \"pay\"\nrails = [\"direct_liquidity\"]\nfallback = true",
            "[[rules]]\nid = \"a b\"\naction = \"deny\"",
            "[[rules]]\nid = \"a\"\naction = \"deny\"\n[[rules]]\nid = \"a\"\naction = \"deny\"",
            "[[rules]]\nid = \"a\"\naction = \"deny\"\nwhen = { host = [\"Bad.Host\"] }",
            "[[rules]]\nid = \"a\"\naction = \"deny\"\nwhen = { colour = \"red\" }",
            "[[rules]]\nid = \"a\"\naction = \"deny\"\nwhen = { amount_msat_gte = -1 }",
            "[[rules]]\nid = \"a\"\naction = \"deny\"\nwhen = { amount_msat_gte = 2100000000000000001 }",
            "[approvals]\nttl_secs = 0\n[[rules]]\nid = \"a\"\naction = \"deny\"",
            "[routing]\npolicy = \"fastest\"\n[[rules]]\nid = \"a\"\naction = \"deny\"",
            "[envelope]\nmax_credit_fee_bps = 10001\n[[rules]]\nid = \"a\"\naction = \"deny\"",
            "[payees]\nknown = [\"nope\"]\n[[rules]]\nid = \"a\"\naction = \"deny\"",
            "[orgs]\nacme = [\"a b\"]\n[[rules]]\nid = \"a\"\naction = \"deny\"",
        ] {
            let e = Policy::from_toml(bad).unwrap_err();
            assert_eq!(e.to_api().code, "INVALID_POLICY", "{bad}");
        }
    }

    #[test]
    fn orgs_match_ids_and_prefixes_in_name_order() {
        let p = Policy::from_toml(
            "[orgs]\nbeta = [\"x-*\"]\nalpha = [\"x-1\"]\n[[rules]]\nid = \"a\"\naction = \"deny\"",
        )
        .unwrap();
        assert_eq!(p.org_of("x-1"), Some("alpha"));
        assert_eq!(p.org_of("x-2"), Some("beta"));
        assert_eq!(p.org_of("y"), None);
    }
}
