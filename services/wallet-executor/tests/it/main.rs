//! wallet-executor: in-process servers on loopback, driven over real gRPC and HTTP.

#![allow(clippy::unwrap_used)]

mod auth;
mod channel_actions;
mod channels;
mod conformance;
mod crash;
mod fake_lnd;
mod faults;
mod harness;
mod lnd;
mod onchain;
mod pay;
mod postgres;
mod receive;
