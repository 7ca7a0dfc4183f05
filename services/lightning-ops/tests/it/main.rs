//! lightning-ops: policy validation, the Aperture compiler (golden files), planning, and apply
//! (policies with inbound fees, rebalances within the budget, opens and closes), reconcile,
//! forwarding ingestion, P&L and health, against a scripted custody channel and a real
//! wallet-executor on the simulated network.

#![allow(clippy::unwrap_used)]

mod aperture;
mod apply;
mod fake;
mod forwards;
mod harness;
mod inbound;
mod lifecycle;
mod plan;
mod postgres;
mod rebalance;
mod reconcile;
mod report;
mod routes;
