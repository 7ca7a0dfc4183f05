//! FX pricing: what a client receives for what it sells, between bitcoin (integer msat) and fiat
//! currencies (decimal amounts in the currency's minor units).
//!
//! The rule, which every quote follows and the tests pin down:
//! - A reference (mid) rate is the price of one bitcoin in the fiat currency.
//! - The client's rate moves the mid against the client by the spread: a client buying bitcoin
//!   pays `mid × (1 + spread_bps / 10 000)` per BTC; a client selling bitcoin gets
//!   `mid × (1 − spread_bps / 10 000)` per BTC. These products are exact in `Decimal`.
//! - The amount the client receives is `sold / rate` (fiat → msat) or `sold × rate` (msat → fiat),
//!   computed in `Decimal` (28 significant digits) and then rounded **down** to the receiving
//!   currency's smallest unit: whole msat, or the fiat minor unit (cents for USD, yen for JPY).
//!   Rounding never favours the client, and costs it less than one smallest unit.
//! - A sold amount must be positive, in whole smallest units of its currency and within limits;
//!   a quote whose received amount rounds to zero is refused.

use rust_decimal::{Decimal, RoundingStrategy, prelude::ToPrimitive};

use oa_money::Msat;

/// Millisatoshis in one bitcoin.
pub const MSAT_PER_BTC: u64 = 100_000_000_000;
/// The largest spread a quote may carry (10 %).
pub const MAX_SPREAD_BPS: u32 = 1_000;
/// The largest fiat amount one quote may sell (in major units).
pub const MAX_FIAT_AMOUNT: u64 = 1_000_000_000;

/// The fiat currencies Hydra quotes, with their minor units (ISO 4217).
pub const FIAT: [(&str, u32); 6] = [
    ("USD", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("CHF", 2),
    ("CAD", 2),
    ("JPY", 0),
];

/// The bitcoin side's currency code.
pub const BTC: &str = "BTC";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FxError {
    #[error("unknown currency {0:?}: quoted pairs are BTC against {fiat}", fiat = fiat_list())]
    UnknownCurrency(String),
    #[error("a quote converts between BTC and a fiat currency, not {0} to {1}")]
    UnsupportedPair(String, String),
    #[error("{0}")]
    InvalidAmount(String),
    #[error("the amount received would round to zero")]
    AmountTooSmall,
    #[error("no reference rate for {0}")]
    NoRate(String),
    #[error("spread_bps must be at most {MAX_SPREAD_BPS}")]
    InvalidSpread,
}

impl FxError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            FxError::UnknownCurrency(_) => "UNKNOWN_CURRENCY",
            FxError::UnsupportedPair(..) => "UNSUPPORTED_PAIR",
            FxError::InvalidAmount(_) => "INVALID_AMOUNT",
            FxError::AmountTooSmall => "AMOUNT_TOO_SMALL",
            FxError::NoRate(_) => "NO_RATE",
            FxError::InvalidSpread => "INVALID_SPREAD",
        }
    }
}

fn fiat_list() -> String {
    FIAT.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
}

/// Minor units of a fiat currency code.
pub fn minor_units(code: &str) -> Result<u32, FxError> {
    FIAT.iter()
        .find(|(c, _)| *c == code)
        .map(|(_, m)| *m)
        .ok_or_else(|| FxError::UnknownCurrency(code.to_owned()))
}

/// An amount of either side of a pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Amount {
    Btc(Msat),
    /// A fiat amount with at most the currency's minor units of decimals.
    Fiat {
        currency: String,
        amount: Decimal,
    },
}

impl Amount {
    pub fn currency(&self) -> &str {
        match self {
            Amount::Btc(_) => BTC,
            Amount::Fiat { currency, .. } => currency,
        }
    }

    /// The amount as its wire string: integer msat, or the fiat amount with exactly its minor
    /// units of decimals (`"12.30"`).
    pub fn to_wire(&self) -> String {
        match self {
            Amount::Btc(m) => m.as_u64().to_string(),
            Amount::Fiat { currency, amount } => {
                let mut a = *amount;
                a.rescale(minor_units(currency).unwrap_or(0));
                a.to_string()
            }
        }
    }

    /// Parses a sold amount: integer msat for BTC; for fiat, a plain decimal with at most the
    /// currency's minor units (no exponent, no sign, no spaces).
    pub fn parse(currency: &str, text: &str) -> Result<Amount, FxError> {
        let bad = |m: &str| FxError::InvalidAmount(format!("amount {text:?}: {m}"));
        if currency == BTC {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("BTC amounts are whole millisatoshis"));
            }
            let v: u64 = text.parse().map_err(|_| bad("too large"))?;
            let m = Msat::new(v).map_err(|e| bad(&e.to_string()))?;
            if m.is_zero() {
                return Err(bad("must be positive"));
            }
            return Ok(Amount::Btc(m));
        }
        let minor = minor_units(currency)?;
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        if int.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || (text.contains('.') && frac.is_empty())
        {
            return Err(bad("expected a plain decimal such as 12.30"));
        }
        if frac.len() > minor as usize {
            return Err(bad(&format!(
                "{currency} has {minor} decimal places; smaller units cannot be paid"
            )));
        }
        let amount: Decimal = text.parse().map_err(|_| bad("not a decimal"))?;
        if amount.is_zero() {
            return Err(bad("must be positive"));
        }
        if amount > Decimal::from(MAX_FIAT_AMOUNT) {
            return Err(bad(&format!("at most {MAX_FIAT_AMOUNT} {currency}")));
        }
        Ok(Amount::Fiat {
            currency: currency.to_owned(),
            amount,
        })
    }
}

/// What a quote gives: the client's rate (fiat per BTC) and the amount it receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Priced {
    pub rate: Decimal,
    pub receive: Amount,
}

/// Prices selling `sell` for `buy_currency` at `mid` (fiat per BTC) with `spread_bps`.
pub fn price(
    sell: &Amount,
    buy_currency: &str,
    mid: Decimal,
    spread_bps: u32,
) -> Result<Priced, FxError> {
    if spread_bps > MAX_SPREAD_BPS {
        return Err(FxError::InvalidSpread);
    }
    if mid <= Decimal::ZERO {
        return Err(FxError::NoRate(buy_currency.to_owned()));
    }
    let spread = Decimal::from(spread_bps) / Decimal::from(10_000u32);
    let per_btc = Decimal::from(MSAT_PER_BTC);
    let overflow = || FxError::InvalidAmount("amount out of range".into());
    match sell {
        Amount::Fiat { currency, amount } => {
            if buy_currency != BTC {
                return Err(FxError::UnsupportedPair(
                    currency.clone(),
                    buy_currency.to_owned(),
                ));
            }
            let rate = mid * (Decimal::ONE + spread);
            let msat = amount
                .checked_mul(per_btc)
                .and_then(|v| v.checked_div(rate))
                .ok_or_else(overflow)?
                .floor();
            let msat = msat.to_u64().ok_or_else(overflow)?;
            let msat = Msat::new(msat).map_err(|_| overflow())?;
            if msat.is_zero() {
                return Err(FxError::AmountTooSmall);
            }
            Ok(Priced {
                rate,
                receive: Amount::Btc(msat),
            })
        }
        Amount::Btc(msat) => {
            let minor = minor_units(buy_currency)?;
            let rate = mid * (Decimal::ONE - spread);
            let fiat = Decimal::from(msat.as_u64())
                .checked_mul(rate)
                .and_then(|v| v.checked_div(per_btc))
                .ok_or_else(overflow)?
                .round_dp_with_strategy(minor, RoundingStrategy::ToZero);
            if fiat.is_zero() {
                return Err(FxError::AmountTooSmall);
            }
            Ok(Priced {
                rate,
                receive: Amount::Fiat {
                    currency: buy_currency.to_owned(),
                    amount: fiat,
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn msat(v: u64) -> Amount {
        Amount::Btc(Msat::new(v).unwrap())
    }

    /// Every expected value below is worked by hand in its comment.
    #[test]
    fn prices_follow_the_documented_rule() {
        // Buy BTC with 100.00 USD at mid 50 000, spread 100 bps: rate 50 500 USD/BTC;
        // 100 × 1e11 / 50 500 = 198 019 801.98... -> 198 019 801 msat.
        let p = price(
            &Amount::parse("USD", "100.00").unwrap(),
            BTC,
            d("50000"),
            100,
        )
        .unwrap();
        assert_eq!(p.rate, d("50500"));
        assert_eq!(p.receive, msat(198_019_801));
        // Sell 198 019 801 msat for USD at the same mid: rate 49 500;
        // 198 019 801 × 49 500 / 1e11 = 98.0198014... -> 98.01 USD (the round trip costs 1.99).
        let p = price(&msat(198_019_801), "USD", d("50000"), 100).unwrap();
        assert_eq!(p.rate, d("49500"));
        assert_eq!(p.receive.to_wire(), "98.01");
        // JPY has no minor unit: 1 000 000 msat at 7 000 000 JPY/BTC, no spread = 70 JPY exactly.
        let p = price(&msat(1_000_000), "JPY", d("7000000"), 0).unwrap();
        assert_eq!(p.receive.to_wire(), "70");
        // ... and 1 014 285 msat = 70.99995 JPY, rounded down to 70.
        let p = price(&msat(1_014_285), "JPY", d("7000000"), 0).unwrap();
        assert_eq!(p.receive.to_wire(), "70");
        // A fractional mid: 0.01 EUR at 61 234.57 EUR/BTC, spread 25 bps -> rate 61 387.656425;
        // 0.01 × 1e11 / 61 387.656425 = 16 289.919... -> 16 289 msat.
        let p = price(
            &Amount::parse("EUR", "0.01").unwrap(),
            BTC,
            d("61234.57"),
            25,
        )
        .unwrap();
        assert_eq!(p.rate, d("61387.656425"));
        assert_eq!(p.receive, msat(16_289));
    }

    #[test]
    fn amounts_that_round_to_nothing_or_bad_input_are_refused_with_codes() {
        // 1 msat is 0.00000049 USD: nothing to pay out.
        let err = price(&msat(1), "USD", d("50000"), 0).unwrap_err();
        assert_eq!(err.code(), "AMOUNT_TOO_SMALL");
        let cases = [
            ("USD", "1.001", "INVALID_AMOUNT"),
            ("USD", "-1", "INVALID_AMOUNT"),
            ("USD", "1e3", "INVALID_AMOUNT"),
            ("USD", "0.00", "INVALID_AMOUNT"),
            ("USD", "1.", "INVALID_AMOUNT"),
            ("USD", ".5", "INVALID_AMOUNT"),
            ("USD", "1000000000.01", "INVALID_AMOUNT"),
            ("JPY", "1.5", "INVALID_AMOUNT"),
            ("BTC", "1.5", "INVALID_AMOUNT"),
            ("BTC", "0", "INVALID_AMOUNT"),
            ("BTC", "2100000000000000001", "INVALID_AMOUNT"),
            ("XAU", "1", "UNKNOWN_CURRENCY"),
        ];
        for (currency, text, code) in cases {
            let err = Amount::parse(currency, text).unwrap_err();
            assert_eq!(err.code(), code, "{currency} {text}");
        }
        let usd = Amount::parse("USD", "1").unwrap();
        assert_eq!(
            price(&usd, "EUR", d("1"), 0).unwrap_err().code(),
            "UNSUPPORTED_PAIR"
        );
        assert_eq!(price(&usd, BTC, d("0"), 0).unwrap_err().code(), "NO_RATE");
        assert_eq!(
            price(&usd, BTC, d("1"), 1_001).unwrap_err().code(),
            "INVALID_SPREAD"
        );
    }

    #[test]
    fn the_client_never_gains_from_rounding() {
        // For a spread of zero, a fiat -> BTC -> fiat round trip never returns more than was sold.
        for cents in [1u64, 7, 99, 100, 12_345, 99_999_999] {
            let sold = Decimal::new(i64::try_from(cents).unwrap(), 2);
            let a = Amount::parse("USD", &sold.to_string()).unwrap();
            let Ok(p) = price(&a, BTC, d("43210.99"), 0) else {
                continue;
            };
            let back = price(&p.receive, "USD", d("43210.99"), 0);
            if let Ok(Priced {
                receive: Amount::Fiat { amount, .. },
                ..
            }) = back
            {
                assert!(amount <= sold, "{sold} -> {amount}");
            }
        }
    }
}
