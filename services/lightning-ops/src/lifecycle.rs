//! Channel opens and closes: the policy's `[[intents.open]]` and `[[intents.close]]` executed
//! with the custody channel's `OpenChannel` and `CloseChannel`.
//!
//! **Open.** A public channel of `capacity_sat`, funded from the executor's on-chain wallet,
//! nothing pushed, under the key `ops-open-<peer>-<generation>-<digest>`. Once the executor
//! answered with the funding transaction and its receipt, the action is `applied`, and the
//! intent is not proposed again while the channel waits for its confirmations: the executor
//! lists no pending channels, so lightning-ops goes by its own record (an applied open to the
//! peer, without a channel to it observed since, counts as under way for
//! [`OPEN_CONFIRMATION_WINDOW_MS`]). An open in doubt (`IDEMPOTENCY_IN_PROGRESS`: the executor
//! stopped while asking the node and will not ask again, lest it open a second channel) stays
//! `pending` and blocks the intent until an operator settles it (runbook).
//!
//! **Close.** Cooperative, or unilateral when the intent says `force = true`, under the key
//! `ops-close-<chan_id>-<generation>-<digest>`. Asking the executor again is safe (closing a
//! closing channel reports the same transaction). A channel closing or closed (a close of ours
//! pending or applied, or listed by `ListClosedChannels`) is not proposed again.
//!
//! Each executed open or close commits its action's end, a journal event and lightning-ops's
//! receipt (`oa.ops.channel_open_receipt.v1` / `oa.ops.channel_close_receipt.v1`) linking the
//! executor's `channel_action_receipt`, checked first. An open or close the executor refused
//! (not enough on-chain funds, peer offline, ...) ends `failed` and is tried again no sooner
//! than `--min-update-interval-secs` later.

use oa_money::Msat;
use oa_proto::ops;
use oa_receipts::Receipt;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    apply::{Finish, corrupt, deferred, expect_fields, key_for, new_action_id, result, status},
    error::OpsError,
    executor::{Closing, Opened},
    ops::Ops,
    plan::Action,
    store::{self, ActionRow, Subject},
};

/// Schema of lightning-ops's receipt for a channel open it executed.
pub const OPEN_RECEIPT_SCHEMA: &str = "oa.ops.channel_open_receipt.v1";
/// Schema of lightning-ops's receipt for a channel close it executed.
pub const CLOSE_RECEIPT_SCHEMA: &str = "oa.ops.channel_close_receipt.v1";
/// Schema of the executor's receipt for an open or a close, which ours link.
pub const EXECUTOR_CHANNEL_ACTION_SCHEMA: &str = "oa.wallet_executor.channel_action_receipt.v1";
/// How long an applied open whose channel is not listed yet keeps its intent from being
/// proposed again: two weeks, as LND forgets a channel whose funding did not confirm within
/// 2016 blocks. After that the intent is proposed again (check the node first: runbook).
pub const OPEN_CONFIRMATION_WINDOW_MS: u64 = 14 * 24 * 3_600_000;

/// What an open asks the executor for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAsk {
    pub remote_pubkey: String,
    pub local_funding_msat: u64,
}

/// What a close asks the executor for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseAsk {
    pub chan_id: u64,
    pub force: bool,
}

/// The executor key of an open to `peer`.
pub fn open_key(generation: u64, ask: &OpenAsk) -> Result<String, OpsError> {
    key_for("open", &ask.remote_pubkey, generation, ask)
}

/// The executor key of a close of `ask.chan_id`.
pub fn close_key(generation: u64, ask: &CloseAsk) -> Result<String, OpsError> {
    key_for("close", &ask.chan_id.to_string(), generation, ask)
}

#[derive(Serialize)]
struct OpenReceiptBody<'a> {
    action: &'a str,
    action_id: &'a str,
    remote_pubkey: &'a str,
    local_funding_msat: Msat,
    push_msat: Msat,
    funding_txid: &'a str,
    #[serde(with = "oa_receipts::u64_string")]
    funding_output_index: u64,
    /// Hash of the executor's `channel_action_receipt` (also in `links`).
    executor_receipt: String,
}

#[derive(Serialize)]
struct CloseReceiptBody<'a> {
    action: &'a str,
    action_id: &'a str,
    channel_id: &'a str,
    /// Decimal short channel id, as the executor's receipt names it.
    chan_id: String,
    force: bool,
    closing_txid: &'a str,
    /// Hash of the executor's `channel_action_receipt` (also in `links`).
    executor_receipt: String,
}

impl Ops {
    /// A planned open: deferred after a failure, else recorded and executed.
    pub(crate) async fn open(
        &self,
        a: &Action,
        now: u64,
        dry_run: bool,
    ) -> Result<ops::ActionResult, OpsError> {
        let Action::Open { peer, capacity_sat } = a else {
            return Err(corrupt("open", "not an open action"));
        };
        let local_funding = capacity_sat
            .checked_mul(1_000)
            .ok_or(OpsError::Money(oa_money::MoneyError::Overflow))?;
        let ask = OpenAsk {
            remote_pubkey: peer.clone(),
            local_funding_msat: Msat::new(local_funding)?.as_u64(),
        };
        let (history, wait) = self
            .retry_wait(store::OPEN, Subject::Peer(peer), now)
            .await?;
        if let Some(not_before) = wait {
            return Ok(deferred(
                a,
                not_before,
                format!(
                    "the last open to this peer failed less than {} s ago",
                    self.settings.min_update_interval.as_secs()
                ),
            ));
        }
        if dry_run {
            return Ok(result(a, status::PLANNED, ""));
        }
        self.record_and_drive(ActionRow {
            action_id: new_action_id(),
            idempotency_key: open_key(history.finished, &ask)?,
            kind: store::OPEN.into(),
            chan_id: 0,
            channel_id: String::new(),
            previous: "{}".into(),
            desired: serde_json::to_string(&ask).map_err(|e| corrupt("open", e))?,
            source: "intent".into(),
            description: a.to_string(),
            status: store::PENDING.into(),
            created_at_ms: now,
            remote_pubkey: Some(peer.clone()),
            ..ActionRow::default()
        })
        .await
    }

    /// A planned close: deferred after a failure, else recorded and executed.
    pub(crate) async fn close(
        &self,
        a: &Action,
        chan_id: u64,
        now: u64,
        dry_run: bool,
    ) -> Result<ops::ActionResult, OpsError> {
        let Action::Close { channel_id, force } = a else {
            return Err(corrupt("close", "not a close action"));
        };
        let ask = CloseAsk {
            chan_id,
            force: *force,
        };
        let (history, wait) = self
            .retry_wait(store::CLOSE, Subject::Channel(chan_id), now)
            .await?;
        if let Some(not_before) = wait {
            return Ok(deferred(
                a,
                not_before,
                format!(
                    "the last close of this channel failed less than {} s ago",
                    self.settings.min_update_interval.as_secs()
                ),
            ));
        }
        if dry_run {
            return Ok(result(a, status::PLANNED, ""));
        }
        self.record_and_drive(ActionRow {
            action_id: new_action_id(),
            idempotency_key: close_key(history.finished, &ask)?,
            kind: store::CLOSE.into(),
            chan_id,
            channel_id: channel_id.clone(),
            previous: "{}".into(),
            desired: serde_json::to_string(&ask).map_err(|e| corrupt("close", e))?,
            source: "intent".into(),
            description: a.to_string(),
            status: store::PENDING.into(),
            created_at_ms: now,
            ..ActionRow::default()
        })
        .await
    }

    pub(crate) async fn drive_open(&self, row: &ActionRow) -> Result<ops::ActionResult, OpsError> {
        let ask: OpenAsk = serde_json::from_str(&row.desired).map_err(|e| corrupt("desired", e))?;
        let opened = match self
            .channels()?
            .open_channel(
                &row.idempotency_key,
                &ask.remote_pubkey,
                ask.local_funding_msat,
            )
            .await
        {
            Ok(o) => o,
            Err(e) => return self.executor_refused(row, &e).await,
        };
        if let Err(why) = self.check_open_receipt(&opened, &ask) {
            return self.bad_receipt(row, &why).await;
        }
        let body = OpenReceiptBody {
            action: store::OPEN,
            action_id: &row.action_id,
            remote_pubkey: &ask.remote_pubkey,
            local_funding_msat: Msat::new(ask.local_funding_msat)?,
            push_msat: Msat::ZERO,
            funding_txid: &opened.funding_txid,
            funding_output_index: u64::from(opened.output_index),
            executor_receipt: opened.receipt.hash.to_string(),
        };
        self.finish_receipted(
            row,
            &opened.receipt,
            Finish {
                row_status: store::APPLIED,
                error_code: None,
                result_status: status::APPLIED,
                reason: format!(
                    "funding transaction {}:{} broadcast; the channel is listed once it confirms",
                    opened.funding_txid, opened.output_index
                ),
                event: "open_applied",
                event_body: json!({
                    "action_id": row.action_id,
                    "remote_pubkey": ask.remote_pubkey,
                    "local_funding_msat": ask.local_funding_msat.to_string(),
                    "funding_txid": opened.funding_txid,
                    "executor_receipt": opened.receipt.hash.to_string(),
                }),
                schema: OPEN_RECEIPT_SCHEMA,
                body: oa_receipts::body_from(&body)?,
                fee_msat: None,
                moved: None,
            },
        )
        .await
    }

    pub(crate) async fn drive_close(&self, row: &ActionRow) -> Result<ops::ActionResult, OpsError> {
        let ask: CloseAsk =
            serde_json::from_str(&row.desired).map_err(|e| corrupt("desired", e))?;
        let closing = match self
            .channels()?
            .close_channel(&row.idempotency_key, ask.chan_id, ask.force)
            .await
        {
            Ok(c) => c,
            Err(e) => return self.executor_refused(row, &e).await,
        };
        if let Err(why) = self.check_close_receipt(&closing, &ask) {
            return self.bad_receipt(row, &why).await;
        }
        let body = CloseReceiptBody {
            action: store::CLOSE,
            action_id: &row.action_id,
            channel_id: &row.channel_id,
            chan_id: ask.chan_id.to_string(),
            force: ask.force,
            closing_txid: &closing.closing_txid,
            executor_receipt: closing.receipt.hash.to_string(),
        };
        self.finish_receipted(
            row,
            &closing.receipt,
            Finish {
                row_status: store::APPLIED,
                error_code: None,
                result_status: status::APPLIED,
                reason: format!(
                    "closing transaction {} broadcast{}",
                    closing.closing_txid,
                    if ask.force {
                        " (force: our output is spendable after its time lock)"
                    } else {
                        ""
                    }
                ),
                event: "close_applied",
                event_body: json!({
                    "action_id": row.action_id,
                    "channel_id": row.channel_id,
                    "force": ask.force,
                    "closing_txid": closing.closing_txid,
                    "executor_receipt": closing.receipt.hash.to_string(),
                }),
                schema: CLOSE_RECEIPT_SCHEMA,
                body: oa_receipts::body_from(&body)?,
                fee_msat: None,
                moved: None,
            },
        )
        .await
    }

    /// A genuine channel-action receipt for this open: same peer, funding and funding output.
    fn check_open_receipt(&self, opened: &Opened, ask: &OpenAsk) -> Result<(), String> {
        let r: &Receipt = &opened.receipt;
        self.check_genuine(r, EXECUTOR_CHANNEL_ACTION_SCHEMA)?;
        expect_fields(
            r,
            &[
                ("action", store::OPEN.to_owned()),
                ("remote_pubkey", ask.remote_pubkey.clone()),
                ("local_funding_msat", ask.local_funding_msat.to_string()),
                ("push_msat", "0".to_owned()),
                ("funding_txid", opened.funding_txid.clone()),
                ("funding_output_index", opened.output_index.to_string()),
            ],
        )?;
        if r.body.get("private").and_then(serde_json::Value::as_bool) != Some(false) {
            return Err("it is not for a public channel".into());
        }
        Ok(())
    }

    /// A genuine channel-action receipt for this close: same channel, same kind of close, and
    /// the closing transaction the executor answered.
    fn check_close_receipt(&self, closing: &Closing, ask: &CloseAsk) -> Result<(), String> {
        let r: &Receipt = &closing.receipt;
        self.check_genuine(r, EXECUTOR_CHANNEL_ACTION_SCHEMA)?;
        expect_fields(
            r,
            &[
                ("action", store::CLOSE.to_owned()),
                ("chan_id", ask.chan_id.to_string()),
                ("closing_txid", closing.closing_txid.clone()),
            ],
        )?;
        if r.body.get("force").and_then(serde_json::Value::as_bool) != Some(ask.force) {
            return Err(format!("its force is not {}", ask.force));
        }
        Ok(())
    }
}
