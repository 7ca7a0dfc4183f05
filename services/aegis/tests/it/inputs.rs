//! Bad input on every route: a typed 4xx with a stable code, and nothing recorded (no rows, no
//! receipts, no idempotency keys, no events). Auth refusals per route: no token is 401, a token
//! without the route's scope is 403 (before the body is looked at).

use http::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    Aegis, SCHEMA, b64, code, low_work, objective_evidence, objective_work, sha, subjective_work,
    verify,
};

async fn footprint(a: &Aegis) -> Vec<i64> {
    let mut out = Vec::new();
    for t in [
        "aegis_verifications",
        "aegis_verdicts",
        "aegis_verifiers",
        "aegis_risk_budgets",
        "aegis_cases",
        "aegis_sim_runs",
        "aegis_sim_results",
        "aegis_warranties",
        "aegis_bonds",
        "aegis_claims",
        "aegis_disputes",
        "ledger_transfers",
        "receipts",
        "idempotency_keys",
        "events",
    ] {
        out.push(a.count(t).await);
    }
    out
}

/// `base` with the fields of `over` replaced (`null` removes a field).
fn with(base: &Value, over: Value) -> Value {
    let mut b = base.clone();
    for (k, v) in over.as_object().unwrap() {
        if v.is_null() {
            b.as_object_mut().unwrap().remove(k);
        } else {
            b[k] = v.clone();
        }
    }
    b
}

/// `work` with the fields of `over` replaced.
fn work_with(over: Value) -> Value {
    with(&objective_work("agent-b", 1_000), over)
}

fn bad(body: Value, code: &'static str) -> (String, StatusCode, &'static str) {
    (body.to_string(), StatusCode::BAD_REQUEST, code)
}

async fn refused(a: &Aegis, token: &str, path: &str, cases: &[(String, StatusCode, &str)]) {
    for (body, status, want) in cases {
        let (got, err) = a.call("POST", path, Some(token), Some(body)).await;
        assert!(got.is_client_error(), "{path} {body}: {got} {err}");
        assert_eq!((got, code(&err)), (*status, *want), "{path} {body}: {err}");
    }
}

async fn refused_get(a: &Aegis, token: &str, cases: &[(&str, StatusCode, &str)]) {
    for (path, status, want) in cases {
        let (got, err) = a.call("GET", path, Some(token), None).await;
        assert_eq!((got, code(&err)), (*status, *want), "{path}: {err}");
    }
}

#[tokio::test]
async fn bad_requests_on_every_route_get_typed_4xx_and_change_nothing() {
    let a = Aegis::start().await;
    // Some state for the routes that act on something.
    let key = a.verifier("v1", "model-a", None).await;
    let het = verify(&a, "het", subjective_work("agent-b", 10), json!([])).await;
    let het_id = het["verification"]["verification_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let adj = verify(&a, "adj", low_work("agent-b", 10), json!([])).await;
    let adj_id = adj["verification"]["verification_id"]
        .as_str()
        .unwrap()
        .to_owned();
    a.ok(
        "/v1/aegis/cases/create",
        json!({"idempotency_key": "c", "work": {"kind": "k", "agent_id": "gt", "amount_msat": "1",
               "objective_hash": sha(b"x")}, "evidence": [{"name": "artifact", "artifact": b64(b"x")}],
               "expected_verdict": "VERIFICATION_VERDICT_PASSED"}),
    )
    .await;
    let before = footprint(&a).await;
    let t = a.token.clone();

    // Work units (classify; verify, quote and cases share the validation).
    let two_open = json!([{"name": "a", "type": "OUTPUT_TYPE_ARTIFACT"},
                          {"name": "b", "type": "OUTPUT_TYPE_ARTIFACT"}]);
    let many: Vec<Value> = (0..33)
        .map(|i| json!({"name": format!("o{i}"), "type": "OUTPUT_TYPE_TEXT"}))
        .collect();
    let out = |o: Value| work_with(json!({"outputs": [o]}));
    let work_cases = vec![
        bad(json!({}), "INVALID_WORK_UNIT"),
        bad(
            json!({"work": work_with(json!({"kind": ""}))}),
            "INVALID_KIND",
        ),
        bad(
            json!({"work": work_with(json!({"kind": "Data Extract"}))}),
            "INVALID_KIND",
        ),
        bad(
            json!({"work": work_with(json!({"agent_id": ""}))}),
            "INVALID_AGENT_ID",
        ),
        bad(
            json!({"work": work_with(json!({"agent_id": "a b"}))}),
            "INVALID_AGENT_ID",
        ),
        bad(
            json!({"work": work_with(json!({"agent_id": "a".repeat(65)}))}),
            "INVALID_AGENT_ID",
        ),
        bad(
            json!({"work": work_with(json!({"org_id": "o\n"}))}),
            "INVALID_ORG_ID",
        ),
        bad(
            json!({"work": work_with(json!({"amount_msat": "2100000000000000001"}))}),
            "INVALID_AMOUNT",
        ),
        bad(
            json!({"work": work_with(json!({"amount_msat": "-1"}))}),
            "INVALID_REQUEST",
        ),
        bad(
            json!({"work": work_with(json!({"amount_msat": 1.5}))}),
            "INVALID_REQUEST",
        ),
        bad(
            json!({"work": work_with(json!({"objective_hash": "abc"}))}),
            "INVALID_HASH",
        ),
        bad(
            json!({"work": work_with(json!({"objective_hash": sha(b"x"), "outputs": two_open}))}),
            "INVALID_WORK_UNIT",
        ),
        bad(
            json!({"work": work_with(json!({"outputs": many}))}),
            "INVALID_OUTPUT",
        ),
        bad(json!({"work": out(json!({"name": "x"}))}), "INVALID_OUTPUT"),
        bad(
            json!({"work": out(json!({"name": "x", "type": "OUTPUT_TYPE_NOPE"}))}),
            "INVALID_REQUEST",
        ),
        bad(
            json!({"work": out(json!({"name": "a b", "type": "OUTPUT_TYPE_TEXT"}))}),
            "INVALID_OUTPUT",
        ),
        bad(
            json!({"work": work_with(json!({"outputs": [
                {"name": "x", "type": "OUTPUT_TYPE_TEXT"}, {"name": "x", "type": "OUTPUT_TYPE_TEXT"}]}))}),
            "INVALID_OUTPUT",
        ),
        bad(
            json!({"work": out(json!({"name": "x", "type": "OUTPUT_TYPE_ARTIFACT", "expected_sha256": "sha256:ABC"}))}),
            "INVALID_HASH",
        ),
        bad(
            json!({"work": out(json!({"name": "x", "type": "OUTPUT_TYPE_ARTIFACT", "json_schema": SCHEMA}))}),
            "INVALID_OUTPUT",
        ),
        bad(
            json!({"work": out(json!({"name": "x", "type": "OUTPUT_TYPE_TEXT", "expected_sha256": sha(b"x")}))}),
            "INVALID_OUTPUT",
        ),
        bad(
            json!({"work": out(json!({"name": "x", "type": "OUTPUT_TYPE_JSON", "json_schema": "{"}))}),
            "INVALID_SCHEMA",
        ),
        bad(
            json!({"work": out(json!({"name": "x", "type": "OUTPUT_TYPE_JSON",
                                      "json_schema": r#"{"$ref": "https://example.com/s.json"}"#}))}),
            "INVALID_SCHEMA",
        ),
        bad(
            json!({"work": out(json!({"name": "x", "type": "OUTPUT_TYPE_JSON",
                                      "json_schema": format!(r#"{{"description": "{}"}}"#, "d".repeat(17_000))}))}),
            "INVALID_SCHEMA",
        ),
        bad(
            json!({"work": out(json!({"name": "x", "type": "OUTPUT_TYPE_TEST_REPORT",
                                      "test_threshold": {"min_pass_ppm": 1_000_001}}))}),
            "INVALID_OUTPUT",
        ),
        bad(
            json!({"work": work_with(json!({"extra": 1}))}),
            "INVALID_REQUEST",
        ),
        (
            "{\"work\": ".to_owned(),
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
        ),
    ];
    refused(&a, &t, "/v1/aegis/classify", &work_cases).await;
    refused(
        &a,
        &t,
        "/v1/aegis/warranty/quote",
        &[
            bad(json!({}), "INVALID_WORK_UNIT"),
            bad(
                json!({"work": work_with(json!({"kind": ""}))}),
                "INVALID_KIND",
            ),
            bad(
                json!({"work": objective_work("a", 10), "coverage_msat": "11"}),
                "INVALID_COVERAGE",
            ),
            bad(
                json!({"work": objective_work("a", 10), "coverage_msat": "2100000000000000001"}),
                "INVALID_COVERAGE",
            ),
        ],
    )
    .await;

    // Verify.
    let v = json!({"idempotency_key": "k", "work": objective_work("agent-b", 1_000),
                   "evidence": objective_evidence(None), "scope": "job"});
    let ev = |e: Value| with(&v, json!({"evidence": e}));
    refused(
        &a,
        &t,
        "/v1/aegis/verify",
        &[
            bad(with(&v, json!({"idempotency_key": ""})), "INVALID_IDEMPOTENCY_KEY"),
            bad(with(&v, json!({"idempotency_key": "a b"})), "INVALID_IDEMPOTENCY_KEY"),
            bad(with(&v, json!({"idempotency_key": "k".repeat(129)})), "INVALID_IDEMPOTENCY_KEY"),
            bad(with(&v, json!({"work": null})), "INVALID_WORK_UNIT"),
            bad(with(&v, json!({"scope": ""})), "INVALID_SCOPE"),
            bad(with(&v, json!({"scope": "two\nlines"})), "INVALID_SCOPE"),
            bad(with(&v, json!({"scope": "s".repeat(257)})), "INVALID_SCOPE"),
            bad(with(&v, json!({"subject_ref": "a\u{7}"})), "INVALID_SUBJECT_REF"),
            bad(with(&v, json!({"min_tier": "INDEPENDENCE_TIER_NOPE"})), "INVALID_REQUEST"),
            bad(ev(json!([])), "MISSING_EVIDENCE"),
            bad(
                ev(json!([{"name": "file", "artifact": b64(b"the artifact")},
                          {"name": "summary", "json": "{}"}])),
                "MISSING_EVIDENCE",
            ),
            bad(ev(json!([{"name": "nope", "reference": "x"}])), "INVALID_EVIDENCE"),
            bad(
                ev(json!([{"name": "file", "artifact": b64(b"a")}, {"name": "file", "artifact": b64(b"a")}])),
                "INVALID_EVIDENCE",
            ),
            bad(ev(json!([{"name": "file", "json": "{}"}])), "INVALID_EVIDENCE"),
            bad(ev(json!([{"name": "file", "artifact": "not base64!"}])), "INVALID_REQUEST"),
            bad(
                ev(json!([{"name": "summary", "json": "x".repeat(33_000)}])),
                "INVALID_EVIDENCE",
            ),
            bad(
                with(&v, json!({"work": subjective_work("a", 1),
                                "evidence": [{"name": "essay", "reference": "line\nbreak"}]})),
                "INVALID_EVIDENCE",
            ),
        ],
    )
    .await;

    // Verdicts.
    let path = format!("/v1/aegis/verification/{het_id}/verdict");
    let vd = json!({"idempotency_key": "k", "verifier_id": "v1",
                    "verdict": "VERIFICATION_VERDICT_PASSED", "signature": "ab".repeat(64)});
    refused(
        &a,
        &t,
        &path,
        &[
            bad(
                with(&vd, json!({"idempotency_key": ""})),
                "INVALID_IDEMPOTENCY_KEY",
            ),
            bad(
                with(&vd, json!({"verifier_id": "v 1"})),
                "INVALID_VERIFIER_ID",
            ),
            bad(
                with(&vd, json!({"verdict": "VERIFICATION_VERDICT_PENDING"})),
                "INVALID_VERDICT",
            ),
            bad(with(&vd, json!({"verdict": null})), "INVALID_VERDICT"),
            bad(
                with(&vd, json!({"signature": "xyz"})),
                "INVALID_VERDICT_SIGNATURE",
            ),
            bad(
                with(&vd, json!({"signature": "AB".repeat(64)})),
                "INVALID_VERDICT_SIGNATURE",
            ),
            // Well-formed but not v1's signature (checked in the transaction, rolled back).
            bad(vd.clone(), "INVALID_VERDICT_SIGNATURE"),
            (
                with(&vd, json!({"verifier_id": "ghost"})).to_string(),
                StatusCode::NOT_FOUND,
                "VERIFIER_NOT_FOUND",
            ),
        ],
    )
    .await;
    refused(
        &a,
        &t,
        "/v1/aegis/verification/ver_missing/verdict",
        &[(
            vd.to_string(),
            StatusCode::NOT_FOUND,
            "VERIFICATION_NOT_FOUND",
        )],
    )
    .await;
    refused(
        &a,
        &t,
        &format!("/v1/aegis/verification/{}/verdict", "x".repeat(129)),
        &[bad(vd.clone(), "INVALID_VERIFICATION_ID")],
    )
    .await;
    let _ = key;

    // Decisions.
    let dpath = format!("/v1/aegis/verification/{adj_id}/decide");
    let dd =
        json!({"idempotency_key": "k", "verdict": "VERIFICATION_VERDICT_PASSED", "reason": "ok"});
    refused(
        &a,
        &a.decider,
        &dpath,
        &[
            bad(
                with(&dd, json!({"idempotency_key": ""})),
                "INVALID_IDEMPOTENCY_KEY",
            ),
            bad(
                with(&dd, json!({"verdict": "VERIFICATION_VERDICT_UNSPECIFIED"})),
                "INVALID_VERDICT",
            ),
            bad(with(&dd, json!({"reason": ""})), "INVALID_REASON"),
            bad(
                with(&dd, json!({"reason": "r".repeat(1_025)})),
                "INVALID_REASON",
            ),
            bad(with(&dd, json!({"extra": true})), "INVALID_REQUEST"),
        ],
    )
    .await;
    refused(
        &a,
        &a.decider,
        "/v1/aegis/verification/a%20b/decide",
        &[bad(dd.clone(), "INVALID_VERIFICATION_ID")],
    )
    .await;

    // The registry.
    let other = oa_receipts::ReceiptKey::generate();
    let reg = json!({"idempotency_key": "k", "verifier_id": "v2", "public_key": other.key_id(),
                     "family": "model-b"});
    refused(
        &a,
        &t,
        "/v1/aegis/verifiers",
        &[
            bad(
                with(&reg, json!({"idempotency_key": ""})),
                "INVALID_IDEMPOTENCY_KEY",
            ),
            bad(
                with(&reg, json!({"verifier_id": ""})),
                "INVALID_VERIFIER_ID",
            ),
            bad(
                with(&reg, json!({"public_key": other.key_id().to_uppercase()})),
                "INVALID_PUBLIC_KEY",
            ),
            bad(
                with(&reg, json!({"public_key": "f".repeat(64)})),
                "INVALID_PUBLIC_KEY",
            ),
            bad(
                with(&reg, json!({"public_key": format!("02{}", other.key_id())})),
                "INVALID_PUBLIC_KEY",
            ),
            bad(with(&reg, json!({"family": "Model B"})), "INVALID_FAMILY"),
            bad(with(&reg, json!({"family": ""})), "INVALID_FAMILY"),
            bad(
                with(
                    &reg,
                    json!({"sim": {"behaviour": "SIM_BEHAVIOUR_NOISY", "noise_ppm": 1_000_001}}),
                ),
                "INVALID_SIM_PROFILE",
            ),
            bad(
                with(
                    &reg,
                    json!({"sim": {"behaviour": "SIM_BEHAVIOUR_HONEST", "noise_ppm": 5}}),
                ),
                "INVALID_SIM_PROFILE",
            ),
            bad(
                with(&reg, json!({"sim": {"seed": "7"}})),
                "INVALID_SIM_PROFILE",
            ),
            (
                with(&reg, json!({"verifier_id": "v1"})).to_string(),
                StatusCode::CONFLICT,
                "VERIFIER_EXISTS",
            ),
        ],
    )
    .await;
    let dis = json!({"idempotency_key": "k", "reason": "compromised"});
    refused(
        &a,
        &t,
        "/v1/aegis/verifiers/v1/disable",
        &[
            bad(with(&dis, json!({"reason": ""})), "INVALID_REASON"),
            bad(
                with(&dis, json!({"idempotency_key": " "})),
                "INVALID_IDEMPOTENCY_KEY",
            ),
        ],
    )
    .await;
    refused(
        &a,
        &t,
        "/v1/aegis/verifiers/ghost/disable",
        &[(dis.to_string(), StatusCode::NOT_FOUND, "VERIFIER_NOT_FOUND")],
    )
    .await;

    // Risk budgets.
    let rb = json!({"idempotency_key": "k", "subject_type": "RISK_SUBJECT_TYPE_AGENT",
                    "subject_id": "agent-b", "tolerated_msat": "1000", "window_ms": "60000",
                    "cap_msat": "10"});
    refused(
        &a,
        &t,
        "/v1/aegis/risk_budget/set",
        &[
            bad(
                with(&rb, json!({"idempotency_key": ""})),
                "INVALID_IDEMPOTENCY_KEY",
            ),
            bad(with(&rb, json!({"subject_type": null})), "INVALID_SUBJECT"),
            bad(with(&rb, json!({"subject_id": "a b"})), "INVALID_AGENT_ID"),
            bad(
                with(
                    &rb,
                    json!({"subject_type": "RISK_SUBJECT_TYPE_ORG", "subject_id": ""}),
                ),
                "INVALID_ORG_ID",
            ),
            bad(
                with(&rb, json!({"tolerated_msat": "2100000000000000001"})),
                "INVALID_RISK_BUDGET",
            ),
            bad(
                with(&rb, json!({"cap_msat": "2100000000000000001"})),
                "INVALID_RISK_BUDGET",
            ),
            bad(
                with(&rb, json!({"window_ms": "59999"})),
                "INVALID_RISK_BUDGET",
            ),
            bad(
                with(&rb, json!({"window_ms": "7776000001"})),
                "INVALID_RISK_BUDGET",
            ),
        ],
    )
    .await;

    // Cases and simulation runs.
    let cc = json!({"idempotency_key": "k2", "work": {"kind": "k", "agent_id": "gt", "amount_msat": "1",
                    "objective_hash": sha(b"y")}, "evidence": [{"name": "artifact", "artifact": b64(b"y")}],
                    "expected_verdict": "VERIFICATION_VERDICT_PASSED"});
    refused(
        &a,
        &t,
        "/v1/aegis/cases/create",
        &[
            bad(
                with(&cc, json!({"idempotency_key": ""})),
                "INVALID_IDEMPOTENCY_KEY",
            ),
            bad(
                with(&cc, json!({"expected_verdict": null})),
                "INVALID_VERDICT",
            ),
            bad(with(&cc, json!({"label": "l\n"})), "INVALID_LABEL"),
            bad(
                with(&cc, json!({"label": "l".repeat(257)})),
                "INVALID_LABEL",
            ),
            bad(with(&cc, json!({"evidence": []})), "MISSING_EVIDENCE"),
            bad(with(&cc, json!({"work": null})), "INVALID_WORK_UNIT"),
            (
                with(
                    &cc,
                    json!({"expected_verdict": "VERIFICATION_VERDICT_FAILED"}),
                )
                .to_string(),
                StatusCode::CONFLICT,
                "CASE_CONTRADICTS_CHECKS",
            ),
        ],
    )
    .await;
    refused(
        &a,
        &t,
        "/v1/aegis/sim/run",
        &[
            bad(json!({"idempotency_key": ""}), "INVALID_IDEMPOTENCY_KEY"),
            bad(
                json!({"idempotency_key": "k", "verifier_ids": ["v1", "v1"]}),
                "INVALID_VERIFIER_ID",
            ),
            bad(
                json!({"idempotency_key": "k", "verifier_ids": ["v 1"]}),
                "INVALID_VERIFIER_ID",
            ),
            bad(
                json!({"idempotency_key": "k", "case_ids": [""]}),
                "INVALID_CASE_ID",
            ),
            (
                json!({"idempotency_key": "k", "verifier_ids": ["ghost"]}).to_string(),
                StatusCode::NOT_FOUND,
                "VERIFIER_NOT_FOUND",
            ),
            (
                json!({"idempotency_key": "k", "verifier_ids": ["v1"]}).to_string(),
                StatusCode::CONFLICT,
                "VERIFIER_NOT_SIMULATED",
            ),
        ],
    )
    .await;

    // Reads with bad parameters.
    refused_get(
        &a,
        &t,
        &[
            (
                "/v1/aegis/verification/a%20b",
                StatusCode::BAD_REQUEST,
                "INVALID_VERIFICATION_ID",
            ),
            (
                "/v1/aegis/verification/ver_none",
                StatusCode::NOT_FOUND,
                "VERIFICATION_NOT_FOUND",
            ),
            (
                "/v1/aegis/verification/ver_none/detail",
                StatusCode::NOT_FOUND,
                "VERIFICATION_NOT_FOUND",
            ),
            (
                "/v1/aegis/risk_budget/status",
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY",
            ),
            (
                "/v1/aegis/risk_budget/status?subject_type=team&subject_id=x",
                StatusCode::BAD_REQUEST,
                "INVALID_SUBJECT",
            ),
            (
                "/v1/aegis/risk_budget/status?subject_type=agent&subject_id=a%20b",
                StatusCode::BAD_REQUEST,
                "INVALID_AGENT_ID",
            ),
            (
                "/v1/aegis/risk_budget/status?subject_type=agent&subject_id=x&more=1",
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY",
            ),
            (
                "/v1/aegis/cases?limit=0",
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY",
            ),
            (
                "/v1/aegis/cases?limit=51",
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY",
            ),
            (
                "/v1/aegis/cases?limit=x",
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY",
            ),
            (
                "/v1/aegis/cases?after=a%20b",
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY",
            ),
        ],
    )
    .await;
    refused_get(
        &a,
        &a.decider,
        &[
            (
                "/v1/aegis/queue?limit=x",
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY",
            ),
            (
                "/v1/aegis/queue?nope=1",
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY",
            ),
        ],
    )
    .await;
    // Not JSON at all.
    let (s, err) = a.call("POST", "/v1/aegis/classify", Some(&t), None).await;
    assert_eq!(
        (s, code(&err)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
    );

    assert_eq!(footprint(&a).await, before);
}

#[tokio::test]
async fn every_route_refuses_a_missing_token_and_a_token_without_its_scope() {
    let a = Aegis::start().await;
    // (method, path, the scope it needs, a token of the wrong scope)
    let verify_only = a.token_of("treasury", &["aegis:verify"]);
    let read_only = a.token_of("hydra", &["aegis:read"]);
    let claim_only = a.token_of("treasury", &["aegis:claim"]);
    let adjust_only = a.token_for("adjuster", &["aegis:adjust"]);
    let routes: Vec<(&str, &str, &String)> = vec![
        ("POST", "/v1/aegis/classify", &read_only),
        ("POST", "/v1/aegis/verify", &read_only),
        ("GET", "/v1/aegis/verification/ver_x", &verify_only),
        ("GET", "/v1/aegis/verification/ver_x/detail", &verify_only),
        ("POST", "/v1/aegis/verification/ver_x/verdict", &verify_only),
        ("POST", "/v1/aegis/verification/ver_x/decide", &verify_only),
        ("GET", "/v1/aegis/queue", &read_only),
        ("POST", "/v1/aegis/verifiers", &read_only),
        ("GET", "/v1/aegis/verifiers", &verify_only),
        ("POST", "/v1/aegis/verifiers/v/disable", &read_only),
        ("POST", "/v1/aegis/risk_budget/set", &read_only),
        (
            "GET",
            "/v1/aegis/risk_budget/status?subject_type=agent&subject_id=a",
            &verify_only,
        ),
        ("POST", "/v1/aegis/warranty/quote", &read_only),
        ("POST", "/v1/aegis/cases/create", &read_only),
        ("GET", "/v1/aegis/cases", &verify_only),
        ("POST", "/v1/aegis/sim/run", &read_only),
        ("GET", "/v1/aegis/sim/scoreboard", &verify_only),
        ("POST", "/v1/aegis/warranty/issue", &verify_only),
        ("GET", "/v1/aegis/warranty/wty_x", &verify_only),
        ("POST", "/v1/aegis/bond/reserve", &verify_only),
        ("POST", "/v1/aegis/bond/release", &read_only),
        ("GET", "/v1/aegis/bond/bond_x", &verify_only),
        ("POST", "/v1/aegis/claim/open", &verify_only),
        ("POST", "/v1/aegis/claim/resolve", &claim_only),
        ("GET", "/v1/aegis/claim/clm_x", &verify_only),
        ("POST", "/v1/aegis/dispute/open", &read_only),
        ("POST", "/v1/aegis/dispute/arbitrate", &adjust_only),
        ("GET", "/v1/aegis/dispute/dsp_x", &verify_only),
    ];
    let before = footprint(&a).await;
    for (method, path, wrong) in routes {
        // A body that is invalid too: the scope is checked first.
        let body = (method == "POST").then_some("{\"nope\": 1}");
        let (s, err) = a.call(method, path, None, body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path}: {err}");
        let (s, err) = a.call(method, path, Some(wrong), body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {err}");
    }
    // A token for another audience.
    let hydra_aud = a
        .ring
        .identity("treasury")
        .unwrap()
        .mint(
            "hydra",
            &["aegis:verify"],
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let (s, _) = a
        .call("POST", "/v1/aegis/classify", Some(&hydra_aud), Some("{}"))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Hydra's key may not grant aegis:admin (least privilege in the trust store).
    let (s, _) = a
        .call(
            "POST",
            "/v1/aegis/risk_budget/set",
            Some(&a.token_of("hydra", &["aegis:admin"])),
            Some("{}"),
        )
        .await;
    assert!(
        s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN,
        "{s}"
    );
    assert_eq!(footprint(&a).await, before);
}

#[tokio::test]
async fn every_route_is_built_and_standard_routes_exist() {
    let a = Aegis::start().await;
    for r in aegis::ROUTES.iter() {
        assert!(
            matches!(r.status, oa_service::RouteStatus::Built),
            "{} {} is not built",
            r.method,
            r.path
        );
    }
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/stats",
        "/openapi.json",
        "/v1/receipts/keys",
    ] {
        let (s, _) = a.call("GET", path, None, None).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
    let (_, doc) = a.call("GET", "/openapi.json", None, None).await;
    for (path, method, schema) in [
        (
            "/v1/aegis/classify",
            "post",
            "openagents.aegis.v1.ClassifyRequest",
        ),
        (
            "/v1/aegis/verify",
            "post",
            "openagents.aegis.v1.VerifyRequest",
        ),
        (
            "/v1/aegis/verification/{id}",
            "get",
            "openagents.aegis.v1.GetVerificationResponse",
        ),
        (
            "/v1/aegis/warranty/quote",
            "post",
            "openagents.aegis.v1.WarrantyQuoteRequest",
        ),
        (
            "/v1/aegis/sim/scoreboard",
            "get",
            "openagents.aegis.v1.ScoreboardResponse",
        ),
        (
            "/v1/aegis/warranty/issue",
            "post",
            "openagents.aegis.v1.IssueWarrantyRequest",
        ),
        (
            "/v1/aegis/claim/resolve",
            "post",
            "openagents.aegis.v1.ResolveClaimRequest",
        ),
        (
            "/v1/aegis/dispute/arbitrate",
            "post",
            "openagents.aegis.v1.ArbitrateDisputeRequest",
        ),
    ] {
        assert!(
            doc["paths"][path][method]["responses"]["200"].is_object(),
            "{path}"
        );
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}

/// A BOLT11 regtest invoice of `amount` created `age_ms` before Aegis's now, valid for an hour.
fn aged_invoice(a: &Aegis, amount: Option<u64>, seed: u8, age_ms: u64) -> String {
    use oa_service::Clock as _;
    let preimage = oa_invoice::Preimage([seed; 32]);
    let req = oa_invoice::InvoiceRequest {
        network: oa_invoice::Network::Regtest,
        amount: amount.map(|v| oa_money::Msat::new(v).unwrap()),
        payment_hash: preimage.payment_hash(),
        payment_secret: [seed; 32],
        description: "claim payout".into(),
        created_at: std::time::Duration::from_millis(a.clock.now_ms() - age_ms),
        expiry: std::time::Duration::from_secs(3600),
        min_final_cltv_expiry_delta: 18,
    };
    let node = oa_invoice::SecretKey::from_slice(&[0x42; 32]).unwrap();
    oa_invoice::create_invoice(&node, &req).unwrap()
}

#[tokio::test]
async fn bad_underwriting_requests_get_typed_4xx_and_change_nothing() {
    use oa_service::Clock as _;

    use crate::underwriting::{
        adjuster, arbitrator, invoice, open_claim, passed, resolve, s, warranty_with_bond,
    };

    let a = Aegis::start().await;
    // A warranty with a bond, a denied claim under an open dispute, an open claim, and a passed
    // verification without a warranty.
    let (wid, bid) = warranty_with_bond(&a, "in", 0, 1_000).await;
    let bid = bid.unwrap();
    let claimed = invoice(&a, Some(1_000), 1);
    let (_, c1) = open_claim(&a, "c1", &wid, 1_000, &claimed).await;
    let denied = s(&c1, "/claim/claim_id");
    resolve(
        &a,
        "r1",
        &denied,
        "CLAIM_DECISION_DENY",
        false,
        "NOT_COVERED",
    )
    .await;
    let d = a
        .ok(
            "/v1/aegis/dispute/open",
            json!({"idempotency_key": "d1", "claim_id": denied, "reason": "wrong"}),
        )
        .await;
    let did = s(&d, "/dispute/dispute_id");
    let (_, c2) = open_claim(&a, "c2", &wid, 2_000, &invoice(&a, None, 2)).await;
    let open = s(&c2, "/claim/claim_id");
    let free = passed(&a, "v-free", "agent-w").await;
    let before = footprint(&a).await;
    let t = a.token.clone();
    let long_id = "x".repeat(129);
    let too_much = "2100000000000000001";
    let in_a_year = (a.clock.now_ms() + 366 * 86_400_000).to_string();

    // Warranty issue.
    let wi = json!({"idempotency_key": "k", "verification_id": free, "coverage_msat": "1000",
                    "expires_at_ms": (a.clock.now_ms() + 86_400_000).to_string()});
    refused(
        &a,
        &t,
        "/v1/aegis/warranty/issue",
        &[
            bad(
                with(&wi, json!({"idempotency_key": ""})),
                "INVALID_IDEMPOTENCY_KEY",
            ),
            bad(
                with(&wi, json!({"verification_id": ""})),
                "INVALID_VERIFICATION_ID",
            ),
            bad(
                with(&wi, json!({"verification_id": "a b"})),
                "INVALID_VERIFICATION_ID",
            ),
            bad(
                with(&wi, json!({"verification_id": long_id})),
                "INVALID_VERIFICATION_ID",
            ),
            bad(
                with(&wi, json!({"coverage_msat": too_much})),
                "INVALID_COVERAGE",
            ),
            bad(with(&wi, json!({"coverage_msat": "-1"})), "INVALID_REQUEST"),
            bad(with(&wi, json!({"coverage_msat": 1.5})), "INVALID_REQUEST"),
            bad(
                with(&wi, json!({"quoted_total_msat": too_much})),
                "INVALID_QUOTE",
            ),
            bad(
                with(&wi, json!({"beneficiary": "a b"})),
                "INVALID_BENEFICIARY",
            ),
            bad(
                with(&wi, json!({"beneficiary": long_id})),
                "INVALID_BENEFICIARY",
            ),
            bad(with(&wi, json!({"expires_at_ms": null})), "INVALID_EXPIRY"),
            bad(
                with(&wi, json!({"expires_at_ms": in_a_year})),
                "INVALID_EXPIRY",
            ),
            bad(with(&wi, json!({"extra": 1})), "INVALID_REQUEST"),
            // Checked in the transaction, rolled back.
            bad(
                with(&wi, json!({"coverage_msat": "1000001"})),
                "INVALID_COVERAGE",
            ),
            (
                with(&wi, json!({"verification_id": "ver_none"})).to_string(),
                StatusCode::NOT_FOUND,
                "VERIFICATION_NOT_FOUND",
            ),
            (
                with(&wi, json!({"quoted_total_msat": "1"})).to_string(),
                StatusCode::CONFLICT,
                "QUOTE_CHANGED",
            ),
        ],
    )
    .await;

    // Bonds.
    let br = json!({"idempotency_key": "k", "warranty_id": wid, "provider_id": "agent-w",
                    "amount_msat": "1000"});
    refused(
        &a,
        &t,
        "/v1/aegis/bond/reserve",
        &[
            bad(
                with(&br, json!({"idempotency_key": "a b"})),
                "INVALID_IDEMPOTENCY_KEY",
            ),
            bad(with(&br, json!({"warranty_id": ""})), "INVALID_WARRANTY_ID"),
            bad(
                with(&br, json!({"warranty_id": "w\n"})),
                "INVALID_WARRANTY_ID",
            ),
            bad(
                with(&br, json!({"provider_id": "a b"})),
                "INVALID_PROVIDER_ID",
            ),
            bad(
                with(&br, json!({"provider_id": "p".repeat(65)})),
                "INVALID_PROVIDER_ID",
            ),
            bad(with(&br, json!({"amount_msat": "0"})), "INVALID_AMOUNT"),
            bad(with(&br, json!({"amount_msat": null})), "INVALID_AMOUNT"),
            bad(
                with(&br, json!({"amount_msat": too_much})),
                "INVALID_AMOUNT",
            ),
            bad(with(&br, json!({"amount_msat": "ten"})), "INVALID_REQUEST"),
            (
                with(&br, json!({"warranty_id": "wty_none"})).to_string(),
                StatusCode::NOT_FOUND,
                "WARRANTY_NOT_FOUND",
            ),
            (br.to_string(), StatusCode::CONFLICT, "BOND_EXISTS"),
        ],
    )
    .await;
    let rel = json!({"idempotency_key": "k", "bond_id": bid});
    refused(
        &a,
        &t,
        "/v1/aegis/bond/release",
        &[
            bad(
                with(&rel, json!({"idempotency_key": ""})),
                "INVALID_IDEMPOTENCY_KEY",
            ),
            bad(with(&rel, json!({"bond_id": ""})), "INVALID_BOND_ID"),
            bad(with(&rel, json!({"bond_id": "b b"})), "INVALID_BOND_ID"),
            bad(with(&rel, json!({"bond_id": long_id})), "INVALID_BOND_ID"),
            bad(with(&rel, json!({"bond_id": 7})), "INVALID_REQUEST"),
            (
                with(&rel, json!({"bond_id": "bond_none"})).to_string(),
                StatusCode::NOT_FOUND,
                "BOND_NOT_FOUND",
            ),
            // An open claim on the warranty locks its bond.
            (rel.to_string(), StatusCode::CONFLICT, "BOND_LOCKED"),
        ],
    )
    .await;

    // Claims.
    let co = json!({"idempotency_key": "k", "warranty_id": wid, "requested_msat": "500",
                    "invoice": invoice(&a, None, 3), "evidence": "the output was wrong"});
    refused(
        &a,
        &t,
        "/v1/aegis/claim/open",
        &[
            bad(
                with(&co, json!({"idempotency_key": ""})),
                "INVALID_IDEMPOTENCY_KEY",
            ),
            bad(
                with(&co, json!({"warranty_id": "a b"})),
                "INVALID_WARRANTY_ID",
            ),
            bad(
                with(&co, json!({"warranty_id": long_id})),
                "INVALID_WARRANTY_ID",
            ),
            bad(with(&co, json!({"requested_msat": "0"})), "INVALID_AMOUNT"),
            bad(with(&co, json!({"requested_msat": null})), "INVALID_AMOUNT"),
            bad(
                with(&co, json!({"requested_msat": too_much})),
                "INVALID_AMOUNT",
            ),
            bad(with(&co, json!({"evidence": ""})), "INVALID_EVIDENCE"),
            bad(
                with(&co, json!({"evidence": "e".repeat(4_097)})),
                "INVALID_EVIDENCE",
            ),
            bad(
                with(&co, json!({"evidence": "a\u{0}b"})),
                "INVALID_EVIDENCE",
            ),
            bad(with(&co, json!({"invoice": ""})), "INVALID_INVOICE"),
            bad(
                with(&co, json!({"invoice": "lnbcrt1notaninvoice"})),
                "INVALID_INVOICE",
            ),
            bad(
                with(&co, json!({"invoice": "x".repeat(8_000)})),
                "INVALID_INVOICE",
            ),
            bad(
                with(&co, json!({"invoice": invoice(&a, Some(501), 4)})),
                "INVOICE_AMOUNT_MISMATCH",
            ),
            bad(
                with(
                    &co,
                    json!({"invoice": aged_invoice(&a, None, 5, 2 * 3_600_000)}),
                ),
                "INVOICE_EXPIRED",
            ),
            bad(with(&co, json!({"extra": true})), "INVALID_REQUEST"),
            (
                with(&co, json!({"warranty_id": "wty_none"})).to_string(),
                StatusCode::NOT_FOUND,
                "WARRANTY_NOT_FOUND",
            ),
            (
                with(&co, json!({"requested_msat": "1000001"})).to_string(),
                StatusCode::CONFLICT,
                "COVERAGE_EXCEEDED",
            ),
            (
                with(&co, json!({"requested_msat": "1000", "invoice": claimed})).to_string(),
                StatusCode::CONFLICT,
                "INVOICE_ALREADY_CLAIMED",
            ),
        ],
    )
    .await;
    refused(
        &a,
        &a.token_for("stranger", &["aegis:claim"]),
        "/v1/aegis/claim/open",
        &[(co.to_string(), StatusCode::FORBIDDEN, "NOT_BENEFICIARY")],
    )
    .await;
    let cr = json!({"idempotency_key": "k", "claim_id": open, "decision": "CLAIM_DECISION_DENY",
                    "reason_code": "NOT_COVERED", "reason": "checked"});
    refused(
        &a,
        &adjuster(&a),
        "/v1/aegis/claim/resolve",
        &[
            bad(
                with(&cr, json!({"idempotency_key": ""})),
                "INVALID_IDEMPOTENCY_KEY",
            ),
            bad(with(&cr, json!({"claim_id": ""})), "INVALID_CLAIM_ID"),
            bad(with(&cr, json!({"claim_id": "c c"})), "INVALID_CLAIM_ID"),
            bad(with(&cr, json!({"claim_id": long_id})), "INVALID_CLAIM_ID"),
            bad(with(&cr, json!({"decision": null})), "INVALID_DECISION"),
            bad(
                with(&cr, json!({"decision": "CLAIM_DECISION_MAYBE"})),
                "INVALID_REQUEST",
            ),
            bad(with(&cr, json!({"reason_code": ""})), "INVALID_REASON_CODE"),
            bad(
                with(&cr, json!({"reason_code": "BECAUSE"})),
                "INVALID_REASON_CODE",
            ),
            bad(
                with(&cr, json!({"decision": "CLAIM_DECISION_PAY"})),
                "INVALID_REASON_CODE",
            ),
            bad(
                with(&cr, json!({"provider_at_fault": true})),
                "INVALID_DECISION",
            ),
            bad(
                with(&cr, json!({"provider_at_fault": "yes"})),
                "INVALID_REQUEST",
            ),
            bad(
                with(&cr, json!({"reason": "r".repeat(1_025)})),
                "INVALID_REASON",
            ),
            bad(with(&cr, json!({"reason": "a\nb"})), "INVALID_REASON"),
            (
                with(&cr, json!({"claim_id": "clm_none"})).to_string(),
                StatusCode::NOT_FOUND,
                "CLAIM_NOT_FOUND",
            ),
            (
                with(&cr, json!({"claim_id": denied})).to_string(),
                StatusCode::CONFLICT,
                "CLAIM_NOT_OPEN",
            ),
        ],
    )
    .await;
    refused(
        &a,
        &a.token_of("treasury", &["aegis:adjust"]),
        "/v1/aegis/claim/resolve",
        &[(cr.to_string(), StatusCode::FORBIDDEN, "NOT_INDEPENDENT")],
    )
    .await;

    // Disputes.
    let dopen = json!({"idempotency_key": "k", "claim_id": denied, "reason": "wrong"});
    refused(
        &a,
        &t,
        "/v1/aegis/dispute/open",
        &[
            bad(
                with(&dopen, json!({"idempotency_key": ""})),
                "INVALID_IDEMPOTENCY_KEY",
            ),
            bad(with(&dopen, json!({"claim_id": ""})), "INVALID_CLAIM_ID"),
            bad(
                with(&dopen, json!({"claim_id": long_id})),
                "INVALID_CLAIM_ID",
            ),
            bad(with(&dopen, json!({"reason": ""})), "INVALID_REASON"),
            bad(
                with(&dopen, json!({"reason": "r".repeat(1_025)})),
                "INVALID_REASON",
            ),
            bad(
                with(&dopen, json!({"reason": "\u{1b}[31m"})),
                "INVALID_REASON",
            ),
            (
                with(&dopen, json!({"claim_id": "clm_none"})).to_string(),
                StatusCode::NOT_FOUND,
                "CLAIM_NOT_FOUND",
            ),
            (
                with(&dopen, json!({"claim_id": open})).to_string(),
                StatusCode::CONFLICT,
                "CLAIM_NOT_DISPUTABLE",
            ),
            (dopen.to_string(), StatusCode::CONFLICT, "DISPUTE_EXISTS"),
        ],
    )
    .await;
    let arb = json!({"idempotency_key": "k", "dispute_id": did, "pay": false, "reason": "fine"});
    refused(
        &a,
        &arbitrator(&a),
        "/v1/aegis/dispute/arbitrate",
        &[
            bad(
                with(&arb, json!({"idempotency_key": ""})),
                "INVALID_IDEMPOTENCY_KEY",
            ),
            bad(with(&arb, json!({"dispute_id": ""})), "INVALID_DISPUTE_ID"),
            bad(
                with(&arb, json!({"dispute_id": "d d"})),
                "INVALID_DISPUTE_ID",
            ),
            bad(
                with(&arb, json!({"dispute_id": long_id})),
                "INVALID_DISPUTE_ID",
            ),
            bad(with(&arb, json!({"reason": ""})), "INVALID_REASON"),
            bad(
                with(&arb, json!({"reason": "r".repeat(1_025)})),
                "INVALID_REASON",
            ),
            bad(with(&arb, json!({"pay": "no"})), "INVALID_REQUEST"),
            (
                with(&arb, json!({"dispute_id": "dsp_none"})).to_string(),
                StatusCode::NOT_FOUND,
                "DISPUTE_NOT_FOUND",
            ),
        ],
    )
    .await;
    // A party to the claim may not arbitrate it.
    refused(
        &a,
        &a.token_for("adjuster", &["aegis:arbitrate"]),
        "/v1/aegis/dispute/arbitrate",
        &[(arb.to_string(), StatusCode::FORBIDDEN, "NOT_INDEPENDENT")],
    )
    .await;

    // Reads.
    refused_get(
        &a,
        &t,
        &[
            (
                "/v1/aegis/warranty/a%20b",
                StatusCode::BAD_REQUEST,
                "INVALID_WARRANTY_ID",
            ),
            (
                &format!("/v1/aegis/warranty/{long_id}"),
                StatusCode::BAD_REQUEST,
                "INVALID_WARRANTY_ID",
            ),
            (
                "/v1/aegis/warranty/wty_none",
                StatusCode::NOT_FOUND,
                "WARRANTY_NOT_FOUND",
            ),
            (
                "/v1/aegis/bond/a%20b",
                StatusCode::BAD_REQUEST,
                "INVALID_BOND_ID",
            ),
            (
                "/v1/aegis/bond/bond_none",
                StatusCode::NOT_FOUND,
                "BOND_NOT_FOUND",
            ),
            (
                "/v1/aegis/claim/a%0Ab",
                StatusCode::BAD_REQUEST,
                "INVALID_CLAIM_ID",
            ),
            (
                "/v1/aegis/claim/clm_none",
                StatusCode::NOT_FOUND,
                "CLAIM_NOT_FOUND",
            ),
            (
                "/v1/aegis/dispute/a%20b",
                StatusCode::BAD_REQUEST,
                "INVALID_DISPUTE_ID",
            ),
            (
                "/v1/aegis/dispute/dsp_none",
                StatusCode::NOT_FOUND,
                "DISPUTE_NOT_FOUND",
            ),
        ],
    )
    .await;

    assert_eq!(footprint(&a).await, before);
    a.assert_ledger_ok().await;
}
