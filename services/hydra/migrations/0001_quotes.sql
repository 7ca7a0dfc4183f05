-- Quotes for paying BOLT11 invoices from pooled liquidity. A quote is paid at most once: the
-- guarded update open -> paying is the single point where a payment starts.
CREATE TABLE hydra_quotes (
    quote_id               TEXT   PRIMARY KEY,
    payment_hash           TEXT   NOT NULL,
    invoice                TEXT   NOT NULL,
    amount_msat            BIGINT NOT NULL,
    fee_limit_msat         BIGINT NOT NULL,
    payer_ref              TEXT   NOT NULL,
    state                  TEXT   NOT NULL, -- open | paying | paid | failed
    created_at_ms          BIGINT NOT NULL,
    expires_at_ms          BIGINT NOT NULL,
    pay_idempotency_key    TEXT,
    pay_idempotency_scope  TEXT,
    fee_msat               BIGINT NOT NULL,
    preimage               TEXT,
    failure_code           TEXT,
    failure_reason         TEXT,
    executor_receipt       TEXT,
    receipt_hash           TEXT,
    updated_at_ms          BIGINT NOT NULL
);
CREATE INDEX hydra_quotes_by_state ON hydra_quotes (state);
