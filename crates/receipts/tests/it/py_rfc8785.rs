//! Cross-check of receipt hashes against an independent RFC 8785 implementation: PyPI
//! `rfc8785` (Trail of Bits), driven by a small inline Python script that hashes each receipt
//! the way a third-party verifier would (drop `hash` and `signature`, canonicalize, SHA-256).

use std::io::Write;
use std::process::Command;

use oa_receipts::{Hash, Receipt, ReceiptKey};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::json;

use crate::support::{append, draft};

const SCRIPT: &str = r#"
import hashlib, json, sys
import rfc8785
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        r = json.loads(line)
        del r["hash"], r["signature"]
        canonical = rfc8785.dumps(r)
        print("sha256:" + hashlib.sha256(canonical).hexdigest(), canonical.hex())
"#;

/// Whether `python3 -c "import rfc8785"` works; if not, fails or skips per
/// `OA_REQUIRE_PY_RFC8785`.
pub fn python_with_rfc8785() -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import rfc8785"])
        .output();
    let problem = match probe {
        Ok(out) if out.status.success() => return true,
        Ok(out) => format!(
            "python3 cannot import rfc8785: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("python3 not runnable: {e}"),
    };
    if std::env::var("OA_REQUIRE_PY_RFC8785").is_ok_and(|v| v == "1") {
        panic!("{problem} (OA_REQUIRE_PY_RFC8785=1; install with `pip install rfc8785`)");
    }
    eprintln!(
        "SKIPPED rfc8785 cross-check: {problem}. Install with `pip install rfc8785`; set OA_REQUIRE_PY_RFC8785=1 to make this a failure."
    );
    false
}

fn tricky_receipts() -> Vec<Receipt> {
    let key = ReceiptKey::generate();
    let mut chain = Vec::new();
    let bodies = [
        json!({}),
        json!({"amount_msat": "18446744073709551615", "memo": "café ☕ 😀", "ok": true, "none": null}),
        json!({
            "escapes": "quote\" backslash\\ slash/ nl\n cr\r tab\t bs\u{8} ff\u{c} c1\u{1} us\u{1f} del\u{7f}",
            "html": "</script><!-- & -->",
            "separators": "\u{2028}\u{2029}",
            "bom": "\u{feff}",
            "combining": "A\u{30a}",
        }),
        json!({
            // Keys whose UTF-16 order differs from their UTF-8 / code point order.
            "\u{e000}": "private use",
            "\u{10000}": "linear b",
            "😀": "emoji",
            "é": "latin",
            "a": "ascii",
            "A": "upper",
            "": "empty key",
            "\u{7f}": "del",
            "1": "digit",
        }),
        json!({
            "nested": {"z": [[], {}, [null, [true, {"deep": {"er": ["x"]}}]]], "a": {"b": {"c": "d"}}},
            "list": ["b", "a", "", "\u{0}"],
        }),
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        let links = chain
            .last()
            .map(|r: &Receipt| vec![r.hash])
            .unwrap_or_default();
        let mut d = draft(&format!("ü-{i}"), links, body);
        d.idempotency_key = format!("idem ✓ \"{i}\" \\ é");
        append(&mut chain, &key, "hydra", d);
    }

    // Random bodies with arbitrary Unicode strings, generated deterministically.
    let mut runner = TestRunner::deterministic();
    let strategy = crate::props::body_strategy();
    for i in 0..40 {
        let body = strategy.new_tree(&mut runner).unwrap().current();
        let links = chain
            .last()
            .map(|r: &Receipt| vec![r.hash])
            .unwrap_or_default();
        let mut d = draft(&format!("random-{i}"), links, json!({}));
        d.body = body;
        append(&mut chain, &key, "hydra", d);
    }
    chain
}

#[test]
fn receipt_hashes_match_python_rfc8785() {
    if !python_with_rfc8785() {
        return;
    }
    let receipts = tricky_receipts();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for r in &receipts {
        serde_json::to_writer(&mut file, r).unwrap();
        file.write_all(b"\n").unwrap();
    }
    file.flush().unwrap();

    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), receipts.len());

    for (r, line) in receipts.iter().zip(lines) {
        let (py_hash, py_canonical_hex) = line.split_once(' ').unwrap();
        let ours = r.canonical_unsigned().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&hex::decode(py_canonical_hex).unwrap()),
            String::from_utf8_lossy(&ours),
            "canonical JSON of {}",
            r.receipt_id
        );
        assert_eq!(
            Hash::parse(py_hash).unwrap(),
            r.hash,
            "hash of {}",
            r.receipt_id
        );
    }
}
