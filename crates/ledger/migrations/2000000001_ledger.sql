-- The ledger's tables, created in each service's own database.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL (BIGINT and TEXT only).
--
-- Amounts and balances are millisatoshis. Account flag bits (see `AccountFlags` in src/types.rs):
--   1 debits_must_not_exceed_credits, 2 credits_must_not_exceed_debits, 4 history, 8 closed.

CREATE TABLE ledger_accounts (
    id               TEXT   PRIMARY KEY,
    ledger           BIGINT NOT NULL,  -- asset code: transfers only move money within one ledger
    code             BIGINT NOT NULL,  -- what kind of account this is, chosen by the service
    flags            BIGINT NOT NULL,
    debits_pending   BIGINT NOT NULL,
    debits_posted    BIGINT NOT NULL,
    credits_pending  BIGINT NOT NULL,
    credits_posted   BIGINT NOT NULL,
    -- Bumped by every balance change: orders the account's transfers and history rows.
    version          BIGINT NOT NULL,
    user_data        TEXT   NOT NULL,
    user_data_64     BIGINT NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    -- Defence in depth: the code never writes a row that breaks these, but if it ever did, the
    -- database refuses the write and the whole transaction rolls back.
    CHECK (debits_pending >= 0 AND debits_posted >= 0 AND credits_pending >= 0 AND credits_posted >= 0),
    CHECK ((flags & 1) = 0 OR debits_pending + debits_posted <= credits_posted),
    CHECK ((flags & 2) = 0 OR credits_pending + credits_posted <= debits_posted)
);

CREATE TABLE ledger_transfers (
    id                      TEXT   PRIMARY KEY,
    debit_account_id        TEXT   NOT NULL,
    credit_account_id       TEXT   NOT NULL,
    amount                  BIGINT NOT NULL,
    pending_id              TEXT,              -- post and void: the pending transfer they resolve
    ledger                  BIGINT NOT NULL,
    code                    BIGINT NOT NULL,
    kind                    TEXT   NOT NULL,   -- single | pending | post | void
    flags                   BIGINT NOT NULL,   -- 1 linked, 2 post of the full pending amount
    timeout_ms              BIGINT,            -- pending only
    expires_at_ms           BIGINT,            -- pending only: created_at_ms + timeout_ms
    pending_state           TEXT,              -- pending only: pending | posted | voided | expired
    pending_resolved_at_ms  BIGINT,            -- pending only: when it left the pending state
    user_data               TEXT   NOT NULL,
    user_data_64            BIGINT NOT NULL,
    created_at_ms           BIGINT NOT NULL,
    debit_version           BIGINT NOT NULL,   -- the debit account's version after this transfer
    credit_version          BIGINT NOT NULL    -- the credit account's version after this transfer
);

-- Transfers of an account in the order they changed its balance (the paging cursor). Unique, so
-- a bug that handed out one version twice would fail loudly instead of hiding a transfer.
CREATE UNIQUE INDEX ledger_transfers_by_debit ON ledger_transfers (debit_account_id, debit_version);
CREATE UNIQUE INDEX ledger_transfers_by_credit ON ledger_transfers (credit_account_id, credit_version);

-- A pending transfer is resolved (posted or voided) at most once, enforced by the database.
CREATE UNIQUE INDEX ledger_transfers_resolution ON ledger_transfers (pending_id)
    WHERE pending_id IS NOT NULL;

-- The expiry sweep reads only pending transfers that can expire.
CREATE INDEX ledger_transfers_expiry ON ledger_transfers (expires_at_ms)
    WHERE pending_state = 'pending' AND expires_at_ms IS NOT NULL;

-- Balances after each change, for accounts with the history flag.
CREATE TABLE ledger_account_history (
    account_id       TEXT   NOT NULL,
    version          BIGINT NOT NULL,
    transfer_id      TEXT   NOT NULL,  -- the transfer, or the pending transfer that expired
    cause            TEXT   NOT NULL,  -- transfer | expiry
    debits_pending   BIGINT NOT NULL,
    debits_posted    BIGINT NOT NULL,
    credits_pending  BIGINT NOT NULL,
    credits_posted   BIGINT NOT NULL,
    timestamp_ms     BIGINT NOT NULL,
    PRIMARY KEY (account_id, version)
);
