//! Heterogeneous verification: signed verdicts from registered verifiers and the quorum rule.
//!
//! **Signatures.** A verifier's key is a secp256k1 key, registered as its BIP340 x-only public
//! key (64 lowercase hex digits); a verdict is a BIP340 Schnorr signature (128 hex digits) over
//! the 32-byte hash of its *statement*:
//! `SHA-256(RFC 8785 JSON of {"schema": "oa.aegis.verdict.v1", "verification_id", "work_hash",
//! "verifier_id", "verdict": "passed" | "failed"})`. BIP340 rather than ECDSA: it is what the
//! suite's receipts use (one scheme, one verification routine, `oa_receipts::verify_signature`
//! on the `bitcoin` crate's secp256k1), its signatures are not malleable, and its challenge
//! commits to the public key, so a signature cannot be re-attributed to another key. The
//! statement names the verification and the work hash, so a verdict cannot be replayed onto
//! other work, and the verifier, so it cannot be replayed as another verifier's.
//!
//! **Weights** come from the simulation scoreboard ([`weight_ppm`]): a verifier with at least
//! [`MIN_SCORED_EACH`] simulated cases of each answer weighs
//! `(1e6 - false_pass_rate) * (1e6 - false_fail_rate) / 1e6` ppm (floored), or 0 below
//! [`MIN_WEIGHT_PPM`]; one without enough cases weighs [`UNSCORED_WEIGHT_PPM`]. The product
//! punishes both ways of being wrong, so an always-pass verifier weighs 0 however many of the
//! cases should pass. The weight is fixed when the verdict is accepted.
//!
//! **Quorum** ([`decide`]): verdicts of weight 0 are recorded but not counted. Once at least
//! `size` verdicts count, from at least `min(min_families, size)` distinct families, the
//! verification is decided: **passed** if the passing weight is at least twice the failing
//! weight (a weighted two-thirds majority), **failed** otherwise. Money moves on a pass, so a
//! split quorum fails.

use oa_receipts::Hash;

use crate::{
    error::{AegisError, corrupt},
    model::Verdict,
    sim::Score,
};

/// The schema named in every verdict statement.
pub const STATEMENT_SCHEMA: &str = "oa.aegis.verdict.v1";
/// Simulated cases of each answer (should pass, should fail) before the rates set the weight.
pub const MIN_SCORED_EACH: u64 = 5;
/// Weight of a verifier the simulation has not scored yet: half a proven one.
pub const UNSCORED_WEIGHT_PPM: u32 = 500_000;
/// Below this weight a scored verifier's verdicts do not count.
pub const MIN_WEIGHT_PPM: u32 = 250_000;

/// The hash a verifier signs for its verdict (module docs).
pub fn statement_hash(
    verification_id: &str,
    work_hash: &str,
    verifier_id: &str,
    verdict: Verdict,
) -> Result<Hash, AegisError> {
    let statement = serde_json::json!({
        "schema": STATEMENT_SCHEMA,
        "verification_id": verification_id,
        "work_hash": work_hash,
        "verifier_id": verifier_id,
        "verdict": verdict.as_str(),
    });
    let canonical = serde_json_canonicalizer::to_vec(&statement)
        .map_err(|e| corrupt(format!("verdict statement: {e}")))?;
    Ok(Hash::of(&canonical))
}

/// Whether `signature` is `public_key`'s BIP340 signature over `hash`.
pub fn signature_ok(public_key: &str, hash: &Hash, signature: &str) -> bool {
    oa_receipts::verify_signature(public_key, hash, signature).is_ok()
}

/// Whether `public_key` is a valid BIP340 x-only key (64 lowercase hex digits of a curve point).
pub fn valid_public_key(public_key: &str) -> bool {
    let mut bytes = [0u8; 32];
    public_key.len() == 64
        && public_key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && hex::decode_to_slice(public_key, &mut bytes).is_ok()
        && bitcoin::secp256k1::XOnlyPublicKey::from_slice(&bytes).is_ok()
}

/// Whether the scoreboard has seen enough of this verifier to weigh it by its rates.
pub fn scored(score: &Score) -> bool {
    score.expected_pass >= MIN_SCORED_EACH && score.expected_fail >= MIN_SCORED_EACH
}

/// A verifier's quorum weight (module docs).
pub fn weight_ppm(score: &Score) -> u32 {
    if !scored(score) {
        return UNSCORED_WEIGHT_PPM;
    }
    let keep_pass = 1_000_000 - u64::from(score.false_pass_rate_ppm().min(1_000_000));
    let keep_fail = 1_000_000 - u64::from(score.false_fail_rate_ppm().min(1_000_000));
    let w = u32::try_from(keep_pass * keep_fail / 1_000_000).unwrap_or(0);
    if w < MIN_WEIGHT_PPM { 0 } else { w }
}

/// One accepted verdict as the quorum counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted<'a> {
    pub family: &'a str,
    pub verdict: Verdict,
    pub weight_ppm: u32,
}

/// Where a quorum stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub counted: u32,
    pub families: u32,
    pub pass_weight: u64,
    pub fail_weight: u64,
}

pub fn tally(verdicts: &[Counted<'_>]) -> Tally {
    let mut t = Tally::default();
    let mut families = std::collections::BTreeSet::new();
    for v in verdicts.iter().filter(|v| v.weight_ppm > 0) {
        t.counted += 1;
        families.insert(v.family);
        match v.verdict {
            Verdict::Passed => t.pass_weight += u64::from(v.weight_ppm),
            Verdict::Failed => t.fail_weight += u64::from(v.weight_ppm),
        }
    }
    t.families = u32::try_from(families.len()).unwrap_or(u32::MAX);
    t
}

/// The quorum rule of the module docs: `None` while undecided.
pub fn decide(t: &Tally, size: u32, min_families: u32) -> Option<Verdict> {
    let size = size.max(1);
    if t.counted < size || t.families < min_families.min(size) {
        return None;
    }
    Some(Verdict::from_bool(t.pass_weight >= 2 * t.fail_weight))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use oa_receipts::ReceiptKey;

    use super::*;

    fn score(pass_ok: u64, pass_bad: u64, fail_ok: u64, fail_bad: u64) -> Score {
        let mut s = Score::default();
        for _ in 0..pass_ok {
            s.add(Verdict::Passed, Verdict::Passed);
        }
        for _ in 0..pass_bad {
            s.add(Verdict::Passed, Verdict::Failed);
        }
        for _ in 0..fail_ok {
            s.add(Verdict::Failed, Verdict::Failed);
        }
        for _ in 0..fail_bad {
            s.add(Verdict::Failed, Verdict::Passed);
        }
        s
    }

    /// Golden weights, worked by hand.
    #[test]
    fn golden_weights() {
        // Unscored: 4 cases of each answer is not enough.
        assert_eq!(weight_ppm(&score(4, 0, 4, 0)), 500_000);
        // Honest on 5 + 5: (1e6 - 0)(1e6 - 0)/1e6 = 1e6.
        assert_eq!(weight_ppm(&score(5, 0, 5, 0)), 1_000_000);
        // 1 of 10 should-pass failed (100 000), 2 of 10 should-fail passed (200 000):
        // 900 000 * 800 000 / 1e6 = 720 000.
        assert_eq!(weight_ppm(&score(9, 1, 8, 2)), 720_000);
        // Always-pass on 90 should-pass and 10 should-fail: false-pass rate 1e6 -> 0, even
        // though its accuracy is 90%.
        let always_pass = score(90, 0, 0, 10);
        assert_eq!(always_pass.accuracy_ppm(), 900_000);
        assert_eq!(weight_ppm(&always_pass), 0);
        // 50% wrong each way: 500 000 * 500 000 / 1e6 = 250 000, exactly the floor: kept.
        assert_eq!(weight_ppm(&score(5, 5, 5, 5)), 250_000);
        // 6 of 10 wrong one way: 400 000 * 1e6 / 1e6 = 400 000; 8 of 10 wrong: 200 000 -> 0.
        assert_eq!(weight_ppm(&score(4, 6, 10, 0)), 400_000);
        assert_eq!(weight_ppm(&score(2, 8, 10, 0)), 0);
    }

    #[test]
    fn quorum_needs_size_families_and_two_thirds() {
        let c = |family, verdict, weight_ppm| Counted {
            family,
            verdict,
            weight_ppm,
        };
        let p = Verdict::Passed;
        let f = Verdict::Failed;
        // Two passes are not a quorum of three.
        let t = tally(&[c("a", p, 1_000_000), c("b", p, 1_000_000)]);
        assert_eq!(decide(&t, 3, 2), None);
        // A zero-weight verdict does not count towards it.
        let t = tally(&[c("a", p, 1_000_000), c("b", p, 1_000_000), c("c", p, 0)]);
        assert_eq!((t.counted, decide(&t, 3, 2)), (2, None));
        // Three of one family are not heterogeneous.
        let t = tally(&[
            c("a", p, 1_000_000),
            c("a", p, 1_000_000),
            c("a", p, 1_000_000),
        ]);
        assert_eq!(decide(&t, 3, 2), None);
        // 2 pass (2e6) vs 1 fail (1e6): 2e6 >= 2 * 1e6: passed.
        let t = tally(&[
            c("a", p, 1_000_000),
            c("b", p, 1_000_000),
            c("a", f, 1_000_000),
        ]);
        assert_eq!(decide(&t, 3, 2), Some(Verdict::Passed));
        // Pass 1e6 + 500 000 vs fail 800 000: 1.5e6 < 1.6e6: failed.
        let t = tally(&[c("a", p, 1_000_000), c("b", p, 500_000), c("c", f, 800_000)]);
        assert_eq!(
            (t.pass_weight, t.fail_weight, decide(&t, 3, 2)),
            (1_500_000, 800_000, Some(Verdict::Failed))
        );
        // min_families above size is capped at size.
        let t = tally(&[c("a", p, 1_000_000)]);
        assert_eq!(decide(&t, 1, 2), Some(Verdict::Passed));
    }

    #[test]
    fn only_the_registered_key_signs_a_verdict() {
        let key = ReceiptKey::generate();
        let other = ReceiptKey::generate();
        let h = statement_hash("ver_1", "sha256:00", "v1", Verdict::Passed).unwrap();
        let sig = key.sign(&h);
        assert!(signature_ok(key.key_id(), &h, &sig));
        assert!(!signature_ok(other.key_id(), &h, &sig));
        assert!(!signature_ok(key.key_id(), &h, &other.sign(&h)));
        // The same signature does not carry over to another verdict, verification or verifier.
        for h2 in [
            statement_hash("ver_1", "sha256:00", "v1", Verdict::Failed).unwrap(),
            statement_hash("ver_2", "sha256:00", "v1", Verdict::Passed).unwrap(),
            statement_hash("ver_1", "sha256:01", "v1", Verdict::Passed).unwrap(),
            statement_hash("ver_1", "sha256:00", "v2", Verdict::Passed).unwrap(),
        ] {
            assert!(!signature_ok(key.key_id(), &h2, &sig));
        }
        assert!(!signature_ok(key.key_id(), &h, "00"));
        assert!(valid_public_key(key.key_id()));
        assert!(!valid_public_key(&key.key_id().to_uppercase()));
        assert!(!valid_public_key(&"f".repeat(64)));
        assert!(!valid_public_key("02ab"));
    }

    #[test]
    fn golden_statement_hash() {
        // RFC 8785 sorts the keys: {"schema":..,"verdict":..,"verification_id":..,
        // "verifier_id":..,"work_hash":..}; the hash below was computed with Python's
        // json.dumps(sort_keys=True, separators=(",", ":")) and hashlib.
        let h = statement_hash("ver_1", "sha256:ab", "v1", Verdict::Passed).unwrap();
        assert_eq!(h.to_string(), GOLDEN_STATEMENT_HASH);
    }

    const GOLDEN_STATEMENT_HASH: &str =
        "sha256:7ab12ad79084fc7a77c492f85b92c1f91832bfcaac67877e548e795c86ac0f7f";
}
