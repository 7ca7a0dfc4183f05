-- A quote is its own idempotency record, for both of its requests: the quote_pay key is stored
-- on the row it created and the pay key on the row it started paying, each unique per scope.
-- `quote_pay` is then one INSERT and `pay` needs no separate claim: two statements fewer on the
-- hot path. Quotes created before this migration keep their quote_pay keys in
-- `idempotency_keys` only; their pay keys were already stored here.
ALTER TABLE hydra_quotes ADD COLUMN quote_idempotency_scope TEXT;
ALTER TABLE hydra_quotes ADD COLUMN quote_idempotency_key TEXT;
ALTER TABLE hydra_quotes ADD COLUMN quote_fingerprint TEXT;
CREATE UNIQUE INDEX hydra_quotes_by_quote_key
    ON hydra_quotes (quote_idempotency_scope, quote_idempotency_key);
CREATE UNIQUE INDEX hydra_quotes_by_pay_key
    ON hydra_quotes (pay_idempotency_scope, pay_idempotency_key);
