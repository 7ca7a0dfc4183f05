//! Store conformance tests: each runs on SQLite and, when `OA_TEST_POSTGRES_URL` is set, on a
//! fresh PostgreSQL database.

mod conformance;
