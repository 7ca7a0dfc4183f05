-- lightning-ops's own tables. Channel ids are short channel ids (block << 40 | tx << 16 | output)
-- stored as BIGINT; amounts are msat; times are Unix milliseconds.

-- Policy changes executed through the wallet-executor. A row is written 'pending' before the
-- executor is asked, so an apply interrupted after the executor acted is re-driven with the same
-- idempotency key (the executor replays its answer) instead of being lost or repeated.
CREATE TABLE ops_actions (
    action_id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    chan_id BIGINT NOT NULL,
    channel_id TEXT NOT NULL,
    -- JSON of the fee policy observed before, and of the one asked for.
    previous TEXT NOT NULL,
    desired TEXT NOT NULL,
    source TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'applied', 'failed')),
    created_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT,
    executor_receipt_hash TEXT,
    receipt_hash TEXT,
    error_code TEXT
);
CREATE INDEX ops_actions_by_channel ON ops_actions (chan_id, status, finished_at_ms);

-- Updates held back by the per-channel rate limit. At most one waiting row per channel (the
-- latest desired policy); it ends 'applied' (with the action that executed it) or 'satisfied'
-- (the node already matched the policy when it came due).
CREATE TABLE ops_deferred (
    deferral_id TEXT PRIMARY KEY,
    chan_id BIGINT NOT NULL,
    channel_id TEXT NOT NULL,
    desired TEXT NOT NULL,
    description TEXT NOT NULL,
    not_before_ms BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('waiting', 'applied', 'satisfied')),
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    action_id TEXT
);
CREATE UNIQUE INDEX ops_deferred_one_waiting ON ops_deferred (chan_id) WHERE status = 'waiting';

-- The node's forwarding log, copied gaplessly: idx is the node's own index, and the cursor
-- (ops_cursors 'forwards') advances in the same transaction as the rows it covers.
CREATE TABLE ops_forwards (
    idx BIGINT PRIMARY KEY,
    timestamp_ms BIGINT NOT NULL,
    chan_id_in BIGINT NOT NULL,
    chan_id_out BIGINT NOT NULL,
    amt_in_msat BIGINT NOT NULL CHECK (amt_in_msat >= 0),
    amt_out_msat BIGINT NOT NULL CHECK (amt_out_msat >= 0),
    fee_msat BIGINT NOT NULL CHECK (fee_msat >= 0),
    ingested_at_ms BIGINT NOT NULL
);
CREATE INDEX ops_forwards_out ON ops_forwards (chan_id_out, timestamp_ms);
CREATE INDEX ops_forwards_in ON ops_forwards (chan_id_in, timestamp_ms);

CREATE TABLE ops_cursors (
    name TEXT PRIMARY KEY,
    next_offset BIGINT NOT NULL CHECK (next_offset >= 0),
    updated_at_ms BIGINT NOT NULL
);

-- What rebalances cost: the fee is charged to the channel that received local liquidity.
CREATE TABLE ops_rebalances (
    rebalance_id TEXT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    chan_id_out BIGINT NOT NULL,
    chan_id_in BIGINT NOT NULL,
    amount_msat BIGINT NOT NULL CHECK (amount_msat > 0),
    fee_msat BIGINT NOT NULL CHECK (fee_msat >= 0),
    executor_receipt_hash TEXT,
    recorded_at_ms BIGINT NOT NULL
);
CREATE INDEX ops_rebalances_in ON ops_rebalances (chan_id_in, at_ms);

-- The latest observation of each channel (kept after it closes, for reports).
CREATE TABLE ops_channels (
    chan_id BIGINT PRIMARY KEY,
    channel_id TEXT NOT NULL,
    remote_pubkey TEXT NOT NULL,
    local_balance_msat BIGINT NOT NULL,
    remote_balance_msat BIGINT NOT NULL,
    active BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL
);

-- Uptime: observations and how many found the channel active, per channel and hour (bounded
-- growth: one row per channel per hour, however often the node is observed).
CREATE TABLE ops_uptime (
    chan_id BIGINT NOT NULL,
    hour_ms BIGINT NOT NULL,
    observations BIGINT NOT NULL,
    active BIGINT NOT NULL,
    PRIMARY KEY (chan_id, hour_ms)
);
