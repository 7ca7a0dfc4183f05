//! The crate's integration tests, in one binary.

// Helpers outside #[test] functions unwrap too; clippy.toml covers only the tests themselves.
#![allow(clippy::unwrap_used)]

mod agrees;
mod fuzzed;
mod invoice;
mod vectors;
