//! Integration tests of `oa-receipts`, one binary with a module per concern.

// A failed unwrap in a test is a test failure with a backtrace, which is what we want.
#![allow(clippy::unwrap_used)]

mod audit;
mod chain;
mod export;
mod golden;
mod jcs_vectors;
mod merkle_vectors;
mod props;
mod py_rfc8785;
mod sign_verify;
mod support;
