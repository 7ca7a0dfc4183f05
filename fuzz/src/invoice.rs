//! BOLT11 invoices as services receive them ([`oa_invoice::decode`], [`oa_invoice::validate`]).
//!
//! `decode` re-implements the semantic checks of LDK's `Bolt11Invoice::from_signed` to verify the
//! signature with one secp256k1 operation, so LDK's own parser is the oracle. For any text:
//! - `decode` does not panic, and refuses with `INVALID_INVOICE`, `WRONG_NETWORK` (simnet) or
//!   `AMOUNT_TOO_LARGE`;
//! - it accepts exactly what `Bolt11Invoice::from_str` accepts (up to the length limit, simnet,
//!   amounts LDK cannot represent and encodings LDK does not write back as they were), and then
//!   agrees with it on the payee, payment hash, amount, times, CLTV delta and description;
//! - an accepted invoice has an amount exactly when its human-readable part states one, keeps its
//!   text, has no control or line-separator characters in its description, expires no earlier
//!   than it was created, survives a serde round trip, and decodes to the same fields when LDK
//!   writes it out again;
//! - `validate` refuses another network with `WRONG_NETWORK`, and on the invoice's own network at
//!   its creation time accepts it exactly when it has a non-zero amount (its own or the caller's)
//!   and a non-zero expiry, keeping the decoded fields.

use std::str::FromStr;
use std::time::Duration;

use bitcoin::hashes::Hash as _;
use lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescriptionRef, SignedRawBolt11Invoice};
use oa_invoice::{
    DecodedInvoice, InvoiceError, InvoicePolicy, MAX_INVOICE_LEN, Network, decode, validate,
};
use oa_money::Msat;

/// Checks the properties above for `data` read as (lossy) UTF-8.
pub fn check(data: &[u8]) {
    check_text(&String::from_utf8_lossy(data));
}

/// Checks the properties above for `text`; returns the decoded invoice if it was accepted.
pub fn check_text(text: &str) -> Option<DecodedInvoice> {
    let ours = decode(text);
    if let Err(e) = &ours {
        assert!(
            matches!(
                e,
                InvoiceError::Invalid { .. }
                    | InvoiceError::WrongNetwork { expected: None, .. }
                    | InvoiceError::AmountTooLarge { .. }
            ),
            "decode refused with {e:?}"
        );
    }
    if text.len() <= MAX_INVOICE_LEN {
        agrees_with_ldk(text, &ours);
    }
    let decoded = ours.ok()?;
    check_accepted(text, &decoded);
    check_validate(text, &decoded);
    Some(decoded)
}

fn agrees_with_ldk(text: &str, ours: &Result<DecodedInvoice, InvoiceError>) {
    let theirs = Bolt11Invoice::from_str(text);
    match (ours, theirs) {
        (Ok(d), Ok(inv)) => {
            assert_eq!(d.payee_pubkey, inv.get_payee_pub_key().to_string());
            assert_eq!(d.payment_hash.0, inv.payment_hash().to_byte_array());
            assert_eq!(d.amount.map(Msat::as_u64), inv.amount_milli_satoshis());
            assert_eq!(
                d.created_at_ms,
                inv.duration_since_epoch().as_secs().saturating_mul(1000)
            );
            assert_eq!(
                d.expires_at_ms,
                inv.expires_at()
                    .map_or(u64::MAX, |at| at.as_secs().saturating_mul(1000))
            );
            assert_eq!(
                d.min_final_cltv_expiry_delta,
                inv.min_final_cltv_expiry_delta()
            );
            match inv.description() {
                Bolt11InvoiceDescriptionRef::Direct(t) => {
                    assert_eq!(d.description, Some(t.to_string()));
                    assert_eq!(d.description_hash, None);
                }
                Bolt11InvoiceDescriptionRef::Hash(h) => {
                    assert_eq!(d.description_hash, Some(h.0.to_string()));
                    assert_eq!(d.description, None);
                }
            }
        }
        (Err(_), Err(_)) => {}
        // Simnet is a BOLT11 network but not one of the suite's.
        (Err(InvoiceError::WrongNetwork { expected: None, .. }), Ok(inv))
            if inv.currency() == lightning_invoice::Currency::Simnet => {}
        // LDK takes a stated amount that overflows u64 pico-BTC (`lnbc20000000...`: 20 million
        // BTC without a multiplier) for "any amount"; refusing such an invoice is right.
        (Err(InvoiceError::Invalid { .. } | InvoiceError::AmountTooLarge { .. }), Ok(inv))
            if states_amount(text) && inv.amount_milli_satoshis().is_none() => {}
        // LDK checks the signature over its own re-encoding of the fields it parsed, not over the
        // text (a non-minimal field then recovers another payee); refusing such text is right.
        (Err(InvoiceError::Invalid { .. }), Ok(_)) if !is_canonical(text) => {}
        (ours, theirs) => panic!(
            "decode says {:?} but lightning-invoice says {:?} for {text:?}",
            ours.as_ref().map(|_| "ok"),
            theirs.map(|_| "ok")
        ),
    }
}

/// Whether the human-readable part of `text` states an amount.
fn states_amount(text: &str) -> bool {
    SignedRawBolt11Invoice::from_str(text)
        .is_ok_and(|raw| raw.raw_invoice().hrp.raw_amount.is_some())
}

/// Whether LDK writes `text` back out exactly (up to case) after parsing it.
fn is_canonical(text: &str) -> bool {
    SignedRawBolt11Invoice::from_str(text)
        .is_ok_and(|raw| raw.to_string() == text.to_ascii_lowercase())
}

fn check_accepted(text: &str, d: &DecodedInvoice) {
    assert_eq!(d.bolt11, text, "the decoded invoice does not keep its text");
    let raw = SignedRawBolt11Invoice::from_str(text).expect("decode parsed it");
    assert_eq!(
        d.amount.is_some(),
        raw.raw_invoice().hrp.raw_amount.is_some(),
        "the invoice states an amount of {:?} {:?} but decodes with amount {:?}: {text}",
        raw.raw_invoice().hrp.raw_amount,
        raw.raw_invoice().hrp.si_prefix,
        d.amount
    );
    assert!(d.expires_at_ms >= d.created_at_ms);
    if let Some(description) = &d.description {
        assert!(
            !description
                .chars()
                .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')),
            "control or line-separator characters in the description {description:?}"
        );
    }
    let json = serde_json::to_string(d).expect("a decoded invoice serializes");
    let back: DecodedInvoice = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("a serialized invoice does not parse ({e}): {json}"));
    assert_eq!(&back, d, "a decoded invoice changed in a serde round trip");

    let rewritten = raw.to_string();
    let again = decode(&rewritten).unwrap_or_else(|e| {
        panic!("LDK's re-encoding {rewritten:?} of an accepted invoice is refused: {e}")
    });
    assert_eq!(
        DecodedInvoice {
            bolt11: d.bolt11.clone(),
            ..again
        },
        *d,
        "the re-encoded invoice decodes differently"
    );
}

fn check_validate(text: &str, d: &DecodedInvoice) {
    let policy = InvoicePolicy {
        network: d.network,
        max_amount: Msat::MAX,
        min_expiry_remaining: Duration::ZERO,
    };
    let other = Network::ALL
        .into_iter()
        .find(|&n| n != d.network)
        .expect("there are four networks");
    let wrong = validate(
        text,
        &InvoicePolicy {
            network: other,
            ..policy
        },
        d.created_at_ms,
        None,
    );
    assert!(
        matches!(wrong, Err(InvoiceError::WrongNetwork { expected: Some(n), .. }) if n == other),
        "{wrong:?}"
    );

    let one_msat = Msat::new(1).expect("1 msat is an amount");
    for requested in [None, Some(d.amount.unwrap_or(one_msat))] {
        let result = validate(text, &policy, d.created_at_ms, requested);
        let amount = d.amount.or(requested);
        let expected = if d.expires_at_ms == d.created_at_ms {
            Err("INVOICE_EXPIRED")
        } else {
            match amount {
                None => Err("AMOUNT_REQUIRED"),
                Some(a) if a.is_zero() => Err("AMOUNT_ZERO"),
                Some(a) => Ok(a),
            }
        };
        match (&result, expected) {
            (Ok(v), Ok(a)) => {
                assert_eq!(v.amount, a);
                assert_eq!(v.payment_hash, d.payment_hash);
                assert_eq!(v.payee_pubkey, d.payee_pubkey);
                assert_eq!(v.expires_at_ms, d.expires_at_ms);
                assert_eq!(v.network, d.network);
            }
            (Err(e), Err(code)) => assert_eq!(e.code(), code, "{e}"),
            _ => panic!("validate gave {result:?}, expected {expected:?}"),
        }
    }
}
