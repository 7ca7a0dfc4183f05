//! Checks of request fields shared by Hydra's routes. Each failure is a `400` with a stable code,
//! raised before any transaction, so bad input changes nothing.

use oa_money::Msat;

use crate::error::HydraError;

/// Longest agent id: room for a UUID with a prefix, and short enough to fit ledger account ids
/// (`agent:<id>:credit`, at most 128 characters).
pub const MAX_AGENT_ID_LEN: usize = 64;
/// Longest id Hydra issued or a caller's reference (provider id, verification id, ...).
pub const MAX_ID_LEN: usize = 128;

pub fn invalid(code: &'static str, message: impl Into<String>) -> HydraError {
    HydraError::Invalid {
        code,
        message: message.into(),
    }
}

fn id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-' | b'@')
}

/// `[A-Za-z0-9._:@-]{1,max}`.
pub fn id(code: &'static str, what: &str, s: &str, max: usize) -> Result<(), HydraError> {
    if s.is_empty() || s.len() > max || !s.bytes().all(id_char) {
        return Err(invalid(
            code,
            format!("{what} must be 1 to {max} characters of A-Z a-z 0-9 . _ : @ -"),
        ));
    }
    Ok(())
}

pub fn agent_id(s: &str) -> Result<(), HydraError> {
    id("INVALID_AGENT_ID", "agent_id", s, MAX_AGENT_ID_LEN)
}

/// Free text: 1..=`max` bytes without control characters.
pub fn text(code: &'static str, what: &str, s: &str, max: usize) -> Result<(), HydraError> {
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(invalid(
            code,
            format!("{what} must be 1 to {max} bytes without control characters"),
        ));
    }
    Ok(())
}

/// A positive amount within the bitcoin supply.
pub fn positive_msat(code: &'static str, what: &str, v: u64) -> Result<Msat, HydraError> {
    match Msat::new(v) {
        Ok(m) if !m.is_zero() => Ok(m),
        Ok(_) => Err(invalid(code, format!("{what} must be positive"))),
        Err(e) => Err(invalid(code, format!("{what}: {e}"))),
    }
}

/// An amount within the bitcoin supply (zero allowed).
pub fn msat(code: &'static str, what: &str, v: u64) -> Result<Msat, HydraError> {
    Msat::new(v).map_err(|e| invalid(code, format!("{what}: {e}")))
}

/// A node id: 66 lowercase hex digits.
pub fn node_pubkey(code: &'static str, s: &str) -> Result<(), HydraError> {
    if s.len() != 66
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(invalid(code, "node_pubkey must be 66 lowercase hex digits"));
    }
    Ok(())
}
