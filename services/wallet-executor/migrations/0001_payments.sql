-- Payments the executor has been asked to make. The row is written (status 'in_flight') before
-- the payment is sent, and the primary key on payment_hash makes a second send impossible.
CREATE TABLE wallet_payments (
    payment_hash        TEXT   PRIMARY KEY,
    idempotency_scope   TEXT   NOT NULL,
    idempotency_key     TEXT   NOT NULL,
    invoice             TEXT   NOT NULL,
    payee_pubkey        TEXT   NOT NULL,
    amount_msat         BIGINT NOT NULL,
    fee_limit_msat      BIGINT NOT NULL,
    status              TEXT   NOT NULL, -- in_flight | succeeded | failed
    fee_msat            BIGINT NOT NULL,
    preimage            TEXT,
    failure_code        TEXT,
    failure_reason      TEXT,
    created_at_ms       BIGINT NOT NULL,
    resolved_at_ms      BIGINT,
    receipt_hash        TEXT,
    UNIQUE (idempotency_scope, idempotency_key)
);
CREATE INDEX wallet_payments_by_status ON wallet_payments (status);

-- Amount committed (amount + fee limit) per time bucket, for the rolling-window cap. A failed
-- payment gives its amount back to its bucket.
CREATE TABLE wallet_spend_buckets (
    bucket       BIGINT PRIMARY KEY,
    amount_msat  BIGINT NOT NULL
);
