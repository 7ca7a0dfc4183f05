//! Compiles the policy's paywalled routes into Aperture's YAML configuration (Lightning Labs'
//! L402 reverse proxy), with a config hash so operators can tell which policy a gateway runs.
//!
//! Each route becomes one Aperture `services` entry: `hostregexp` matches the exact host,
//! `pathregexp` the path prefix, `address`/`protocol` come from the upstream URL, `price` is the
//! price in satoshis. Output is deterministic (routes sorted by name, fixed key order, every
//! string single-quoted), so the same policy always gives the same bytes and the same hash.

use sha2::{Digest, Sha256};

use crate::policy::{Aperture, PaywalledRoute, Problem};

/// The compiled configuration and its hash (`sha256:` + hex of the YAML bytes).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Compiled {
    pub config_yaml: String,
    pub config_hash: String,
}

/// Longest host name (RFC 1035).
const MAX_HOST_LEN: usize = 253;

struct Upstream<'a> {
    scheme: &'a str,
    address: &'a str,
}

fn parse_upstream(url: &str) -> Option<Upstream<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https") || rest.contains('/') || rest.contains('@') {
        return None;
    }
    let (host, port) = rest.rsplit_once(':')?;
    let port_ok = !port.is_empty() && port.len() <= 5 && port.parse::<u16>().is_ok_and(|p| p > 0);
    (valid_host(host) && port_ok).then_some(Upstream {
        scheme,
        address: rest,
    })
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= MAX_HOST_LEN
        && h.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !h.starts_with(['.', '-'])
        && !h.ends_with(['.', '-'])
}

fn valid_path(p: &str) -> bool {
    p.starts_with('/')
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Every problem in the gateway section, each with a stable code.
pub fn check_routes(a: &Aperture) -> Vec<Problem> {
    let mut out = Vec::new();
    let p = |code, at: &str, msg: String| Problem {
        code,
        at: at.to_owned(),
        message: msg,
    };
    if a.listen
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        out.push(p(
            "INVALID_LISTEN",
            "aperture.listen",
            format!("{} is not host:port", a.listen),
        ));
    }
    if !matches!(
        a.network.as_str(),
        "mainnet" | "testnet" | "signet" | "regtest" | "simnet"
    ) {
        out.push(p(
            "INVALID_NETWORK",
            "aperture.network",
            format!("unknown network {}", a.network),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    let mut places = std::collections::BTreeSet::new();
    for (i, r) in a.routes.iter().enumerate() {
        let at = format!("aperture.routes[{i}]");
        if !valid_name(&r.name) {
            out.push(p(
                "INVALID_NAME",
                &at,
                "name must be 1-64 characters of [A-Za-z0-9_-]".into(),
            ));
        } else if !names.insert(r.name.as_str()) {
            out.push(p(
                "DUPLICATE_NAME",
                &at,
                format!("route name {} is used twice", r.name),
            ));
        }
        if !valid_host(&r.host) {
            out.push(p(
                "INVALID_HOST",
                &at,
                format!("{} is not a lower-case host name", r.host),
            ));
        }
        if !valid_path(&r.path) {
            out.push(p(
                "INVALID_PATH",
                &at,
                format!("{} must start with / and use [A-Za-z0-9/-_.~]", r.path),
            ));
        }
        if !places.insert((r.host.as_str(), r.path.as_str())) {
            out.push(p(
                "DUPLICATE_ROUTE",
                &at,
                format!("{}{} is paywalled twice", r.host, r.path),
            ));
        }
        if r.price_sat <= 0 {
            out.push(p(
                "NON_POSITIVE_PRICE",
                &at,
                format!("price_sat must be positive, got {}", r.price_sat),
            ));
        }
        match parse_upstream(&r.upstream) {
            None => out.push(p(
                "INVALID_UPSTREAM",
                &at,
                format!("{} is not http(s)://host:port", r.upstream),
            )),
            Some(u) => {
                if let Some(proto) = &r.protocol
                    && proto != u.scheme
                {
                    out.push(p(
                        "UPSTREAM_SCHEME_MISMATCH",
                        &at,
                        format!(
                            "protocol {proto} does not match the upstream's scheme {}",
                            u.scheme
                        ),
                    ));
                }
            }
        }
    }
    out
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn regex_escape(s: &str) -> String {
    // Hosts and paths are validated to [a-z0-9.-] and [A-Za-z0-9/-_.~]; of those only '.' is a
    // regex metacharacter outside a class.
    s.replace('.', "\\.")
}

/// Compiles a valid gateway section (see [`check_routes`]).
pub fn compile(a: &Aperture) -> Result<Compiled, Vec<Problem>> {
    let problems = check_routes(a);
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut routes: Vec<&PaywalledRoute> = a.routes.iter().collect();
    routes.sort_by(|x, y| x.name.cmp(&y.name));
    let mut y = String::from("# Generated by lightning-ops from the policy file; do not edit.\n");
    y.push_str(&format!("listenaddr: {}\n", quote(&a.listen)));
    y.push_str("debuglevel: 'info'\n");
    y.push_str(&format!(
        "authenticator:\n  network: {}\n",
        quote(&a.network)
    ));
    if routes.is_empty() {
        y.push_str("services: []\n");
    } else {
        y.push_str("services:\n");
    }
    for r in routes {
        let u = parse_upstream(&r.upstream).ok_or_else(Vec::new)?;
        y.push_str(&format!("  - name: {}\n", quote(&r.name)));
        y.push_str(&format!(
            "    hostregexp: {}\n",
            quote(&format!("^{}$", regex_escape(&r.host)))
        ));
        y.push_str(&format!(
            "    pathregexp: {}\n",
            quote(&format!("^{}.*$", regex_escape(&r.path)))
        ));
        y.push_str(&format!("    address: {}\n", quote(u.address)));
        y.push_str(&format!("    protocol: {}\n", quote(u.scheme)));
        y.push_str(&format!("    price: {}\n", r.price_sat));
    }
    let config_hash = format!("sha256:{}", hex::encode(Sha256::digest(y.as_bytes())));
    Ok(Compiled {
        config_yaml: y,
        config_hash,
    })
}
