//! The reference RFC 8785 vectors (cyberphone/json-canonicalization testdata) in
//! `shared/vectors/jcs`: every input canonicalizes to its output byte for byte.

use oa_receipts::canonical_json;

use crate::support::vectors_dir;

#[test]
fn every_jcs_vector_canonicalizes_byte_for_byte() {
    let dir = vectors_dir().join("jcs");
    let mut inputs: Vec<_> = std::fs::read_dir(dir.join("input"))
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.join("input").display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no JCS vectors in {}", dir.display());

    for input in &inputs {
        let name = input.file_name().unwrap();
        let expected = std::fs::read(dir.join("output").join(name))
            .unwrap_or_else(|e| panic!("missing output for {}: {e}", name.display()));
        let value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(input).unwrap()).unwrap();
        let actual = canonical_json(&value).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&actual),
            String::from_utf8_lossy(&expected),
            "vector {}",
            name.display()
        );
        assert_eq!(actual, expected, "vector {} (bytes)", name.display());
    }
}
