//! Every inclusion and consistency vector of `shared/vectors/merkle/` (the transparency-dev
//! layout): the happy paths verify and every `wantErr` case is refused.

use std::path::Path;

use base64::Engine as _;
use oa_receipts::merkle::{Digest, verify_consistency, verify_inclusion};
use serde::Deserialize;

use crate::support::vectors_dir;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Inclusion {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Consistency {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

/// Base64 of exactly 32 bytes; anything else (the vectors' "wrong leaf", empty strings) is an
/// error, as a hash of the wrong length can never verify.
fn digest(s: &str) -> Result<Digest, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| e.to_string())?;
    Digest::try_from(bytes.as_slice()).map_err(|_| format!("{} bytes", bytes.len()))
}

fn digests(v: Option<&Vec<String>>) -> Result<Vec<Digest>, String> {
    v.map_or(Ok(Vec::new()), |v| v.iter().map(|s| digest(s)).collect())
}

fn files(kind: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let dir = vectors_dir().join("merkle").join(kind);
    for case in std::fs::read_dir(&dir).unwrap() {
        for f in std::fs::read_dir(case.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> T {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn passes_every_inclusion_vector() {
    let files = files("inclusion");
    assert!(files.len() >= 31, "only {} inclusion vectors", files.len());
    for path in files {
        let v: Inclusion = read(&path);
        let result = (|| {
            let proof = digests(v.proof.as_ref())?;
            verify_inclusion(
                v.leaf_idx,
                v.tree_size,
                &digest(&v.leaf_hash)?,
                &proof,
                &digest(&v.root)?,
            )
            .map_err(|e| e.to_string())
        })();
        assert_eq!(
            result.is_err(),
            v.want_err,
            "{} ({}): {result:?}",
            path.display(),
            v.desc
        );
    }
}

#[test]
fn passes_every_consistency_vector() {
    let files = files("consistency");
    assert!(
        files.len() >= 43,
        "only {} consistency vectors",
        files.len()
    );
    for path in files {
        let v: Consistency = read(&path);
        let result = (|| {
            let proof = digests(v.proof.as_ref())?;
            verify_consistency(
                v.size1,
                v.size2,
                &proof,
                &digest(&v.root1)?,
                &digest(&v.root2)?,
            )
            .map_err(|e| e.to_string())
        })();
        assert_eq!(
            result.is_err(),
            v.want_err,
            "{} ({}): {result:?}",
            path.display(),
            v.desc
        );
    }
}
