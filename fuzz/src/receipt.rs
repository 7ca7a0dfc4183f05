//! One receipt from an untrusted source ([`Receipt`] parsing, [`Receipt::verify`]), the strict
//! hash spelling ([`Hash::parse`]) and BIP340 verification ([`verify_signature`]).
//!
//! For an input that parses as a receipt:
//! - its hashed bytes are the same whether the fast writer or the general RFC 8785 serializer
//!   writes them, and are canonical JSON without `hash` and `signature`;
//! - `compute_hash` is SHA-256 of those bytes;
//! - it survives a serde round trip unchanged;
//! - if [`Receipt::verify`] accepts it, its hash is the recomputed one and its signature verifies
//!   under its issuer key on its own.
//!
//! For any other input, read as text: [`Hash::parse`] accepts exactly `sha256:` and 64 lowercase
//! hex digits, gives back the same text, and agrees with deserializing; and
//! [`verify_signature`] on the text's lines (key id, hash, signature) accepts only well-formed
//! values.

use oa_receipts::{Hash, Receipt, ReceiptError, canonical_json, verify_signature};
use serde_json::Value;

/// Checks the properties above for `data`.
pub fn check(data: &[u8]) {
    if let Ok(receipt) = serde_json::from_slice::<Receipt>(data) {
        check_receipt(&receipt);
    } else if let Ok(text) = std::str::from_utf8(data) {
        check_hash_text(text);
        check_signature_text(text);
    }
}

fn check_receipt(receipt: &Receipt) {
    assert_writers_agree(receipt);
    let bytes = receipt
        .canonical_unsigned()
        .expect("a parsed receipt always canonicalizes");
    assert_eq!(
        receipt.compute_hash().expect("it canonicalized just now"),
        Hash::of(&bytes)
    );
    let text = serde_json::to_string(receipt).expect("a receipt always serializes");
    let again: Receipt = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("a serialized receipt does not parse ({e}): {text}"));
    assert_eq!(&again, receipt, "a receipt changed in a serde round trip");
    if receipt.verify().is_ok() {
        assert_eq!(receipt.compute_hash().ok(), Some(receipt.hash));
        verify_signature(&receipt.issuer.key_id, &receipt.hash, &receipt.signature)
            .expect("a verified receipt's signature verifies on its own");
    }
}

/// The receipt's hashed bytes, written by the crate's fast writer, equal the general RFC 8785
/// serializer's output for the receipt's JSON without `hash` and `signature`.
pub(crate) fn assert_writers_agree(receipt: &Receipt) {
    let fast = receipt
        .canonical_unsigned()
        .expect("a parsed receipt always canonicalizes");
    let Value::Object(mut unsigned) =
        serde_json::to_value(receipt).expect("a receipt always serializes")
    else {
        panic!("a receipt serializes to a JSON object");
    };
    unsigned.remove("hash");
    unsigned.remove("signature");
    let general = canonical_json(&Value::Object(unsigned)).expect("parsed values canonicalize");
    assert!(
        fast == general,
        "the receipt writer and the RFC 8785 serializer disagree:\n  fast:    {}\n  general: {}",
        String::from_utf8_lossy(&fast),
        String::from_utf8_lossy(&general)
    );
}

fn check_hash_text(text: &str) {
    let expected = text.strip_prefix(Hash::PREFIX).is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    match Hash::parse(text) {
        Ok(hash) => {
            assert!(expected, "Hash::parse accepted {text:?}");
            assert_eq!(hash.to_string(), text, "a parsed hash displays differently");
        }
        Err(e) => {
            assert!(!expected, "Hash::parse refused {text:?}: {e}");
            assert!(matches!(e, ReceiptError::InvalidHash(_)), "{e:?}");
        }
    }
    let via_serde = serde_json::from_value::<Hash>(Value::String(text.to_owned()));
    assert_eq!(
        via_serde.ok(),
        Hash::parse(text).ok(),
        "deserializing and Hash::parse disagree on {text:?}"
    );
}

fn check_signature_text(text: &str) {
    let mut lines = text.lines();
    let (Some(key_id), Some(hash), Some(signature)) = (lines.next(), lines.next(), lines.next())
    else {
        return;
    };
    let hash = Hash::parse(hash).unwrap_or_else(|_| Hash::of(hash.as_bytes()));
    if verify_signature(key_id, &hash, signature).is_ok() {
        let lower_hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        assert!(
            lower_hex(key_id, 64) && lower_hex(signature, 128),
            "verify_signature accepted a malformed key id or signature: {key_id:?} {signature:?}"
        );
    }
}
