//! Ledger integration tests. Each database test runs on SQLite and, when `OA_TEST_POSTGRES_URL`
//! is set (e.g. `postgres://postgres@127.0.0.1:5432/postgres`), on a fresh PostgreSQL database.

mod accounts;
mod concurrency;
mod conformance;
mod invariants;
mod lookups;
mod props;
mod statement;
mod support;
mod two_phase;
