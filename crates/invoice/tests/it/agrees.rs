//! `decode` applies lightning-invoice's semantic rules itself (to check the signature with one
//! secp256k1 operation); here it is checked against `Bolt11Invoice::from_str` on invoices built
//! field by field: every combination of missing, single and repeated payment hashes,
//! descriptions and payment secrets, of features, of the `n` field (absent, right, wrong key),
//! of amounts (none, whole msat, sub-msat) and of low- and high-S signatures. Both must accept
//! and refuse the same invoices and, when they accept, agree on every field.

use std::str::FromStr;

use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use lightning_invoice::{
    Bolt11Invoice, Bolt11InvoiceDescriptionRef, Currency, Description, PayeePubKey, PaymentSecret,
    PositiveTimestamp, RawBolt11Invoice, RawDataPart, RawHrp, RawTaggedField, SiPrefix,
    TaggedField,
};
use lightning_types::features::Bolt11InvoiceFeatures;
use oa_invoice::decode;

fn field(f: TaggedField) -> RawTaggedField {
    RawTaggedField::KnownSemantics(f)
}

fn features(kind: usize) -> Option<Bolt11InvoiceFeatures> {
    let mut f = Bolt11InvoiceFeatures::empty();
    match kind {
        0 => None,
        1 => {
            f.set_payment_secret_required();
            f.set_variable_length_onion_required();
            Some(f)
        }
        2 => {
            f.set_variable_length_onion_required();
            Some(f)
        }
        _ => {
            // Bit 100 (even: required) is unknown.
            let mut bytes = vec![0_u8; 13];
            bytes[12] = 0x10;
            bytes[1] |= 0x40; // payment_secret required (bit 14)
            Some(Bolt11InvoiceFeatures::from_le_bytes(bytes))
        }
    }
}

#[test]
fn decode_agrees_with_lightning_invoice_on_every_field_combination() {
    let secp = Secp256k1::new();
    let key = SecretKey::from_slice(&[0x42; 32]).unwrap();
    let other = PublicKey::from_secret_key(&secp, &SecretKey::from_slice(&[0x43; 32]).unwrap());
    let payee = PublicKey::from_secret_key(&secp, &key);
    let hash = sha256::Hash::hash(b"preimage");
    let (mut accepted, mut refused) = (0, 0);
    for hashes in 0..3 {
        for descriptions in 0..4 {
            for secrets in 0..3 {
                for feature_kind in 0..4 {
                    for n_field in 0..3 {
                        for amount in 0..3 {
                            for high_s in [false, true] {
                                let mut tagged = Vec::new();
                                for _ in 0..hashes {
                                    tagged.push(field(TaggedField::PaymentHash(
                                        lightning_invoice::Sha256(hash),
                                    )));
                                }
                                // 0: none, 1: d, 2: h, 3: d and h.
                                if descriptions & 1 == 1 {
                                    tagged.push(field(TaggedField::Description(
                                        Description::new("coffee".into()).unwrap(),
                                    )));
                                }
                                if descriptions & 2 == 2 {
                                    tagged.push(field(TaggedField::DescriptionHash(
                                        lightning_invoice::Sha256(sha256::Hash::hash(b"d")),
                                    )));
                                }
                                for _ in 0..secrets {
                                    tagged.push(field(TaggedField::PaymentSecret(PaymentSecret(
                                        [7; 32],
                                    ))));
                                }
                                if let Some(f) = features(feature_kind) {
                                    tagged.push(field(TaggedField::Features(f)));
                                }
                                match n_field {
                                    1 => tagged
                                        .push(field(TaggedField::PayeePubKey(PayeePubKey(payee)))),
                                    2 => tagged
                                        .push(field(TaggedField::PayeePubKey(PayeePubKey(other)))),
                                    _ => {}
                                }
                                let (raw_amount, si_prefix) = match amount {
                                    0 => (None, None),
                                    1 => (Some(2_500), Some(SiPrefix::Micro)),
                                    // 15 pico-BTC = 1.5 msat: not a whole msat.
                                    _ => (Some(15), Some(SiPrefix::Pico)),
                                };
                                let raw = RawBolt11Invoice {
                                    hrp: RawHrp {
                                        currency: Currency::Regtest,
                                        raw_amount,
                                        si_prefix,
                                    },
                                    data: RawDataPart {
                                        timestamp: PositiveTimestamp::from_unix_timestamp(
                                            1_780_000_000,
                                        )
                                        .unwrap(),
                                        tagged_fields: tagged,
                                    },
                                };
                                let signed = raw
                                    .sign::<_, ()>(|m: &Message| {
                                        let sig = secp.sign_ecdsa_recoverable(m, &key);
                                        Ok(if high_s { to_high_s(&sig) } else { sig })
                                    })
                                    .unwrap();
                                let text = signed.to_string();
                                let ours = decode(&text);
                                let theirs = Bolt11Invoice::from_str(&text);
                                let case = format!(
                                    "hashes {hashes} descriptions {descriptions} secrets {secrets} \
                                     features {feature_kind} n {n_field} amount {amount} high_s {high_s}"
                                );
                                match (ours, theirs) {
                                    (Ok(d), Ok(inv)) => {
                                        accepted += 1;
                                        assert_eq!(
                                            d.payee_pubkey,
                                            inv.get_payee_pub_key().to_string(),
                                            "{case}"
                                        );
                                        assert_eq!(
                                            d.payment_hash.0,
                                            inv.payment_hash().to_byte_array(),
                                            "{case}"
                                        );
                                        assert_eq!(
                                            d.amount.map(|a| a.as_u64()),
                                            inv.amount_milli_satoshis(),
                                            "{case}"
                                        );
                                        assert_eq!(
                                            d.created_at_ms,
                                            inv.duration_since_epoch().as_secs() * 1000
                                        );
                                        assert_eq!(
                                            d.expires_at_ms,
                                            inv.expires_at().unwrap().as_secs() * 1000
                                        );
                                        assert_eq!(
                                            d.min_final_cltv_expiry_delta,
                                            inv.min_final_cltv_expiry_delta()
                                        );
                                        match inv.description() {
                                            Bolt11InvoiceDescriptionRef::Direct(t) => {
                                                assert_eq!(d.description, Some(t.to_string()))
                                            }
                                            Bolt11InvoiceDescriptionRef::Hash(h) => assert_eq!(
                                                d.description_hash,
                                                Some(h.0.to_string())
                                            ),
                                        }
                                    }
                                    (Err(e), Err(_)) => {
                                        refused += 1;
                                        assert_eq!(e.code(), "INVALID_INVOICE", "{case}");
                                    }
                                    (ours, theirs) => panic!(
                                        "{case}: decode {:?} but lightning-invoice {:?}",
                                        ours.map(|_| "ok"),
                                        theirs.map(|_| "ok")
                                    ),
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // Both verdicts are exercised.
    assert!(
        accepted > 0 && refused > accepted,
        "{accepted} accepted, {refused} refused"
    );
}

/// The same signature with s replaced by n - s (and the recovery id's parity flipped, so it
/// still recovers the same key).
fn to_high_s(
    sig: &bitcoin::secp256k1::ecdsa::RecoverableSignature,
) -> bitcoin::secp256k1::ecdsa::RecoverableSignature {
    use bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
    let (id, bytes) = sig.serialize_compact();
    let s = SecretKey::from_slice(&bytes[32..]).unwrap().negate();
    let mut out = bytes;
    out[32..].copy_from_slice(&s.secret_bytes());
    let id = RecoveryId::from_i32(id.to_i32() ^ 1).unwrap();
    RecoverableSignature::from_compact(&out, id).unwrap()
}
