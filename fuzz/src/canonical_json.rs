//! RFC 8785 canonical JSON ([`oa_receipts::canonical_json`]): receipt hashes are computed over
//! it, and treasury hashes its policies with it, so two spellings of one value must give one
//! byte string.
//!
//! For any input that parses as JSON:
//! - canonicalizing does not fail (a parsed value holds only finite numbers);
//! - the output parses back to the same value, numbers compared as the IEEE 754 doubles that
//!   RFC 8785 writes (so `1.0`, `1` and `1e0` are one number, and integers above 2^53 round);
//! - canonicalizing is idempotent: the parsed output canonicalizes to the output again;
//! - for an object, the receipts crate's own writer for number-free values (the fast path of
//!   `Receipt::canonical_unsigned`) writes the same bytes as the general serializer, when the
//!   object is used as a receipt body.

use oa_receipts::{Hash, Issuer, Receipt, canonical_json};
use serde_json::Value;

/// Checks the properties above for `data`; inputs that are not JSON are skipped.
pub fn check(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let canonical = canonical_json(&value).expect("a parsed JSON value always canonicalizes");
    let reparsed: Value = serde_json::from_slice(&canonical).unwrap_or_else(|e| {
        panic!(
            "the canonical form is not JSON ({e}): {}",
            String::from_utf8_lossy(&canonical)
        )
    });
    assert!(
        same_value(&value, &reparsed),
        "the canonical form {} parses to {reparsed} instead of {value}",
        String::from_utf8_lossy(&canonical)
    );
    let again = canonical_json(&reparsed).expect("a parsed JSON value always canonicalizes");
    assert!(
        again == canonical,
        "canonicalizing is not idempotent: {} then {}",
        String::from_utf8_lossy(&canonical),
        String::from_utf8_lossy(&again)
    );
    if let Value::Object(body) = value {
        crate::receipt::assert_writers_agree(&Receipt {
            schema: "oa.fuzz.body.v1".to_owned(),
            receipt_id: "rcpt_fuzz".to_owned(),
            issuer: Issuer {
                service: "fuzz".to_owned(),
                key_id: "00".repeat(32),
            },
            log_index: 0,
            prev_hash: Hash::ZERO,
            issued_at_ms: 0,
            idempotency_key: "fuzz".to_owned(),
            links: Vec::new(),
            body,
            hash: Hash::ZERO,
            signature: String::new(),
        });
    }
}

/// Structural equality with numbers compared as doubles, the only numbers RFC 8785 knows.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| same_value(x, y)))
        }
        _ => a == b,
    }
}
