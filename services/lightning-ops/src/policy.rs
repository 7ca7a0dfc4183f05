//! The operator's policy file (TOML): fee policy per channel or peer group, balance bands,
//! rebalance budget, channel open/close intents and the L402 gateway's paywalled routes.
//! `policy.example.toml` documents every field. Parsing refuses unknown fields, and [`validate`]
//! checks every value, reporting all problems at once with a stable code each.

use serde::{Deserialize, Serialize};

/// Longest TOML file accepted: a policy is a few kilobytes; this bounds a mistaken path.
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;
/// Largest fee rate accepted, in ppm (100%): a higher one is certainly a typo.
pub const MAX_FEE_PPM: u32 = 1_000_000;
/// Largest time-lock delta accepted, in blocks (LND's own maximum is 2016).
pub const MAX_TIME_LOCK_DELTA: u32 = 2016;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub version: u32,
    #[serde(default)]
    pub fees: Fees,
    #[serde(default)]
    pub channels: Vec<ChannelPolicy>,
    #[serde(default)]
    pub rebalance: Option<Rebalance>,
    #[serde(default)]
    pub intents: Intents,
    #[serde(default)]
    pub aperture: Option<Aperture>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fees {
    pub default: Option<FeePolicy>,
    #[serde(default)]
    pub groups: Vec<PeerGroup>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Fixed,
    Proportional,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeePolicy {
    pub strategy: Strategy,
    pub base_fee_msat: u64,
    /// For `fixed`.
    pub fee_ppm: Option<u32>,
    /// For `proportional`: the rate when our side is full, and when it is empty.
    pub min_ppm: Option<u32>,
    pub max_ppm: Option<u32>,
    #[serde(default)]
    pub inbound_base_fee_msat: i64,
    #[serde(default)]
    pub inbound_fee_ppm: i32,
    pub min_htlc_msat: u64,
    pub max_htlc_msat: u64,
    pub time_lock_delta: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerGroup {
    pub name: String,
    pub peers: Vec<String>,
    #[serde(flatten)]
    pub fees: FeePolicy,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelPolicy {
    pub channel_id: String,
    pub local_balance_min_pct: Option<u8>,
    pub local_balance_max_pct: Option<u8>,
    pub fees: Option<FeePolicy>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rebalance {
    pub max_fee_ppm: u32,
    pub budget_msat_per_day: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Intents {
    #[serde(default)]
    pub open: Vec<OpenIntent>,
    #[serde(default)]
    pub close: Vec<CloseIntent>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpenIntent {
    pub peer: String,
    pub capacity_sat: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CloseIntent {
    pub channel_id: String,
    #[serde(default)]
    pub force: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Aperture {
    pub listen: String,
    pub network: String,
    #[serde(default)]
    pub routes: Vec<PaywalledRoute>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PaywalledRoute {
    pub name: String,
    /// Exact host name the route answers for.
    pub host: String,
    /// Path prefix, starting with `/`.
    pub path: String,
    /// `http://host:port` or `https://host:port` of the service behind the paywall.
    pub upstream: String,
    /// If given, must agree with the upstream's scheme.
    pub protocol: Option<String>,
    /// Price of one request, in satoshis (Aperture prices in whole sats).
    pub price_sat: i64,
}

/// One problem in a policy, with a stable code and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub code: &'static str,
    pub at: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}: {}", self.code, self.at, self.message)
    }
}

fn problem(code: &'static str, at: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        code,
        at: at.into(),
        message: message.into(),
    }
}

/// Parses a policy file's text (TOML). A syntax error or unknown field is one `INVALID_POLICY`
/// problem; otherwise the parsed policy is [`validate`]d.
pub fn parse(text: &str) -> Result<Policy, Vec<Problem>> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(vec![problem(
            "INVALID_POLICY",
            "file",
            format!("larger than {MAX_POLICY_BYTES} bytes"),
        )]);
    }
    let policy: Policy =
        toml::from_str(text).map_err(|e| vec![problem("INVALID_POLICY", "file", e.to_string())])?;
    let problems = validate(&policy);
    if problems.is_empty() {
        Ok(policy)
    } else {
        Err(problems)
    }
}

fn is_node_id(s: &str) -> bool {
    s.len() == 66
        && (s.starts_with("02") || s.starts_with("03"))
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_fees(at: &str, f: &FeePolicy, out: &mut Vec<Problem>) {
    match f.strategy {
        Strategy::Fixed => match f.fee_ppm {
            None => out.push(problem(
                "MISSING_FIELD",
                at,
                "a fixed strategy needs fee_ppm",
            )),
            Some(p) if p > MAX_FEE_PPM => out.push(problem(
                "FEE_TOO_HIGH",
                at,
                format!("fee_ppm above {MAX_FEE_PPM}"),
            )),
            Some(_) => {}
        },
        Strategy::Proportional => match (f.min_ppm, f.max_ppm) {
            (Some(lo), Some(hi)) if lo <= hi && hi <= MAX_FEE_PPM => {}
            (Some(_), Some(_)) => out.push(problem(
                "INVALID_RANGE",
                at,
                format!("need min_ppm <= max_ppm <= {MAX_FEE_PPM}"),
            )),
            _ => out.push(problem(
                "MISSING_FIELD",
                at,
                "a proportional strategy needs min_ppm and max_ppm",
            )),
        },
    }
    if f.min_htlc_msat == 0 || f.min_htlc_msat > f.max_htlc_msat {
        out.push(problem(
            "INVALID_RANGE",
            at,
            "need 0 < min_htlc_msat <= max_htlc_msat",
        ));
    }
    if f.time_lock_delta == 0 || f.time_lock_delta > MAX_TIME_LOCK_DELTA {
        out.push(problem(
            "INVALID_RANGE",
            at,
            format!("time_lock_delta must be 1..={MAX_TIME_LOCK_DELTA}"),
        ));
    }
    // A negative inbound fee is a discount; it may not exceed the outbound fee it discounts.
    let base = i64::try_from(f.base_fee_msat).unwrap_or(i64::MAX);
    let max_ppm = i32::try_from(MAX_FEE_PPM).unwrap_or(i32::MAX);
    if f.inbound_base_fee_msat < -base || f.inbound_fee_ppm < -max_ppm {
        out.push(problem(
            "INVALID_RANGE",
            at,
            "an inbound discount may not exceed the outbound fee",
        ));
    }
    // A positive inbound fee is bounded like an outbound one (and like the executor bounds it).
    if f.inbound_fee_ppm > max_ppm {
        out.push(problem(
            "FEE_TOO_HIGH",
            at,
            format!("inbound_fee_ppm above {MAX_FEE_PPM}"),
        ));
    }
    if u64::try_from(f.inbound_base_fee_msat).is_ok_and(|v| v > oa_money::Msat::MAX.as_u64()) {
        out.push(problem(
            "FEE_TOO_HIGH",
            at,
            "inbound_base_fee_msat is beyond the bitcoin supply",
        ));
    }
}

/// Every problem in a parsed policy (empty when it is valid).
pub fn validate(p: &Policy) -> Vec<Problem> {
    let mut out = Vec::new();
    if p.version != 1 {
        out.push(problem(
            "UNSUPPORTED_VERSION",
            "version",
            "only version 1 is supported",
        ));
    }
    if let Some(f) = &p.fees.default {
        check_fees("fees.default", f, &mut out);
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, g) in p.fees.groups.iter().enumerate() {
        let at = format!("fees.groups[{i}]");
        if !names.insert(g.name.as_str()) {
            out.push(problem(
                "DUPLICATE_NAME",
                &at,
                format!("group {} is defined twice", g.name),
            ));
        }
        for peer in &g.peers {
            if !is_node_id(peer) {
                out.push(problem(
                    "INVALID_NODE_ID",
                    &at,
                    format!("{peer} is not a 33-byte hex node id"),
                ));
            }
        }
        check_fees(&at, &g.fees, &mut out);
    }
    let mut channels = std::collections::BTreeSet::new();
    for (i, c) in p.channels.iter().enumerate() {
        let at = format!("channels[{i}]");
        if c.channel_id.is_empty() || !channels.insert(c.channel_id.as_str()) {
            out.push(problem(
                "DUPLICATE_CHANNEL",
                &at,
                "each channel_id may appear once",
            ));
        }
        match (c.local_balance_min_pct, c.local_balance_max_pct) {
            (Some(lo), Some(hi)) if lo > hi || hi > 100 => out.push(problem(
                "INVALID_RANGE",
                &at,
                "need local_balance_min_pct <= local_balance_max_pct <= 100",
            )),
            (Some(_), None) | (None, Some(_)) => out.push(problem(
                "MISSING_FIELD",
                &at,
                "a balance band needs both ends",
            )),
            _ => {}
        }
        if let Some(f) = &c.fees {
            check_fees(&at, f, &mut out);
        }
    }
    if let Some(r) = &p.rebalance
        && r.max_fee_ppm > MAX_FEE_PPM
    {
        out.push(problem(
            "FEE_TOO_HIGH",
            "rebalance",
            format!("max_fee_ppm above {MAX_FEE_PPM}"),
        ));
    }
    for (i, o) in p.intents.open.iter().enumerate() {
        if !is_node_id(&o.peer) {
            out.push(problem(
                "INVALID_NODE_ID",
                format!("intents.open[{i}]"),
                "peer must be a 33-byte hex node id",
            ));
        }
        if o.capacity_sat == 0 {
            out.push(problem(
                "INVALID_AMOUNT",
                format!("intents.open[{i}]"),
                "capacity_sat must be positive",
            ));
        }
    }
    if let Some(a) = &p.aperture {
        out.extend(crate::aperture::check_routes(a));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_is_valid() {
        let text = include_str!("../policy.example.toml");
        let p = parse(text).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.fees.groups.len(), 1);
        assert_eq!(p.aperture.map(|a| a.routes.len()), Some(2));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_reported_with_codes() {
        let e = parse("version = 1\nsurprise = true\n").unwrap_err();
        assert_eq!(e[0].code, "INVALID_POLICY");
        let bad = r#"
version = 2
[fees.default]
strategy = "proportional"
base_fee_msat = 10
min_ppm = 500
max_ppm = 100
inbound_base_fee_msat = -11
min_htlc_msat = 0
max_htlc_msat = 10
time_lock_delta = 5000
[[channels]]
channel_id = "1x1x0"
local_balance_min_pct = 80
local_balance_max_pct = 20
[[intents.open]]
peer = "zz"
capacity_sat = 0
"#;
        let codes: Vec<&str> = parse(bad).unwrap_err().iter().map(|p| p.code).collect();
        let inbound_too_high = "version = 1\n[fees.default]\nstrategy = \"fixed\"\nbase_fee_msat = 1\nfee_ppm = 1\ninbound_fee_ppm = 1000001\nmin_htlc_msat = 1\nmax_htlc_msat = 1\ntime_lock_delta = 40\n";
        let e = parse(inbound_too_high).unwrap_err();
        assert_eq!(
            (e.len(), e[0].code, e[0].at.as_str()),
            (1, "FEE_TOO_HIGH", "fees.default")
        );
        for code in [
            "UNSUPPORTED_VERSION",
            "INVALID_RANGE",
            "INVALID_NODE_ID",
            "INVALID_AMOUNT",
        ] {
            assert!(codes.contains(&code), "{code} missing from {codes:?}");
        }
        assert_eq!(
            codes.iter().filter(|c| **c == "INVALID_RANGE").count(),
            5,
            "{codes:?}"
        );
    }
}
