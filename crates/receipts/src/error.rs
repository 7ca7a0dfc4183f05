//! The one error type of this crate.
//!
//! Variants say what went wrong in terms a caller can act on: a malformed value it was handed
//! (`Invalid*`, `Malformed*`), a draft it must fix before sealing (`NumberInBody`, limits), or a
//! receipt that is not authentic (`HashMismatch`, `BadSignature`). Secret material never appears
//! in an error.

use crate::hash::Hash;

/// Everything that can go wrong while building, sealing, encoding or verifying receipts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// serde_json (or the JCS serializer built on it) refused the value.
    #[error("JSON encoding failed: {0}")]
    Json(#[from] serde_json::Error),

    /// A hash string is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid hash {0:?}: expected \"sha256:\" followed by 64 lowercase hex digits")]
    InvalidHash(String),

    /// A secret key is not 64 hex digits of a valid secp256k1 scalar. The key itself is never
    /// included.
    #[error("invalid secret key: {0}")]
    InvalidSecretKey(&'static str),

    /// A key id is not 64 lowercase hex digits of an x-only secp256k1 public key.
    #[error(
        "invalid key id {0:?}: expected 64 lowercase hex digits of an x-only secp256k1 public key"
    )]
    InvalidKeyId(String),

    /// A signature is not 128 lowercase hex digits.
    #[error("malformed signature: expected 128 lowercase hex digits of a BIP340 signature")]
    MalformedSignature,

    /// A well-formed signature does not verify under the issuer's key.
    #[error("signature does not verify under key {key_id}")]
    BadSignature {
        /// The key the signature was checked against.
        key_id: String,
    },

    /// The schema is not of the form `oa.<service>.<name>.v<N>`.
    #[error("invalid schema {0:?}: expected oa.<service>.<name>.v<N> (lowercase segments, N >= 1)")]
    InvalidSchema(String),

    /// A string field is empty, too long or contains characters it may not contain.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The receipt field, e.g. `receipt_id`.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },

    /// The body holds a JSON number; receipts carry numbers as decimal strings.
    #[error("JSON number at body{pointer}: receipts carry numbers as decimal strings")]
    NumberInBody {
        /// RFC 6901 JSON pointer of the number inside the body.
        pointer: String,
    },

    /// The body is nested deeper than [`crate::MAX_BODY_DEPTH`].
    #[error("body nested deeper than {max} levels at body{pointer}")]
    BodyTooDeep {
        /// RFC 6901 JSON pointer of the first value beyond the limit.
        pointer: String,
        /// The limit.
        max: usize,
    },

    /// A receipt has more than [`crate::MAX_LINKS`] links.
    #[error("{count} links, more than the limit of {max}")]
    TooManyLinks {
        /// How many links the receipt has.
        count: usize,
        /// The limit.
        max: usize,
    },

    /// The canonical form of the receipt exceeds [`crate::MAX_CANONICAL_RECEIPT_BYTES`].
    #[error("receipt is {len} canonical bytes, more than the limit of {max}")]
    ReceiptTooLarge {
        /// Canonical length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// [`crate::body_from`] was given a value that does not serialize to a JSON object.
    #[error("a receipt body must serialize to a JSON object")]
    BodyNotObject,

    /// The body has a `preimage` that does not hash to its `payment_hash`.
    #[error("body preimage does not hash to its payment_hash: {0}")]
    PreimageMismatch(String),

    /// The first receipt of a log must have `prev_hash` = [`Hash::ZERO`], and only it may.
    #[error(
        "log_index {log_index} with prev_hash {prev_hash}: only log_index 0 has the zero prev_hash"
    )]
    BadGenesis {
        /// The log index being sealed.
        log_index: u64,
        /// The prev_hash it was given.
        prev_hash: Hash,
    },

    /// The receipt's `hash` field does not match its content.
    #[error("hash mismatch: receipt says {claimed}, its content hashes to {computed}")]
    HashMismatch {
        /// The `hash` field.
        claimed: Hash,
        /// What the content hashes to.
        computed: Hash,
    },

    /// Writing an export failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
