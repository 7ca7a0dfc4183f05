-- Budgets per org, agent and host, each with a period; policy as versioned data; approvals,
-- rails and fallback on payment attempts.

-- A budget is keyed by what it limits (kind + subject) and how often it resets (period). Lists
-- are JSON arrays of strings. per_payment_max_msat = 0 means no per-payment maximum.
CREATE TABLE treasury_budget_configs (
    kind                  TEXT   NOT NULL,
    subject               TEXT   NOT NULL,
    period                TEXT   NOT NULL,
    limit_msat            BIGINT NOT NULL,
    time_zone             TEXT   NOT NULL,
    week_start            TEXT   NOT NULL,
    per_payment_max_msat  BIGINT NOT NULL,
    payee_allow           TEXT   NOT NULL,
    payee_deny            TEXT   NOT NULL,
    host_allow            TEXT   NOT NULL,
    host_deny             TEXT   NOT NULL,
    updated_at_ms         BIGINT NOT NULL,
    PRIMARY KEY (kind, subject, period)
);
INSERT INTO treasury_budget_configs
    SELECT 'agent', agent_id, 'never', limit_msat, 'UTC', 'monday', 0, '[]', '[]', '[]', '[]', updated_at_ms
    FROM treasury_budgets;

-- One row per budget window's ledger account (`budget:<agent>` for a budget that never resets,
-- `budget:<agent>@d2024-03-10` for a daily one, ...): how much the window was funded with. The
-- row is inserted (once, by whoever touches the window first) in the transaction that funds the
-- account, and locked by a guarded UPDATE whenever the funding changes.
CREATE TABLE treasury_budget_windows (
    account_id     TEXT   PRIMARY KEY,
    funded_msat    BIGINT NOT NULL,
    created_at_ms  BIGINT NOT NULL
);
INSERT INTO treasury_budget_windows
    SELECT 'budget:' || agent_id, limit_msat, updated_at_ms FROM treasury_budgets;
DROP TABLE treasury_budgets;

-- Every policy ever activated, by bundle id (sha256 of its canonical JSON), and which is active.
CREATE TABLE treasury_policies (
    bundle_id      TEXT   PRIMARY KEY,
    canonical_json TEXT   NOT NULL,
    source_toml    TEXT   NOT NULL,
    created_at_ms  BIGINT NOT NULL
);
CREATE TABLE treasury_policy_active (
    id             BIGINT PRIMARY KEY,
    bundle_id      TEXT   NOT NULL,
    version        BIGINT NOT NULL,
    activated_by   TEXT   NOT NULL,
    activated_at_ms BIGINT NOT NULL
);

-- Payees (node public keys) paid successfully at least once: no longer "unknown".
CREATE TABLE treasury_known_payees (
    payee_pubkey     TEXT   PRIMARY KEY,
    first_paid_at_ms BIGINT NOT NULL
);

-- Attempts: states denied | pending_approval | in_flight | succeeded | failed. `stage` says where
-- an in-flight attempt is: start (rail not chosen) | direct | envelope | envelope_issued |
-- envelope_settling. `decision_json` is the policy decision (rule, reasons, rails) as evaluated.
ALTER TABLE treasury_payments ADD COLUMN org_id TEXT;
ALTER TABLE treasury_payments ADD COLUMN host TEXT;
ALTER TABLE treasury_payments ADD COLUMN payee_pubkey TEXT;
ALTER TABLE treasury_payments ADD COLUMN source TEXT;
ALTER TABLE treasury_payments ADD COLUMN requested_by TEXT;
ALTER TABLE treasury_payments ADD COLUMN invoice_expires_at_ms BIGINT;
ALTER TABLE treasury_payments ADD COLUMN policy_bundle_id TEXT;
ALTER TABLE treasury_payments ADD COLUMN decision_rule TEXT;
ALTER TABLE treasury_payments ADD COLUMN decision_json TEXT;
ALTER TABLE treasury_payments ADD COLUMN rails TEXT;
ALTER TABLE treasury_payments ADD COLUMN stage TEXT;
ALTER TABLE treasury_payments ADD COLUMN reservations TEXT;
ALTER TABLE treasury_payments ADD COLUMN approval_expires_at_ms BIGINT;
ALTER TABLE treasury_payments ADD COLUMN approver TEXT;
ALTER TABLE treasury_payments ADD COLUMN envelope_id TEXT;
ALTER TABLE treasury_payments ADD COLUMN envelope_expires_at_ms BIGINT;
ALTER TABLE treasury_payments ADD COLUMN credit_fee_msat BIGINT;
ALTER TABLE treasury_payments ADD COLUMN verification_id TEXT;
ALTER TABLE treasury_payments ADD COLUMN verification_receipt_hash TEXT;
ALTER TABLE treasury_payments ADD COLUMN linked_receipts TEXT;
CREATE INDEX treasury_payments_by_approval_expiry ON treasury_payments (state, approval_expires_at_ms);

-- Attempts made before this version: one agent budget, the direct rail, no policy.
UPDATE treasury_payments SET
    payee_pubkey = '',
    source = 'bolt11',
    requested_by = '',
    invoice_expires_at_ms = 0,
    policy_bundle_id = '',
    decision_rule = 'agent_budget',
    decision_json = '{}',
    rails = '["' || rail || '"]',
    stage = 'direct',
    reservations = CASE WHEN state = 'in_flight' THEN '["pay:' || payment_id || '"]' ELSE '[]' END,
    credit_fee_msat = 0,
    linked_receipts = '[]';
