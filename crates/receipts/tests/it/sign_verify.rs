//! Sealing and verifying single receipts.

use oa_receipts::{Hash, Receipt, ReceiptError, ReceiptKey, body_from, verify_signature};
use serde_json::{Value, json};

use crate::support::{chain_of, draft};

fn sealed() -> (ReceiptKey, Receipt) {
    let key = ReceiptKey::generate();
    let receipt = draft(
        "r-1",
        vec![Hash::of(b"dep")],
        json!({"amount_msat": "5000", "memo": "hi"}),
    )
    .seal(&key, "hydra", 0, Hash::ZERO, 1_700_000_000_123)
    .unwrap();
    (key, receipt)
}

fn assert_no_numbers(value: &Value) {
    match value {
        Value::Number(n) => panic!("JSON number {n} in a receipt"),
        Value::Array(items) => items.iter().for_each(assert_no_numbers),
        Value::Object(map) => map.values().for_each(assert_no_numbers),
        _ => {}
    }
}

#[test]
fn sealed_receipt_verifies_and_survives_a_json_round_trip() {
    let (key, receipt) = sealed();
    receipt.verify().unwrap();
    assert_eq!(receipt.issuer.key_id, key.key_id());
    assert_eq!(receipt.signature.len(), 128);
    assert_eq!(receipt.hash, receipt.compute_hash().unwrap());

    let text = serde_json::to_string(&receipt).unwrap();
    let back: Receipt = serde_json::from_str(&text).unwrap();
    assert_eq!(back, receipt);
    back.verify().unwrap();
}

#[test]
fn serializes_fields_in_order_with_integers_as_strings_and_no_numbers() {
    let (_, receipt) = sealed();
    let text = serde_json::to_string(&receipt).unwrap();
    let order = [
        "schema",
        "receipt_id",
        "issuer",
        "log_index",
        "prev_hash",
        "issued_at_ms",
        "idempotency_key",
        "links",
        "body",
        "hash",
        "signature",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|k| text.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(text.contains(r#""log_index":"0""#), "{text}");
    assert!(text.contains(r#""issued_at_ms":"1700000000123""#), "{text}");
    assert_no_numbers(&serde_json::from_str(&text).unwrap());
}

#[test]
fn hash_covers_everything_but_hash_and_signature() {
    let (_, receipt) = sealed();
    let mut value = serde_json::to_value(&receipt).unwrap();
    let map = value.as_object_mut().unwrap();
    map.remove("hash");
    map.remove("signature");
    let canonical = oa_receipts::canonical_json(&value).unwrap();
    assert_eq!(canonical, receipt.canonical_unsigned().unwrap());
    assert_eq!(Hash::of(&canonical), receipt.hash);
}

#[test]
fn changed_body_fails_with_hash_mismatch() {
    let (_, mut receipt) = sealed();
    receipt.body.insert("memo".into(), json!("hj"));
    assert!(matches!(
        receipt.verify(),
        Err(ReceiptError::HashMismatch { .. })
    ));
}

#[test]
fn changed_header_fields_fail() {
    let (_, receipt) = sealed();
    let mutations: [fn(&mut Receipt); 6] = [
        |r| r.log_index += 1,
        |r| r.issued_at_ms += 1,
        |r| r.idempotency_key.push('x'),
        |r| r.links.clear(),
        |r| r.schema = "oa.hydra.invoice_pay_receipt.v2".into(),
        |r| r.receipt_id = "r-2".into(),
    ];
    for mutate in mutations {
        let mut r = receipt.clone();
        mutate(&mut r);
        assert!(
            matches!(r.verify(), Err(ReceiptError::HashMismatch { .. })),
            "{r:?}"
        );
    }
}

#[test]
fn flipped_hash_byte_fails() {
    let (_, mut receipt) = sealed();
    let mut bytes = *receipt.hash.as_bytes();
    bytes[7] ^= 0x01;
    receipt.hash = Hash::from_bytes(bytes);
    assert!(matches!(
        receipt.verify(),
        Err(ReceiptError::HashMismatch { .. })
    ));
}

#[test]
fn flipped_signature_byte_fails() {
    let (_, receipt) = sealed();
    for pos in [0, 63, 64, 127] {
        let mut r = receipt.clone();
        let mut sig = r.signature.into_bytes();
        sig[pos] = if sig[pos] == b'0' { b'1' } else { b'0' };
        r.signature = String::from_utf8(sig).unwrap();
        assert!(
            matches!(
                r.verify(),
                Err(ReceiptError::BadSignature { .. } | ReceiptError::MalformedSignature)
            ),
            "position {pos}"
        );
    }
    let mut upper = receipt.clone();
    upper.signature = upper.signature.to_uppercase();
    assert!(upper.verify().is_err(), "only lowercase hex is accepted");
}

#[test]
fn wrong_key_fails() {
    let (_key, receipt) = sealed();
    let other = ReceiptKey::generate();
    assert!(matches!(
        verify_signature(other.key_id(), &receipt.hash, &receipt.signature),
        Err(ReceiptError::BadSignature { .. })
    ));
    // Claiming another issuer key changes the hashed content; re-hashing without the other
    // key's secret still leaves a signature that does not verify.
    let mut r = receipt.clone();
    r.issuer.key_id = other.key_id().to_owned();
    r.hash = r.compute_hash().unwrap();
    assert!(matches!(r.verify(), Err(ReceiptError::BadSignature { .. })));
    // Signed by the wrong key outright.
    let mut r = receipt;
    r.signature = other.sign(&r.hash);
    assert!(matches!(r.verify(), Err(ReceiptError::BadSignature { .. })));
}

#[test]
fn body_with_a_number_is_refused() {
    let key = ReceiptKey::generate();
    let err = draft("r", vec![], json!({"amounts": ["1", 2]}))
        .seal(&key, "hydra", 0, Hash::ZERO, 1)
        .unwrap_err();
    assert!(
        matches!(&err, ReceiptError::NumberInBody { pointer } if pointer == "/amounts/1"),
        "{err}"
    );

    // Verifiers refuse it too, even when hash and signature are right.
    let (key, mut receipt) = sealed();
    receipt.body.insert("n".into(), json!(1));
    receipt.hash = receipt.compute_hash().unwrap();
    receipt.signature = key.sign(&receipt.hash);
    assert!(matches!(
        receipt.verify(),
        Err(ReceiptError::NumberInBody { .. })
    ));
}

#[test]
fn unknown_fields_are_refused_when_parsing() {
    let (_, receipt) = sealed();
    let mut value = serde_json::to_value(&receipt).unwrap();
    value
        .as_object_mut()
        .unwrap()
        .insert("extra".into(), json!("x"));
    assert!(serde_json::from_value::<Receipt>(value).is_err());
}

#[test]
fn preimage_must_hash_to_payment_hash() {
    let key = ReceiptKey::generate();
    let preimage = [7u8; 32];
    let payment_hash = Hash::of(&preimage);
    let good = json!({"payment_hash": hex::encode(payment_hash.as_bytes()), "preimage": hex::encode(preimage)});
    draft("ok", vec![], good)
        .seal(&key, "hydra", 0, Hash::ZERO, 1)
        .unwrap()
        .verify()
        .unwrap();

    let bad = json!({"payment_hash": hex::encode(payment_hash.as_bytes()), "preimage": hex::encode([8u8; 32])});
    assert!(matches!(
        draft("bad", vec![], bad).seal(&key, "hydra", 0, Hash::ZERO, 1),
        Err(ReceiptError::PreimageMismatch(_))
    ));
    // A pending payment has no preimage yet.
    let pending = json!({"payment_hash": hex::encode(payment_hash.as_bytes()), "preimage": null});
    draft("pending", vec![], pending)
        .seal(&key, "hydra", 0, Hash::ZERO, 1)
        .unwrap();
}

#[test]
fn body_from_typed_struct_seals() {
    #[derive(serde::Serialize)]
    struct PayBody {
        #[serde(with = "oa_receipts::u64_string")]
        amount_msat: u64,
        status: &'static str,
    }
    let key = ReceiptKey::generate();
    let mut d = draft("typed", vec![], json!({}));
    d.body = body_from(&PayBody {
        amount_msat: u64::MAX,
        status: "succeeded",
    })
    .unwrap();
    let r = d.seal(&key, "hydra", 0, Hash::ZERO, 1).unwrap();
    assert_eq!(r.body["amount_msat"], json!("18446744073709551615"));
    r.verify().unwrap();
}

#[test]
fn signatures_use_fresh_aux_randomness() {
    let key = ReceiptKey::generate();
    let h = Hash::of(b"same");
    let (a, b) = (key.sign(&h), key.sign(&h));
    assert_ne!(a, b);
    verify_signature(key.key_id(), &h, &a).unwrap();
    verify_signature(key.key_id(), &h, &b).unwrap();
}

#[test]
fn every_receipt_of_a_chain_verifies() {
    let key = ReceiptKey::generate();
    for r in chain_of(&key, "hydra", 5) {
        r.verify().unwrap();
    }
}
