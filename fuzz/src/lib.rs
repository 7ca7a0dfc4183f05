//! The properties the fuzz targets check, one module per target.
//!
//! Each module's `check` takes the bytes libFuzzer generates and panics when a property fails;
//! libFuzzer reports the panic as a crash and saves the input under `fuzz/artifacts/<target>/`.
//! The targets in `fuzz_targets/` are one line each around these functions, and
//! `tests/corpus.rs` replays the checked-in seed corpus (`corpus/<target>/`) through the same
//! functions on stable, so every property is also checked without nightly or cargo-fuzz.
//!
//! The properties are more than "does not panic" wherever the code promises more: canonical JSON
//! is idempotent and agrees with the receipts' own writer, an accepted invoice agrees field by
//! field with LDK's own checks, a refused request body is a typed 4xx, and a clean export report
//! is re-derived from the export with the per-receipt checks.

pub mod canonical_json;
pub mod invoice;
pub mod invoice_fields;
pub mod receipt;
pub mod request_body;
pub mod verify_export;

/// A target's name (its binary and its `corpus/` folder) and its check.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order `run.sh` runs them.
pub const TARGETS: &[Target] = &[
    ("canonical_json", canonical_json::check),
    ("receipt", receipt::check),
    ("verify_export", verify_export::check),
    ("invoice", invoice::check),
    ("invoice_fields", invoice_fields::check),
    ("request_body", request_body::check),
];
