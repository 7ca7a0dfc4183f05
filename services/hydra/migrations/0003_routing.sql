-- Routing decisions (each with its receipt) and what Hydra learned about channel liquidity from
-- its own payments (scoring::Knowledge, persisted).
CREATE TABLE hydra_routing_decisions (
    decision_id          TEXT   PRIMARY KEY,
    caller               TEXT   NOT NULL,
    policy               TEXT   NOT NULL,
    amount_msat          BIGINT NOT NULL,
    -- The payment the decision is for, when the caller named it.
    payment_hash         TEXT,
    -- The scoring inputs as JSON (candidates, the bounds used, the envelope estimate, the time),
    -- so the decision can be recomputed; the receipt carries their SHA-256.
    inputs               TEXT   NOT NULL,
    ranking              TEXT   NOT NULL,
    chosen_candidate_id  TEXT,
    -- The hops of the top-ranked candidate when it is a reachable route: what a payment of
    -- payment_hash is taken to have used when its outcome is learned.
    chosen_route         TEXT,
    learned_at_ms        BIGINT,
    receipt_hash         TEXT,
    created_at_ms        BIGINT NOT NULL
);
CREATE INDEX hydra_routing_decisions_by_payment ON hydra_routing_decisions (payment_hash, created_at_ms);

-- Liquidity bounds per channel, as last observed (decay is applied when read).
CREATE TABLE hydra_channel_bounds (
    chan_id         TEXT   PRIMARY KEY, -- short channel id in decimal (a u64 does not fit BIGINT)
    min_msat        BIGINT NOT NULL,
    max_msat        BIGINT NOT NULL,
    observed_at_ms  BIGINT NOT NULL
);
