-- FX quotes. A quote is settled at most once: the guarded update open -> settled (while
-- unexpired) is the single point where its ledger transfers are made.
CREATE TABLE hydra_fx_quotes (
    fx_quote_id             TEXT   PRIMARY KEY,
    caller                  TEXT   NOT NULL,
    agent_id                TEXT   NOT NULL,
    sell_currency           TEXT   NOT NULL,
    -- Wire amounts: whole msat for BTC, the fiat amount with exactly its minor units.
    sell_amount             TEXT   NOT NULL,
    buy_currency            TEXT   NOT NULL,
    buy_amount              TEXT   NOT NULL,
    -- The same amounts in the asset's smallest unit (msat, cents, yen): what the ledger moves.
    sell_units              BIGINT NOT NULL,
    buy_units               BIGINT NOT NULL,
    -- Decimal strings, fiat per BTC.
    rate                    TEXT   NOT NULL,
    mid_rate                TEXT   NOT NULL,
    spread_bps              BIGINT NOT NULL,
    state                   TEXT   NOT NULL, -- open | settled
    created_at_ms           BIGINT NOT NULL,
    expires_at_ms           BIGINT NOT NULL,
    settled_at_ms           BIGINT,
    settle_idempotency_key  TEXT,
    receipt_hash            TEXT
);
