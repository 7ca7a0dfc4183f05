//! Aegis driven in-process through its router: classification, verification at every tier,
//! the verifier registry and quorum, risk budgets, warranty quotes, ground truth and the
//! simulation, warranties, bonds, claims and disputes (with a fake Hydra), bad input and auth on
//! every route, the same scenarios on PostgreSQL, and end to end over loopback with a real Hydra
//! on a real wallet-executor on the simulated network.

#![allow(clippy::unwrap_used)]

mod cases;
mod e2e;
mod harness;
mod inputs;
mod postgres;
mod risk;
mod underwriting;
mod verification;
