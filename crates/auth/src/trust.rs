//! The trust store: which Ed25519 keys may sign tokens, and which scopes each may grant.
//!
//! File format (JSON, unknown fields refused so a typo cannot silently widen or drop a rule):
//!
//! ```json
//! {"keys":[{"kid":"treasury-1","public_key":"<base64url, no padding>","allowed_scopes":["hydra:*"]}]}
//! ```
//!
//! `public_key` is the raw 32-byte key, encoded like a JWK `x`. An optional `name` documents who
//! holds the key; it is never used for a decision.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::VerifyingKey;
use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};

use crate::AuthError;
use crate::scope::{is_valid_pattern, scope_pattern_allows};

/// Longest accepted key id, in bytes. Key ids are short labels such as `treasury-2026-01`.
pub const MAX_KID_LEN: usize = 128;
/// Most keys one trust store may hold: one or two per service and rotation, with ample room.
pub const MAX_TRUSTED_KEYS: usize = 1024;
/// Largest trust store file read, so a wrong path (a log file, a device) fails fast.
pub const MAX_TRUST_STORE_BYTES: u64 = 1024 * 1024;
/// Most scope patterns per key; the suite's whole scope vocabulary is far smaller.
const MAX_PATTERNS_PER_KEY: usize = 64;

/// Whether `kid` is a usable key id: 1 to [`MAX_KID_LEN`] bytes of printable ASCII, no spaces.
pub(crate) fn is_valid_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= MAX_KID_LEN && kid.bytes().all(|b| b.is_ascii_graphic())
}

/// One trusted signer: its key id, public key and the scope patterns it may grant.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub kid: String,
    pub public_key: VerifyingKey,
    /// Who holds this key, for humans reading the file. Never used for a decision.
    pub name: Option<String>,
    /// Scope patterns: a scope, `namespace:*`, or `*` for all.
    pub allowed_scopes: Vec<String>,
}

impl TrustedKey {
    pub fn new<I, S>(kid: impl Into<String>, public_key: VerifyingKey, allowed_scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        TrustedKey {
            kid: kid.into(),
            public_key,
            name: None,
            allowed_scopes: allowed_scopes.into_iter().map(Into::into).collect(),
        }
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Whether this key may grant the concrete scope `scope`.
    pub fn allows(&self, scope: &str) -> bool {
        self.allowed_scopes
            .iter()
            .any(|pattern| scope_pattern_allows(pattern, scope))
    }

    /// The public key as base64url without padding (a JWK `x`).
    pub fn public_key_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public_key.as_bytes())
    }

    fn check(&self) -> Result<(), AuthError> {
        if !is_valid_kid(&self.kid) {
            return Err(AuthError::TrustStore(format!(
                "key id {:?} must be 1 to {MAX_KID_LEN} printable ASCII characters",
                self.kid
            )));
        }
        // A small-order point would let anyone forge signatures that verify under it.
        if self.public_key.is_weak() {
            return Err(AuthError::TrustStore(format!(
                "public key of {} is a weak (small-order) point",
                self.kid
            )));
        }
        if self.allowed_scopes.len() > MAX_PATTERNS_PER_KEY {
            return Err(AuthError::TrustStore(format!(
                "key {} lists more than {MAX_PATTERNS_PER_KEY} scope patterns",
                self.kid
            )));
        }
        if let Some(bad) = self.allowed_scopes.iter().find(|p| !is_valid_pattern(p)) {
            return Err(AuthError::TrustStore(format!(
                "key {} has invalid scope pattern {bad:?}",
                self.kid
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedKey")
            .field("kid", &self.kid)
            .field("public_key", &self.public_key_b64())
            .field("name", &self.name)
            .field("allowed_scopes", &self.allowed_scopes)
            .finish()
    }
}

/// A trusted key with its decoding key prepared once.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) key: TrustedKey,
    pub(crate) decoding: DecodingKey,
}

/// Key id -> trusted key. Built in code with [`TrustStore::insert`] or read from a JSON file.
#[derive(Clone, Default)]
pub struct TrustStore {
    entries: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    keys: Vec<TrustFileKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFileKey {
    kid: String,
    public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    allowed_scopes: Vec<String>,
}

impl TrustStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key, refusing an invalid entry or a key id that is already present (replacing a
    /// key silently would hide a configuration mistake).
    pub fn insert(&mut self, key: TrustedKey) -> Result<(), AuthError> {
        key.check()?;
        if self.entries.len() >= MAX_TRUSTED_KEYS {
            return Err(AuthError::TrustStore(format!(
                "more than {MAX_TRUSTED_KEYS} keys"
            )));
        }
        if self.entries.contains_key(&key.kid) {
            return Err(AuthError::TrustStore(format!(
                "duplicate key id {}",
                key.kid
            )));
        }
        let decoding = DecodingKey::from_ed_der(key.public_key.as_bytes());
        self.entries
            .insert(key.kid.clone(), Entry { key, decoding });
        Ok(())
    }

    /// Builder form of [`TrustStore::insert`].
    pub fn with(mut self, key: TrustedKey) -> Result<Self, AuthError> {
        self.insert(key)?;
        Ok(self)
    }

    /// Removes a key (for rotation); returns it if it was present.
    pub fn remove(&mut self, kid: &str) -> Option<TrustedKey> {
        self.entries.remove(kid).map(|e| e.key)
    }

    pub fn get(&self, kid: &str) -> Option<&TrustedKey> {
        self.entries.get(kid).map(|e| &e.key)
    }

    pub(crate) fn entry(&self, kid: &str) -> Option<&Entry> {
        self.entries.get(kid)
    }

    /// The keys, ordered by key id.
    pub fn keys(&self) -> impl Iterator<Item = &TrustedKey> {
        self.entries.values().map(|e| &e.key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Parses the JSON file format described in the module docs.
    pub fn from_json(json: &str) -> Result<Self, AuthError> {
        let file: TrustFile = serde_json::from_str(json)
            .map_err(|e| AuthError::TrustStore(format!("not a trust store document: {e}")))?;
        let mut store = TrustStore::new();
        for k in file.keys {
            let bytes = URL_SAFE_NO_PAD
                .decode(k.public_key.as_bytes())
                .map_err(|_| {
                    AuthError::TrustStore(format!(
                        "public key of {} is not base64url without padding",
                        k.kid
                    ))
                })?;
            let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                AuthError::TrustStore(format!("public key of {} is not 32 bytes", k.kid))
            })?;
            let public_key = VerifyingKey::from_bytes(&bytes).map_err(|_| {
                AuthError::TrustStore(format!("public key of {} is not an Ed25519 point", k.kid))
            })?;
            store.insert(TrustedKey {
                kid: k.kid,
                public_key,
                name: k.name,
                allowed_scopes: k.allowed_scopes,
            })?;
        }
        Ok(store)
    }

    /// The JSON file format, pretty-printed, keys ordered by key id.
    pub fn to_json(&self) -> String {
        let file = TrustFile {
            keys: self
                .keys()
                .map(|k| TrustFileKey {
                    kid: k.kid.clone(),
                    public_key: k.public_key_b64(),
                    name: k.name.clone(),
                    allowed_scopes: k.allowed_scopes.clone(),
                })
                .collect(),
        };
        // Serializing plain strings and vectors cannot fail; fall back to an empty store text
        // rather than panic if serde_json ever says otherwise.
        serde_json::to_string_pretty(&file).unwrap_or_else(|_| "{\"keys\":[]}".to_owned())
    }

    /// Reads a trust store file, refusing files above [`MAX_TRUST_STORE_BYTES`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, AuthError> {
        let path = path.as_ref();
        let io = |source| AuthError::Io {
            action: "read trust store",
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut text = String::new();
        file.take(MAX_TRUST_STORE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_TRUST_STORE_BYTES {
            return Err(AuthError::TrustStore(format!(
                "{} is larger than {MAX_TRUST_STORE_BYTES} bytes",
                path.display()
            )));
        }
        Self::from_json(&text)
    }

    /// Writes the trust store file. It holds public keys only, so it needs no special permissions.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), AuthError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_json() + "\n").map_err(|source| AuthError::Io {
            action: "write trust store",
            path: path.to_owned(),
            source,
        })
    }
}

impl fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys()).finish()
    }
}
