-- Aegis's money-moving records (issue 6, part 2): warranties, provider bonds, claims and
-- disputes. Their money lives in the ledger's tables (crates/ledger, same database); these rows
-- hold the state machines and the ledger transfer ids. Amounts are integer msat.

-- One warranty per passed verification. `state`: active (claims may be opened until
-- expires_at_ms). Coverage left is the ledger balance of `reserve:<warranty_id>`.
CREATE TABLE aegis_warranties (
    warranty_id            TEXT   PRIMARY KEY,
    verification_id        TEXT   NOT NULL UNIQUE,
    provider_id            TEXT   NOT NULL,
    beneficiary            TEXT   NOT NULL,
    coverage_msat          BIGINT NOT NULL,
    verification_fee_msat  BIGINT NOT NULL,
    premium_msat           BIGINT NOT NULL,
    paid_out_msat          BIGINT NOT NULL,
    expires_at_ms          BIGINT NOT NULL,
    issued_by              TEXT   NOT NULL,
    receipt_hash           TEXT   NOT NULL,
    created_at_ms          BIGINT NOT NULL,
    updated_at_ms          BIGINT NOT NULL
);

-- One bond per warranty: reserved -> released | drawn, by guarded updates.
CREATE TABLE aegis_bonds (
    bond_id                TEXT   PRIMARY KEY,
    warranty_id            TEXT   NOT NULL UNIQUE,
    provider_id            TEXT   NOT NULL,
    amount_msat            BIGINT NOT NULL,
    drawn_msat             BIGINT NOT NULL,
    state                  TEXT   NOT NULL,
    pending_transfer_id    TEXT   NOT NULL,
    reserve_receipt_hash   TEXT   NOT NULL,
    release_receipt_hash   TEXT,
    reserved_by            TEXT   NOT NULL,
    created_at_ms          BIGINT NOT NULL,
    updated_at_ms          BIGINT NOT NULL
);

-- Claims: open -> paying -> paid | payment_failed; open -> denied; denied -> paying (an
-- arbitrator overturned the denial). `lease_until_ms` is the payment driver's lease.
CREATE TABLE aegis_claims (
    claim_id               TEXT   PRIMARY KEY,
    warranty_id            TEXT   NOT NULL,
    claimant               TEXT   NOT NULL,
    requested_msat         BIGINT NOT NULL,
    invoice                TEXT   NOT NULL,
    payment_hash           TEXT   NOT NULL,
    invoice_amount_msat    BIGINT,
    evidence               TEXT   NOT NULL,
    state                  TEXT   NOT NULL,
    payout_msat            BIGINT,
    fee_msat               BIGINT,
    provider_at_fault      BIGINT NOT NULL,
    reason_code            TEXT,
    reason                 TEXT,
    resolved_by            TEXT,
    attempt                BIGINT NOT NULL,
    lease_until_ms         BIGINT NOT NULL,
    hydra_receipt_hash     TEXT,
    open_receipt_hash      TEXT   NOT NULL,
    resolution_receipt_hash TEXT,
    created_at_ms          BIGINT NOT NULL,
    updated_at_ms          BIGINT NOT NULL
);
CREATE INDEX aegis_claims_by_warranty ON aegis_claims (warranty_id, state);
CREATE UNIQUE INDEX aegis_claims_payment_hash ON aegis_claims (payment_hash);

-- Disputes of a claim's resolution: open -> upheld | overturned | expired (the deadline passed:
-- the resolution stands).
CREATE TABLE aegis_disputes (
    dispute_id             TEXT   PRIMARY KEY,
    claim_id               TEXT   NOT NULL,
    opened_by              TEXT   NOT NULL,
    reason                 TEXT   NOT NULL,
    state                  TEXT   NOT NULL,
    deadline_at_ms         BIGINT NOT NULL,
    decided_by             TEXT,
    decision_reason        TEXT,
    pay                    BIGINT,
    provider_at_fault      BIGINT,
    receipt_hash           TEXT,
    created_at_ms          BIGINT NOT NULL,
    updated_at_ms          BIGINT NOT NULL
);
CREATE INDEX aegis_disputes_by_claim ON aegis_disputes (claim_id, state);
CREATE INDEX aegis_disputes_deadline ON aegis_disputes (state, deadline_at_ms);
