//! wallet-executor: in-process servers on loopback, driven over real gRPC and HTTP.

#![allow(clippy::unwrap_used)]

mod auth;
mod channels;
mod conformance;
mod crash;
mod faults;
mod harness;
mod pay;
mod postgres;
