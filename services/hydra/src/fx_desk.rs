//! FX: `POST /v1/fx/rfq` quotes a conversion between bitcoin and a fiat currency by the pricing
//! rule of `fx` (reference rates and the spread from configuration) with a TTL;
//! `POST /v1/fx/settle` settles a live quote exactly once: both legs in the ledger (`book`: the
//! sold asset from the agent to Hydra's FX book, the bought asset back, one linked chain) and an
//! `fx_settlement` receipt, in one transaction. An expired quote is `QUOTE_EXPIRED`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context;
use oa_money::Msat;
use oa_proto::hydra;
use oa_receipts::ReceiptDraft;
use oa_service::Clock;
use oa_store::{
    Db, idempotency, journal,
    receipt_log::{self, ReceiptLog},
};
use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde::Serialize;

use crate::error::{claim_or_replay, corrupt};
use crate::{
    book::{self, Leg},
    error::HydraError,
    fx::{self, Amount, BTC, FxError},
    store::fx::{self as store, FxQuoteRow, OPEN, SETTLED},
    validate::{self, invalid},
};

pub const RECEIPT_SCHEMA: &str = "oa.hydra.fx_settlement_receipt.v1";
pub const TOPIC: &str = "hydra.fx";
/// Longest quote lifetime accepted in configuration: a quote is a price promise while the
/// reference rate moves.
pub const MAX_QUOTE_TTL: Duration = Duration::from_secs(600);
/// Longest currency code accepted before it is looked up.
const MAX_CURRENCY_LEN: usize = 8;

/// Reference (mid) rates, fiat per BTC.
pub type Rates = BTreeMap<String, Decimal>;

/// Parses `--fx-rates` entries `CUR=decimal` (fiat per BTC): known fiat currencies, positive
/// plain decimals, each currency once.
pub fn parse_rates(entries: &[String]) -> anyhow::Result<Rates> {
    let mut rates = Rates::new();
    for e in entries.iter().filter(|e| !e.trim().is_empty()) {
        let (cur, rate) = e
            .split_once('=')
            .with_context(|| format!("--fx-rates entry {e:?} is not CUR=rate"))?;
        let cur = cur.trim();
        fx::minor_units(cur).with_context(|| format!("--fx-rates: {cur}"))?;
        let rate = rate.trim();
        anyhow::ensure!(
            !rate.is_empty() && rate.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
            "--fx-rates: {cur} rate {rate:?} must be a plain positive decimal"
        );
        let value: Decimal = rate
            .parse()
            .with_context(|| format!("--fx-rates: {cur} rate {rate:?}"))?;
        anyhow::ensure!(
            value > Decimal::ZERO,
            "--fx-rates: {cur} rate must be positive"
        );
        anyhow::ensure!(
            rates.insert(cur.to_owned(), value).is_none(),
            "--fx-rates: {cur} appears twice"
        );
    }
    Ok(rates)
}

pub struct FxDesk {
    pub db: Db,
    pub log: ReceiptLog,
    pub clock: Arc<dyn Clock>,
    pub rates: Rates,
    pub spread_bps: u32,
    pub quote_ttl: Duration,
}

#[derive(Serialize)]
struct SettlementBody<'a> {
    fx_quote_id: &'a str,
    agent_id: &'a str,
    sell_currency: &'a str,
    sell_amount: &'a str,
    sell_ledger: String,
    sell_units: Msat,
    buy_currency: &'a str,
    buy_amount: &'a str,
    buy_ledger: String,
    buy_units: Msat,
    rate: &'a str,
    mid_rate: &'a str,
    spread_bps: String,
    sell_transfer: String,
    buy_transfer: String,
    quoted_at_ms: String,
    expires_at_ms: String,
}

/// An amount in its asset's smallest unit (msat, or the fiat minor unit), as the ledger moves it.
fn units(a: &Amount) -> Result<Msat, HydraError> {
    match a {
        Amount::Btc(m) => Ok(*m),
        Amount::Fiat { currency, amount } => {
            let minor = fx::minor_units(currency)?;
            let scaled = amount
                .checked_mul(Decimal::from(10u64.pow(minor)))
                .filter(|v| v.fract().is_zero())
                .and_then(|v| v.to_u64())
                .ok_or_else(|| corrupt("fiat amount is not whole minor units"))?;
            Msat::new(scaled).map_err(|e| corrupt(&e.to_string()))
        }
    }
}

fn currency(code: &'static str, what: &str, s: &str) -> Result<(), HydraError> {
    if s.is_empty() || s.len() > MAX_CURRENCY_LEN {
        return Err(invalid(
            code,
            format!("{what} is required (BTC, USD, EUR, ...)"),
        ));
    }
    Ok(())
}

fn state(q: &FxQuoteRow) -> hydra::FxQuoteState {
    match q.state.as_str() {
        OPEN => hydra::FxQuoteState::Open,
        SETTLED => hydra::FxQuoteState::Settled,
        _ => hydra::FxQuoteState::Unspecified,
    }
}

fn to_quote(q: &FxQuoteRow) -> hydra::FxQuote {
    hydra::FxQuote {
        fx_quote_id: q.fx_quote_id.clone(),
        agent_id: q.agent_id.clone(),
        sell_currency: q.sell_currency.clone(),
        sell_amount: q.sell_amount.clone(),
        buy_currency: q.buy_currency.clone(),
        buy_amount: q.buy_amount.clone(),
        rate: q.rate.clone(),
        mid_rate: q.mid_rate.clone(),
        spread_bps: q.spread_bps,
        created_at_ms: q.created_at_ms,
        expires_at_ms: q.expires_at_ms,
        state: state(q) as i32,
    }
}

impl FxDesk {
    /// `POST /v1/fx/rfq`.
    pub async fn rfq(
        &self,
        caller: &str,
        req: hydra::FxRfqRequest,
    ) -> Result<hydra::FxRfqResponse, HydraError> {
        idempotency::validate_key(&req.idempotency_key)?;
        validate::agent_id(&req.agent_id)?;
        currency("UNKNOWN_CURRENCY", "sell_currency", &req.sell_currency)?;
        currency("UNKNOWN_CURRENCY", "buy_currency", &req.buy_currency)?;
        let sell = Amount::parse(&req.sell_currency, &req.sell_amount)?;
        if req.buy_currency == req.sell_currency {
            return Err(FxError::UnsupportedPair(
                req.sell_currency.clone(),
                req.buy_currency.clone(),
            )
            .into());
        }
        if req.buy_currency != BTC {
            fx::minor_units(&req.buy_currency)?;
        }
        let fiat = if req.sell_currency == BTC {
            &req.buy_currency
        } else {
            &req.sell_currency
        };
        let mid = *self
            .rates
            .get(fiat)
            .ok_or_else(|| FxError::NoRate(fiat.clone()))?;
        let priced = fx::price(&sell, &req.buy_currency, mid, self.spread_bps)?;
        let now = self.clock.now_ms();
        let ttl_ms = u64::try_from(self.quote_ttl.as_millis()).unwrap_or(u64::MAX);
        let row = FxQuoteRow {
            fx_quote_id: format!("fxq_{}", uuid::Uuid::now_v7().simple()),
            caller: caller.to_owned(),
            agent_id: req.agent_id.clone(),
            sell_currency: req.sell_currency.clone(),
            sell_amount: sell.to_wire(),
            buy_currency: req.buy_currency.clone(),
            buy_amount: priced.receive.to_wire(),
            sell_units: units(&sell)?,
            buy_units: units(&priced.receive)?,
            rate: priced.rate.normalize().to_string(),
            mid_rate: mid.normalize().to_string(),
            spread_bps: self.spread_bps,
            state: OPEN.into(),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl_ms),
            settled_at_ms: None,
            receipt_hash: None,
        };
        let scope = format!("hydra.fx.rfq/{caller}");
        let fingerprint = idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if let Some(done) =
            claim_or_replay(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(done);
        }
        store::insert(&mut tx, &row).await?;
        let response = hydra::FxRfqResponse {
            quote: Some(to_quote(&row)),
        };
        let json = serde_json::to_string(&response).map_err(|e| corrupt(&e.to_string()))?;
        idempotency::complete(&mut tx, &scope, &req.idempotency_key, 200, &json, now).await?;
        tx.commit().await?;
        Ok(response)
    }

    /// `POST /v1/fx/settle`.
    pub async fn settle(
        &self,
        caller: &str,
        req: hydra::FxSettleRequest,
    ) -> Result<hydra::FxSettleResponse, HydraError> {
        idempotency::validate_key(&req.idempotency_key)?;
        validate::id(
            "INVALID_QUOTE_ID",
            "fx_quote_id",
            &req.fx_quote_id,
            validate::MAX_ID_LEN,
        )?;
        let now = self.clock.now_ms();
        let scope = format!("hydra.fx.settle/{caller}");
        let fingerprint = idempotency::fingerprint(&req)?;
        let mut tx = self.db.begin().await?;
        if let Some(done) =
            claim_or_replay(&mut tx, &scope, &req.idempotency_key, &fingerprint, now).await?
        {
            return Ok(done);
        }
        // Refusals return early: dropping the transaction rolls the claim back (nothing recorded).
        let quote = store::get(&mut tx, &req.fx_quote_id)
            .await?
            .filter(|q| q.caller == caller)
            .ok_or(HydraError::QuoteNotFound)?;
        if !store::settle(&mut tx, &quote.fx_quote_id, &req.idempotency_key, now).await? {
            return Err(if quote.state == OPEN {
                HydraError::QuoteExpired
            } else {
                HydraError::QuoteAlreadyUsed
            });
        }
        let leg = |currency: &'static str, amount: Msat| -> Result<Leg<'static>, HydraError> {
            Ok(Leg {
                currency,
                ledger: book::ledger_of(currency)
                    .ok_or_else(|| corrupt(&format!("no ledger for {currency}")))?,
                amount,
            })
        };
        let sold = leg(static_code(&quote.sell_currency)?, quote.sell_units)?;
        let bought = leg(static_code(&quote.buy_currency)?, quote.buy_units)?;
        let (sell_transfer, buy_transfer) = book::settle_fx(
            &mut tx,
            &quote.agent_id,
            &quote.fx_quote_id,
            sold,
            bought,
            now,
        )
        .await?;
        let body = SettlementBody {
            fx_quote_id: &quote.fx_quote_id,
            agent_id: &quote.agent_id,
            sell_currency: &quote.sell_currency,
            sell_amount: &quote.sell_amount,
            sell_ledger: sold.ledger.to_string(),
            sell_units: quote.sell_units,
            buy_currency: &quote.buy_currency,
            buy_amount: &quote.buy_amount,
            buy_ledger: bought.ledger.to_string(),
            buy_units: quote.buy_units,
            rate: &quote.rate,
            mid_rate: &quote.mid_rate,
            spread_bps: quote.spread_bps.to_string(),
            sell_transfer,
            buy_transfer,
            quoted_at_ms: quote.created_at_ms.to_string(),
            expires_at_ms: quote.expires_at_ms.to_string(),
        };
        let receipt = self
            .log
            .append(
                &mut tx,
                ReceiptDraft {
                    schema: RECEIPT_SCHEMA.into(),
                    receipt_id: format!("rcpt_{}", uuid::Uuid::now_v7().simple()),
                    idempotency_key: req.idempotency_key.clone(),
                    links: vec![],
                    body: oa_receipts::body_from(&body)?,
                },
                now,
            )
            .await?;
        store::set_receipt(&mut tx, &quote.fx_quote_id, &receipt.hash.to_string()).await?;
        journal::append(
            &mut tx,
            TOPIC,
            "fx_settled",
            &serde_json::json!({"fx_quote_id": quote.fx_quote_id, "agent_id": quote.agent_id, "receipt_hash": receipt.hash.to_string()}),
            now,
        )
        .await?;
        let settled = store::get(&mut tx, &quote.fx_quote_id)
            .await?
            .ok_or(HydraError::QuoteNotFound)?;
        let stored = receipt_log::get_stored(&mut tx, settled.receipt_hash.as_deref()).await?;
        let response = hydra::FxSettleResponse {
            quote: Some(to_quote(&settled)),
            receipt: stored.as_ref().map(oa_service::receipts::to_proto),
        };
        let json = serde_json::to_string(&response).map_err(|e| corrupt(&e.to_string()))?;
        idempotency::complete(&mut tx, &scope, &req.idempotency_key, 200, &json, now).await?;
        tx.commit().await?;
        Ok(response)
    }
}

/// The static spelling of a stored currency code (for ledger legs).
fn static_code(code: &str) -> Result<&'static str, HydraError> {
    if code == BTC {
        return Ok(BTC);
    }
    fx::FIAT
        .iter()
        .map(|(c, _)| *c)
        .find(|c| *c == code)
        .ok_or_else(|| corrupt(&format!("stored currency {code}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_strictly() {
        let ok = parse_rates(&["USD=65000.12".into(), " EUR = 61234.5 ".into()]).unwrap();
        assert_eq!(ok["USD"].to_string(), "65000.12");
        assert_eq!(ok["EUR"].to_string(), "61234.5");
        for bad in [
            "USD", "USD=", "XAU=1", "USD=-5", "USD=0", "USD=1e3", "usd=1",
        ] {
            assert!(parse_rates(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(parse_rates(&["USD=1".into(), "USD=2".into()]).is_err());
    }

    #[test]
    fn units_are_the_smallest_unit_of_the_asset() {
        let usd = Amount::parse("USD", "98.01").unwrap();
        assert_eq!(units(&usd).unwrap().as_u64(), 9_801);
        let jpy = Amount::parse("JPY", "70").unwrap();
        assert_eq!(units(&jpy).unwrap().as_u64(), 70);
        let btc = Amount::parse("BTC", "198019801").unwrap();
        assert_eq!(units(&btc).unwrap().as_u64(), 198_019_801);
    }
}
