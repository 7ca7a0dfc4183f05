//! lightning-ops: policy validation, the Aperture compiler (golden files) and its route.

#![allow(clippy::unwrap_used)]

mod aperture;
mod plan;
