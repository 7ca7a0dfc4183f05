//! Hydra driven in-process through its router, against a fake executor.

#![allow(clippy::unwrap_used)]

mod fake;
mod harness;
mod liquidity;
