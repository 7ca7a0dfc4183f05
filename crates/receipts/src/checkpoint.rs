//! Signed checkpoints: an issuer's statement "my log had `size` receipts and this Merkle root".
//!
//! The format is the C2SP `tlog-checkpoint` signed note
//! (<https://c2sp.org/tlog-checkpoint>, <https://c2sp.org/signed-note>), with one deviation: the
//! signature is BIP340 Schnorr by the issuer's receipt key instead of Ed25519, so one key per
//! issuer signs both receipts and checkpoints. A checkpoint note is
//!
//! ```text
//! oa-receipts/<service>\n          origin: names the log
//! <size>\n                         decimal tree size, no leading zeros
//! <base64 root>\n                  standard base64 (with padding) of the 32-byte Merkle root
//! \n                               end of the note body
//! — <service> <base64 signature>\n one signature line (U+2014 EM DASH, space, key name, space)
//! ```
//!
//! The signature line's base64 decodes to 68 bytes: a 4-byte key hint
//! `SHA-256(<service> || 0x0A || 0xFF || "bip340-secp256k1" || <32-byte x-only key>)[0..4]`
//! followed by the 64-byte BIP340 signature over `SHA-256(<note body>)`, the note body being the
//! three text lines with their newlines (everything before the blank line). `0xFF` is the
//! signed-note signature type reserved for algorithms the note specification does not define.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bitcoin::secp256k1::XOnlyPublicKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::hash::Hash;
use crate::key::{ReceiptKey, parse_key_id, verify_with_key};
use crate::merkle::Digest;

/// Prefix of every origin line; the service name follows.
pub const ORIGIN_PREFIX: &str = "oa-receipts/";

/// Longest note accepted for parsing: three short lines and one signature line are ~200 bytes.
pub const MAX_NOTE_BYTES: usize = 1024;

/// Why a checkpoint note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The note does not have the checkpoint layout.
    #[error("malformed checkpoint note: {0}")]
    Malformed(&'static str),
    /// The origin line does not name the expected service's log.
    #[error("checkpoint origin {found:?} is not {expected:?}")]
    WrongOrigin {
        /// The origin line read.
        found: String,
        /// What it should be.
        expected: String,
    },
    /// The signature does not verify under the issuer's key (or the key hint names another key).
    #[error("checkpoint signature does not verify under key {0}")]
    BadSignature(String),
}

/// A verified (or freshly signed) checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The issuing service.
    pub service: String,
    /// Number of receipts the tree covers.
    pub tree_size: u64,
    /// The Merkle root of the first `tree_size` receipt hashes.
    pub root: Digest,
    /// The full signed note.
    pub note: String,
}

/// A checkpoint as it travels in exports and API responses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRecord {
    /// The issuing service.
    pub service: String,
    /// The issuer's x-only public key (hex) that signed the note.
    pub key_id: String,
    /// The signed note (see the module docs).
    pub note: String,
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} size {} root {}",
            self.service,
            self.tree_size,
            Hash::from_bytes(self.root)
        )
    }
}

/// The origin line of `service`'s log.
#[must_use]
pub fn origin(service: &str) -> String {
    format!("{ORIGIN_PREFIX}{service}")
}

fn body(service: &str, tree_size: u64, root: &Digest) -> String {
    format!("{}\n{tree_size}\n{}\n", origin(service), B64.encode(root))
}

fn key_hint(service: &str, key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(service.as_bytes());
    h.update([0x0a, 0xff]);
    h.update(crate::KEY_ALGORITHM.as_bytes());
    h.update(key);
    let d: [u8; 32] = h.finalize().into();
    [d[0], d[1], d[2], d[3]]
}

impl Checkpoint {
    /// Signs a checkpoint of `service`'s log at `tree_size` with root `root`.
    #[must_use]
    pub fn sign(key: &ReceiptKey, service: &str, tree_size: u64, root: Digest) -> Checkpoint {
        let text = body(service, tree_size, &root);
        let msg = Hash::of(text.as_bytes());
        let sig_hex = key.sign(&msg);
        let mut blob = Vec::with_capacity(68);
        let mut key_bytes = [0u8; 32];
        // The key id is always 64 lowercase hex digits (ReceiptKey makes it).
        let _ = hex::decode_to_slice(key.key_id(), &mut key_bytes);
        blob.extend_from_slice(&key_hint(service, &key_bytes));
        let mut sig = [0u8; 64];
        let _ = hex::decode_to_slice(&sig_hex, &mut sig);
        blob.extend_from_slice(&sig);
        let note = format!("{text}\n\u{2014} {service} {}\n", B64.encode(&blob));
        Checkpoint {
            service: service.to_owned(),
            tree_size,
            root,
            note,
        }
    }

    /// The record form, for exports and the API.
    #[must_use]
    pub fn record(&self, key_id: &str) -> CheckpointRecord {
        CheckpointRecord {
            service: self.service.clone(),
            key_id: key_id.to_owned(),
            note: self.note.clone(),
        }
    }

    /// Parses `note` and checks it is `service`'s checkpoint signed by `key_id`.
    ///
    /// # Errors
    ///
    /// [`CheckpointError`] naming the first problem.
    pub fn verify(note: &str, service: &str, key_id: &str) -> Result<Checkpoint, CheckpointError> {
        let key = parse_key_id(key_id).map_err(|_| CheckpointError::BadSignature(key_id.into()))?;
        Self::verify_with(note, service, key_id, &key)
    }

    pub(crate) fn verify_with(
        note: &str,
        service: &str,
        key_id: &str,
        key: &XOnlyPublicKey,
    ) -> Result<Checkpoint, CheckpointError> {
        use CheckpointError::Malformed;
        if note.len() > MAX_NOTE_BYTES {
            return Err(Malformed("note too long"));
        }
        let (text, sigs) = note
            .split_once("\n\n")
            .ok_or(Malformed("no blank line between body and signatures"))?;
        let text = format!("{text}\n");
        let mut lines = text.lines();
        let (Some(origin_line), Some(size_line), Some(root_line), None) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(Malformed(
                "body must be exactly origin, size and root lines",
            ));
        };
        if origin_line != origin(service) {
            return Err(CheckpointError::WrongOrigin {
                found: crate::hash::truncate_for_error(origin_line),
                expected: origin(service),
            });
        }
        let tree_size = crate::u64_string::parse(size_line).ok_or(Malformed("tree size"))?;
        let root: Digest = B64
            .decode(root_line)
            .ok()
            .and_then(|b| Digest::try_from(b.as_slice()).ok())
            .ok_or(Malformed("root is not base64 of 32 bytes"))?;
        if B64.encode(root) != root_line {
            return Err(Malformed("root is not in canonical base64"));
        }
        let sig_line = sigs
            .strip_suffix('\n')
            .ok_or(Malformed("signature line must end with a newline"))?;
        let rest = sig_line
            .strip_prefix("\u{2014} ")
            .ok_or(Malformed("signature line must start with an em dash"))?;
        let (name, sig_b64) = rest
            .split_once(' ')
            .ok_or(Malformed("signature line: name and signature"))?;
        if name != service || sig_b64.contains('\n') {
            return Err(Malformed(
                "exactly one signature line, by the issuing service",
            ));
        }
        let blob = B64
            .decode(sig_b64)
            .map_err(|_| Malformed("signature is not base64"))?;
        let bad = || CheckpointError::BadSignature(crate::hash::truncate_for_error(key_id));
        if blob.len() != 68 || blob[..4] != key_hint(service, &key.serialize()) {
            return Err(bad());
        }
        verify_with_key(
            key,
            key_id,
            &Hash::of(text.as_bytes()),
            &hex::encode(&blob[4..]),
        )
        .map_err(|_| bad())?;
        Ok(Checkpoint {
            service: service.to_owned(),
            tree_size,
            root,
            note: note.to_owned(),
        })
    }
}

#[cfg(test)]
// A failed unwrap in a test is a test failure with a backtrace, which is what we want.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signed_note_has_the_checkpoint_layout_and_verifies() {
        let key = ReceiptKey::generate();
        let cp = Checkpoint::sign(&key, "hydra", 7, [9; 32]);
        let lines: Vec<&str> = cp.note.lines().collect();
        assert_eq!(lines[0], "oa-receipts/hydra");
        assert_eq!(lines[1], "7");
        assert_eq!(lines[2], B64.encode([9u8; 32]));
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("\u{2014} hydra "));
        let again = Checkpoint::verify(&cp.note, "hydra", key.key_id()).unwrap();
        assert_eq!(again, cp);
    }

    #[test]
    fn refuses_changed_notes_other_keys_and_other_origins() {
        let key = ReceiptKey::generate();
        let cp = Checkpoint::sign(&key, "hydra", 7, [9; 32]);
        let other = ReceiptKey::generate();
        assert!(Checkpoint::verify(&cp.note, "hydra", other.key_id()).is_err());
        assert!(Checkpoint::verify(&cp.note, "treasury", key.key_id()).is_err());
        let bumped = cp.note.replacen("\n7\n", "\n8\n", 1);
        assert!(matches!(
            Checkpoint::verify(&bumped, "hydra", key.key_id()),
            Err(CheckpointError::BadSignature(_))
        ));
        let extra = format!("{}\u{2014} hydra AAAA\n", cp.note);
        assert!(Checkpoint::verify(&extra, "hydra", key.key_id()).is_err());
        let padded = cp.note.replacen("\n7\n", "\n07\n", 1);
        assert!(Checkpoint::verify(&padded, "hydra", key.key_id()).is_err());
    }
}
