//! Receipt signing keys: BIP340 Schnorr over secp256k1.
//!
//! A key is identified by its 32-byte x-only public key in lowercase hex (`key_id`), which is
//! also what BIP340 verification needs, so a receipt's `issuer.key_id` is enough to check its
//! signature. Services publish their key ids; [`crate::verify_export`] additionally requires the
//! key to be listed in the export.
//!
//! One process-wide secp256k1 context is shared by signing and verification: creating a context
//! allocates and precomputes tables, which would dominate the cost of verifying one receipt.

use std::fmt;
use std::sync::LazyLock;

use bitcoin::secp256k1::{
    All, Keypair, Message, Secp256k1, SecretKey, XOnlyPublicKey, rand, schnorr,
};

use crate::error::ReceiptError;
use crate::hash::{Hash, decode_lower_hex, truncate_for_error};

/// The shared context. `Secp256k1<All>` is `Send + Sync` and all operations take `&self`.
static SECP: LazyLock<Secp256k1<All>> = LazyLock::new(Secp256k1::new);

/// A secp256k1 keypair that signs receipts. `Debug` never prints the secret.
#[derive(Clone)]
pub struct ReceiptKey {
    keypair: Keypair,
    /// Cached because every sealed receipt carries it.
    key_id: String,
}

impl ReceiptKey {
    /// A fresh key from the operating system's randomness.
    #[must_use]
    pub fn generate() -> ReceiptKey {
        Self::from_keypair(Keypair::new(&SECP, &mut rand::thread_rng()))
    }

    /// Loads a key written by [`ReceiptKey::secret_hex`]. Surrounding whitespace (a key file's
    /// trailing newline) is ignored; either hex case is accepted because this is not a value that
    /// is hashed or exported.
    ///
    /// # Errors
    ///
    /// [`ReceiptError::InvalidSecretKey`] if it is not 64 hex digits of a valid scalar.
    pub fn from_secret_hex(secret_hex: &str) -> Result<ReceiptKey, ReceiptError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(secret_hex.trim(), &mut bytes)
            .map_err(|_| ReceiptError::InvalidSecretKey("expected 64 hex digits"))?;
        let secret = SecretKey::from_slice(&bytes)
            .map_err(|_| ReceiptError::InvalidSecretKey("not a valid secp256k1 secret key"))?;
        Ok(Self::from_keypair(Keypair::from_secret_key(&SECP, &secret)))
    }

    fn from_keypair(keypair: Keypair) -> ReceiptKey {
        let (xonly, _parity) = keypair.x_only_public_key();
        ReceiptKey {
            keypair,
            key_id: hex::encode(xonly.serialize()),
        }
    }

    /// The secret as 64 lowercase hex digits, for writing a key file. Treat the result as secret.
    #[must_use]
    pub fn secret_hex(&self) -> String {
        hex::encode(self.keypair.secret_bytes())
    }

    /// Lowercase hex of the 32-byte x-only public key.
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// BIP340 signature over the 32 bytes of `hash`, as 128 lowercase hex digits.
    ///
    /// Uses fresh auxiliary randomness per signature (BIP340's recommendation, hardening against
    /// side channels), so signing the same hash twice gives different, equally valid signatures.
    #[must_use]
    pub fn sign(&self, hash: &Hash) -> String {
        let msg = Message::from_digest(*hash.as_bytes());
        let sig = SECP.sign_schnorr(&msg, &self.keypair);
        hex::encode(sig.serialize())
    }
}

impl fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiptKey")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Checks a BIP340 signature (128 lowercase hex digits) over `hash` under the x-only public key
/// `key_id` (64 lowercase hex digits).
///
/// # Errors
///
/// [`ReceiptError::InvalidKeyId`] or [`ReceiptError::MalformedSignature`] for malformed input,
/// [`ReceiptError::BadSignature`] if the signature does not verify.
pub fn verify_signature(key_id: &str, hash: &Hash, signature: &str) -> Result<(), ReceiptError> {
    let key = parse_key_id(key_id)?;
    verify_with_key(&key, key_id, hash, signature)
}

/// Parses a key id into the point BIP340 verifies against. Exposed to the crate so the export
/// verifier parses each issuer's key once rather than once per receipt (parsing lifts x to a
/// curve point, which costs a square root).
pub(crate) fn parse_key_id(key_id: &str) -> Result<XOnlyPublicKey, ReceiptError> {
    decode_lower_hex::<32>(key_id)
        .and_then(|bytes| XOnlyPublicKey::from_slice(&bytes).ok())
        .ok_or_else(|| ReceiptError::InvalidKeyId(truncate_for_error(key_id)))
}

pub(crate) fn verify_with_key(
    key: &XOnlyPublicKey,
    key_id: &str,
    hash: &Hash,
    signature: &str,
) -> Result<(), ReceiptError> {
    let sig = decode_lower_hex::<64>(signature)
        .and_then(|bytes| schnorr::Signature::from_slice(&bytes).ok())
        .ok_or(ReceiptError::MalformedSignature)?;
    let msg = Message::from_digest(*hash.as_bytes());
    SECP.verify_schnorr(&sig, &msg, key)
        .map_err(|_| ReceiptError::BadSignature {
            key_id: truncate_for_error(key_id),
        })
}

#[cfg(test)]
// A failed unwrap in a test is a test failure with a backtrace, which is what we want.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secret_hex_round_trips_and_key_id_is_xonly_hex() {
        let key = ReceiptKey::generate();
        let again = ReceiptKey::from_secret_hex(&format!("{}\n", key.secret_hex())).unwrap();
        assert_eq!(again.key_id(), key.key_id());
        assert_eq!(key.key_id().len(), 64);
        assert!(
            key.key_id()
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        );
    }

    #[test]
    fn debug_redacts_the_secret() {
        let key = ReceiptKey::generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.secret_hex()), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn bip340_test_vector_1_verifies() {
        // BIP340 test vector index 1 (bip-0340/test-vectors.csv).
        let key_id = "dff1d77f2a671c5f36183726db2341be58feae1da2deced843240f7b502ba659";
        let msg = "243f6a8885a308d313198a2e03707344a4093822299f31d0082efa98ec4e6c89";
        let sig = "6896bd60eeae296db48a229ff71dfe071bde413e6d43f917dc8dcf8c78de33418906d11ac976abccb20b091292bff4ea897efcb639ea871cfa95f6de339e4b0a";
        let hash = Hash::from_bytes(decode_lower_hex::<32>(msg).unwrap());
        verify_signature(key_id, &hash, sig).unwrap();
        let other = Hash::of(b"other");
        assert!(matches!(
            verify_signature(key_id, &other, sig),
            Err(ReceiptError::BadSignature { .. })
        ));
    }

    #[test]
    fn refuses_malformed_keys_and_signatures() {
        let key = ReceiptKey::generate();
        let hash = Hash::of(b"m");
        let sig = key.sign(&hash);
        assert!(ReceiptKey::from_secret_hex("00").is_err());
        assert!(ReceiptKey::from_secret_hex(&"0".repeat(64)).is_err());
        assert!(matches!(
            verify_signature(&key.key_id().to_uppercase(), &hash, &sig),
            Err(ReceiptError::InvalidKeyId(_))
        ));
        assert!(matches!(
            verify_signature(key.key_id(), &hash, &sig.to_uppercase()),
            Err(ReceiptError::MalformedSignature)
        ));
        assert!(matches!(
            verify_signature(key.key_id(), &hash, &sig[..126]),
            Err(ReceiptError::MalformedSignature)
        ));
    }
}
