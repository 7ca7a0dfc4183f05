-- Per-agent budgets. A payment reserves amount + max fee (reserved_msat), then on its outcome
-- moves the actual amount + fee to spent_msat and releases the rest. The guarded reservation
-- (limit - reserved - spent >= x) is what keeps spending within the budget under concurrency.
CREATE TABLE treasury_budgets (
    agent_id        TEXT   PRIMARY KEY,
    limit_msat      BIGINT NOT NULL,
    reserved_msat   BIGINT NOT NULL,
    spent_msat      BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);

-- Payment attempts: denied | in_flight | succeeded | failed.
CREATE TABLE treasury_payments (
    payment_id          TEXT   PRIMARY KEY,
    idempotency_scope   TEXT   NOT NULL,
    idempotency_key     TEXT   NOT NULL,
    agent_id            TEXT   NOT NULL,
    invoice             TEXT   NOT NULL,
    payment_hash        TEXT   NOT NULL,
    amount_msat         BIGINT NOT NULL,
    max_fee_msat        BIGINT NOT NULL,
    reserved_msat       BIGINT NOT NULL,
    fee_msat            BIGINT NOT NULL,
    state               TEXT   NOT NULL,
    rail                TEXT   NOT NULL,
    purpose             TEXT   NOT NULL,
    preimage            TEXT,
    failure_code        TEXT,
    failure_reason      TEXT,
    quote_id            TEXT,
    hydra_receipt_hash  TEXT,
    receipt_hash        TEXT,
    created_at_ms       BIGINT NOT NULL,
    updated_at_ms       BIGINT NOT NULL,
    UNIQUE (idempotency_scope, idempotency_key)
);
CREATE INDEX treasury_payments_by_state ON treasury_payments (state);
