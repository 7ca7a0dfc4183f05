//! Work units and their evidence: validation (typed 400s), the objective checks that really run
//! (artifact SHA-256, JSON Schema validity, a test report's counts against a threshold), and the
//! work hash verifiers sign over.
//!
//! JSON Schema validation uses the `jsonschema` crate with its default features off: no HTTP or
//! file retrieval of `$ref`s (a schema in a request must never make Aegis fetch a URL or read a
//! file; such a `$ref` makes the schema invalid), and patterns run on the `regex` engine, whose
//! matching time is linear in the input (no catastrophic backtracking from a hostile pattern).

use std::{collections::BTreeMap, sync::Arc};

use oa_money::Msat;
use oa_proto::aegis;
use sha2::{Digest, Sha256};

use crate::{
    classify::Checkability,
    error::{AegisError, corrupt, invalid},
    validate,
};

/// Most outputs one work unit may declare.
pub const MAX_OUTPUTS: usize = 32;
/// Largest JSON Schema text: schemas for agent outputs are small; this bounds compile time.
pub const MAX_SCHEMA_BYTES: usize = 16 * 1024;
/// Largest JSON document checked (the request body limit is 64 KiB).
pub const MAX_JSON_BYTES: usize = 32 * 1024;
/// Largest artifact checked inline.
pub const MAX_ARTIFACT_BYTES: usize = 48 * 1024;
/// Longest reference (URI or note) to reviewable evidence.
pub const MAX_REFERENCE_LEN: usize = 1_024;
/// Longest output name.
pub const MAX_OUTPUT_NAME_LEN: usize = 64;
/// The compiled regex size a schema pattern may take: enough for any sane pattern.
const PATTERN_SIZE_LIMIT: usize = 256 * 1024;
/// The name of the output a bare `objective_hash` declares.
pub const IMPLICIT_ARTIFACT: &str = "artifact";
/// Longest check detail kept.
const MAX_DETAIL_LEN: usize = 240;

/// What one output is and how it is checked.
#[derive(Clone)]
pub enum OutputKind {
    Artifact {
        expected: Option<String>,
    },
    Json {
        schema: Option<Arc<jsonschema::Validator>>,
    },
    TestReport {
        min_pass_ppm: u32,
        min_tests: u64,
    },
    Text,
    Action,
}

#[derive(Clone)]
pub struct Output {
    pub name: String,
    pub kind: OutputKind,
}

impl Output {
    pub fn checkability(&self) -> Checkability {
        match &self.kind {
            OutputKind::Artifact { expected: Some(_) }
            | OutputKind::Json { schema: Some(_) }
            | OutputKind::TestReport { .. } => Checkability::Objective,
            OutputKind::Artifact { expected: None } | OutputKind::Json { schema: None } => {
                Checkability::Reviewable
            }
            OutputKind::Text => Checkability::Reviewable,
            OutputKind::Action => Checkability::Opaque,
        }
    }
}

/// A validated work unit.
#[derive(Clone)]
pub struct Work {
    pub proto: aegis::WorkUnit,
    pub amount: Msat,
    pub outputs: Vec<Output>,
}

impl Work {
    pub fn checkabilities(&self) -> Vec<Checkability> {
        self.outputs.iter().map(Output::checkability).collect()
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Compiles a JSON Schema given as JSON text.
pub fn compile_schema(text: &str) -> Result<jsonschema::Validator, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    jsonschema::options()
        .with_pattern_options(jsonschema::PatternOptions::regex().size_limit(PATTERN_SIZE_LIMIT))
        .should_validate_formats(true)
        .build(&value)
        .map_err(|e| truncate(&e.to_string(), MAX_DETAIL_LEN))
}

/// Validates a work unit (every field, every schema compiled).
pub fn validate_work(w: Option<&aegis::WorkUnit>) -> Result<Work, AegisError> {
    let w = w.ok_or_else(|| invalid("INVALID_WORK_UNIT", "work is required"))?;
    validate::name("INVALID_KIND", "work.kind", &w.kind)?;
    validate::agent_id(&w.agent_id)?;
    if !w.org_id.is_empty() {
        validate::id(
            "INVALID_ORG_ID",
            "work.org_id",
            &w.org_id,
            validate::MAX_AGENT_ID_LEN,
        )?;
    }
    let amount = validate::msat("INVALID_AMOUNT", "work.amount_msat", w.amount_msat)?;
    if w.outputs.len() > MAX_OUTPUTS {
        return Err(invalid(
            "INVALID_OUTPUT",
            format!("at most {MAX_OUTPUTS} outputs"),
        ));
    }
    if !w.objective_hash.is_empty() {
        validate::sha256("INVALID_HASH", "work.objective_hash", &w.objective_hash)?;
    }
    let mut outputs = Vec::with_capacity(w.outputs.len().max(1));
    let mut names = std::collections::BTreeSet::new();
    for o in &w.outputs {
        validate::id(
            "INVALID_OUTPUT",
            "output name",
            &o.name,
            MAX_OUTPUT_NAME_LEN,
        )?;
        if !names.insert(o.name.as_str()) {
            return Err(invalid(
                "INVALID_OUTPUT",
                format!("output {} is declared twice", o.name),
            ));
        }
        let ty: aegis::OutputType =
            validate::enum_value("INVALID_OUTPUT", "output type", o.r#type)?;
        let misplaced = |field: &str| {
            invalid(
                "INVALID_OUTPUT",
                format!("output {}: {field} does not apply to its type", o.name),
            )
        };
        let kind = match ty {
            aegis::OutputType::Unspecified => {
                return Err(invalid(
                    "INVALID_OUTPUT",
                    format!("output {}: type is required", o.name),
                ));
            }
            aegis::OutputType::Artifact => {
                if !o.json_schema.is_empty() {
                    return Err(misplaced("json_schema"));
                }
                if o.test_threshold.is_some() {
                    return Err(misplaced("test_threshold"));
                }
                if !o.expected_sha256.is_empty() {
                    validate::sha256("INVALID_HASH", "expected_sha256", &o.expected_sha256)?;
                }
                OutputKind::Artifact {
                    expected: (!o.expected_sha256.is_empty()).then(|| o.expected_sha256.clone()),
                }
            }
            aegis::OutputType::Json => {
                if !o.expected_sha256.is_empty() {
                    return Err(misplaced("expected_sha256"));
                }
                if o.test_threshold.is_some() {
                    return Err(misplaced("test_threshold"));
                }
                let schema = if o.json_schema.is_empty() {
                    None
                } else {
                    if o.json_schema.len() > MAX_SCHEMA_BYTES {
                        return Err(invalid(
                            "INVALID_SCHEMA",
                            format!(
                                "output {}: json_schema is longer than {MAX_SCHEMA_BYTES} bytes",
                                o.name
                            ),
                        ));
                    }
                    Some(Arc::new(compile_schema(&o.json_schema).map_err(|e| {
                        invalid(
                            "INVALID_SCHEMA",
                            format!("output {}: json_schema: {e}", o.name),
                        )
                    })?))
                };
                OutputKind::Json { schema }
            }
            aegis::OutputType::TestReport => {
                if !o.expected_sha256.is_empty() {
                    return Err(misplaced("expected_sha256"));
                }
                if !o.json_schema.is_empty() {
                    return Err(misplaced("json_schema"));
                }
                let (min_pass_ppm, min_tests) = match &o.test_threshold {
                    Some(t) => (t.min_pass_ppm, t.min_tests.max(1)),
                    None => (1_000_000, 1),
                };
                if min_pass_ppm > 1_000_000 {
                    return Err(invalid(
                        "INVALID_OUTPUT",
                        format!("output {}: min_pass_ppm is at most 1000000", o.name),
                    ));
                }
                OutputKind::TestReport {
                    min_pass_ppm,
                    min_tests,
                }
            }
            aegis::OutputType::Text | aegis::OutputType::Action => {
                if !o.expected_sha256.is_empty() {
                    return Err(misplaced("expected_sha256"));
                }
                if !o.json_schema.is_empty() {
                    return Err(misplaced("json_schema"));
                }
                if o.test_threshold.is_some() {
                    return Err(misplaced("test_threshold"));
                }
                if ty == aegis::OutputType::Text {
                    OutputKind::Text
                } else {
                    OutputKind::Action
                }
            }
        };
        outputs.push(Output {
            name: o.name.clone(),
            kind,
        });
    }
    if !w.objective_hash.is_empty() {
        if outputs.is_empty() {
            outputs.push(Output {
                name: IMPLICIT_ARTIFACT.to_owned(),
                kind: OutputKind::Artifact {
                    expected: Some(w.objective_hash.clone()),
                },
            });
        } else {
            let mut open = outputs
                .iter_mut()
                .filter(|o| matches!(o.kind, OutputKind::Artifact { expected: None }));
            match (open.next(), open.next()) {
                (Some(o), None) => {
                    o.kind = OutputKind::Artifact {
                        expected: Some(w.objective_hash.clone()),
                    };
                }
                _ => {
                    return Err(invalid(
                        "INVALID_WORK_UNIT",
                        "objective_hash needs exactly one ARTIFACT output without its own expected_sha256",
                    ));
                }
            }
        }
    }
    Ok(Work {
        proto: w.clone(),
        amount,
        outputs,
    })
}

/// Validates the evidence against the work's outputs: one entry per name at most, the field its
/// type uses and no other, and evidence for every output with an objective check.
pub fn validate_evidence<'a>(
    work: &Work,
    evidence: &'a [aegis::OutputEvidence],
) -> Result<BTreeMap<String, &'a aegis::OutputEvidence>, AegisError> {
    let mut by_name = BTreeMap::new();
    for e in evidence {
        let Some(output) = work.outputs.iter().find(|o| o.name == e.name) else {
            return Err(invalid(
                "INVALID_EVIDENCE",
                format!(
                    "evidence names output {:?}, which the work does not declare",
                    truncate(&e.name, MAX_OUTPUT_NAME_LEN)
                ),
            ));
        };
        if by_name.insert(e.name.clone(), e).is_some() {
            return Err(invalid(
                "INVALID_EVIDENCE",
                format!("evidence for output {} is given twice", e.name),
            ));
        }
        let set = [
            ("artifact", !e.artifact.is_empty()),
            ("json", !e.json.is_empty()),
            ("test_report", e.test_report.is_some()),
            ("reference", !e.reference.is_empty()),
        ];
        let wanted = match output.kind {
            OutputKind::Artifact { .. } => "artifact",
            OutputKind::Json { .. } => "json",
            OutputKind::TestReport { .. } => "test_report",
            OutputKind::Text | OutputKind::Action => "reference",
        };
        if let Some((field, _)) = set.iter().find(|(f, on)| *on && *f != wanted) {
            return Err(invalid(
                "INVALID_EVIDENCE",
                format!(
                    "evidence for output {}: {field} does not apply to its type",
                    e.name
                ),
            ));
        }
        if e.artifact.len() > MAX_ARTIFACT_BYTES {
            return Err(invalid(
                "INVALID_EVIDENCE",
                format!(
                    "artifact of {} is larger than {MAX_ARTIFACT_BYTES} bytes",
                    e.name
                ),
            ));
        }
        if e.json.len() > MAX_JSON_BYTES {
            return Err(invalid(
                "INVALID_EVIDENCE",
                format!("json of {} is longer than {MAX_JSON_BYTES} bytes", e.name),
            ));
        }
        if !e.reference.is_empty() {
            validate::text(
                "INVALID_EVIDENCE",
                "reference",
                &e.reference,
                1,
                MAX_REFERENCE_LEN,
            )?;
        }
    }
    for o in &work.outputs {
        let e = by_name.get(&o.name);
        let missing = match &o.kind {
            // An empty artifact is evidence too (its hash is the hash of nothing), as long as
            // the entry is there.
            OutputKind::Artifact { expected: Some(_) } => e.is_none(),
            OutputKind::Json { schema: Some(_) } => e.is_none_or(|e| e.json.is_empty()),
            OutputKind::TestReport { .. } => e.is_none_or(|e| e.test_report.is_none()),
            _ => false,
        };
        if missing {
            return Err(invalid(
                "MISSING_EVIDENCE",
                format!(
                    "output {} has an objective check and needs evidence",
                    o.name
                ),
            ));
        }
    }
    Ok(by_name)
}

/// The result of one objective check.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Check {
    pub output: String,
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

impl Check {
    pub fn to_proto(&self) -> aegis::CheckResult {
        aegis::CheckResult {
            output: self.output.clone(),
            check: self.check.clone(),
            passed: self.passed,
            detail: self.detail.clone(),
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Artifact hash match.
pub fn check_sha256(output: &str, expected: &str, artifact: &[u8]) -> Check {
    let got = sha256_of(artifact);
    let passed = got == expected;
    Check {
        output: output.to_owned(),
        check: "sha256".into(),
        passed,
        detail: if passed {
            format!("{} bytes hash to the expected {expected}", artifact.len())
        } else {
            format!(
                "{} bytes hash to {got}, not the expected {expected}",
                artifact.len()
            )
        },
    }
}

/// JSON Schema validity of a document given as JSON text (not JSON at all is a failed check:
/// it is the agent's output that is wrong, not the request).
pub fn check_json(output: &str, schema: &jsonschema::Validator, json: &str) -> Check {
    let result = match serde_json::from_str::<serde_json::Value>(json) {
        Err(e) => Err(format!("the output is not JSON: {e}")),
        Ok(doc) => match schema.iter_errors(&doc).next() {
            None => Ok(()),
            Some(err) => Err(format!(
                "the output does not satisfy the schema at {:?}: {err}",
                err.instance_path().to_string()
            )),
        },
    };
    Check {
        output: output.to_owned(),
        check: "json_schema".into(),
        passed: result.is_ok(),
        detail: match result {
            Ok(()) => "the output satisfies the schema".into(),
            Err(e) => truncate(&e, MAX_DETAIL_LEN),
        },
    }
}

/// Whether a test report meets its threshold: `passed + failed >= min_tests` and
/// `passed * 1e6 >= min_pass_ppm * (passed + failed)` (skipped tests count for neither).
pub fn check_tests(
    output: &str,
    min_pass_ppm: u32,
    min_tests: u64,
    counts: &aegis::TestCounts,
) -> Check {
    let ran = u128::from(counts.passed) + u128::from(counts.failed);
    let enough = ran >= u128::from(min_tests.max(1));
    let share_ok = u128::from(counts.passed) * 1_000_000 >= u128::from(min_pass_ppm) * ran;
    let passed = enough && share_ok;
    let share_ppm = (u128::from(counts.passed) * 1_000_000)
        .checked_div(ran)
        .unwrap_or(0);
    Check {
        output: output.to_owned(),
        check: "test_threshold".into(),
        passed,
        detail: format!(
            "{} passed, {} failed, {} skipped: {share_ppm} ppm passed of {ran} run; needs {min_pass_ppm} ppm of at least {min_tests}",
            counts.passed, counts.failed, counts.skipped
        ),
    }
}

/// Runs every objective check the work declares, in output order.
pub fn run_checks(
    work: &Work,
    evidence: &BTreeMap<String, &aegis::OutputEvidence>,
) -> Result<Vec<Check>, AegisError> {
    let mut checks = Vec::new();
    for o in &work.outputs {
        if o.checkability() != Checkability::Objective {
            continue;
        }
        let e = evidence
            .get(&o.name)
            .ok_or_else(|| corrupt("validated evidence is missing an objective output"))?;
        let check = match &o.kind {
            OutputKind::Artifact { expected: Some(h) } => check_sha256(&o.name, h, &e.artifact),
            OutputKind::Json { schema: Some(s) } => check_json(&o.name, s, &e.json),
            OutputKind::TestReport {
                min_pass_ppm,
                min_tests,
            } => {
                let counts = e
                    .test_report
                    .as_ref()
                    .ok_or_else(|| corrupt("validated evidence without its test report"))?;
                check_tests(&o.name, *min_pass_ppm, *min_tests, counts)
            }
            _ => continue,
        };
        checks.push(check);
    }
    Ok(checks)
}

/// `sha256:` of the RFC 8785 JSON of `{"work": <work unit>, "evidence": [<evidence>...]}` in their
/// proto3 JSON forms: what verifiers review and sign over.
pub fn work_hash(
    work: &aegis::WorkUnit,
    evidence: &[aegis::OutputEvidence],
) -> Result<String, AegisError> {
    let value = serde_json::json!({ "work": work, "evidence": evidence });
    let canonical =
        serde_json_canonicalizer::to_vec(&value).map_err(|e| corrupt(format!("work hash: {e}")))?;
    Ok(sha256_of(&canonical))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sha256_check_compares_the_bytes_hash() {
        // sha256("abc") is the FIPS 180-2 example digest.
        let abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(check_sha256("a", abc, b"abc").passed);
        let c = check_sha256("a", abc, b"abd");
        assert!(!c.passed);
        assert!(c.detail.contains("not the expected"), "{}", c.detail);
    }

    #[test]
    fn json_schema_check_runs_the_schema() {
        let schema = compile_schema(
            r#"{"type":"object","required":["n"],"properties":{"n":{"type":"integer","minimum":1},"s":{"type":"string","pattern":"^[a-z]+$"}},"additionalProperties":false}"#,
        )
        .unwrap();
        assert!(check_json("o", &schema, r#"{"n": 3, "s": "abc"}"#).passed);
        for bad in [
            r#"{"n": 0}"#,
            r#"{"s": "abc"}"#,
            r#"{"n": 1, "x": 1}"#,
            r#"{"n": 1, "s": "ABC"}"#,
            "not json",
            "[]",
        ] {
            let c = check_json("o", &schema, bad);
            assert!(!c.passed, "{bad}");
            assert!(!c.detail.is_empty());
        }
    }

    #[test]
    fn schemas_that_are_not_schemas_or_reach_outside_are_refused() {
        assert!(compile_schema("{").is_err());
        assert!(compile_schema(r#"{"type": 5}"#).is_err());
        assert!(compile_schema(r#"{"$ref": "https://example.com/schema.json"}"#).is_err());
        assert!(compile_schema(r#"{"$ref": "file:///etc/passwd"}"#).is_err());
        assert!(compile_schema(r#"{"type":"string","pattern":"(a"}"#).is_err());
        assert!(
            compile_schema(r##"{"$defs":{"a":{"type":"integer"}},"$ref":"#/$defs/a"}"##).is_ok()
        );
    }

    #[test]
    fn test_threshold_counts_passed_among_run() {
        let counts = |passed, failed, skipped| aegis::TestCounts {
            passed,
            failed,
            skipped,
        };
        // 9 of 10 = 900 000 ppm against 900 000: passes; against 950 000: fails.
        assert!(check_tests("t", 900_000, 1, &counts(9, 1, 5)).passed);
        assert!(!check_tests("t", 950_000, 1, &counts(9, 1, 0)).passed);
        // Every test must pass by default; skipped tests do not count.
        assert!(check_tests("t", 1_000_000, 1, &counts(4, 0, 100)).passed);
        assert!(!check_tests("t", 1_000_000, 1, &counts(4, 1, 0)).passed);
        // Nothing ran: fails even at 0 ppm.
        assert!(!check_tests("t", 0, 1, &counts(0, 0, 7)).passed);
        // Too few tests.
        assert!(!check_tests("t", 0, 20, &counts(19, 0, 0)).passed);
        assert!(check_tests("t", 0, 20, &counts(0, 20, 0)).passed);
        // No overflow at the extremes.
        assert!(check_tests("t", 1_000_000, 1, &counts(u64::MAX, 0, u64::MAX)).passed);
        assert!(!check_tests("t", 1, 1, &counts(0, u64::MAX, 0)).passed);
    }
}
