//! The verifier simulation: registered verifiers run against ground-truth cases with seeded,
//! deterministic behaviours, and the scoreboard that their results give.
//!
//! Behaviours: `honest` says the expected verdict; `always_pass` and `always_fail` say what
//! their names say; `noisy` says the expected verdict flipped when its draw is below
//! `noise_ppm`. The draw is the first 8 bytes (big-endian) of
//! `SHA-256("oa.aegis.sim.v1\n" + seed + "\n" + verifier_id + "\n" + case_id + "\n" + run_id)`
//! modulo 1 000 000 (the seed in decimal), so a run is reproducible from what it recorded, and
//! different runs draw afresh.
//!
//! Rates are integers in ppm, floored: accuracy = correct / total; false-pass rate = passes of
//! cases that should fail / cases that should fail; false-fail rate = fails of cases that should
//! pass / cases that should pass; 0 when the denominator is 0.

use sha2::{Digest, Sha256};

use crate::model::Verdict;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Honest,
    AlwaysPass,
    AlwaysFail,
    Noisy,
}

impl Behaviour {
    pub const ALL: [Behaviour; 4] = [
        Behaviour::Honest,
        Behaviour::AlwaysPass,
        Behaviour::AlwaysFail,
        Behaviour::Noisy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Behaviour::Honest => "honest",
            Behaviour::AlwaysPass => "always_pass",
            Behaviour::AlwaysFail => "always_fail",
            Behaviour::Noisy => "noisy",
        }
    }

    pub fn parse(s: &str) -> Option<Behaviour> {
        Behaviour::ALL.into_iter().find(|b| b.as_str() == s)
    }

    pub fn to_proto(self) -> oa_proto::aegis::SimBehaviour {
        use oa_proto::aegis::SimBehaviour as P;
        match self {
            Behaviour::Honest => P::Honest,
            Behaviour::AlwaysPass => P::AlwaysPass,
            Behaviour::AlwaysFail => P::AlwaysFail,
            Behaviour::Noisy => P::Noisy,
        }
    }

    /// `None` for UNSPECIFIED (not simulated).
    pub fn from_proto(b: oa_proto::aegis::SimBehaviour) -> Option<Behaviour> {
        use oa_proto::aegis::SimBehaviour as P;
        match b {
            P::Unspecified => None,
            P::Honest => Some(Behaviour::Honest),
            P::AlwaysPass => Some(Behaviour::AlwaysPass),
            P::AlwaysFail => Some(Behaviour::AlwaysFail),
            P::Noisy => Some(Behaviour::Noisy),
        }
    }
}

/// A simulated verifier's seeded behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    pub behaviour: Behaviour,
    pub seed: u64,
    pub noise_ppm: u32,
}

/// The draw of the module docs, in `0..1_000_000`.
pub fn draw(seed: u64, verifier_id: &str, case_id: &str, run_id: &str) -> u32 {
    let digest = Sha256::digest(format!(
        "oa.aegis.sim.v1\n{seed}\n{verifier_id}\n{case_id}\n{run_id}"
    ));
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u32::try_from(u64::from_be_bytes(first) % 1_000_000).unwrap_or(0)
}

/// What a simulated verifier says about a case whose right answer is `expected`.
pub fn simulate(
    profile: &Profile,
    verifier_id: &str,
    case_id: &str,
    run_id: &str,
    expected: Verdict,
) -> Verdict {
    match profile.behaviour {
        Behaviour::Honest => expected,
        Behaviour::AlwaysPass => Verdict::Passed,
        Behaviour::AlwaysFail => Verdict::Failed,
        Behaviour::Noisy => {
            if draw(profile.seed, verifier_id, case_id, run_id) < profile.noise_ppm {
                match expected {
                    Verdict::Passed => Verdict::Failed,
                    Verdict::Failed => Verdict::Passed,
                }
            } else {
                expected
            }
        }
    }
}

/// A verifier's simulation record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Score {
    pub total: u64,
    pub correct: u64,
    pub false_pass: u64,
    pub false_fail: u64,
    pub expected_pass: u64,
    pub expected_fail: u64,
}

fn ppm(num: u64, den: u64) -> u32 {
    if den == 0 {
        return 0;
    }
    // num <= den for every rate here, so the result is at most 1e6 and fits u32.
    u32::try_from(u128::from(num.min(den)) * 1_000_000 / u128::from(den)).unwrap_or(1_000_000)
}

impl Score {
    pub fn add(&mut self, expected: Verdict, said: Verdict) {
        self.total += 1;
        match expected {
            Verdict::Passed => self.expected_pass += 1,
            Verdict::Failed => self.expected_fail += 1,
        }
        match (expected, said) {
            (a, b) if a == b => self.correct += 1,
            (Verdict::Failed, Verdict::Passed) => self.false_pass += 1,
            _ => self.false_fail += 1,
        }
    }

    pub fn accuracy_ppm(&self) -> u32 {
        ppm(self.correct, self.total)
    }

    pub fn false_pass_rate_ppm(&self) -> u32 {
        ppm(self.false_pass, self.expected_fail)
    }

    pub fn false_fail_rate_ppm(&self) -> u32 {
        ppm(self.false_fail, self.expected_pass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviours_are_what_they_say_and_noise_is_seeded() {
        let p = |behaviour, noise_ppm| Profile {
            behaviour,
            seed: 7,
            noise_ppm,
        };
        for expected in [Verdict::Passed, Verdict::Failed] {
            assert_eq!(
                simulate(&p(Behaviour::Honest, 0), "v", "c", "r", expected),
                expected
            );
            assert_eq!(
                simulate(&p(Behaviour::AlwaysPass, 0), "v", "c", "r", expected),
                Verdict::Passed
            );
            assert_eq!(
                simulate(&p(Behaviour::AlwaysFail, 0), "v", "c", "r", expected),
                Verdict::Failed
            );
            // Noise 0 never flips, noise 1e6 always does.
            assert_eq!(
                simulate(&p(Behaviour::Noisy, 0), "v", "c", "r", expected),
                expected
            );
            assert_ne!(
                simulate(&p(Behaviour::Noisy, 1_000_000), "v", "c", "r", expected),
                expected
            );
        }
        // The same inputs draw the same; over 1000 cases a 20% noise flips about 200.
        assert_eq!(draw(7, "v", "c", "r"), draw(7, "v", "c", "r"));
        assert_ne!(draw(7, "v", "c", "r"), draw(8, "v", "c", "r"));
        let flips = (0..1000)
            .filter(|i| {
                simulate(
                    &p(Behaviour::Noisy, 200_000),
                    "v",
                    &format!("case-{i}"),
                    "r",
                    Verdict::Passed,
                ) == Verdict::Failed
            })
            .count();
        assert!((150..=250).contains(&flips), "{flips}");
    }

    #[test]
    fn golden_draw() {
        // SHA-256("oa.aegis.sim.v1\n42\nv1\ncase-1\nrun-1") starts 4306c8ba71f3a303;
        // 0x4306c8ba71f3a303 = 4 829 768 353 502 700 291, mod 1 000 000 = 700 291 (worked with
        // Python's hashlib, an independent implementation).
        assert_eq!(draw(42, "v1", "case-1", "run-1"), 700_291);
        // So a noisy verifier with noise 700 291 ppm keeps the verdict, with 700 292 flips it.
        let p = |noise_ppm| Profile {
            behaviour: Behaviour::Noisy,
            seed: 42,
            noise_ppm,
        };
        assert_eq!(
            simulate(&p(700_291), "v1", "case-1", "run-1", Verdict::Passed),
            Verdict::Passed
        );
        assert_eq!(
            simulate(&p(700_292), "v1", "case-1", "run-1", Verdict::Passed),
            Verdict::Failed
        );
    }

    #[test]
    fn rates_are_floored_ppm() {
        let mut s = Score::default();
        // 3 cases should pass (one failed by the verifier), 4 should fail (one passed).
        for (e, said) in [
            (Verdict::Passed, Verdict::Passed),
            (Verdict::Passed, Verdict::Passed),
            (Verdict::Passed, Verdict::Failed),
            (Verdict::Failed, Verdict::Failed),
            (Verdict::Failed, Verdict::Failed),
            (Verdict::Failed, Verdict::Failed),
            (Verdict::Failed, Verdict::Passed),
        ] {
            s.add(e, said);
        }
        assert_eq!(
            s,
            Score {
                total: 7,
                correct: 5,
                false_pass: 1,
                false_fail: 1,
                expected_pass: 3,
                expected_fail: 4
            }
        );
        // 5/7 = 714 285.7 -> 714 285; 1/4 = 250 000; 1/3 = 333 333.3 -> 333 333.
        assert_eq!(s.accuracy_ppm(), 714_285);
        assert_eq!(s.false_pass_rate_ppm(), 250_000);
        assert_eq!(s.false_fail_rate_ppm(), 333_333);
        assert_eq!(Score::default().accuracy_ppm(), 0);
    }
}
