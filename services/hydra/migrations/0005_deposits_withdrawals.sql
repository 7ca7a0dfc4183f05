-- Deposits: an invoice of the executor's node per deposit, credited to the agent once the
-- executor reports its settlement. `open -> credited` is a guarded update, and the ledger credit
-- has an id derived from the deposit id, so a settlement is credited at most once.
CREATE TABLE hydra_deposits (
    deposit_id             TEXT   PRIMARY KEY,
    caller                 TEXT   NOT NULL,
    agent_id               TEXT   NOT NULL,
    method                 TEXT   NOT NULL, -- invoice
    amount_msat            BIGINT NOT NULL,
    payment_hash           TEXT   NOT NULL UNIQUE,
    invoice                TEXT   NOT NULL,
    state                  TEXT   NOT NULL, -- open | credited
    created_at_ms          BIGINT NOT NULL,
    expires_at_ms          BIGINT NOT NULL,
    idempotency_scope      TEXT   NOT NULL,
    idempotency_key        TEXT   NOT NULL,
    credited_msat          BIGINT,
    settle_index           BIGINT,
    credited_at_ms         BIGINT,
    executor_receipt       TEXT,
    receipt_hash           TEXT
);
CREATE INDEX hydra_deposits_by_agent ON hydra_deposits (agent_id, created_at_ms);

-- Withdrawals: the agent's balance pays a BOLT11 invoice. The amount + fee limit is reserved
-- (pending ledger transfer) when the withdrawal is accepted; `queued -> paying` and
-- `paying -> paid | failed` are guarded updates, and the executor is asked under a key derived
-- from the withdrawal id, so the invoice is paid at most once.
CREATE TABLE hydra_withdrawals (
    withdrawal_id          TEXT   PRIMARY KEY,
    caller                 TEXT   NOT NULL,
    agent_id               TEXT   NOT NULL,
    payment_hash           TEXT   NOT NULL,
    invoice                TEXT   NOT NULL,
    amount_msat            BIGINT NOT NULL,
    fee_limit_msat         BIGINT NOT NULL,
    state                  TEXT   NOT NULL, -- queued | paying | paid | failed
    created_at_ms          BIGINT NOT NULL,
    not_before_ms          BIGINT NOT NULL,
    throttle_reason        TEXT,
    idempotency_scope      TEXT   NOT NULL,
    idempotency_key        TEXT   NOT NULL,
    fee_msat               BIGINT NOT NULL,
    preimage               TEXT,
    failure_code           TEXT,
    failure_reason         TEXT,
    executor_receipt       TEXT,
    receipt_hash           TEXT,
    updated_at_ms          BIGINT NOT NULL
);
CREATE INDEX hydra_withdrawals_by_state ON hydra_withdrawals (state, not_before_ms);
-- A second withdrawal of a payment hash that is queued, paying or paid is refused (checked in the
-- accepting transaction; two racing on PostgreSQL are caught by the executor, which pays a hash
-- at most once and refuses the other, whose reservation is then voided).
CREATE INDEX hydra_withdrawals_by_hash ON hydra_withdrawals (payment_hash);

-- Cursors of the streams Hydra consumes, advanced in the transaction that handles each item
-- (`invoice_settlements`: the executor's settle index).
CREATE TABLE hydra_cursors (
    name          TEXT   PRIMARY KEY,
    position      BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
