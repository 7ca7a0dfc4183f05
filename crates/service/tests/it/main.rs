//! The service kit's router, driven in-process.

#![allow(clippy::unwrap_used)]

mod router;
