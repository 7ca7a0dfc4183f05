//! Invoices made by `create_invoice` validate, and each policy violation gets its own code.

use std::time::Duration;

use oa_invoice::{
    InvoiceError, InvoicePolicy, InvoiceRequest, InvoiceSigner, MAX_BOLT11_AMOUNT_MSAT,
    MAX_DESCRIPTION_BYTES, MAX_INVOICE_LEN, Network, PaymentHash, Preimage, SecretKey,
    create_invoice, decode, validate,
};
use oa_money::Msat;
use proptest::prelude::*;

const CREATED_SECS: u64 = 1_780_000_000;
const NOW_MS: u64 = (CREATED_SECS + 10) * 1000;

fn node_secret() -> SecretKey {
    SecretKey::from_slice(&[0x11; 32]).unwrap()
}

fn msat(v: u64) -> Msat {
    Msat::new(v).unwrap()
}

fn request(amount: Option<Msat>, preimage: &Preimage) -> InvoiceRequest {
    InvoiceRequest {
        network: Network::Regtest,
        amount,
        payment_hash: preimage.payment_hash(),
        payment_secret: [0x22; 32],
        description: "sim payment".to_owned(),
        created_at: Duration::from_secs(CREATED_SECS),
        expiry: Duration::from_secs(3600),
        min_final_cltv_expiry_delta: 40,
    }
}

fn regtest_policy() -> InvoicePolicy {
    InvoicePolicy {
        network: Network::Regtest,
        max_amount: msat(100_000_000),
        min_expiry_remaining: Duration::from_secs(60),
    }
}

#[test]
fn created_regtest_invoice_validates_with_all_fields() {
    let preimage = Preimage::random();
    let signer = InvoiceSigner::new(node_secret());
    let bolt11 = signer
        .create_invoice(&request(Some(msat(1_234_567)), &preimage))
        .unwrap();
    assert!(bolt11.starts_with("lnbcrt"));
    let v = validate(&bolt11, &regtest_policy(), NOW_MS, None).unwrap();
    assert_eq!(v.bolt11, bolt11);
    assert_eq!(v.amount, msat(1_234_567));
    assert_eq!(v.payment_hash, preimage.payment_hash());
    assert!(preimage.matches(&v.payment_hash));
    assert_eq!(v.payee_pubkey, signer.node_id().to_string());
    assert_eq!(v.created_at_ms, CREATED_SECS * 1000);
    assert_eq!(v.expires_at_ms, (CREATED_SECS + 3600) * 1000);
    assert_eq!(v.network, Network::Regtest);
    assert_eq!(v.description.as_deref(), Some("sim payment"));
    assert_eq!(v.description_hash, None);
    assert_eq!(v.min_final_cltv_expiry_delta, 40);
    // The free function makes the same invoice (signing is deterministic, RFC 6979).
    assert_eq!(
        create_invoice(&node_secret(), &request(Some(msat(1_234_567)), &preimage)).unwrap(),
        bolt11
    );
}

#[test]
fn valid_invoice_serializes_hash_as_hex_and_amount_as_string() {
    let preimage = Preimage([5; 32]);
    let bolt11 = create_invoice(&node_secret(), &request(Some(msat(1000)), &preimage)).unwrap();
    let v = validate(&bolt11, &regtest_policy(), NOW_MS, None).unwrap();
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["payment_hash"], preimage.payment_hash().to_string());
    assert_eq!(json["amount"], "1000");
    assert_eq!(json["network"], "regtest");
    let back: oa_invoice::ValidInvoice = serde_json::from_value(json).unwrap();
    assert_eq!(back, v);
}

#[test]
fn invoice_for_another_network_is_wrong_network() {
    let bolt11 = create_invoice(
        &node_secret(),
        &request(Some(msat(1000)), &Preimage::random()),
    )
    .unwrap();
    for network in [Network::Bitcoin, Network::Testnet, Network::Signet] {
        let policy = InvoicePolicy {
            network,
            ..regtest_policy()
        };
        let err = validate(&bolt11, &policy, NOW_MS, None).unwrap_err();
        assert_eq!(err.code(), "WRONG_NETWORK");
        assert_eq!(
            err,
            InvoiceError::WrongNetwork {
                expected: Some(network),
                found: "regtest".into()
            }
        );
    }
}

#[test]
fn amountless_invoice_needs_an_amount() {
    let bolt11 = create_invoice(&node_secret(), &request(None, &Preimage::random())).unwrap();
    assert_eq!(decode(&bolt11).unwrap().amount, None);
    let err = validate(&bolt11, &regtest_policy(), NOW_MS, None).unwrap_err();
    assert_eq!(err.code(), "AMOUNT_REQUIRED");
    let v = validate(&bolt11, &regtest_policy(), NOW_MS, Some(msat(5_000))).unwrap();
    assert_eq!(v.amount, msat(5_000));
}

#[test]
fn override_must_equal_the_invoice_amount() {
    let bolt11 = create_invoice(
        &node_secret(),
        &request(Some(msat(1000)), &Preimage::random()),
    )
    .unwrap();
    let err = validate(&bolt11, &regtest_policy(), NOW_MS, Some(msat(1001))).unwrap_err();
    assert_eq!(err.code(), "AMOUNT_MISMATCH");
    assert_eq!(
        err,
        InvoiceError::AmountMismatch {
            invoice_msat: 1000,
            requested_msat: 1001
        }
    );
    assert!(validate(&bolt11, &regtest_policy(), NOW_MS, Some(msat(1000))).is_ok());
}

#[test]
fn zero_amount_is_refused() {
    let amountless = create_invoice(&node_secret(), &request(None, &Preimage::random())).unwrap();
    let err = validate(&amountless, &regtest_policy(), NOW_MS, Some(Msat::ZERO)).unwrap_err();
    assert_eq!(err.code(), "AMOUNT_ZERO");

    let zero = create_invoice(
        &node_secret(),
        &request(Some(Msat::ZERO), &Preimage::random()),
    )
    .unwrap();
    let err = validate(&zero, &regtest_policy(), NOW_MS, None).unwrap_err();
    assert_eq!(err.code(), "AMOUNT_ZERO");
}

#[test]
fn amount_above_the_policy_maximum_is_refused() {
    let max = regtest_policy().max_amount;
    let over = msat(max.as_u64() + 1);
    let bolt11 = create_invoice(&node_secret(), &request(Some(over), &Preimage::random())).unwrap();
    let err = validate(&bolt11, &regtest_policy(), NOW_MS, None).unwrap_err();
    assert_eq!(err.code(), "AMOUNT_TOO_LARGE");
    let at_max = create_invoice(&node_secret(), &request(Some(max), &Preimage::random())).unwrap();
    assert!(validate(&at_max, &regtest_policy(), NOW_MS, None).is_ok());
    // An override is bounded the same way.
    let amountless = create_invoice(&node_secret(), &request(None, &Preimage::random())).unwrap();
    let err = validate(&amountless, &regtest_policy(), NOW_MS, Some(over)).unwrap_err();
    assert_eq!(err.code(), "AMOUNT_TOO_LARGE");
}

#[test]
fn expired_or_soon_expiring_invoice_is_refused() {
    let bolt11 = create_invoice(
        &node_secret(),
        &request(Some(msat(1000)), &Preimage::random()),
    )
    .unwrap();
    let expires_ms = (CREATED_SECS + 3600) * 1000;
    let policy = regtest_policy();
    let min_ms = 60_000;
    assert!(validate(&bolt11, &policy, expires_ms - min_ms, None).is_ok());
    for now in [
        expires_ms - min_ms + 1,
        expires_ms - 1,
        expires_ms,
        expires_ms + 1,
    ] {
        let err = validate(&bolt11, &policy, now, None).unwrap_err();
        assert_eq!(err.code(), "INVOICE_EXPIRED", "at {now}");
    }
    // With no margin, it is valid until (not at) its expiry.
    let no_margin = InvoicePolicy {
        min_expiry_remaining: Duration::ZERO,
        ..policy
    };
    assert!(validate(&bolt11, &no_margin, expires_ms - 1, None).is_ok());
    assert!(validate(&bolt11, &no_margin, expires_ms, None).is_err());
}

#[test]
fn too_long_input_is_refused_before_parsing() {
    let long = format!("lnbcrt1{}", "q".repeat(MAX_INVOICE_LEN));
    let err = validate(&long, &regtest_policy(), NOW_MS, None).unwrap_err();
    assert_eq!(err.code(), "INVALID_INVOICE");
    assert!(err.to_string().contains("7089"), "{err}");
}

#[test]
fn tampered_or_garbage_invoices_are_invalid() {
    let bolt11 = create_invoice(
        &node_secret(),
        &request(Some(msat(1000)), &Preimage::random()),
    )
    .unwrap();
    // Change one data character: the bech32 checksum fails.
    let mut chars: Vec<char> = bolt11.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'q' { 'p' } else { 'q' };
    let tampered: String = chars.into_iter().collect();
    for input in [
        tampered.as_str(),
        "",
        "lnbcrt",
        "not an invoice",
        "lightning:",
    ] {
        let err = validate(input, &regtest_policy(), NOW_MS, None).unwrap_err();
        assert_eq!(err.code(), "INVALID_INVOICE", "{input:?}");
    }
    // The library's reason is in the message.
    let err = validate(&tampered, &regtest_policy(), NOW_MS, None).unwrap_err();
    assert!(
        err.to_string().starts_with("invalid BOLT11 invoice: "),
        "{err}"
    );
    assert!(err.to_string().len() > "invalid BOLT11 invoice: ".len());
}

#[test]
fn over_long_description_is_a_creation_error() {
    let mut req = request(Some(msat(1000)), &Preimage::random());
    req.description = "x".repeat(MAX_DESCRIPTION_BYTES + 1);
    let err = create_invoice(&node_secret(), &req).unwrap_err();
    assert_eq!(err.code(), "INVOICE_CREATION_FAILED");
    req.description = "x".repeat(MAX_DESCRIPTION_BYTES);
    assert!(create_invoice(&node_secret(), &req).is_ok());
}

#[test]
fn amount_beyond_bolt11_encoding_is_a_creation_error() {
    let req = request(Some(msat(MAX_BOLT11_AMOUNT_MSAT + 1)), &Preimage::random());
    let err = create_invoice(&node_secret(), &req).unwrap_err();
    assert_eq!(err.code(), "INVOICE_CREATION_FAILED");
    assert!(err.to_string().contains("BOLT11-encodable"), "{err}");
}

#[test]
fn signer_debug_redacts_the_node_secret() {
    let signer = InvoiceSigner::new(node_secret());
    let dbg = format!("{signer:?}");
    assert!(dbg.contains("[redacted]"));
    assert!(!dbg.contains(&"11".repeat(32)));
}

#[test]
fn preimage_hashes_to_the_payment_hash() {
    let p: Preimage = "0000000000000000000000000000000000000000000000000000000000000000"
        .parse()
        .unwrap();
    assert_eq!(
        p.payment_hash(),
        "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
            .parse::<PaymentHash>()
            .unwrap()
    );
    assert_eq!(format!("{p:?}"), "Preimage([redacted])");
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(json, format!("\"{}\"", "00".repeat(32)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn created_invoices_round_trip_amount_and_hash(
        amount in 1u64..=MAX_BOLT11_AMOUNT_MSAT,
        hash in any::<[u8; 32]>(),
        secret in any::<[u8; 32]>(),
        expiry_secs in 120u64..=31_536_000,
        cltv in 18u64..=2016,
        network in prop::sample::select(Network::ALL.to_vec()),
    ) {
        let req = InvoiceRequest {
            network,
            amount: Some(msat(amount)),
            payment_hash: PaymentHash(hash),
            payment_secret: secret,
            description: "prop".to_owned(),
            created_at: Duration::from_secs(CREATED_SECS),
            expiry: Duration::from_secs(expiry_secs),
            min_final_cltv_expiry_delta: cltv,
        };
        let bolt11 = create_invoice(&node_secret(), &req).unwrap();
        let policy = InvoicePolicy {
            network,
            max_amount: Msat::MAX,
            min_expiry_remaining: Duration::from_secs(60),
        };
        let v = validate(&bolt11, &policy, NOW_MS, None).unwrap();
        prop_assert_eq!(v.amount.as_u64(), amount);
        prop_assert_eq!(v.payment_hash, PaymentHash(hash));
        prop_assert_eq!(v.expires_at_ms, (CREATED_SECS + expiry_secs) * 1000);
        prop_assert_eq!(v.min_final_cltv_expiry_delta, cltv);
    }
}
