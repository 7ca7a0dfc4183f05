-- Aegis's tables (issue 6, part 1): verifications and the verdicts that decide them, the verifier
-- registry, risk budgets, ground-truth cases and simulation results. Money-moving parts
-- (warranties, bonds, claims, disputes) come with their own migrations.

-- One row per verification. `state` moves once, by a guarded update: pending -> passed | failed
-- (objective verifications, and any whose objective check failed, are inserted final).
CREATE TABLE aegis_verifications (
    verification_id   TEXT   PRIMARY KEY,
    requested_by      TEXT   NOT NULL,
    scope             TEXT   NOT NULL,
    subject_ref       TEXT,
    agent_id          TEXT   NOT NULL,
    org_id            TEXT,
    kind              TEXT   NOT NULL,
    amount_msat       BIGINT NOT NULL,
    class             TEXT   NOT NULL,
    tier              TEXT   NOT NULL,
    state             TEXT   NOT NULL,
    work_hash         TEXT   NOT NULL,
    -- The work unit as proto JSON (the evidence is kept only as part of work_hash).
    work              TEXT   NOT NULL,
    -- JSON arrays: the objective checks run, and the classification's raise reasons.
    checks            TEXT   NOT NULL,
    raise_reasons     TEXT   NOT NULL,
    quorum_size       BIGINT NOT NULL,
    min_families      BIGINT NOT NULL,
    decided_by        TEXT,
    reason            TEXT,
    receipt_hash      TEXT,
    created_at_ms     BIGINT NOT NULL,
    updated_at_ms     BIGINT NOT NULL,
    decided_at_ms     BIGINT
);
CREATE INDEX aegis_verifications_by_agent ON aegis_verifications (agent_id, state, decided_at_ms);
CREATE INDEX aegis_verifications_by_org ON aegis_verifications (org_id, state, decided_at_ms);
CREATE INDEX aegis_verifications_queue ON aegis_verifications (state, tier, created_at_ms);

-- Signed verdicts of registered verifiers; one per verifier and verification.
CREATE TABLE aegis_verdicts (
    verification_id   TEXT   NOT NULL,
    verifier_id       TEXT   NOT NULL,
    family            TEXT   NOT NULL,
    verdict           TEXT   NOT NULL,
    weight_ppm        BIGINT NOT NULL,
    signature         TEXT   NOT NULL,
    submitted_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (verification_id, verifier_id)
);

-- The verifier registry. `active` is 1 or 0; the sim seed is a u64 kept as a decimal string.
CREATE TABLE aegis_verifiers (
    verifier_id       TEXT   PRIMARY KEY,
    public_key        TEXT   NOT NULL,
    family            TEXT   NOT NULL,
    active            BIGINT NOT NULL,
    sim_behaviour     TEXT,
    sim_seed          TEXT,
    sim_noise_ppm     BIGINT,
    disabled_reason   TEXT,
    registered_by     TEXT   NOT NULL,
    registered_at_ms  BIGINT NOT NULL,
    updated_at_ms     BIGINT NOT NULL
);

-- Risk budgets per agent and per org.
CREATE TABLE aegis_risk_budgets (
    subject_type      TEXT   NOT NULL,
    subject_id        TEXT   NOT NULL,
    tolerated_msat    BIGINT NOT NULL,
    window_ms         BIGINT NOT NULL,
    cap_msat          BIGINT NOT NULL,
    updated_by        TEXT   NOT NULL,
    updated_at_ms     BIGINT NOT NULL,
    PRIMARY KEY (subject_type, subject_id)
);

-- Known-answer work units.
CREATE TABLE aegis_cases (
    case_id           TEXT   PRIMARY KEY,
    kind              TEXT   NOT NULL,
    work              TEXT   NOT NULL,
    evidence          TEXT   NOT NULL,
    expected_verdict  TEXT   NOT NULL,
    label             TEXT   NOT NULL,
    work_hash         TEXT   NOT NULL,
    created_by        TEXT   NOT NULL,
    created_at_ms     BIGINT NOT NULL,
    receipt_hash      TEXT   NOT NULL
);

-- Simulation runs and what each simulated verifier said about each case.
CREATE TABLE aegis_sim_runs (
    run_id            TEXT   PRIMARY KEY,
    requested_by      TEXT   NOT NULL,
    results_count     BIGINT NOT NULL,
    ran_at_ms         BIGINT NOT NULL
);
CREATE TABLE aegis_sim_results (
    run_id            TEXT   NOT NULL,
    verifier_id       TEXT   NOT NULL,
    case_id           TEXT   NOT NULL,
    expected          TEXT   NOT NULL,
    verdict           TEXT   NOT NULL,
    PRIMARY KEY (run_id, verifier_id, case_id)
);
CREATE INDEX aegis_sim_results_by_verifier ON aegis_sim_results (verifier_id);
