-- Budgets move to the ledger (crates/ledger): reservations and spending are now the balances of
-- each agent's `budget:` and `spent:` accounts. This table keeps only the configured limit.
ALTER TABLE treasury_budgets DROP COLUMN reserved_msat;
ALTER TABLE treasury_budgets DROP COLUMN spent_msat;
