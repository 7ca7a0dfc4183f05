//! Signed BOLT11 invoices built field by field from the fuzzer's bytes, then checked as text by
//! [`crate::invoice::check_text`].
//!
//! Mutating invoice text almost never gets past the bech32 checksum and the signature, so this
//! target builds what a hostile payee could really send: any currency and amount (with or without
//! an SI prefix), any timestamp, any number and order of payment hashes, descriptions, payment
//! secrets, features, expiries, CLTV deltas, `n` fields (the signer's key or another), metadata,
//! fallbacks and raw unknown fields, signed with a low- or high-S signature and written in lower
//! or upper case. Every property of the `invoice` target applies; in addition an accepted invoice
//! carries the payment hash that was put in and the signer's node id.

use std::sync::LazyLock;

use bitcoin::bech32::Fe32;
use bitcoin::hashes::{Hash as _, sha256};
use bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use bitcoin::secp256k1::{All, Message, PublicKey, Secp256k1, SecretKey};
use lightning_invoice::{
    Currency, Description, ExpiryTime, Fallback, MAX_TIMESTAMP, MinFinalCltvExpiryDelta,
    PayeePubKey, PaymentSecret, PositiveTimestamp, RawBolt11Invoice, RawDataPart, RawHrp,
    RawTaggedField, Sha256, SiPrefix, TaggedField,
};
use lightning_types::features::Bolt11InvoiceFeatures;

/// Most tagged fields one input adds: enough for every kind twice over, few enough to keep an
/// execution fast.
const MAX_FIELDS: usize = 24;

static SECP: LazyLock<Secp256k1<All>> = LazyLock::new(Secp256k1::new);
static SIGNER: LazyLock<SecretKey> =
    LazyLock::new(|| SecretKey::from_slice(&[0x42; 32]).expect("0x42.. is a valid secret key"));
static OTHER: LazyLock<PublicKey> = LazyLock::new(|| {
    let other = SecretKey::from_slice(&[0x43; 32]).expect("0x43.. is a valid secret key");
    PublicKey::from_secret_key(&SECP, &other)
});

/// Builds, signs and writes an invoice from `data`, then checks it.
pub fn check(data: &[u8]) {
    check_built(data);
}

/// As [`check`]; returns the decoded invoice if it was accepted.
pub fn check_built(data: &[u8]) -> Option<oa_invoice::DecodedInvoice> {
    let mut input = Input(data);
    let flags = input.byte();
    let currency = match input.byte() % 5 {
        0 => Currency::Bitcoin,
        1 => Currency::BitcoinTestnet,
        2 => Currency::Regtest,
        3 => Currency::Signet,
        _ => Currency::Simnet,
    };
    let (raw_amount, si_prefix) = amount(&mut input);
    let Ok(timestamp) = PositiveTimestamp::from_unix_timestamp(input.u64() % (MAX_TIMESTAMP + 1))
    else {
        return None;
    };
    let payment_hash = sha256::Hash::from_byte_array(input.array());
    let mut tagged_fields = Vec::new();
    // Flag bit 0: start from the fields a valid invoice needs, so accepted invoices are common.
    if flags & 1 == 1 {
        tagged_fields.extend([
            known(TaggedField::PaymentHash(Sha256(payment_hash))),
            known(TaggedField::Description(Description::empty())),
            known(TaggedField::PaymentSecret(PaymentSecret([7; 32]))),
            known(TaggedField::Features(standard_features())),
        ]);
    }
    while !input.is_empty() && tagged_fields.len() < MAX_FIELDS {
        if let Some(field) = field(&mut input, payment_hash) {
            tagged_fields.push(field);
        }
    }
    let raw = RawBolt11Invoice {
        hrp: RawHrp {
            currency,
            raw_amount,
            si_prefix,
        },
        data: RawDataPart {
            timestamp,
            tagged_fields,
        },
    };
    let high_s = flags & 2 == 2;
    let signed = raw
        .sign::<_, ()>(|m: &Message| {
            let sig = SECP.sign_ecdsa_recoverable(m, &SIGNER);
            Ok(if high_s { to_high_s(&sig) } else { sig })
        })
        .expect("signing with a fixed key cannot fail");
    let mut text = signed.to_string();
    if flags & 4 == 4 {
        text = text.to_uppercase();
    }
    let decoded = crate::invoice::check_text(&text)?;
    assert_eq!(
        decoded.payment_hash.0,
        payment_hash.to_byte_array(),
        "an accepted invoice has another payment hash than the one put in: {text}"
    );
    // The payee's node id is recovered from (or checked against) the signature; naming any other
    // node than the signer's means the signature was checked over other bytes than these.
    assert_eq!(
        decoded.payee_pubkey,
        PublicKey::from_secret_key(&SECP, &SIGNER).to_string(),
        "an accepted invoice names another node than the one that signed it: {text}"
    );
    Some(decoded)
}

/// The amount part of the human-readable part: none, or a number with or without an SI prefix,
/// at a magnitude the fuzzer picks so both small and overflowing amounts are common.
fn amount(input: &mut Input<'_>) -> (Option<u64>, Option<SiPrefix>) {
    let kind = input.byte();
    let raw = input.u64() >> (input.byte() % 64);
    match kind % 6 {
        0 => (None, None),
        1 => (Some(raw), Some(SiPrefix::Milli)),
        2 => (Some(raw), Some(SiPrefix::Micro)),
        3 => (Some(raw), Some(SiPrefix::Nano)),
        4 => (Some(raw), Some(SiPrefix::Pico)),
        _ => (Some(raw), None),
    }
}

fn field(input: &mut Input<'_>, payment_hash: sha256::Hash) -> Option<RawTaggedField> {
    let field = match input.byte() % 12 {
        0 => TaggedField::PaymentHash(Sha256(payment_hash)),
        1 => TaggedField::PaymentHash(Sha256(sha256::Hash::from_byte_array(input.array()))),
        2 => {
            let len = usize::from(input.byte() % 96);
            let text = String::from_utf8_lossy(input.take(len)).into_owned();
            TaggedField::Description(Description::new(text).ok()?)
        }
        3 => TaggedField::DescriptionHash(Sha256(sha256::Hash::from_byte_array(input.array()))),
        4 => TaggedField::PaymentSecret(PaymentSecret(input.array())),
        5 => TaggedField::Features(if input.byte() & 1 == 0 {
            standard_features()
        } else {
            let len = usize::from(input.byte() % 16);
            Bolt11InvoiceFeatures::from_le_bytes(input.take(len).to_vec())
        }),
        6 => TaggedField::ExpiryTime(ExpiryTime::from_seconds(input.u64() >> (input.byte() % 64))),
        7 => TaggedField::MinFinalCltvExpiryDelta(MinFinalCltvExpiryDelta(
            input.u64() >> (input.byte() % 64),
        )),
        8 => TaggedField::PayeePubKey(PayeePubKey(if input.byte() & 1 == 0 {
            PublicKey::from_secret_key(&SECP, &SIGNER)
        } else {
            *OTHER
        })),
        9 => {
            let len = usize::from(input.byte() % 32);
            TaggedField::PaymentMetadata(input.take(len).to_vec())
        }
        10 => TaggedField::Fallback(Fallback::PubKeyHash(bitcoin::PubkeyHash::from_byte_array(
            input.array(),
        ))),
        // A raw field: tag, length and data as the fuzzer spells them, so non-minimal, truncated
        // and unknown fields reach the parser.
        _ => {
            let len = usize::from(input.byte() % 24);
            let fes = input
                .take(len)
                .iter()
                .map(|&b| Fe32::try_from(b % 32).expect("values below 32 are field elements"))
                .collect();
            return Some(RawTaggedField::UnknownSemantics(fes));
        }
    };
    Some(known(field))
}

fn known(field: TaggedField) -> RawTaggedField {
    RawTaggedField::KnownSemantics(field)
}

/// `payment_secret` and `var_onion_optin` required: what every current invoice sets.
fn standard_features() -> Bolt11InvoiceFeatures {
    let mut f = Bolt11InvoiceFeatures::empty();
    f.set_payment_secret_required();
    f.set_variable_length_onion_required();
    f
}

/// The same signature with s replaced by n - s (and the recovery id's parity flipped, so it
/// still recovers the same key): valid for recovery, but not the standard low-S form.
fn to_high_s(sig: &RecoverableSignature) -> RecoverableSignature {
    let (id, bytes) = sig.serialize_compact();
    let s = SecretKey::from_slice(&bytes[32..])
        .expect("s of a valid signature is a valid scalar")
        .negate();
    let mut out = bytes;
    out[32..].copy_from_slice(&s.secret_bytes());
    let id = RecoveryId::from_i32(id.to_i32() ^ 1).expect("flipping parity keeps the id in 0..4");
    RecoverableSignature::from_compact(&out, id).expect("n - s is a valid s")
}

/// The fuzzer's bytes, consumed front to back; reading past the end gives zeros.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn byte(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }

    fn take(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        taken
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let taken = self.take(N);
        out[..taken.len()].copy_from_slice(taken);
        out
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}
