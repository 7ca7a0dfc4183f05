//! wallet-executor: in-process servers on loopback, driven over real gRPC and HTTP.

#![allow(clippy::unwrap_used)]

mod auth;
mod harness;
mod pay;
