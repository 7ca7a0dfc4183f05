//! `verify_chain`: gaps, reordering, broken prev_hash links, duplicates.

use oa_receipts::{FailureKind, Hash, ReceiptKey, verify_chain};

use crate::support::{chain_of, resign};

fn kinds(failures: &[oa_receipts::Failure]) -> Vec<(usize, FailureKind)> {
    failures.iter().map(|f| (f.line, f.kind)).collect()
}

#[test]
fn intact_chain_has_no_failures() {
    let key = ReceiptKey::generate();
    assert!(verify_chain(&chain_of(&key, "hydra", 6)).is_empty());
    assert!(verify_chain(&[]).is_empty());
}

#[test]
fn gap_is_reported_once_on_the_receipt_after_it() {
    let key = ReceiptKey::generate();
    let mut chain = chain_of(&key, "hydra", 5);
    chain.remove(2);
    let failures = verify_chain(&chain);
    assert_eq!(kinds(&failures), vec![(3, FailureKind::Gap)]);
    assert_eq!(failures[0].receipt_id.as_deref(), Some("hydra-3"));
    assert_eq!(failures[0].log_index, Some(3));
}

#[test]
fn log_must_start_at_zero() {
    let key = ReceiptKey::generate();
    let mut chain = chain_of(&key, "hydra", 3);
    chain.remove(0);
    assert_eq!(kinds(&verify_chain(&chain)), vec![(1, FailureKind::Gap)]);
}

#[test]
fn reordering_is_reported() {
    let key = ReceiptKey::generate();
    let mut chain = chain_of(&key, "hydra", 5);
    chain.swap(1, 2);
    assert_eq!(
        kinds(&verify_chain(&chain)),
        vec![(2, FailureKind::Gap), (3, FailureKind::OutOfOrder)]
    );
}

#[test]
fn wrong_prev_hash_is_reported() {
    let key = ReceiptKey::generate();
    let mut chain = chain_of(&key, "hydra", 4);
    chain[2].prev_hash = Hash::of(b"rewritten history");
    resign(&mut chain[2], &key);
    // Its hash changed, so the next receipt no longer links to it either.
    assert_eq!(
        kinds(&verify_chain(&chain)),
        vec![
            (3, FailureKind::PrevHashMismatch),
            (4, FailureKind::PrevHashMismatch)
        ]
    );
}

#[test]
fn genesis_must_link_to_zero() {
    let key = ReceiptKey::generate();
    let mut chain = chain_of(&key, "hydra", 2);
    chain[0].prev_hash = Hash::of(b"not zero");
    resign(&mut chain[0], &key);
    let failures = verify_chain(&chain);
    assert_eq!(failures[0].kind, FailureKind::PrevHashMismatch);
    assert_eq!(failures[0].line, 1);
}

#[test]
fn duplicates_and_forks_are_reported() {
    let key = ReceiptKey::generate();
    let mut chain = chain_of(&key, "hydra", 3);
    chain.push(chain[1].clone());
    let mut fork = chain[2].clone();
    fork.body.insert("note".into(), serde_json::json!("other"));
    resign(&mut fork, &key);
    chain.push(fork);
    let failures = verify_chain(&chain);
    assert_eq!(
        kinds(&failures),
        vec![(4, FailureKind::Duplicate), (5, FailureKind::Duplicate)]
    );
    assert!(
        failures[1].detail.contains("fork"),
        "{}",
        failures[1].detail
    );
}

#[test]
fn other_issuers_are_reported() {
    let key = ReceiptKey::generate();
    let mut chain = chain_of(&key, "hydra", 2);
    chain.extend(chain_of(&ReceiptKey::generate(), "hydra", 1));
    assert_eq!(
        kinds(&verify_chain(&chain)),
        vec![(3, FailureKind::IssuerMismatch)]
    );
}
