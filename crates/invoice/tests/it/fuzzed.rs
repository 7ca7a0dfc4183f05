//! Invoices the fuzzer (`fuzz/`, target `invoice_fields`) found `decode` accepting wrongly, kept
//! as regressions. Each is built the way an attacker would: a canonical invoice from our own
//! signer, one thing changed, signed again by the same node.

use std::str::FromStr;

use bitcoin::bech32::Fe32;
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use lightning_invoice::{RawBolt11Invoice, RawTaggedField, SignedRawBolt11Invoice};
use oa_invoice::{InvoiceRequest, InvoiceSigner, Network, Preimage, decode};
use oa_money::Msat;

const KEY: [u8; 32] = [5; 32];

/// A canonical regtest invoice signed by `KEY`, changed by `edit` and signed again.
fn resigned(edit: impl FnOnce(&mut RawBolt11Invoice)) -> String {
    let key = SecretKey::from_slice(&KEY).unwrap();
    let text = InvoiceSigner::new(key)
        .create_invoice(&InvoiceRequest {
            network: Network::Regtest,
            amount: Some(Msat::new(1_000).unwrap()),
            payment_hash: Preimage::random().payment_hash(),
            payment_secret: [2; 32],
            description: "fuzzed".into(),
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap(),
            expiry: std::time::Duration::from_secs(3600),
            min_final_cltv_expiry_delta: 18,
        })
        .unwrap();
    assert!(decode(&text).is_ok(), "the starting invoice is valid");
    let mut raw = SignedRawBolt11Invoice::from_str(&text)
        .unwrap()
        .raw_invoice()
        .clone();
    edit(&mut raw);
    let secp = Secp256k1::new();
    raw.sign::<_, ()>(|m: &Message| Ok(secp.sign_ecdsa_recoverable(m, &key)))
        .unwrap()
        .to_string()
}

#[test]
fn an_amount_too_large_to_represent_is_refused_not_read_as_any_amount() {
    // 20 million BTC, no multiplier: more picobitcoin than a u64 holds.
    let text = resigned(|raw| {
        raw.hrp.raw_amount = Some(20_000_000);
        raw.hrp.si_prefix = None;
    });
    assert!(text.starts_with("lnbcrt20000000"), "{text}");
    let err = decode(&text).unwrap_err();
    assert_eq!(err.code(), "AMOUNT_TOO_LARGE", "{err}");
}

#[test]
fn a_non_minimal_field_is_refused_so_the_payee_cannot_be_misread() {
    // An expiry field (`x`) of one second written in three characters where one does: LDK
    // re-encodes it minimally before checking the signature, so the key it recovers is not the
    // signer's.
    let text = resigned(|raw| {
        let fes = ['x', 'q', 'r', 'q', 'q', 'p']
            .map(|c| Fe32::from_char(c).unwrap())
            .to_vec();
        raw.data
            .tagged_fields
            .push(RawTaggedField::UnknownSemantics(fes));
    });
    let err = decode(&text).unwrap_err();
    assert_eq!(err.code(), "INVALID_INVOICE", "{err}");
    assert!(err.to_string().contains("canonical"), "{err}");
    // The same invoice in upper case is still the canonical spelling of something else: refused.
    assert!(decode(&text.to_uppercase()).is_err());
}

#[test]
fn canonical_invoices_in_either_case_still_decode() {
    let text = resigned(|_| {});
    assert!(decode(&text).is_ok());
    assert!(decode(&text.to_uppercase()).is_ok());
}
