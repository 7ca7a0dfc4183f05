//! Verifications through each transition and each refusal of the state machine, with the
//! receipt Hydra checks.

use http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    Aegis, code, low_work, objective_evidence, objective_work, state, subjective_work, verify,
};

const SCHEMA: &str = "oa.aegis.verification_receipt.v1";

/// What Hydra does with Aegis's answer (services/hydra/src/aegis.rs `check`): the receipt
/// verifies, is of the class, and its body states this verification's id, scope and verdict.
fn hydra_accepts(answer: &Value, id: &str, scope: &str) -> String {
    let receipt: oa_receipts::Receipt =
        serde_json::from_value(answer["receipt"].clone()).expect("a receipt");
    receipt.verify().unwrap();
    assert_eq!(receipt.schema, SCHEMA);
    assert_eq!(receipt.issuer.service, "aegis");
    let body = serde_json::to_value(&receipt.body).unwrap();
    assert_eq!(body["verification_id"], id);
    assert_eq!(body["scope"], scope);
    // Exactly the fields the contract documents (subject_ref only when set).
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut want = vec![
        "decided_at_ms",
        "scope",
        "tier",
        "verdict",
        "verification_id",
    ];
    if body.get("subject_ref").is_some() {
        want.push("subject_ref");
        want.sort_unstable();
    }
    assert_eq!(keys, want);
    assert!(body["decided_at_ms"].is_string());
    body["verdict"].as_str().unwrap().to_owned()
}

/// new -> passed (objective tier): one receipt, readable by Hydra's identity with aegis:read.
pub async fn objective_pass(a: &Aegis) {
    let work = objective_work("agent-1", 50_000);
    let req = json!({"idempotency_key": "v-1", "work": work, "evidence": objective_evidence(None),
                     "scope": "job-1", "subject_ref": "hydra:envelope:env_1"});
    let v = a.ok("/v1/aegis/verify", req.clone()).await;
    assert_eq!(state(&v), "VERIFICATION_VERDICT_PASSED");
    assert_eq!(v["verification"]["tier"], "objective");
    assert_eq!(
        v["detail"]["verifiability_class"],
        "VERIFIABILITY_CLASS_OBJECTIVE"
    );
    assert_eq!(v["detail"]["decided_by"], "objective_checks");
    let checks = v["detail"]["checks"].as_array().unwrap();
    assert_eq!(
        checks
            .iter()
            .map(|c| (c["check"].as_str().unwrap(), c["passed"].as_bool().unwrap()))
            .collect::<Vec<_>>(),
        vec![
            ("sha256", true),
            ("json_schema", true),
            ("test_threshold", true)
        ]
    );
    let id = v["verification"]["verification_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(hydra_accepts(&v, &id, "job-1"), "passed");
    assert_eq!(a.receipts_of(SCHEMA).await.len(), 1);

    // GET per the contract, with Hydra's own identity and scope.
    let hydra = a.token_of("hydra", &["aegis:read"]);
    let (s, got) = a
        .call(
            "GET",
            &format!("/v1/aegis/verification/{id}"),
            Some(&hydra),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(got["verification"], v["verification"]);
    assert_eq!(got["receipt"], v["receipt"]);
    assert_eq!(got["verification"]["subject_ref"], "hydra:envelope:env_1");
    assert!(got.get("detail").is_none());
    let (s, _) = a
        .call("GET", "/v1/aegis/verification/ver_nope", Some(&hydra), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Same key, same request: the same answer, no second receipt. Different request: 409.
    let again = a.ok("/v1/aegis/verify", req.clone()).await;
    assert_eq!(again, v);
    let mut other = req;
    other["scope"] = json!("job-2");
    let (s, err) = a.post("/v1/aegis/verify", other).await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::CONFLICT, "IDEMPOTENCY_CONFLICT")
    );
    assert_eq!(a.receipts_of(SCHEMA).await.len(), 1);
    assert_eq!(a.count("aegis_verifications").await, 1);
}

#[tokio::test]
async fn objective_work_passes_at_once_with_one_receipt_hydra_accepts() {
    objective_pass(&Aegis::start().await).await;
}

/// new -> failed: each kind of objective check failing, at the objective tier and above.
pub async fn objective_failures(a: &Aegis) {
    for broken in ["file", "summary", "tests"] {
        let v = verify(
            a,
            &format!("fail-{broken}"),
            objective_work("agent-2", 1_000),
            objective_evidence(Some(broken)),
        )
        .await;
        assert_eq!(state(&v), "VERIFICATION_VERDICT_FAILED", "{broken}");
        let failed: Vec<&str> = v["detail"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["passed"] == false)
            .map(|c| c["output"].as_str().unwrap())
            .collect();
        assert_eq!(failed, vec![broken]);
        let id = v["verification"]["verification_id"].as_str().unwrap();
        assert_eq!(
            hydra_accepts(&v, id, &format!("job:fail-{broken}")),
            "failed"
        );
    }
    // At the heterogeneous tier too: a TEXT output plus a JSON output that breaks its schema
    // fails at once; no verifier is asked.
    let mut work = subjective_work("agent-3", 1_000);
    work["outputs"].as_array_mut().unwrap().push(
        json!({"name": "summary", "type": "OUTPUT_TYPE_JSON", "json_schema": crate::harness::SCHEMA}),
    );
    let v = verify(
        a,
        "fail-hetero",
        work,
        json!([{"name": "summary", "json": "not json at all"}]),
    )
    .await;
    assert_eq!(state(&v), "VERIFICATION_VERDICT_FAILED");
    assert_eq!(v["verification"]["tier"], "heterogeneous");
    assert!(
        v["detail"]["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("not JSON")
    );
    assert_eq!(a.receipts_of(SCHEMA).await.len(), 4);
}

#[tokio::test]
async fn a_failed_objective_check_fails_the_verification_at_any_tier() {
    objective_failures(&Aegis::start().await).await;
}

/// new -> pending -> passed by quorum; forged, wrong-key, replayed and late verdicts refused.
pub async fn quorum_pass(a: &Aegis) {
    let k1 = a.verifier("v1", "model-a", None).await;
    let k2 = a.verifier("v2", "model-b", None).await;
    let k3 = a.verifier("v3", "model-a", None).await;
    let k4 = a.verifier("v4", "model-c", None).await;
    let v = verify(a, "h-1", subjective_work("agent-4", 5_000), json!([])).await;
    assert_eq!(state(&v), "VERIFICATION_VERDICT_PENDING");
    assert_eq!(v["verification"]["tier"], "heterogeneous");
    assert!(v.get("receipt").is_none_or(Value::is_null), "{v}");
    let id = v["verification"]["verification_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let quorum = &v["detail"]["quorum"];
    assert_eq!(
        (quorum["size"].as_u64(), quorum["min_families"].as_u64()),
        (Some(3), Some(2))
    );
    // Pending: GET shows no receipt yet.
    let (_, got) = a.get(&format!("/v1/aegis/verification/{id}")).await;
    assert_eq!(
        got["verification"]["verdict"],
        "VERIFICATION_VERDICT_PENDING"
    );
    assert!(got.get("receipt").is_none_or(Value::is_null));

    let verdicts = || async { a.count("aegis_verdicts").await };
    // Forged: v1's id, signed with v2's key.
    let (s, err) = a.verdict(&v, "v1", &k2, "passed").await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::BAD_REQUEST, "INVALID_VERDICT_SIGNATURE")
    );
    // A signature of another verdict (failed) presented as passed.
    let hash = aegis::quorum::statement_hash(
        &id,
        v["detail"]["work_hash"].as_str().unwrap(),
        "v1",
        aegis::model::Verdict::Failed,
    )
    .unwrap();
    let (s, err) = a
        .post(
            &format!("/v1/aegis/verification/{id}/verdict"),
            json!({"idempotency_key": "forged-2", "verifier_id": "v1",
                   "verdict": "VERIFICATION_VERDICT_PASSED", "signature": k1.sign(&hash)}),
        )
        .await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::BAD_REQUEST, "INVALID_VERDICT_SIGNATURE")
    );
    // An unregistered verifier.
    let (s, err) = a.verdict(&v, "nobody", &k1, "passed").await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::NOT_FOUND, "VERIFIER_NOT_FOUND")
    );
    assert_eq!(verdicts().await, 0);

    // v1 passes: pending (1 counted of 3).
    let (s, r1) = a.verdict(&v, "v1", &k1, "passed").await;
    assert_eq!(s, StatusCode::OK, "{r1}");
    assert_eq!(state(&r1), "VERIFICATION_VERDICT_PENDING");
    assert_eq!(r1["detail"]["quorum"]["counted"], 1);
    // v1 again under a new key: refused.
    let hash = aegis::quorum::statement_hash(
        &id,
        v["detail"]["work_hash"].as_str().unwrap(),
        "v1",
        aegis::model::Verdict::Passed,
    )
    .unwrap();
    let (s, err) = a
        .post(
            &format!("/v1/aegis/verification/{id}/verdict"),
            json!({"idempotency_key": "again", "verifier_id": "v1",
                   "verdict": "VERIFICATION_VERDICT_PASSED", "signature": k1.sign(&hash)}),
        )
        .await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::CONFLICT, "VERDICT_ALREADY_SUBMITTED")
    );
    // v3 (same family as v1) passes: 2 counted, 1 family: pending.
    let (_, r3) = a.verdict(&v, "v3", &k3, "passed").await;
    assert_eq!(state(&r3), "VERIFICATION_VERDICT_PENDING");
    // v2 fails: 3 counted, 2 families; unscored verifiers weigh 500 000 each:
    // pass 1 000 000 >= 2 * 500 000: passed.
    let (path, body) = crate::harness::verdict_request(&v, "v2", &k2, "failed");
    let (_, r2) = a.post(&path, body.clone()).await;
    assert_eq!(state(&r2), "VERIFICATION_VERDICT_PASSED", "{r2}");
    let q = &r2["detail"]["quorum"];
    assert_eq!(
        (
            q["counted"].as_u64(),
            q["families"].as_u64(),
            q["pass_weight_ppm"].as_str(),
            q["fail_weight_ppm"].as_str()
        ),
        (Some(3), Some(2), Some("1000000"), Some("500000"))
    );
    assert_eq!(r2["detail"]["decided_by"], "quorum");
    assert_eq!(hydra_accepts(&r2, &id, "job:h-1"), "passed");
    // The verdict that decided it replays; a late verdict is refused.
    let (s, replay) = a.post(&path, body).await;
    assert_eq!((s, &replay), (StatusCode::OK, &r2));
    // The same verifier's same verdict signed anew under the same key is another request.
    let (s, err) = a.verdict(&v, "v2", &k2, "failed").await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::CONFLICT, "IDEMPOTENCY_CONFLICT")
    );
    let (s, err) = a.verdict(&v, "v4", &k4, "passed").await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::CONFLICT, "VERIFICATION_DECIDED")
    );
    assert_eq!(verdicts().await, 3);
    assert_eq!(a.receipts_of(SCHEMA).await.len(), 1);
    // The signatures are kept, and each verifies offline.
    let detail = a
        .get(&format!("/v1/aegis/verification/{id}/detail"))
        .await
        .1;
    for rec in detail["detail"]["verdicts"].as_array().unwrap() {
        let vid = rec["verifier_id"].as_str().unwrap();
        let key = match vid {
            "v1" => &k1,
            "v2" => &k2,
            _ => &k3,
        };
        let verdict = if rec["verdict"] == "VERIFICATION_VERDICT_PASSED" {
            aegis::model::Verdict::Passed
        } else {
            aegis::model::Verdict::Failed
        };
        let h = aegis::quorum::statement_hash(
            &id,
            detail["detail"]["work_hash"].as_str().unwrap(),
            vid,
            verdict,
        )
        .unwrap();
        oa_receipts::verify_signature(key.key_id(), &h, rec["signature"].as_str().unwrap())
            .unwrap();
    }
}

#[tokio::test]
async fn heterogeneous_quorum_passes_and_forged_or_wrong_key_verdicts_are_refused() {
    quorum_pass(&Aegis::start().await).await;
}

/// pending -> failed by a split quorum; a disabled verifier is refused.
pub async fn quorum_fail(a: &Aegis) {
    let k1 = a.verifier("f1", "model-a", None).await;
    let k2 = a.verifier("f2", "model-b", None).await;
    let k3 = a.verifier("f3", "model-c", None).await;
    let k4 = a.verifier("f4", "model-d", None).await;
    let v = verify(a, "h-2", subjective_work("agent-5", 5_000), json!([])).await;
    a.ok(
        "/v1/aegis/verifiers/f4/disable",
        json!({"idempotency_key": "dis-f4", "reason": "key leaked"}),
    )
    .await;
    let (s, err) = a.verdict(&v, "f4", &k4, "passed").await;
    assert_eq!((s, code(&err)), (StatusCode::CONFLICT, "VERIFIER_DISABLED"));
    let (_, r) = a.verdict(&v, "f1", &k1, "passed").await;
    assert_eq!(state(&r), "VERIFICATION_VERDICT_PENDING");
    let (_, r) = a.verdict(&v, "f2", &k2, "failed").await;
    assert_eq!(state(&r), "VERIFICATION_VERDICT_PENDING");
    // pass 500 000 < 2 * 1 000 000: failed.
    let (_, r) = a.verdict(&v, "f3", &k3, "failed").await;
    assert_eq!(state(&r), "VERIFICATION_VERDICT_FAILED");
    let id = r["verification"]["verification_id"].as_str().unwrap();
    assert_eq!(hydra_accepts(&r, id, "job:h-2"), "failed");
}

#[tokio::test]
async fn a_split_quorum_fails_and_a_disabled_verifier_is_refused() {
    quorum_fail(&Aegis::start().await).await;
}

/// new -> pending -> passed | failed by a decider; every refusal of the decide step.
pub async fn decisions(a: &Aegis) {
    // ACTION output: adjudicated.
    let v = verify(a, "adj-1", low_work("agent-6", 2_000), json!([])).await;
    assert_eq!(
        (state(&v), v["verification"]["tier"].as_str()),
        ("VERIFICATION_VERDICT_PENDING", Some("adjudicated"))
    );
    let id = v["verification"]["verification_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // It waits in the queue.
    let (s, q) = a
        .call("GET", "/v1/aegis/queue", Some(&a.decider), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{q}");
    let queued: Vec<&str> = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["verification"]["verification_id"].as_str().unwrap())
        .collect();
    assert_eq!(queued, vec![id.as_str()]);
    // Verifiers cannot decide an adjudicated verification.
    let k = a.verifier("d1", "model-a", None).await;
    let (s, err) = a.verdict(&v, "d1", &k, "passed").await;
    assert_eq!((s, code(&err)), (StatusCode::CONFLICT, "WRONG_TIER"));
    let decide = |key: &str, verdict: &str| json!({"idempotency_key": key, "verdict": verdict, "reason": "looked at the deploy log"});
    let path = format!("/v1/aegis/verification/{id}/decide");
    // The requester (treasury) may not decide, even holding the scope.
    let own = a.token_of("treasury", &["aegis:decide"]);
    let (s, err) = a
        .post_as(&own, &path, decide("d-own", "VERIFICATION_VERDICT_PASSED"))
        .await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::FORBIDDEN, "DECIDER_NOT_INDEPENDENT")
    );
    // PENDING is not a decision.
    let (s, err) = a
        .post_as(
            &a.decider,
            &path,
            decide("d-pending", "VERIFICATION_VERDICT_PENDING"),
        )
        .await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::BAD_REQUEST, "INVALID_VERDICT")
    );
    let (s, r) = a
        .post_as(
            &a.decider,
            &path,
            decide("d-1", "VERIFICATION_VERDICT_PASSED"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(state(&r), "VERIFICATION_VERDICT_PASSED");
    assert_eq!(r["detail"]["decided_by"], "operator");
    assert_eq!(hydra_accepts(&r, &id, "job:adj-1"), "passed");
    // Decided: a second decision is refused; the first replays.
    let (s, err) = a
        .post_as(
            &a.decider,
            &path,
            decide("d-2", "VERIFICATION_VERDICT_FAILED"),
        )
        .await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::CONFLICT, "VERIFICATION_DECIDED")
    );
    let (s, again) = a
        .post_as(
            &a.decider,
            &path,
            decide("d-1", "VERIFICATION_VERDICT_PASSED"),
        )
        .await;
    assert_eq!((s, again), (StatusCode::OK, r));
    let (_, q) = a
        .call("GET", "/v1/aegis/queue", Some(&a.decider), None)
        .await;
    assert_eq!(q["items"].as_array().unwrap().len(), 0);

    // Human tier (asked for with min_tier): aegis:decide is not enough.
    let h = a
        .ok(
            "/v1/aegis/verify",
            json!({"idempotency_key": "hum-1", "work": objective_work("agent-6", 10),
                   "evidence": objective_evidence(None), "scope": "job:hum-1",
                   "min_tier": "INDEPENDENCE_TIER_HUMAN"}),
        )
        .await;
    assert_eq!(
        (state(&h), h["verification"]["tier"].as_str()),
        ("VERIFICATION_VERDICT_PENDING", Some("human"))
    );
    assert_eq!(h["detail"]["raise_reasons"], json!(["MIN_TIER"]));
    let hid = h["verification"]["verification_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let hpath = format!("/v1/aegis/verification/{hid}/decide");
    let (s, err) = a
        .post_as(
            &a.decider,
            &hpath,
            decide("h-1", "VERIFICATION_VERDICT_FAILED"),
        )
        .await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::FORBIDDEN, "HUMAN_DECIDER_REQUIRED")
    );
    let (s, r) = a
        .post_as(
            &a.human,
            &hpath,
            decide("h-2", "VERIFICATION_VERDICT_FAILED"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(state(&r), "VERIFICATION_VERDICT_FAILED");
    assert_eq!(hydra_accepts(&r, &hid, "job:hum-1"), "failed");

    // Deciding a heterogeneous verification, or an objective (final) one, is refused.
    let het = verify(a, "het-1", subjective_work("agent-6", 10), json!([])).await;
    let het_id = het["verification"]["verification_id"].as_str().unwrap();
    let (s, err) = a
        .post_as(
            &a.decider,
            &format!("/v1/aegis/verification/{het_id}/decide"),
            decide("x-1", "VERIFICATION_VERDICT_PASSED"),
        )
        .await;
    assert_eq!((s, code(&err)), (StatusCode::CONFLICT, "WRONG_TIER"));
    let obj = verify(
        a,
        "obj-1",
        objective_work("agent-6", 10),
        objective_evidence(None),
    )
    .await;
    let obj_id = obj["verification"]["verification_id"].as_str().unwrap();
    let (s, err) = a
        .post_as(
            &a.decider,
            &format!("/v1/aegis/verification/{obj_id}/decide"),
            decide("x-2", "VERIFICATION_VERDICT_FAILED"),
        )
        .await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::CONFLICT, "VERIFICATION_DECIDED")
    );
    let (s, err) = a
        .post_as(
            &a.decider,
            "/v1/aegis/verification/ver_unknown/decide",
            decide("x-3", "VERIFICATION_VERDICT_FAILED"),
        )
        .await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::NOT_FOUND, "VERIFICATION_NOT_FOUND")
    );
    // Refused requests left no receipts: adj-1, hum-1 and obj-1 have one each.
    assert_eq!(a.receipts_of(SCHEMA).await.len(), 3);
    let report = a.audit().await;
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test]
async fn adjudicated_and_human_verifications_wait_for_an_independent_scoped_decider() {
    decisions(&Aegis::start().await).await;
}

#[tokio::test]
async fn verification_events_are_journaled() {
    let a = Aegis::start().await;
    verify(
        &a,
        "ev-1",
        objective_work("agent-7", 10),
        objective_evidence(None),
    )
    .await;
    let (s, page) = a
        .call(
            "GET",
            "/v1/events?topic=aegis.verification&after_seq=0",
            Some(&a.token_of("operator", &["events:read"])),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.to_string().contains("verification_created"), "{page}");
}

/// Concurrent verdicts on one verification: the quorum is decided once, with one receipt, and
/// every verdict is either counted or refused as late.
pub async fn concurrent_verdicts(a: &Aegis) {
    let mut keys = Vec::new();
    for i in 0..6 {
        let id = format!("c{i}");
        let key = a.verifier(&id, &format!("model-{}", i % 3), None).await;
        keys.push((id, key));
    }
    let v = verify(a, "conc", subjective_work("agent-9", 5_000), json!([])).await;
    let answers = futures::future::join_all(
        keys.iter()
            .map(|(id, key)| a.verdict(&v, id, key, "passed")),
    )
    .await;
    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    for (s, body) in &answers {
        assert!(
            *s == StatusCode::OK
                || (*s == StatusCode::CONFLICT && code(body) == "VERIFICATION_DECIDED"),
            "{s} {body}"
        );
    }
    assert_eq!(ok, 3, "exactly the quorum's verdicts are accepted");
    assert_eq!(a.count("aegis_verdicts").await, 3);
    assert_eq!(a.receipts_of(SCHEMA).await.len(), 1);
    let id = v["verification"]["verification_id"].as_str().unwrap();
    let (_, got) = a.get(&format!("/v1/aegis/verification/{id}")).await;
    assert_eq!(
        got["verification"]["verdict"],
        "VERIFICATION_VERDICT_PASSED"
    );
}

#[tokio::test]
async fn concurrent_verdicts_decide_once() {
    concurrent_verdicts(&Aegis::start().await).await;
}

#[tokio::test]
async fn the_quorum_size_and_families_are_deployment_settings() {
    let a = Aegis::start_with(&["--quorum-size=1", "--quorum-min-families=1"]).await;
    let k = a.verifier("solo", "model-a", None).await;
    let v = verify(&a, "solo", subjective_work("agent-10", 10), json!([])).await;
    let (s, r) = a.verdict(&v, "solo", &k, "failed").await;
    assert_eq!(
        (s, state(&r)),
        (StatusCode::OK, "VERIFICATION_VERDICT_FAILED")
    );
    let parse = |args: &[&str]| {
        let mut flags = vec![
            "aegis",
            "--listen=127.0.0.1:0",
            "--database-url=sqlite://x",
            "--receipt-key-file=k",
            "--trust-file=t",
        ];
        flags.extend_from_slice(args);
        <aegis::Config as clap::Parser>::try_parse_from(flags).unwrap()
    };
    for bad in [
        &["--quorum-size=0"][..],
        &["--quorum-size=17"],
        &["--quorum-size=2", "--quorum-min-families=3"],
        &["--high-stakes-msat=10", "--critical-stakes-msat=9"],
    ] {
        let config = parse(bad);
        let clock = std::sync::Arc::new(oa_service::ManualClock::new(0));
        assert!(aegis::build(&config, clock).await.is_err(), "{bad:?}");
    }
}

/// Aegis's receipt satisfies the auditor's cross-service rules as Hydra links it
/// (`crates/receipts/src/links.rs`: a default for a failed verification names the verification's
/// id, verdict and scope); a Hydra receipt that misstates the scope is caught.
#[tokio::test]
async fn the_verification_receipt_meets_the_link_rules_hydra_receipts_rely_on() {
    use oa_receipts::{Hash, ReceiptDraft, ReceiptKey, links};

    let a = Aegis::start().await;
    let v = verify(
        &a,
        "lk",
        objective_work("agent-l", 10),
        objective_evidence(Some("file")),
    )
    .await;
    let aegis_receipt: oa_receipts::Receipt = serde_json::from_value(v["receipt"].clone()).unwrap();
    let id = v["verification"]["verification_id"].as_str().unwrap();
    let hydra = ReceiptKey::generate();
    let body = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect::<serde_json::Map<_, _>>()
    };
    let export = |scope: &str| {
        let issue = ReceiptDraft {
            schema: links::HYDRA_ENVELOPE_ISSUE.into(),
            receipt_id: "rcpt_issue".into(),
            idempotency_key: "k1".into(),
            links: vec![],
            body: body(&[("envelope_id", "env_1"), ("cap_msat", "10")]),
        }
        .seal(&hydra, "hydra", 0, Hash::ZERO, 1)
        .unwrap();
        let default = ReceiptDraft {
            schema: links::HYDRA_ENVELOPE_DEFAULT.into(),
            receipt_id: "rcpt_default".into(),
            idempotency_key: "k2".into(),
            links: vec![issue.hash, aegis_receipt.hash],
            body: body(&[
                ("envelope_id", "env_1"),
                ("cap_msat", "10"),
                ("status", "defaulted"),
                ("reason", "verification_failed"),
                ("verification_id", id),
                ("verification_verdict", "failed"),
                ("scope", scope),
                ("verification_receipt", &aegis_receipt.hash.to_string()),
                ("issue_receipt", &issue.hash.to_string()),
            ]),
        }
        .seal(&hydra, "hydra", 1, issue.hash, 2)
        .unwrap();
        let receipts = vec![aegis_receipt.clone(), issue, default];
        let keys: Vec<oa_receipts::Issuer> =
            vec![aegis_receipt.issuer.clone(), receipts[1].issuer.clone()];
        let mut out = Vec::new();
        oa_receipts::write_export(&mut out, &keys, &receipts).unwrap();
        oa_receipts::verify_export(std::io::BufReader::new(out.as_slice()))
    };
    let report = export("job:lk");
    assert!(report.is_ok(), "{report:?}");
    let report = export("another job");
    assert!(!report.is_ok());
}
