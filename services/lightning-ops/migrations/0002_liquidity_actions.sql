-- Rebalances, channel opens and closes executed through the wallet-executor, in ops_actions
-- beside policy changes (kind 'rebalance', 'open', 'close').

-- The peer of an open (its chan_id is 0 until the channel exists).
ALTER TABLE ops_actions ADD COLUMN remote_pubkey TEXT;
-- A rebalance's fee limit (held against the day's budget while it is pending) and the fee the
-- executor reported once it ended (0 when it failed).
ALTER TABLE ops_actions ADD COLUMN fee_limit_msat BIGINT;
ALTER TABLE ops_actions ADD COLUMN fee_msat BIGINT;
CREATE INDEX ops_actions_by_kind ON ops_actions (kind, created_at_ms);
CREATE INDEX ops_actions_by_peer ON ops_actions (remote_pubkey, kind, status);
