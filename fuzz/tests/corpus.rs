//! Replays the checked-in seed corpus (`corpus/<target>/`) through each target's checks, so the
//! fuzz properties run on stable with plain `cargo test --manifest-path fuzz/Cargo.toml`,
//! without nightly or cargo-fuzz. The seeds include the RFC 8785 and BOLT11 reference vectors
//! and the receipts' golden export; the tests below also make sure the seeds reach both the
//! accepting and the refusing side of each check, so the replay is not vacuous.

use std::path::{Path, PathBuf};

use oa_fuzz::TARGETS;

fn fuzz_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The seeds of `target`, sorted by file name, with their bytes.
fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable directory entry").path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let data =
                std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

fn replay(target: &str) {
    let (_, check) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no target {target}"));
    let seeds = seeds(target);
    assert!(seeds.len() >= 3, "{target} has only {} seeds", seeds.len());
    for (path, data) in seeds {
        // Printed only when the test fails: which seed broke the property.
        println!("{}", path.display());
        check(&data);
    }
}

#[test]
fn canonical_json_seeds_keep_every_property() {
    replay("canonical_json");
}

#[test]
fn receipt_seeds_keep_every_property() {
    replay("receipt");
}

#[test]
fn verify_export_seeds_keep_every_property() {
    replay("verify_export");
}

#[test]
fn invoice_seeds_keep_every_property() {
    replay("invoice");
}

#[test]
fn invoice_fields_seeds_keep_every_property() {
    replay("invoice_fields");
}

#[test]
fn request_body_seeds_keep_every_property() {
    replay("request_body");
}

#[test]
fn every_target_has_a_binary_and_a_corpus_and_nothing_else_does() {
    let names = |dir: &str, ext: Option<&str>| {
        let mut names: Vec<String> = std::fs::read_dir(fuzz_dir().join(dir))
            .unwrap_or_else(|e| panic!("cannot read {dir}: {e}"))
            .map(|entry| entry.expect("a readable directory entry").path())
            .filter(|p| ext.is_none_or(|ext| p.extension().is_some_and(|e| e == ext)))
            .map(|p| {
                p.file_stem()
                    .expect("a file name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    };
    let mut targets: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    targets.sort();
    assert_eq!(names("fuzz_targets", Some("rs")), targets);
    assert_eq!(names("corpus", None), targets);
}

#[test]
fn the_golden_export_seed_verifies_clean_and_its_tampered_copy_does_not() {
    let dir = fuzz_dir().join("corpus/verify_export");
    let golden = std::fs::read(dir.join("golden.jsonl")).expect("the golden export seed");
    let report = oa_receipts::verify_export(&golden[..]);
    assert!(report.is_ok(), "{report}");
    assert!(report.receipts() > 0);
    let tampered =
        std::fs::read(dir.join("golden-one-byte-changed.jsonl")).expect("the tampered seed");
    assert!(!oa_receipts::verify_export(&tampered[..]).is_ok());
}

#[test]
fn invoice_seeds_include_accepted_and_refused_invoices() {
    let verdicts: Vec<bool> = seeds("invoice")
        .iter()
        .map(|(_, data)| oa_fuzz::invoice::check_text(&String::from_utf8_lossy(data)).is_some())
        .collect();
    assert!(verdicts.iter().any(|&ok| ok), "no seed invoice is accepted");
    assert!(
        verdicts.iter().any(|&ok| !ok),
        "every seed invoice is accepted"
    );

    let built: Vec<bool> = seeds("invoice_fields")
        .iter()
        .map(|(_, data)| oa_fuzz::invoice_fields::check_built(data).is_some())
        .collect();
    assert!(built.iter().any(|&ok| ok), "no built invoice is accepted");
    assert!(
        built.iter().any(|&ok| !ok),
        "every built invoice is accepted"
    );
}

#[test]
fn request_body_seeds_include_accepted_and_refused_bodies() {
    use oa_proto::openagents::treasury::v1::CreatePaymentRequest;
    let verdicts: Vec<bool> = seeds("request_body")
        .iter()
        .map(|(_, data)| oa_service::parse_json::<CreatePaymentRequest>(data).is_ok())
        .collect();
    assert!(verdicts.iter().any(|&ok| ok), "no seed body is accepted");
    assert!(
        verdicts.iter().any(|&ok| !ok),
        "every seed body is accepted"
    );
}
