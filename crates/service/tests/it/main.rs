//! The service kit's router, driven in-process.

#![allow(clippy::unwrap_used)]

mod audit;
mod events;
mod router;
