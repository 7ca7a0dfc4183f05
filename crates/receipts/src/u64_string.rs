//! Serde helper: a `u64` as a JSON decimal string.
//!
//! Receipts contain no JSON numbers (see the crate docs), so 64-bit integers travel as strings.
//! Use it on body structs of other crates:
//!
//! ```
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct PayBody {
//!     #[serde(with = "oa_receipts::u64_string")]
//!     amount_msat: u64,
//!     #[serde(with = "oa_receipts::u64_string::option", default)]
//!     fee_msat: Option<u64>,
//! }
//! ```
//!
//! Parsing is strict, one spelling per value: ASCII digits only, no sign, no leading zeros
//! (except `"0"` itself), no whitespace, and no overflow. `u64::from_str` alone would accept
//! `"+5"`, and leading zeros would give one number several spellings.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Serializes `value` as a decimal string.
///
/// # Errors
///
/// Only those of the serializer.
// The `&u64` signature is what `#[serde(with)]` requires.
#[allow(clippy::trivially_copy_pass_by_ref)]
pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Deserializes a decimal string into a `u64`.
///
/// # Errors
///
/// If the input is not a string or not the one canonical decimal spelling of a `u64`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserializer.deserialize_str(U64StringVisitor)
}

/// Parses the canonical decimal spelling of a `u64`; `None` for anything else.
#[must_use]
pub fn parse(s: &str) -> Option<u64> {
    let bytes = s.as_bytes();
    let canonical = match bytes {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        _ => bytes.iter().all(u8::is_ascii_digit),
    };
    if canonical { s.parse().ok() } else { None }
}

struct U64StringVisitor;

impl Visitor<'_> for U64StringVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a u64 as a decimal string without sign, spaces or leading zeros")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

/// The same for `Option<u64>`: `None` is JSON `null`.
///
/// Pair with `#[serde(default)]` if the field may be absent.
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `Some(v)` as a decimal string and `None` as `null`.
    ///
    /// # Errors
    ///
    /// Only those of the serializer.
    // The `&Option<u64>` signature is what `#[serde(with)]` requires.
    #[allow(clippy::ref_option)]
    pub fn serialize<S: Serializer>(value: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => super::serialize(v, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Deserializes `null` as `None` and a decimal string as `Some`.
    ///
    /// # Errors
    ///
    /// If the input is neither `null` nor a canonical decimal string.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super")] u64);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(v)| v))
    }
}

#[cfg(test)]
// A failed unwrap in a test is a test failure with a backtrace, which is what we want.
#[allow(clippy::unwrap_used)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct T {
        #[serde(with = "super")]
        n: u64,
        #[serde(with = "super::option", default)]
        o: Option<u64>,
    }

    #[test]
    fn round_trips_extremes_as_strings() {
        for n in [0, 1, 10, 9_007_199_254_740_993, u64::MAX] {
            let t = T { n, o: Some(n) };
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("{{\"n\":\"{n}\",\"o\":\"{n}\"}}"));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), t);
        }
        let t: T = serde_json::from_str(r#"{"n":"7"}"#).unwrap();
        assert_eq!(t, T { n: 7, o: None });
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"n":"7","o":null}"#);
    }

    #[test]
    fn refuses_non_canonical_spellings_and_numbers() {
        for bad in [
            r#""""#,
            r#""+5""#,
            r#""-1""#,
            r#""05""#,
            r#"" 5""#,
            r#""5 ""#,
            r#""1e3""#,
            r#""18446744073709551616""#,
            "5",
        ] {
            let json = format!("{{\"n\":{bad}}}");
            assert!(
                serde_json::from_str::<T>(&json).is_err(),
                "{bad} must be refused"
            );
        }
    }
}
