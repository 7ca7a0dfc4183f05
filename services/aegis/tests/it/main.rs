//! Aegis driven in-process through its router: classification, verification at every tier,
//! the verifier registry and quorum, risk budgets, warranty quotes, ground truth and the
//! simulation, bad input and auth on every route, and the same scenarios on PostgreSQL.

#![allow(clippy::unwrap_used)]

mod cases;
mod harness;
mod inputs;
mod postgres;
mod risk;
mod verification;
