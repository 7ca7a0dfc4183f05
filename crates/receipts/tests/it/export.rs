//! JSON Lines export: round trip and tampering, which must be caught and named.

use std::io::{self, BufReader, Read};

use oa_receipts::{
    ExportRecord, Failure, FailureKind, Hash, Issuer, MAX_EXPORT_LINE_BYTES, Receipt, ReceiptKey,
    VerifyReport, verify_export, write_export,
};
use serde_json::json;

use crate::support::{append, draft, resign};

struct Fixture {
    hydra: ReceiptKey,
    keys: Vec<Issuer>,
    receipts: Vec<Receipt>,
}

/// Lines: 1 key hydra, 2 key wallet-executor, 3 wallet-0, 4 hydra-0 (links wallet-0),
/// 5 wallet-1, 6 hydra-1 (escapes, unicode, settled payment), 7 hydra-2 (links hydra-1, wallet-1).
fn fixture() -> Fixture {
    let hydra = ReceiptKey::generate();
    let wallet = ReceiptKey::generate();
    let (mut h, mut w) = (Vec::new(), Vec::new());
    let w0 = append(
        &mut w,
        &wallet,
        "wallet-executor",
        draft("wallet-0", vec![], json!({"state": "succeeded"})),
    );
    let h0 = append(
        &mut h,
        &hydra,
        "hydra",
        draft("hydra-0", vec![w0], json!({"amount_msat": "21000"})),
    );
    let w1 = append(
        &mut w,
        &wallet,
        "wallet-executor",
        draft("wallet-1", vec![], json!({"state": "failed"})),
    );
    let preimage = [42u8; 32];
    let h1 = append(
        &mut h,
        &hydra,
        "hydra",
        draft(
            "hydra-1",
            vec![h0],
            json!({
                "memo": "unit\u{1f}sep \"quoted\" café 😀 </script>",
                "payment_hash": hex::encode(Hash::of(&preimage).as_bytes()),
                "preimage": hex::encode(preimage),
                "route": [{"node": "02ab", "fee_msat": "1"}],
            }),
        ),
    );
    append(
        &mut h,
        &hydra,
        "hydra",
        draft("hydra-2", vec![h1, w1], json!({"settled": true})),
    );
    let keys = vec![
        Issuer {
            service: "hydra".into(),
            key_id: hydra.key_id().into(),
        },
        Issuer {
            service: "wallet-executor".into(),
            key_id: wallet.key_id().into(),
        },
    ];
    let receipts = vec![
        w[0].clone(),
        h[0].clone(),
        w[1].clone(),
        h[1].clone(),
        h[2].clone(),
    ];
    Fixture {
        hydra,
        keys,
        receipts,
    }
}

fn export_lines(f: &Fixture) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    write_export(&mut out, &f.keys, &f.receipts).unwrap();
    assert_eq!(out.last(), Some(&b'\n'));
    out.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn verify_lines(lines: &[Vec<u8>]) -> VerifyReport {
    let mut text = lines.join(&b'\n');
    text.push(b'\n');
    verify_export(text.as_slice())
}

fn kinds(report: &VerifyReport) -> Vec<(usize, Option<&str>, FailureKind)> {
    report
        .failures
        .iter()
        .map(|f| (f.line, f.receipt_id.as_deref(), f.kind))
        .collect()
}

#[test]
fn export_round_trip_verifies() {
    let f = fixture();
    let lines = export_lines(&f);
    assert_eq!(lines.len(), 7);
    assert!(lines[0].starts_with(br#"{"record":"key","service":"hydra","key_id":""#));
    assert!(lines[0].ends_with(br#"","algorithm":"bip340-secp256k1"}"#));
    assert!(lines[2].starts_with(br#"{"record":"receipt","receipt":{"schema":"#));

    let report = verify_lines(&lines);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.lines, 7);
    assert_eq!((report.receipts(), report.verified()), (5, 5));
    let summary: Vec<_> = report
        .issuers
        .iter()
        .map(|s| {
            (
                s.issuer.service.as_str(),
                s.key_published,
                s.receipts,
                s.verified,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![("hydra", true, 3, 3), ("wallet-executor", true, 2, 2)]
    );

    // The records parse back into what was written.
    let parsed: ExportRecord = serde_json::from_slice(&lines[5]).unwrap();
    assert_eq!(
        parsed,
        ExportRecord::Receipt {
            receipt: Box::new(f.receipts[3].clone())
        }
    );
}

#[test]
fn a_file_without_trailing_newline_and_interleaved_issuers_verifies() {
    let f = fixture();
    let mut lines = export_lines(&f);
    // Issuers may interleave freely; only each issuer's own order matters. Key records may come
    // after the receipts they publish.
    lines.swap(2, 3);
    lines.rotate_left(2);
    let text = lines.join(&b'\n');
    let report = verify_export(text.as_slice());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.verified(), 5);
}

/// A changed byte anywhere in a receipt line must fail verification with a failure on that line
/// that names the receipt (or says the line does not parse).
fn assert_every_flip_is_caught(target: usize, masks: &[u8]) {
    let f = fixture();
    let lines = export_lines(&f);
    let index = target - 1;
    for &mask in masks {
        for pos in 0..lines[index].len() {
            let mut tampered = lines.clone();
            tampered[index][pos] ^= mask;
            let report = verify_lines(&tampered);
            let named = report.failures.iter().any(|f: &Failure| {
                f.line == target && (f.receipt_id.is_some() || f.kind == FailureKind::Unparsable)
            });
            assert!(
                !report.is_ok() && named,
                "flip {mask:#04x} at byte {pos} of line {target} ({:?}) not caught:\n{report}",
                String::from_utf8_lossy(
                    &tampered[index][pos.saturating_sub(10)..(pos + 10).min(tampered[index].len())]
                )
            );
        }
    }
}

#[test]
fn every_flipped_bit_in_a_rich_receipt_line_is_caught_and_named() {
    // 0x20 flips ASCII letter case (hex digits, `\u001f` escapes), 0x80 breaks UTF-8.
    assert_every_flip_is_caught(6, &[0x01, 0x20, 0x80]);
}

#[test]
fn flipped_bytes_in_a_linked_genesis_receipt_are_caught() {
    assert_every_flip_is_caught(4, &[0x02, 0x10]);
}

#[test]
fn flipped_bytes_at_chosen_positions_name_the_receipt() {
    let f = fixture();
    let lines = export_lines(&f);
    let line = String::from_utf8(lines[5].clone()).unwrap();
    // Each anchor ends just before the byte that is changed.
    let cases = [
        ("\"memo\":\"un", FailureKind::HashMismatch),
        ("\"hash\":\"sha256:", FailureKind::HashMismatch),
        ("\"signature\":\"", FailureKind::BadSignature),
    ];
    for (anchor, expected) in cases {
        let pos = line.find(anchor).unwrap() + anchor.len();
        let mut tampered = lines.clone();
        tampered[5][pos] = if tampered[5][pos] == b'0' { b'1' } else { b'0' };
        let report = verify_lines(&tampered);
        assert!(
            report.failures.iter().any(|f| f.line == 6
                && f.kind == expected
                && f.receipt_id.as_deref() == Some("hydra-1")),
            "{anchor}: {report}"
        );
    }
}

#[test]
fn deleted_line_is_reported_as_a_gap_in_the_next_receipt() {
    let f = fixture();
    let mut lines = export_lines(&f);
    lines.remove(3); // hydra-0, which hydra-1 also links
    let report = verify_lines(&lines);
    assert_eq!(
        kinds(&report),
        vec![
            (5, Some("hydra-1"), FailureKind::Gap),
            (5, Some("hydra-1"), FailureKind::UnresolvedLink)
        ]
    );
}

#[test]
fn deleted_last_receipt_of_a_log_is_caught_by_a_link_to_it() {
    let f = fixture();
    let mut lines = export_lines(&f);
    lines.remove(4); // wallet-1, the last of its log, linked by hydra-2
    let report = verify_lines(&lines);
    assert_eq!(
        kinds(&report),
        vec![(6, Some("hydra-2"), FailureKind::UnresolvedLink)]
    );
}

#[test]
fn reordered_lines_of_one_issuer_are_reported() {
    let f = fixture();
    let mut lines = export_lines(&f);
    lines.swap(5, 6); // hydra-2 before hydra-1
    let report = verify_lines(&lines);
    assert_eq!(
        kinds(&report),
        vec![
            (6, Some("hydra-2"), FailureKind::Gap),
            (7, Some("hydra-1"), FailureKind::OutOfOrder)
        ]
    );
}

#[test]
fn duplicated_line_is_reported() {
    let f = fixture();
    let mut lines = export_lines(&f);
    lines.push(lines[3].clone());
    let report = verify_lines(&lines);
    assert_eq!(
        kinds(&report),
        vec![(8, Some("hydra-0"), FailureKind::Duplicate)]
    );
}

#[test]
fn removed_key_record_makes_every_receipt_of_that_key_unknown() {
    let f = fixture();
    let mut lines = export_lines(&f);
    lines.remove(0); // hydra's key
    let report = verify_lines(&lines);
    assert_eq!(
        kinds(&report),
        vec![
            (3, Some("hydra-0"), FailureKind::UnknownKey),
            (5, Some("hydra-1"), FailureKind::UnknownKey),
            (6, Some("hydra-2"), FailureKind::UnknownKey),
        ]
    );
    let hydra = report
        .issuers
        .iter()
        .find(|s| s.issuer.service == "hydra")
        .unwrap();
    assert_eq!(
        (hydra.key_published, hydra.receipts, hydra.verified),
        (false, 3, 0)
    );
}

#[test]
fn key_record_with_another_algorithm_publishes_nothing() {
    let f = fixture();
    let mut lines = export_lines(&f);
    let line = String::from_utf8(lines[1].clone())
        .unwrap()
        .replace("bip340-secp256k1", "ecdsa-secp256k1");
    lines[1] = line.into_bytes();
    let report = verify_lines(&lines);
    assert_eq!(
        kinds(&report),
        vec![
            (2, None, FailureKind::InvalidKeyRecord),
            (3, Some("wallet-0"), FailureKind::UnknownKey),
            (5, Some("wallet-1"), FailureKind::UnknownKey),
        ]
    );
}

#[test]
fn unparsable_lines_are_named_and_the_rest_still_verifies() {
    let f = fixture();
    let mut lines = export_lines(&f);
    lines.insert(2, b"not json".to_vec());
    lines.insert(3, Vec::new());
    lines.insert(4, br#"{"record":"checkpoint"}"#.to_vec());
    lines.insert(5, vec![0xff, 0xfe]);
    let report = verify_lines(&lines);
    assert_eq!(
        kinds(&report),
        vec![
            (3, None, FailureKind::Unparsable),
            (4, None, FailureKind::Unparsable),
            (5, None, FailureKind::Unparsable),
            (6, None, FailureKind::Unparsable),
        ]
    );
    assert_eq!(report.verified(), 5);
}

#[test]
fn unparsable_receipt_line_still_names_the_receipt_when_possible() {
    let f = fixture();
    let mut lines = export_lines(&f);
    let line = String::from_utf8(lines[3].clone())
        .unwrap()
        .replace("\"links\"", "\"linkz\"");
    lines[3] = line.into_bytes();
    let report = verify_lines(&lines);
    assert_eq!(report.failures[0].line, 4);
    assert_eq!(report.failures[0].kind, FailureKind::Unparsable);
    assert_eq!(report.failures[0].receipt_id.as_deref(), Some("hydra-0"));
}

#[test]
fn equivalent_but_non_canonical_spellings_are_refused() {
    let f = fixture();
    let lines = export_lines(&f);
    let line = String::from_utf8(lines[5].clone()).unwrap();
    assert!(
        line.contains("\\u001f"),
        "fixture must contain an escaped control character"
    );
    for variant in [
        line.replace("\\u001f", "\\u001F"),
        line.replace("café", "caf\\u00e9"),
        line.replace("\"route\":", "\"route\" :"),
        format!("{line}\r"),
        format!(" {line}"),
    ] {
        let mut tampered = lines.clone();
        tampered[5] = variant.into_bytes();
        let report = verify_lines(&tampered);
        assert_eq!(
            kinds(&report),
            vec![(6, Some("hydra-1"), FailureKind::NonCanonical)],
            "{report}"
        );
    }
}

#[test]
fn preimage_that_does_not_match_payment_hash_is_reported() {
    let mut f = fixture();
    let hydra = f.hydra.clone();
    let r = &mut f.receipts[3];
    r.body
        .insert("preimage".into(), json!(hex::encode([1u8; 32])));
    resign(r, &hydra);
    // Keep the chain intact so the preimage is the only problem.
    let new_hash = r.hash;
    f.receipts[4].prev_hash = new_hash;
    f.receipts[4].links[0] = new_hash;
    resign(&mut f.receipts[4], &hydra);
    let report = verify_lines(&export_lines(&f));
    assert_eq!(
        kinds(&report),
        vec![(6, Some("hydra-1"), FailureKind::PreimageMismatch)]
    );
}

#[test]
fn overlong_line_is_refused_without_losing_the_rest() {
    let f = fixture();
    let mut lines = export_lines(&f);
    lines.insert(2, vec![b'x'; MAX_EXPORT_LINE_BYTES + 10]);
    let report = verify_lines(&lines);
    assert_eq!(kinds(&report), vec![(3, None, FailureKind::Unparsable)]);
    assert_eq!(report.lines, 8);
    assert_eq!(report.verified(), 5);
}

#[test]
fn read_error_is_a_failure_not_a_short_success() {
    struct FailAfter(Vec<u8>);
    impl Read for FailAfter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }
    let f = fixture();
    let mut lines = export_lines(&f);
    lines.truncate(3);
    let mut text = lines.join(&b'\n');
    text.push(b'\n');
    let report = verify_export(BufReader::new(FailAfter(text)));
    assert!(!report.is_ok());
    assert_eq!(kinds(&report), vec![(4, None, FailureKind::Io)]);
}
