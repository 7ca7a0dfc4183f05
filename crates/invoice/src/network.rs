//! The bitcoin networks an invoice can be for.

use std::fmt;
use std::str::FromStr;

use lightning_invoice::Currency;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A bitcoin network. Simnet (a btcd test network) exists in BOLT11 but not in this suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Network {
    Bitcoin,
    Testnet,
    Signet,
    Regtest,
}

impl Network {
    pub const ALL: [Network; 4] = [
        Network::Bitcoin,
        Network::Testnet,
        Network::Signet,
        Network::Regtest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Network::Bitcoin => "bitcoin",
            Network::Testnet => "testnet",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        }
    }

    /// The BOLT11 currency (human-readable prefix `lnbc`, `lntb`, `lntbs`, `lnbcrt`).
    pub fn currency(self) -> Currency {
        match self {
            Network::Bitcoin => Currency::Bitcoin,
            Network::Testnet => Currency::BitcoinTestnet,
            Network::Signet => Currency::Signet,
            Network::Regtest => Currency::Regtest,
        }
    }

    /// The network of a BOLT11 currency; `None` for simnet.
    pub fn from_currency(currency: Currency) -> Option<Network> {
        match currency {
            Currency::Bitcoin => Some(Network::Bitcoin),
            Currency::BitcoinTestnet => Some(Network::Testnet),
            Currency::Signet => Some(Network::Signet),
            Currency::Regtest => Some(Network::Regtest),
            Currency::Simnet => None,
        }
    }

    /// The `bitcoin` crate's network, for addresses.
    pub fn to_bitcoin(self) -> bitcoin::Network {
        match self {
            Network::Bitcoin => bitcoin::Network::Bitcoin,
            Network::Testnet => bitcoin::Network::Testnet,
            Network::Signet => bitcoin::Network::Signet,
            Network::Regtest => bitcoin::Network::Regtest,
        }
    }
}

impl From<Network> for Currency {
    fn from(n: Network) -> Currency {
        n.currency()
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a network name was not recognised.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown network {0:?} (expected bitcoin, testnet, signet or regtest)")]
pub struct UnknownNetwork(pub String);

impl FromStr for Network {
    type Err = UnknownNetwork;

    /// Lower-case names only, so configuration has one spelling per network.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Network::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| UnknownNetwork(s.to_owned()))
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_map_to_currencies() {
        for n in Network::ALL {
            assert_eq!(n.to_string().parse::<Network>(), Ok(n));
            assert_eq!(Network::from_currency(n.currency()), Some(n));
        }
        assert!("mainnet".parse::<Network>().is_err());
        assert!("Regtest".parse::<Network>().is_err());
        assert_eq!(Network::from_currency(Currency::Simnet), None);
    }
}
