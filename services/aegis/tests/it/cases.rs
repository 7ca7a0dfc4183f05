//! Ground truth: cases with receipts, simulation runs with seeded behaviours, the scoreboard,
//! and the scoreboard's weights deciding a quorum.

use http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Aegis, b64, code, objective_evidence, objective_work, sha, state, verify};

const CASE_SCHEMA: &str = "oa.aegis.ground_truth_case_receipt.v1";

/// A known-answer case: an artifact with an expected hash, and evidence that matches it (an
/// expected pass) or not (an expected fail).
fn case(i: usize, pass: bool) -> Value {
    let expected = format!("answer {i}");
    let given = if pass {
        expected.clone()
    } else {
        format!("wrong {i}")
    };
    json!({
        "idempotency_key": format!("case-{i}"),
        "work": {"kind": "data.extract", "agent_id": "gt", "amount_msat": "1000",
                 "objective_hash": sha(expected.as_bytes())},
        "evidence": [{"name": "artifact", "artifact": b64(given.as_bytes())}],
        "expected_verdict": if pass { "VERIFICATION_VERDICT_PASSED" } else { "VERIFICATION_VERDICT_FAILED" },
        "label": format!("case {i}")
    })
}

/// Five cases that should pass and five that should fail.
async fn ten_cases(a: &Aegis) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..10 {
        let r = a.ok("/v1/aegis/cases/create", case(i, i % 2 == 0)).await;
        ids.push(r["case"]["case_id"].as_str().unwrap().to_owned());
    }
    ids
}

pub async fn cases_and_receipts(a: &Aegis) {
    let r = a.ok("/v1/aegis/cases/create", case(0, true)).await;
    let receipt: oa_receipts::Receipt = serde_json::from_value(r["receipt"].clone()).unwrap();
    receipt.verify().unwrap();
    assert_eq!(receipt.schema, CASE_SCHEMA);
    let body = serde_json::to_value(&receipt.body).unwrap();
    assert_eq!(body["case_id"], r["case"]["case_id"]);
    assert_eq!(body["expected_verdict"], "passed");
    assert_eq!(body["work_hash"], r["case"]["work_hash"]);
    assert_eq!(r["case"]["receipt_hash"], receipt.hash.to_string());
    // Replay and conflict.
    assert_eq!(a.ok("/v1/aegis/cases/create", case(0, true)).await, r);
    let (s, err) = a.post("/v1/aegis/cases/create", case(0, false)).await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::CONFLICT, "IDEMPOTENCY_CONFLICT")
    );
    // A case whose own checks contradict its answer is refused, and records nothing.
    let mut wrong = case(1, true);
    wrong["expected_verdict"] = json!("VERIFICATION_VERDICT_FAILED");
    let (s, err) = a.post("/v1/aegis/cases/create", wrong).await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::CONFLICT, "CASE_CONTRADICTS_CHECKS")
    );
    let mut wrong = case(2, false);
    wrong["expected_verdict"] = json!("VERIFICATION_VERDICT_PASSED");
    let (s, err) = a.post("/v1/aegis/cases/create", wrong).await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::CONFLICT, "CASE_CONTRADICTS_CHECKS")
    );
    assert_eq!(a.count("aegis_cases").await, 1);
    assert_eq!(a.receipts_of(CASE_SCHEMA).await.len(), 1);
    // Pages.
    for i in 3..8 {
        a.ok("/v1/aegis/cases/create", case(i, true)).await;
    }
    let (s, p1) = a.get("/v1/aegis/cases?limit=4").await;
    assert_eq!(s, StatusCode::OK, "{p1}");
    assert_eq!(p1["cases"].as_array().unwrap().len(), 4);
    let after = p1["next_after"].as_str().unwrap();
    let (_, p2) = a
        .get(&format!("/v1/aegis/cases?limit=4&after={after}"))
        .await;
    assert_eq!(p2["cases"].as_array().unwrap().len(), 2);
    assert_eq!(p2["next_after"], "");
    let c = &p1["cases"][0];
    assert_eq!(c["expected_verdict"], "VERIFICATION_VERDICT_PASSED");
    assert_eq!(c["work"]["kind"], "data.extract");
    assert_eq!(c["evidence"][0]["name"], "artifact");
    let report = a.audit().await;
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test]
async fn cases_are_recorded_with_a_receipt_listed_and_checked_against_their_answer() {
    cases_and_receipts(&Aegis::start().await).await;
}

fn entry<'a>(board: &'a Value, id: &str) -> &'a Value {
    board
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["verifier_id"] == id)
        .unwrap_or_else(|| panic!("{id} not on the board"))
}

fn counts(e: &Value) -> Vec<String> {
    [
        "total",
        "correct",
        "false_pass",
        "false_fail",
        "expected_pass",
        "expected_fail",
    ]
    .iter()
    .map(|k| e[*k].as_str().unwrap_or("?").to_owned())
    .collect()
}

fn sim(behaviour: &str, seed: u64, noise_ppm: u32) -> Option<Value> {
    Some(json!({"behaviour": behaviour, "seed": seed.to_string(), "noise_ppm": noise_ppm}))
}

pub async fn simulation(a: &Aegis) {
    let ids = ten_cases(a).await;
    let honest = a
        .verifier("honest", "model-a", sim("SIM_BEHAVIOUR_HONEST", 0, 0))
        .await;
    let yes = a
        .verifier("yes-man", "model-b", sim("SIM_BEHAVIOUR_ALWAYS_PASS", 0, 0))
        .await;
    a.verifier("no-man", "model-c", sim("SIM_BEHAVIOUR_ALWAYS_FAIL", 0, 0))
        .await;
    let noisy = a
        .verifier("noisy", "model-d", sim("SIM_BEHAVIOUR_NOISY", 42, 300_000))
        .await;
    let honest2 = a
        .verifier("honest-2", "model-e", sim("SIM_BEHAVIOUR_HONEST", 0, 0))
        .await;
    // A verifier without a simulation profile is skipped.
    a.verifier("real", "model-f", None).await;

    let run = json!({"idempotency_key": "run-1"});
    let r = a.ok("/v1/aegis/sim/run", run.clone()).await;
    assert_eq!(r["results"].as_array().unwrap().len(), 50);
    assert_eq!(a.ok("/v1/aegis/sim/run", run).await, r);
    let board = &r["scoreboard"];
    // Honest: 10 of 10. Always-pass: right on the 5 passes, passes all 5 fails. Always-fail:
    // the mirror image.
    assert_eq!(
        counts(entry(board, "honest")),
        ["10", "10", "0", "0", "5", "5"]
    );
    assert_eq!(
        counts(entry(board, "yes-man")),
        ["10", "5", "5", "0", "5", "5"]
    );
    assert_eq!(
        counts(entry(board, "no-man")),
        ["10", "5", "0", "5", "5", "5"]
    );
    let e = entry(board, "honest");
    assert_eq!(
        (
            e["accuracy_ppm"].as_u64(),
            e["weight_ppm"].as_u64(),
            e["scored"].as_bool()
        ),
        (Some(1_000_000), Some(1_000_000), Some(true))
    );
    let e = entry(board, "yes-man");
    assert_eq!(
        (
            e["accuracy_ppm"].as_u64(),
            e["false_pass_rate_ppm"].as_u64(),
            e["false_fail_rate_ppm"].as_u64(),
            e["weight_ppm"].as_u64()
        ),
        (Some(500_000), Some(1_000_000), Some(0), Some(0))
    );
    // The noisy verifier's results are exactly what its seeded draws say.
    let run_id = r["run_id"].as_str().unwrap();
    let mut want = aegis::sim::Score::default();
    for (i, id) in ids.iter().enumerate() {
        let expected = if i % 2 == 0 {
            aegis::model::Verdict::Passed
        } else {
            aegis::model::Verdict::Failed
        };
        let profile = aegis::sim::Profile {
            behaviour: aegis::sim::Behaviour::Noisy,
            seed: 42,
            noise_ppm: 300_000,
        };
        want.add(
            expected,
            aegis::sim::simulate(&profile, "noisy", id, run_id, expected),
        );
    }
    let e = entry(board, "noisy");
    assert_eq!(
        counts(e),
        [
            want.total,
            want.correct,
            want.false_pass,
            want.false_fail,
            want.expected_pass,
            want.expected_fail
        ]
        .map(|v| v.to_string())
    );
    assert_eq!(
        e["accuracy_ppm"].as_u64(),
        Some(u64::from(want.accuracy_ppm()))
    );
    // The unsimulated verifier is on the board with nothing run (unscored: default weight).
    let e = entry(board, "real");
    assert_eq!(
        (
            e["total"].as_str(),
            e["weight_ppm"].as_u64(),
            e["scored"].as_bool()
        ),
        (Some("0"), Some(500_000), Some(false))
    );
    let (_, again) = a.get("/v1/aegis/sim/scoreboard").await;
    assert_eq!(&again["entries"], board);

    // Naming: a verifier without a profile, an unknown case.
    let (s, err) = a
        .post(
            "/v1/aegis/sim/run",
            json!({"idempotency_key": "run-2", "verifier_ids": ["real"]}),
        )
        .await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::CONFLICT, "VERIFIER_NOT_SIMULATED")
    );
    let (s, err) = a
        .post(
            "/v1/aegis/sim/run",
            json!({"idempotency_key": "run-3", "verifier_ids": ["honest"], "case_ids": ["case_nope"]}),
        )
        .await;
    assert_eq!((s, code(&err)), (StatusCode::NOT_FOUND, "CASE_NOT_FOUND"));
    let r2 = a
        .ok(
            "/v1/aegis/sim/run",
            json!({"idempotency_key": "run-4", "verifier_ids": ["honest"], "case_ids": [ids[0]]}),
        )
        .await;
    assert_eq!(r2["results"].as_array().unwrap().len(), 1);
    assert_eq!(counts(entry(&r2["scoreboard"], "honest"))[0], "11");

    // The weights decide a quorum: the always-pass verifier's pass is recorded with weight 0
    // and does not count; two honest verifiers of different families decide.
    let v = a
        .ok(
            "/v1/aegis/verify",
            json!({"idempotency_key": "q-1", "scope": "job:q-1",
                   "work": {"kind": "writing", "agent_id": "agent-s", "amount_msat": "10",
                            "outputs": [{"name": "essay", "type": "OUTPUT_TYPE_TEXT"}]}}),
        )
        .await;
    let (_, r) = a.verdict(&v, "yes-man", &yes, "passed").await;
    assert_eq!(
        (
            state(&r),
            r["detail"]["verdicts"][0]["weight_ppm"].as_u64(),
            r["detail"]["quorum"]["counted"].as_u64()
        ),
        ("VERIFICATION_VERDICT_PENDING", Some(0), Some(0))
    );
    let (_, r) = a.verdict(&v, "honest", &honest, "failed").await;
    assert_eq!(state(&r), "VERIFICATION_VERDICT_PENDING");
    let (_, r) = a.verdict(&v, "honest-2", &honest2, "failed").await;
    assert_eq!(state(&r), "VERIFICATION_VERDICT_PENDING");
    // Quorum 3 needs a third counted verdict: noisy (scored) gives it.
    let (_, list) = a.get("/v1/aegis/verifiers").await;
    let noisy_weight = list["verifiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["verifier_id"] == "noisy")
        .unwrap()["weight_ppm"]
        .as_u64()
        .unwrap();
    assert_eq!(noisy_weight, u64::from(aegis::quorum::weight_ppm(&want)));
    // Its pass (weight at most 1e6) against 2e6 failing: failed, if it counts at all (its
    // weight depends on this run's draws).
    let (_, r) = a.verdict(&v, "noisy", &noisy, "passed").await;
    let want_state = if noisy_weight > 0 {
        "VERIFICATION_VERDICT_FAILED"
    } else {
        "VERIFICATION_VERDICT_PENDING"
    };
    assert_eq!(state(&r), want_state, "{r}");
}

#[tokio::test]
async fn simulated_verifiers_are_scored_and_the_scoreboard_sets_quorum_weights() {
    simulation(&Aegis::start().await).await;
}

#[tokio::test]
async fn a_disabled_verifier_is_skipped_by_runs_and_refused_by_name() {
    let a = Aegis::start().await;
    ten_cases(&a).await;
    a.verifier("h", "model-a", sim("SIM_BEHAVIOUR_HONEST", 0, 0))
        .await;
    a.verifier("gone", "model-b", sim("SIM_BEHAVIOUR_HONEST", 0, 0))
        .await;
    a.ok(
        "/v1/aegis/verifiers/gone/disable",
        json!({"idempotency_key": "d", "reason": "compromised"}),
    )
    .await;
    let (s, err) = a
        .post(
            "/v1/aegis/verifiers/gone/disable",
            json!({"idempotency_key": "d2", "reason": "again"}),
        )
        .await;
    assert_eq!((s, code(&err)), (StatusCode::CONFLICT, "VERIFIER_DISABLED"));
    let r = a
        .ok("/v1/aegis/sim/run", json!({"idempotency_key": "r"}))
        .await;
    assert!(
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["verifier_id"] == "h")
    );
    let (s, err) = a
        .post(
            "/v1/aegis/sim/run",
            json!({"idempotency_key": "r2", "verifier_ids": ["gone"]}),
        )
        .await;
    assert_eq!((s, code(&err)), (StatusCode::CONFLICT, "VERIFIER_DISABLED"));
    let (_, list) = a.get("/v1/aegis/verifiers").await;
    let gone = list["verifiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["verifier_id"] == "gone")
        .unwrap()
        .clone();
    assert_eq!(
        (gone["active"].as_bool(), gone["disabled_reason"].as_str()),
        (Some(false), Some("compromised"))
    );
    // No cases, or no simulated verifier: nothing to simulate.
    let b = Aegis::start().await;
    let (s, err) = b
        .post("/v1/aegis/sim/run", json!({"idempotency_key": "r"}))
        .await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::CONFLICT, "NOTHING_TO_SIMULATE")
    );
    // And objective verification still works alongside.
    let v = verify(&b, "x", objective_work("a", 1), objective_evidence(None)).await;
    assert_eq!(state(&v), "VERIFICATION_VERDICT_PASSED");
}
