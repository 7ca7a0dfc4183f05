//! Treasury driven in-process through its router, against a fake Hydra and a fake Aegis.

#![allow(clippy::unwrap_used)]

mod approvals;
mod budgets;
mod clients;
mod concurrency;
mod fake;
mod harness;
mod payments;
mod periods;
mod policy;
mod postgres;
mod rails;
