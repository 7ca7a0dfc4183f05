//! Hydra driven in-process through its router, against a fake executor and a fake Aegis (and,
//! in `e2e`, the real wallet-executor on the simulated network over gRPC).

#![allow(clippy::unwrap_used)]

mod aegis_client;
mod breakers;
mod credit;
mod deposits;
mod e2e;
mod fake;
mod fx;
mod hang;
mod harness;
mod inputs;
mod liquidity;
mod observability;
mod postgres;
mod routing;
mod withdrawals;
