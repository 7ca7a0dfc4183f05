//! `Hash`: a SHA-256 digest written as `sha256:<64 lowercase hex>`.
//!
//! The algorithm prefix makes the string self-describing (a future algorithm gets a different
//! prefix instead of an ambiguous bare hex string). Parsing is strict: exactly one spelling is
//! accepted, lowercase hex only, so that a hash has one byte representation and an exported
//! receipt cannot be altered (say by upper-casing a digit) without changing its bytes' meaning.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::ReceiptError;

/// Length of `"sha256:"` plus 64 hex digits.
const HASH_STR_LEN: usize = Hash::PREFIX.len() + 64;

/// A SHA-256 digest, displayed and serialized as `sha256:` + 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash([u8; 32]);

impl Hash {
    /// The algorithm prefix of the string form.
    pub const PREFIX: &'static str = "sha256:";

    /// `sha256:000…0`: the `prev_hash` of the first receipt (log_index 0) of every log.
    pub const ZERO: Hash = Hash([0; 32]);

    /// SHA-256 of `bytes`.
    #[must_use]
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(Sha256::digest(bytes).into())
    }

    /// Wraps raw digest bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Hash {
        Hash(bytes)
    }

    /// The raw digest bytes (what BIP340 signatures sign).
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses `sha256:` + 64 lowercase hex digits; nothing else is accepted.
    ///
    /// # Errors
    ///
    /// [`ReceiptError::InvalidHash`] for any other spelling.
    pub fn parse(s: &str) -> Result<Hash, ReceiptError> {
        s.strip_prefix(Self::PREFIX)
            .and_then(decode_lower_hex::<32>)
            .map(Hash)
            .ok_or_else(|| ReceiptError::InvalidHash(truncate_for_error(s)))
    }

    /// Writes the string form into a stack buffer, so Display and Serialize do not allocate.
    fn encode(&self) -> [u8; HASH_STR_LEN] {
        let mut buf = [0u8; HASH_STR_LEN];
        buf[..Self::PREFIX.len()].copy_from_slice(Self::PREFIX.as_bytes());
        // Cannot fail: the destination is exactly twice the input length.
        let _ = hex::encode_to_slice(self.0, &mut buf[Self::PREFIX.len()..]);
        buf
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buf = self.encode();
        // The buffer holds only ASCII, so this conversion cannot fail.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

impl FromStr for Hash {
    type Err = ReceiptError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hash::parse(s)
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let buf = self.encode();
        let s = std::str::from_utf8(&buf).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(s)
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HashVisitor;

        impl Visitor<'_> for HashVisitor {
            type Value = Hash;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string \"sha256:\" followed by 64 lowercase hex digits")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Hash, E> {
                Hash::parse(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(HashVisitor)
    }
}

/// Decodes exactly `2 * N` lowercase hex digits. Upper case is refused on purpose: every value
/// this crate reads has exactly one spelling (see the module docs).
pub(crate) fn decode_lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = s.as_bytes();
    if bytes.len() != 2 * N || !bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(bytes, &mut out).ok()?;
    Some(out)
}

/// Bounds attacker-controlled strings echoed in error messages.
pub(crate) fn truncate_for_error(s: &str) -> String {
    const MAX_ECHO_CHARS: usize = 80;
    if s.chars().count() <= MAX_ECHO_CHARS {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX_ECHO_CHARS).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
// A failed unwrap in a test is a test failure with a backtrace, which is what we want.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_prefix_and_64_zeros() {
        assert_eq!(Hash::ZERO.to_string(), format!("sha256:{}", "0".repeat(64)));
    }

    #[test]
    fn of_matches_known_sha256() {
        assert_eq!(
            Hash::of(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parse_round_trips_display_and_serde() {
        let h = Hash::of(b"x");
        assert_eq!(Hash::parse(&h.to_string()).unwrap(), h);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{h}\""));
        assert_eq!(serde_json::from_str::<Hash>(&json).unwrap(), h);
    }

    #[test]
    fn parse_refuses_other_spellings() {
        let good = Hash::of(b"x").to_string();
        for bad in [
            good.to_uppercase(),
            good.replace("sha256:", "SHA256:"),
            good.replace("sha256:", ""),
            format!("{good}0"),
            good[..good.len() - 1].to_owned(),
            format!(" {good}"),
            format!("sha256:{}", "g".repeat(64)),
            format!("sha256:{}A", &good[7..70]),
        ] {
            assert!(Hash::parse(&bad).is_err(), "{bad} must be refused");
            assert!(serde_json::from_str::<Hash>(&format!("\"{bad}\"")).is_err());
        }
    }
}
