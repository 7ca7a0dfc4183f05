//! Checks of request fields shared by several RPCs. Each failure is a typed 400 with a stable
//! code, raised before anything is written.

use oa_invoice::{Network, PaymentHash};
use oa_money::Msat;

use crate::error::WalletError;

/// A node public key: 66 lowercase hex digits of a valid compressed secp256k1 point.
pub fn pubkey(field: &str, v: &str) -> Result<String, WalletError> {
    let ok = v.len() == 66
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && v.parse::<bitcoin::secp256k1::PublicKey>().is_ok();
    if !ok {
        return Err(WalletError::bad_input(
            "INVALID_PUBKEY",
            format!("{field} must be a compressed secp256k1 public key (66 lowercase hex digits)"),
        ));
    }
    Ok(v.to_owned())
}

pub fn payment_hash(v: &str) -> Result<PaymentHash, WalletError> {
    v.parse().map_err(|_| {
        WalletError::bad_input(
            "INVALID_PAYMENT_HASH",
            "payment_hash must be 64 lowercase hex characters",
        )
    })
}

/// An amount in msat within the bitcoin supply; zero only if `allow_zero`.
pub fn amount(field: &str, v: u64, allow_zero: bool) -> Result<Msat, WalletError> {
    let m = Msat::new(v)
        .map_err(|e| WalletError::bad_input("INVALID_AMOUNT", format!("{field}: {e}")))?;
    if m.is_zero() && !allow_zero {
        return Err(WalletError::bad_input(
            "INVALID_AMOUNT",
            format!("{field} must be positive"),
        ));
    }
    Ok(m)
}

/// An on-chain amount: whole satoshis expressed in msat (a multiple of 1000).
pub fn whole_sat(field: &str, v: u64, allow_zero: bool) -> Result<Msat, WalletError> {
    let m = amount(field, v, allow_zero)?;
    if !v.is_multiple_of(1_000) {
        return Err(WalletError::bad_input(
            "INVALID_AMOUNT",
            format!("{field}: on-chain amounts are whole satoshis (a multiple of 1000 msat)"),
        ));
    }
    Ok(m)
}

/// A channel id (non-zero).
pub fn chan_id(field: &str, v: u64) -> Result<u64, WalletError> {
    if v == 0 {
        return Err(WalletError::bad_input(
            "INVALID_CHANNEL_ID",
            format!("{field} is required"),
        ));
    }
    Ok(v)
}

/// A bitcoin address of `network`.
pub fn address(v: &str, network: Network) -> Result<bitcoin::Address, WalletError> {
    let invalid = |m: String| WalletError::bad_input("INVALID_ADDRESS", m);
    v.parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
        .map_err(|e| invalid(format!("address: {e}")))?
        .require_network(network.to_bitcoin())
        .map_err(|_| invalid(format!("address is not a {network} address")))
}
