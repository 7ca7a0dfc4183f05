//! RFC 8785 JSON Canonicalization Scheme (JCS).
//!
//! Receipt hashes are computed over JCS bytes so that verifiers in other languages reproduce
//! them with any conforming implementation. We delegate to `serde_json_canonicalizer` rather
//! than writing our own: key sorting by UTF-16 code units and ECMAScript number formatting are
//! easy to get subtly wrong, and the crate is checked here against the reference vectors and an
//! independent implementation (PyPI `rfc8785`) in the integration tests.

use crate::error::ReceiptError;

/// The RFC 8785 canonical form of `value`, as UTF-8 bytes.
///
/// # Errors
///
/// [`ReceiptError::Json`] if the value cannot be represented (in practice only non-finite
/// numbers, which `serde_json::Value` cannot hold, so this does not fail for parsed JSON).
pub fn canonical_json(value: &serde_json::Value) -> Result<Vec<u8>, ReceiptError> {
    Ok(serde_json_canonicalizer::to_vec(value)?)
}

#[cfg(test)]
// A failed unwrap in a test is a test failure with a backtrace, which is what we want.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_by_utf16_code_units_not_code_points() {
        // U+10000 is the surrogate pair D800 DC00 in UTF-16, which sorts before U+E000 even though
        // its code point is larger: the classic place where naive implementations go wrong.
        let value = json!({"\u{e000}": "b", "\u{10000}": "a", "z": "c"});
        let out = canonical_json(&value).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"z\":\"c\",\"\u{10000}\":\"a\",\"\u{e000}\":\"b\"}"
        );
    }

    #[test]
    fn escapes_only_what_rfc8785_requires() {
        let value = json!(["\u{1f}\u{7f}/\"\\\n", "é"]);
        let out = canonical_json(&value).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[\"\\u001f\u{7f}/\\\"\\\\\\n\",\"é\"]"
        );
    }
}
