//! Suite tests: the real `oa` binary starts every service as its own process on free loopback
//! ports, and the tests drive them over HTTP (and the services each other over HTTP and gRPC).

#![allow(clippy::unwrap_used)]

mod docker;
mod faults;
mod postgres;
mod proof;
mod suite;
