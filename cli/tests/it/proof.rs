//! `oa proof verify` on every shared Merkle vector: anyone's proofs in that layout are checked,
//! and the command's exit status is the vector's `wantErr`.

use std::path::Path;
use std::process::Command;

const OA: &str = env!("CARGO_BIN_EXE_oa");

#[test]
fn proof_verify_agrees_with_every_merkle_vector() {
    let dir = oa_testkit::vectors_dir(Path::new(env!("CARGO_MANIFEST_DIR"))).join("merkle");
    let mut checked = 0;
    for kind in ["inclusion", "consistency"] {
        for case in std::fs::read_dir(dir.join(kind)).unwrap() {
            for file in std::fs::read_dir(case.unwrap().path()).unwrap() {
                let path = file.unwrap().path();
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let out = Command::new(OA)
                    .args(["proof", "verify"])
                    .arg(&path)
                    .output()
                    .unwrap();
                let want_err = v["wantErr"].as_bool().unwrap();
                assert_eq!(
                    out.status.success(),
                    !want_err,
                    "{}: {}{}",
                    path.display(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 74, "only {checked} vectors");
}
