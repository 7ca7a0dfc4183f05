-- Tables every service has: idempotency records, the event journal and the receipt log.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL (BIGINT and TEXT only).

CREATE TABLE idempotency_keys (
    scope          TEXT   NOT NULL,
    key            TEXT   NOT NULL,
    fingerprint    TEXT   NOT NULL,
    state          TEXT   NOT NULL, -- 'pending' until the response is stored, then 'done'
    status_code    BIGINT,
    response       TEXT,
    resource_id    TEXT,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE event_heads (
    topic     TEXT   PRIMARY KEY,
    last_seq  BIGINT NOT NULL
);

CREATE TABLE events (
    topic          TEXT   NOT NULL,
    seq            BIGINT NOT NULL,
    kind           TEXT   NOT NULL,
    payload        TEXT   NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (topic, seq)
);

CREATE TABLE receipt_heads (
    issuer     TEXT   PRIMARY KEY,
    size       BIGINT NOT NULL,
    head_hash  TEXT   NOT NULL
);

CREATE TABLE receipts (
    issuer           TEXT   NOT NULL,
    log_index        BIGINT NOT NULL,
    receipt_id       TEXT   NOT NULL UNIQUE,
    hash             TEXT   NOT NULL UNIQUE,
    schema_name      TEXT   NOT NULL,
    idempotency_key  TEXT   NOT NULL,
    issued_at_ms     BIGINT NOT NULL,
    json             TEXT   NOT NULL,
    PRIMARY KEY (issuer, log_index)
);
