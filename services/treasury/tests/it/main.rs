//! Treasury driven in-process through its router, against a fake Hydra.

#![allow(clippy::unwrap_used)]

mod fake;
mod harness;
mod payments;
