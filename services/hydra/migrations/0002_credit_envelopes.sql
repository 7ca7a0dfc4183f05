-- Credit envelopes. One row per envelope from intent to its end; the state moves only by guarded
-- updates (intent -> offered -> issued -> settling -> settled, issued -> defaulted | expired,
-- settling -> issued after a failed provider payment). The cap's reservation lives in the ledger
-- (pending transfer `env:<envelope_id>:reserve` from the pool).
CREATE TABLE hydra_envelopes (
    envelope_id                TEXT   PRIMARY KEY,
    caller                     TEXT   NOT NULL,
    agent_id                   TEXT   NOT NULL,
    provider_id                TEXT   NOT NULL,
    provider_invoice           TEXT,
    provider_pubkey            TEXT,
    scope                      TEXT   NOT NULL,
    requested_cap_msat         BIGINT NOT NULL,
    expires_at_ms              BIGINT NOT NULL,
    state                      TEXT   NOT NULL,
    created_at_ms              BIGINT NOT NULL,
    updated_at_ms              BIGINT NOT NULL,
    -- The current offer (from `offered` on).
    offer_id                   TEXT   UNIQUE,
    offer_cap_msat             BIGINT,
    offer_limit_msat           BIGINT,
    offer_fee_bps              BIGINT,
    offer_fee_msat             BIGINT,
    offer_weighted_losses_msat BIGINT,
    offer_inputs               TEXT,
    offer_created_at_ms        BIGINT,
    offer_expires_at_ms        BIGINT,
    -- Issue.
    issued_at_ms               BIGINT,
    issue_receipt_hash         TEXT,
    -- Settlement (the current or last provider payment).
    settle_idempotency_scope   TEXT,
    settle_idempotency_key     TEXT,
    verification_id            TEXT,
    verification_receipt       TEXT,
    payment_invoice            TEXT,
    payment_hash               TEXT,
    payment_amount_msat        BIGINT,
    payment_fee_limit_msat     BIGINT,
    routing_fee_msat           BIGINT,
    preimage                   TEXT,
    executor_receipt           TEXT,
    failure_code               TEXT,
    failure_reason             TEXT,
    -- The end: settled, defaulted or expired.
    ended_at_ms                BIGINT,
    default_reason             TEXT,
    end_receipt_hash           TEXT
);
CREATE INDEX hydra_envelopes_by_agent ON hydra_envelopes (agent_id, state);
CREATE INDEX hydra_envelopes_by_expiry ON hydra_envelopes (state, expires_at_ms);
CREATE INDEX hydra_envelopes_by_end ON hydra_envelopes (ended_at_ms);

-- Open envelopes per agent. The guarded increment `open_envelopes < max` takes the agent's row
-- lock, which serializes issuing for one agent (the limit and the underwriting re-check).
CREATE TABLE hydra_credit_agents (
    agent_id        TEXT   PRIMARY KEY,
    open_envelopes  BIGINT NOT NULL CHECK (open_envelopes >= 0),
    updated_at_ms   BIGINT NOT NULL
);

-- Terminal outcomes of the Lightning payments Hydra made (liquidity quotes and envelope
-- settlements), for the payment-failure breaker. One row per payment.
CREATE TABLE hydra_payment_outcomes (
    source         TEXT   NOT NULL, -- liquidity | envelope
    ref_id         TEXT   NOT NULL, -- quote id, or envelope id + ':' + payment hash
    payment_hash   TEXT   NOT NULL,
    succeeded      BIGINT NOT NULL, -- 1 | 0
    amount_msat    BIGINT NOT NULL,
    at_ms          BIGINT NOT NULL,
    PRIMARY KEY (source, ref_id)
);
CREATE INDEX hydra_payment_outcomes_by_time ON hydra_payment_outcomes (at_ms);
