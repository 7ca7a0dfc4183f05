//! What every service shares, so that the five of them look and behave alike to callers and
//! operators:
//!
//! - [`ApiError`]: the error envelope `{"error": {"code", "message", ...}}` with a stable code;
//! - [`ProtoJson`]: request bodies in the proto3 JSON mapping, refused with typed 4xx errors;
//! - [`ServiceRouter`]: `/healthz`, `/readyz`, `/metrics`, `/stats`, `/openapi.json`, request ids,
//!   tracing, body-size and time limits, typed 404/405, and `NOT_SUPPORTED` for routes a service
//!   declares but has not built;
//! - [`audit`]: signed checkpoints of the receipt log (a background task), their public
//!   history, inclusion and consistency proofs;
//! - [`events`]: the event stream (HTTP pages and a WebSocket that replays then follows);
//! - [`serve`]: graceful shutdown on SIGINT/SIGTERM;
//! - [`runtime`]: the allocator and the tokio runtime every service binary runs on;
//! - [`Clock`]: time behind a trait, so tests control it.

pub mod audit;
pub mod base;
mod clock;
pub mod config;
pub mod cpus;
mod detach;
mod error;
pub mod events;
mod json;
pub mod ledger;
pub mod metrics;
pub mod openapi;
pub mod peer;
pub mod receipts;
mod router;
pub mod runtime;
mod scope;
mod serve;
pub mod tracker;

pub use base::Base;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{CommonArgs, ServiceKeys};
pub use detach::{Detach, DetachLayer};
pub use error::{ApiError, grpc_status_to_api_error};
pub use json::{ProtoJson, parse as parse_json};
pub use router::{Readiness, Route, RouteStatus, ServiceRouter, StatsSource};
pub use scope::{ScopeName, Scoped};
pub use serve::{init_tracing, serve, shutdown_signal};
