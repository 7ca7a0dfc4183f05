-- Invoices our node issued or settled. A row is written when CreateInvoice issues an invoice,
-- or when the settlement follower meets a settled invoice it has no row for. settle_index is
-- NULL until the settlement is recorded; it is written once (guarded by "IS NULL"), in the same
-- transaction as the settlement receipt, and its maximum is where the follower resumes.
CREATE TABLE wallet_invoices (
    payment_hash        TEXT   PRIMARY KEY,
    idempotency_scope   TEXT,   -- NULL for invoices not issued through CreateInvoice
    idempotency_key     TEXT,
    bolt11              TEXT   NOT NULL,
    amount_msat         BIGINT NOT NULL, -- 0 for an amountless invoice
    add_index           BIGINT NOT NULL,
    created_at_ms       BIGINT NOT NULL,
    settle_index        BIGINT,
    amount_paid_msat    BIGINT,
    settled_at_ms       BIGINT,
    receipt_hash        TEXT,
    UNIQUE (idempotency_scope, idempotency_key),
    UNIQUE (settle_index)
);

-- On-chain sends. The row (status 'pending') commits before the node is asked to send; its id
-- is the node-side label, so a retry after a crash finds the transaction instead of sending
-- again. committed_msat is what the send counts against the spending window.
CREATE TABLE wallet_onchain_sends (
    id                  TEXT   PRIMARY KEY,
    idempotency_scope   TEXT   NOT NULL,
    idempotency_key     TEXT   NOT NULL,
    requested_by        TEXT   NOT NULL,
    address             TEXT   NOT NULL,
    amount_msat         BIGINT NOT NULL,
    sat_per_vbyte       BIGINT NOT NULL,
    committed_msat      BIGINT NOT NULL,
    status              TEXT   NOT NULL, -- pending | sent
    txid                TEXT,
    created_at_ms       BIGINT NOT NULL,
    sent_at_ms          BIGINT,
    receipt_hash        TEXT,
    UNIQUE (idempotency_scope, idempotency_key)
);
CREATE INDEX wallet_onchain_sends_by_status ON wallet_onchain_sends (status);

-- Channel actions (open, close, rebalance). The row (status 'pending') commits before the node
-- is asked; the result, the receipt and the stored response commit together. A rebalance the
-- node left in flight is 'in_flight' with its payment hash until it is tracked to its end.
CREATE TABLE wallet_channel_actions (
    id                  TEXT   PRIMARY KEY,
    idempotency_scope   TEXT   NOT NULL,
    idempotency_key     TEXT   NOT NULL,
    kind                TEXT   NOT NULL, -- open | close | rebalance
    requested_by        TEXT   NOT NULL,
    request_json        TEXT   NOT NULL,
    committed_msat      BIGINT NOT NULL, -- counted against the spending window (rebalance fees)
    status              TEXT   NOT NULL, -- pending | in_flight | done
    payment_hash        TEXT,
    created_at_ms       BIGINT NOT NULL,
    resolved_at_ms      BIGINT,
    receipt_hash        TEXT,
    response_json       TEXT,   -- the answer once done (proto JSON), replayed to retries
    -- What the action did at the node (the closing txid of a close, the funding outpoint of an
    -- open, the payment hash of a rebalance), on the one action that was receipted for it: a
    -- second close of the same channel under another key gets the first one's receipt.
    outcome             TEXT,
    UNIQUE (idempotency_scope, idempotency_key),
    UNIQUE (kind, outcome)
);
CREATE INDEX wallet_channel_actions_by_status ON wallet_channel_actions (status);
