//! Payment hashes and preimages: 32-byte values written as lower-case hex.
//!
//! A preimage is a bearer secret until its payment settles (whoever holds it can claim the
//! HTLC), so its `Debug` is redacted. Its `Display` is the hex, for the moments when revealing it
//! is the point (settling, proving payment); never format it into a log line.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Why a hex string is not a 32-byte value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected 64 hex characters (32 bytes)")]
pub struct InvalidHex32;

fn parse_hex32(s: &str) -> Result<[u8; 32], InvalidHex32> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return Err(InvalidHex32);
    }
    hex::decode_to_slice(s, &mut out).map_err(|_| InvalidHex32)?;
    Ok(out)
}

macro_rules! hex32_common {
    ($t:ident) => {
        impl $t {
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                $t(bytes)
            }

            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            pub const fn to_bytes(&self) -> [u8; 32] {
                self.0
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl FromStr for $t {
            type Err = InvalidHex32;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex32(s).map($t)
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&hex::encode(self.0))
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// SHA-256 of a payment preimage; identifies a payment across the network.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PaymentHash(pub [u8; 32]);

hex32_common!(PaymentHash);

impl fmt::Debug for PaymentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PaymentHash({self})")
    }
}

/// The secret whose SHA-256 is the payment hash. Not `Copy`, so copies are deliberate.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Preimage(pub [u8; 32]);

hex32_common!(Preimage);

impl Preimage {
    /// A fresh preimage from the operating system's random source.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Preimage(bytes)
    }

    /// `SHA-256(preimage)`.
    pub fn payment_hash(&self) -> PaymentHash {
        PaymentHash(Sha256::digest(self.0).into())
    }

    /// Whether this preimage settles `hash`.
    pub fn matches(&self, hash: &PaymentHash) -> bool {
        self.payment_hash() == *hash
    }
}

impl fmt::Debug for Preimage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Preimage([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preimage_hashes_with_sha256() {
        // SHA-256 of 32 zero bytes.
        let hash = Preimage([0u8; 32]).payment_hash();
        assert_eq!(
            hash.to_string(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        assert!(Preimage([0u8; 32]).matches(&hash));
        assert!(!Preimage([1u8; 32]).matches(&hash));
    }

    #[test]
    fn hex_round_trips_and_refuses_bad_input() {
        let h = PaymentHash([0xab; 32]);
        assert_eq!(h.to_string().parse::<PaymentHash>(), Ok(h));
        assert_eq!(
            format!("{:?}", h),
            format!("PaymentHash({})", "ab".repeat(32))
        );
        assert!("ab".parse::<PaymentHash>().is_err());
        assert!("zz".repeat(32).parse::<PaymentHash>().is_err());
        assert!("AB".repeat(32).parse::<PaymentHash>().is_ok());
    }

    #[test]
    fn preimage_debug_is_redacted_and_random_differs() {
        let p = Preimage::random();
        let dbg = format!("{p:?}");
        assert_eq!(dbg, "Preimage([redacted])");
        assert!(!dbg.contains(&p.to_hex()));
        assert_ne!(Preimage::random(), p);
    }
}
