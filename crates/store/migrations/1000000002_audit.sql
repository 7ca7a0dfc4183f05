-- Signed checkpoints of each issuer's receipt log, and the event journal's retention floors.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL (BIGINT and TEXT only).

CREATE TABLE receipt_checkpoints (
    issuer         TEXT   NOT NULL,
    tree_size      BIGINT NOT NULL,
    root_hash      TEXT   NOT NULL, -- 'sha256:' + hex of the Merkle root
    key_id         TEXT   NOT NULL, -- the x-only key that signed the note
    note           TEXT   NOT NULL, -- the signed checkpoint note
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (issuer, tree_size)
);

-- Events of a topic with seq <= floor_seq have been pruned; a reader asking for them is told
-- its cursor is stale instead of silently missing them.
CREATE TABLE event_floors (
    topic      TEXT   PRIMARY KEY,
    floor_seq  BIGINT NOT NULL
);
