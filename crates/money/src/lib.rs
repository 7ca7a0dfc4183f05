//! Money as integer millisatoshis.
//!
//! Every amount in the suite is an [`Msat`]: a `u64` count of millisatoshis that can never exceed
//! [`Msat::MAX`], the 21 million bitcoin supply. Arithmetic is checked only: there is no `Add` or
//! `Sub` impl, so an overflow or an underflow is an explicit `Option`/`Result` the caller must
//! handle. Bounding every amount by the supply also means that every amount fits an `i64`, which
//! is how the stores persist it (SQLite and PostgreSQL both lack an unsigned 64-bit column).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Millisatoshis in one satoshi.
pub const MSAT_PER_SAT: u64 = 1_000;
/// Satoshis in one bitcoin.
pub const SAT_PER_BTC: u64 = 100_000_000;

/// A non-negative amount of millisatoshis, at most the bitcoin supply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Msat(u64);

/// Why an amount could not be made or computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount exceeds the bitcoin supply of 21,000,000 BTC")]
    AboveSupply,
    #[error("amount is negative")]
    Negative,
    #[error("arithmetic overflow")]
    Overflow,
    #[error("arithmetic underflow")]
    Underflow,
}

impl Msat {
    pub const ZERO: Msat = Msat(0);
    /// 21,000,000 BTC in millisatoshis: 2.1e18, below `i64::MAX` (9.2e18).
    pub const MAX: Msat = Msat(21_000_000 * SAT_PER_BTC * MSAT_PER_SAT);

    /// Makes an amount, refusing values above the supply.
    pub const fn new(msat: u64) -> Result<Msat, MoneyError> {
        if msat > Self::MAX.0 {
            Err(MoneyError::AboveSupply)
        } else {
            Ok(Msat(msat))
        }
    }

    /// Whole satoshis; `None` if that overflows the supply bound.
    pub fn from_sat(sat: u64) -> Result<Msat, MoneyError> {
        sat.checked_mul(MSAT_PER_SAT)
            .ok_or(MoneyError::AboveSupply)
            .and_then(Msat::new)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The amount as a database integer. Never fails: `MAX` fits an `i64`.
    pub const fn as_i64(self) -> i64 {
        self.0 as i64
    }

    /// Reads a database integer, refusing negatives and values above the supply.
    pub fn from_i64(v: i64) -> Result<Msat, MoneyError> {
        u64::try_from(v)
            .map_err(|_| MoneyError::Negative)
            .and_then(Msat::new)
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Msat) -> Result<Msat, MoneyError> {
        self.0
            .checked_add(other.0)
            .ok_or(MoneyError::Overflow)
            .and_then(|v| Msat::new(v).map_err(|_| MoneyError::Overflow))
    }

    pub fn checked_sub(self, other: Msat) -> Result<Msat, MoneyError> {
        self.0
            .checked_sub(other.0)
            .map(Msat)
            .ok_or(MoneyError::Underflow)
    }

    /// `self - other`, or zero if `other` is larger.
    pub fn saturating_sub(self, other: Msat) -> Msat {
        Msat(self.0.saturating_sub(other.0))
    }

    /// Sums amounts, failing on overflow rather than wrapping.
    pub fn checked_sum<I: IntoIterator<Item = Msat>>(items: I) -> Result<Msat, MoneyError> {
        items
            .into_iter()
            .try_fold(Msat::ZERO, |acc, x| acc.checked_add(x))
    }

    /// `ceil(self * ppm / 1_000_000)`: a proportional fee in parts per million, rounded up so a
    /// fee limit is never understated. Computed in `u128`, so it cannot overflow before the bound
    /// check.
    pub fn ppm_ceil(self, ppm: u32) -> Result<Msat, MoneyError> {
        let num = u128::from(self.0) * u128::from(ppm);
        let v = num.div_ceil(1_000_000);
        u64::try_from(v)
            .map_err(|_| MoneyError::Overflow)
            .and_then(|v| Msat::new(v).map_err(|_| MoneyError::Overflow))
    }

    /// `floor(self * bps / 10_000)`: a share in basis points, rounded down.
    pub fn bps_floor(self, bps: u32) -> Result<Msat, MoneyError> {
        let v = u128::from(self.0) * u128::from(bps) / 10_000;
        u64::try_from(v)
            .map_err(|_| MoneyError::Overflow)
            .and_then(|v| Msat::new(v).map_err(|_| MoneyError::Overflow))
    }
}

impl fmt::Display for Msat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} msat", self.0)
    }
}

impl TryFrom<u64> for Msat {
    type Error = MoneyError;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        Msat::new(v)
    }
}

impl From<Msat> for u64 {
    fn from(v: Msat) -> u64 {
        v.0
    }
}

/// Serialized as a decimal string, as the proto3 JSON mapping does for 64-bit integers, so that
/// no JSON reader rounds it through a double.
impl Serialize for Msat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Msat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v: u64 = s.parse().map_err(|_| {
            serde::de::Error::custom("amount must be a decimal string of a non-negative integer")
        })?;
        Msat::new(v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_amounts_above_supply() {
        assert_eq!(
            Msat::new(Msat::MAX.as_u64() + 1),
            Err(MoneyError::AboveSupply)
        );
        assert!(Msat::new(Msat::MAX.as_u64()).is_ok());
        assert_eq!(Msat::from_sat(u64::MAX), Err(MoneyError::AboveSupply));
    }

    #[test]
    fn max_fits_i64_and_round_trips() {
        assert_eq!(Msat::from_i64(Msat::MAX.as_i64()), Ok(Msat::MAX));
        assert_eq!(Msat::from_i64(-1), Err(MoneyError::Negative));
    }

    #[test]
    fn add_and_sub_are_checked() {
        assert_eq!(Msat::MAX.checked_add(Msat(1)), Err(MoneyError::Overflow));
        assert_eq!(Msat(1).checked_sub(Msat(2)), Err(MoneyError::Underflow));
        assert_eq!(Msat(5).checked_sub(Msat(2)), Ok(Msat(3)));
        assert_eq!(Msat::checked_sum([Msat(1), Msat(2), Msat(3)]), Ok(Msat(6)));
    }

    #[test]
    fn ppm_rounds_up_and_bps_rounds_down() {
        assert_eq!(Msat(1_000_000).ppm_ceil(1), Ok(Msat(1)));
        assert_eq!(Msat(1).ppm_ceil(1), Ok(Msat(1)));
        assert_eq!(Msat(0).ppm_ceil(5000), Ok(Msat(0)));
        assert_eq!(Msat(9_999).bps_floor(1), Ok(Msat(0)));
        assert_eq!(Msat(10_000).bps_floor(25), Ok(Msat(25)));
    }

    #[test]
    fn serde_uses_decimal_strings() {
        let v = serde_json::to_string(&Msat(42)).unwrap();
        assert_eq!(v, "\"42\"");
        assert_eq!(serde_json::from_str::<Msat>("\"42\"").unwrap(), Msat(42));
        assert!(serde_json::from_str::<Msat>("\"-1\"").is_err());
        assert!(serde_json::from_str::<Msat>("42").is_err());
        assert!(serde_json::from_str::<Msat>("\"99999999999999999999\"").is_err());
    }

    proptest! {
        #[test]
        fn add_then_sub_is_identity(a in 0..=Msat::MAX.as_u64(), b in 0..=Msat::MAX.as_u64()) {
            let (a, b) = (Msat(a), Msat(b));
            match a.checked_add(b) {
                Ok(s) => prop_assert_eq!(s.checked_sub(b), Ok(a)),
                Err(e) => prop_assert_eq!(e, MoneyError::Overflow),
            }
        }
    }
}
