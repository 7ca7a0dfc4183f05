//! Checks of request fields shared by Aegis's routes. Each failure is a `400` with a stable code,
//! raised before any transaction, so bad input changes nothing.

use oa_money::Msat;

use crate::error::{AegisError, invalid};

/// Longest agent or org id: room for a UUID with a prefix.
pub const MAX_AGENT_ID_LEN: usize = 64;
/// Longest id Aegis issued or a caller's reference (verification, verifier, case ids).
pub const MAX_ID_LEN: usize = 128;
/// Longest scope string (the same bound Hydra puts on an envelope's scope).
pub const MAX_SCOPE_LEN: usize = 256;
/// Longest free-text reason or label.
pub const MAX_REASON_LEN: usize = 1_024;

fn id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-' | b'@')
}

/// `[A-Za-z0-9._:@-]{1,max}`.
pub fn id(code: &'static str, what: &str, s: &str, max: usize) -> Result<(), AegisError> {
    if s.is_empty() || s.len() > max || !s.bytes().all(id_char) {
        return Err(invalid(
            code,
            format!("{what} must be 1 to {max} characters of A-Z a-z 0-9 . _ : @ -"),
        ));
    }
    Ok(())
}

/// A lowercase name: `[a-z0-9._-]{1,64}` (work kinds, verifier families).
pub fn name(code: &'static str, what: &str, s: &str) -> Result<(), AegisError> {
    if s.is_empty()
        || s.len() > 64
        || !s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
    {
        return Err(invalid(
            code,
            format!("{what} must be 1 to 64 characters of a-z 0-9 . _ -"),
        ));
    }
    Ok(())
}

pub fn agent_id(s: &str) -> Result<(), AegisError> {
    id("INVALID_AGENT_ID", "agent_id", s, MAX_AGENT_ID_LEN)
}

/// Free text: `min..=max` bytes without control characters.
pub fn text(
    code: &'static str,
    what: &str,
    s: &str,
    min: usize,
    max: usize,
) -> Result<(), AegisError> {
    if s.len() < min || s.len() > max || s.chars().any(char::is_control) {
        return Err(invalid(
            code,
            format!("{what} must be {min} to {max} bytes without control characters"),
        ));
    }
    Ok(())
}

/// An amount within the bitcoin supply (zero allowed).
pub fn msat(code: &'static str, what: &str, v: u64) -> Result<Msat, AegisError> {
    Msat::new(v).map_err(|e| invalid(code, format!("{what}: {e}")))
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn sha256(code: &'static str, what: &str, s: &str) -> Result<(), AegisError> {
    oa_receipts::Hash::parse(s).map(|_| ()).map_err(|_| {
        invalid(
            code,
            format!("{what} must be sha256: followed by 64 lowercase hex digits"),
        )
    })
}

/// Exactly `len` lowercase hex digits.
pub fn lower_hex(code: &'static str, what: &str, s: &str, len: usize) -> Result<(), AegisError> {
    if s.len() != len
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(invalid(
            code,
            format!("{what} must be {len} lowercase hex digits"),
        ));
    }
    Ok(())
}

/// A proto enum field's raw value, refused when it names no value of `E`.
pub fn enum_value<E: TryFrom<i32>>(
    code: &'static str,
    what: &str,
    v: i32,
) -> Result<E, AegisError> {
    E::try_from(v).map_err(|_| invalid(code, format!("{what} is not a known value")))
}
