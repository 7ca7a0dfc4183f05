//! Hydra driven in-process through its router, against a fake executor and a fake Aegis.

#![allow(clippy::unwrap_used)]

mod aegis_client;
mod breakers;
mod credit;
mod fake;
mod fx;
mod harness;
mod inputs;
mod liquidity;
mod postgres;
mod routing;
