//! wallet-executor: in-process servers on loopback, driven over real gRPC and HTTP.

#![allow(clippy::unwrap_used)]

mod auth;
mod channels;
mod conformance;
mod crash;
mod fake_lnd;
mod faults;
mod harness;
mod lnd;
mod pay;
mod postgres;
