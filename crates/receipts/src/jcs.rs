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

/// RFC 8785 for values without numbers, written directly into `out`: the auditor hashes every
/// receipt of an export, and this is several times faster than the general serializer. Returns
/// `false` (with `out` partly written) if `value` holds a number; callers then use
/// [`canonical_json`]. With no numbers, JCS is only key sorting by UTF-16 code units and
/// ECMAScript string escaping; the tests compare it with the general serializer.
pub(crate) fn write_numberless(out: &mut Vec<u8>, value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(_) => return false,
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !write_numberless(out, item) {
                    return false;
                }
            }
            out.push(b']');
        }
        Value::Object(map) => return write_object(out, map),
    }
    true
}

/// An object with its members sorted by the UTF-16 code units of their names.
pub(crate) fn write_object(
    out: &mut Vec<u8>,
    map: &serde_json::Map<String, serde_json::Value>,
) -> bool {
    let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
    entries.sort_by(|a, b| utf16_cmp(a.0, b.0));
    out.push(b'{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        if !write_numberless(out, v) {
            return false;
        }
    }
    out.push(b'}');
    true
}

/// Orders strings by UTF-16 code units. For ASCII (and whenever neither string has a character
/// at or above U+E000 against a supplementary one) that is byte order.
fn utf16_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.as_bytes().cmp(b.as_bytes())
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

/// A JSON string as ECMAScript `JSON.stringify` writes it (RFC 8785 section 3.2.2.2).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
// A failed unwrap in a test is a test failure with a backtrace, which is what we want.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fast(value: &serde_json::Value) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        write_numberless(&mut out, value).then_some(out)
    }

    #[test]
    fn the_numberless_writer_matches_the_general_serializer() {
        let mut all: String = (0u32..0x250).filter_map(char::from_u32).collect();
        all.push_str("\u{2028}\u{2029}\u{feff}\u{e000}\u{ffff}\u{10000}\u{1f600}");
        let value = json!({
            "\u{e000}": "b", "\u{10000}": "a", "z": "c", "": [], "a": {"nested": [true, false, null, {}]},
            "all": all, "é": "e", "Z": "upper", "aa": "x", "a\u{0}": "nul key",
        });
        assert_eq!(fast(&value).unwrap(), canonical_json(&value).unwrap());
        for c in (0u32..0x3000)
            .chain(0xe000..0x10100)
            .filter_map(char::from_u32)
        {
            let v = json!({ c.to_string(): c.to_string(), "k": format!("x{c}y") });
            assert_eq!(
                fast(&v).unwrap(),
                canonical_json(&v).unwrap(),
                "U+{:04X}",
                c as u32
            );
        }
        assert!(fast(&json!({"n": 1})).is_none());
    }

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
