//! Channel actions for lightning-ops and operators: open, close, rebalance. Each one that ends
//! issues exactly one signed receipt, in the same transaction as its recorded result.
//!
//! 1. Validate (typed 400s, nothing written).
//! 2. In one transaction: claim the idempotency key and record the action `pending` (a
//!    rebalance also counts its fee limit against the rolling window). Commit: the intent is
//!    durable before the node is asked.
//! 3. Ask the node. With its answer, in one transaction: end the action (once, guarded by its
//!    status), append the receipt, store the answer for replays.
//!
//! A definite refusal from the node (unknown channel, peer offline, not enough funds) undoes
//! step 2 (row, window, key), so the caller may retry the key. When the node cannot be reached,
//! the outcome is unknown and the action stays `pending`:
//! - a close is safe to ask again (closing a closing channel reports the same transaction), so a
//!   retry of the key, or recovery at start-up, re-drives it;
//! - an open or a rebalance is not: a retry of the key answers `IDEMPOTENCY_IN_PROGRESS` rather
//!   than risk opening a second channel or paying twice; an operator checks the node's pending
//!   channels and payments.
//!
//! A rebalance the node leaves in flight is recorded with its payment hash and tracked (never
//! re-sent) to its end, also after a restart.

use std::{sync::Arc, time::Duration};

use oa_invoice::PaymentHash;
use oa_money::Msat;
use oa_proto::wallet;
use oa_service::{Clock, tracker::Tracker};
use oa_store::{
    Db,
    idempotency::{self, Claim},
    receipt_log::{self, ReceiptLog},
};
use serde::Serialize;

use crate::{
    error::WalletError,
    node::{FailureCode, LightningNode, NodeError, OpenChannelRequest, PayState, RebalanceRequest},
    payments::{Caps, DEFAULT_PAY_TIMEOUT, MAX_PAY_TIMEOUT},
    receipt,
    store::actions::{self as store, ActionRow},
    validate,
};

const OPEN: &str = "open";
const CLOSE: &str = "close";
const REBALANCE: &str = "rebalance";
/// Actions re-driven or re-tracked per batch at start-up.
const RECOVERY_BATCH: u32 = 500;
/// How much longer than the caller's wait a rebalance may take to answer. The backend first
/// prepares (lists channels, issues the invoice to ourselves; each call bounded by the backend's
/// own call timeout) and only then waits `timeout` for the payment. Cutting it off at `timeout`
/// would leave a rebalance whose payment hash we never learned in doubt, when waiting a little
/// longer gets its hash (and, if still unfinished, a tracker).
const REBALANCE_ANSWER_GRACE: Duration = Duration::from_secs(30);

pub struct ChannelActions {
    pub db: Db,
    pub node: Arc<dyn LightningNode>,
    pub log: ReceiptLog,
    pub clock: Arc<dyn Clock>,
    pub caps: Caps,
    tracker: Arc<Tracker>,
}

/// The body of a channel action receipt (schema [`receipt::CHANNEL_ACTION_SCHEMA`]). Fields that
/// do not apply to the action are omitted.
#[derive(Serialize, Default)]
struct ActionReceiptBody<'a> {
    /// `open` or `close`.
    action: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    chan_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_pubkey: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capacity_msat: Option<Msat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local_funding_msat: Option<Msat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    push_msat: Option<Msat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    funding_txid: Option<&'a str>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_u64_string"
    )]
    funding_output_index: Option<u64>,
    /// Our balance in the channel when we asked to close it.
    #[serde(skip_serializing_if = "Option::is_none")]
    local_balance_msat: Option<Msat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    force: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    closing_txid: Option<&'a str>,
    requested_by: &'a str,
    backend: &'a str,
}

fn opt_u64_string<S: serde::Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// The body of a rebalance receipt (schema [`receipt::REBALANCE_SCHEMA`]).
#[derive(Serialize)]
struct RebalanceReceiptBody<'a> {
    out_chan_id: String,
    in_chan_id: String,
    payment_hash: &'a str,
    /// `succeeded` or `failed`.
    status: &'a str,
    amount_msat: Msat,
    fee_msat: Msat,
    fee_limit_msat: Msat,
    #[serde(skip_serializing_if = "Option::is_none")]
    preimage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<&'a str>,
    requested_by: &'a str,
    backend: &'a str,
}

/// What step 2 found.
enum Begin {
    /// The key's first request finished: its answer.
    Replay(String),
    /// The key's first request recorded its intent and did not finish.
    Resume(ActionRow),
    New(ActionRow),
}

impl ChannelActions {
    pub fn new(
        db: Db,
        node: Arc<dyn LightningNode>,
        log: ReceiptLog,
        clock: Arc<dyn Clock>,
        caps: Caps,
    ) -> Self {
        Self {
            db,
            node,
            log,
            clock,
            caps,
            tracker: Arc::new(Tracker::new()),
        }
    }

    /// Step 2: claim the key and record the intent (and its window share), or say what an earlier
    /// request under the key became.
    async fn begin<R: Serialize>(
        &self,
        caller: &str,
        kind: &str,
        key: &str,
        req: &R,
        committed: Msat,
    ) -> Result<Begin, WalletError> {
        let now = self.clock.now_ms();
        let scope = format!("wallet.channel_action/{caller}");
        let fingerprint = idempotency::fingerprint(req)?;
        let mut tx = self.db.begin().await?;
        match idempotency::claim(&mut tx, &scope, key, &fingerprint, now).await? {
            Claim::Conflict => return Err(WalletError::IdempotencyConflict),
            Claim::Replay { response, .. } => {
                tx.rollback().await?;
                return Ok(Begin::Replay(response));
            }
            Claim::InProgress { .. } => {
                let row = store::get_by_key(&mut tx, &scope, key)
                    .await?
                    .ok_or(WalletError::IdempotencyInProgress)?;
                tx.rollback().await?;
                return Ok(Begin::Resume(row));
            }
            Claim::New => {}
        }
        let row = ActionRow {
            id: format!("oa-action-{}", uuid::Uuid::now_v7().simple()),
            idempotency_scope: scope,
            idempotency_key: key.to_owned(),
            kind: kind.to_owned(),
            requested_by: caller.to_owned(),
            request_json: receipt::to_json(req)?,
            committed,
            status: store::PENDING.into(),
            payment_hash: None,
            created_at_ms: now,
            resolved_at_ms: None,
            receipt_hash: None,
            response_json: None,
            outcome: None,
        };
        store::insert(&mut tx, &row).await?;
        if !committed.is_zero()
            && let Err(e) = self.caps.reserve(&mut tx, now, committed).await
        {
            tx.rollback().await?;
            return Err(e);
        }
        tx.commit().await?;
        Ok(Begin::New(row))
    }

    /// Step 3: end the action once with its receipt and answer. `None` if another task ended it
    /// first (then its stored answer stands). `outcome` names what the action did at the node;
    /// if another action was already receipted for the same outcome (a channel closed twice
    /// under two keys), this one ends with that receipt instead of a second one.
    #[allow(clippy::too_many_arguments)]
    async fn finish<B: Serialize, R: Serialize>(
        &self,
        row: &ActionRow,
        schema: &str,
        body: &B,
        outcome: &str,
        payment_hash: Option<&str>,
        give_back: bool,
        respond: impl Fn(oa_proto::common::Receipt) -> R,
    ) -> Result<Option<R>, WalletError> {
        // Two attempts: the second runs only if a concurrent action claimed the outcome first
        // (then it finds that action's receipt).
        for attempt in 0..2 {
            let now = self.clock.now_ms();
            let mut tx = self.db.begin().await?;
            let earlier = store::by_outcome(&mut tx, &row.kind, outcome)
                .await?
                .filter(|e| e.id != row.id);
            if !store::finish(&mut tx, &row.id, payment_hash, now).await? {
                tx.rollback().await?;
                return Ok(None);
            }
            if give_back && !row.committed.is_zero() {
                self.caps
                    .give_back(&mut tx, row.created_at_ms, row.committed)
                    .await?;
            }
            let sealed = match earlier {
                Some(e) => receipt_log::get_stored(&mut tx, e.receipt_hash.as_deref())
                    .await?
                    .ok_or_else(|| {
                        WalletError::Store(oa_store::StoreError::Corrupt(
                            "a receipted channel action without its receipt".into(),
                        ))
                    })?,
                None => {
                    if let Err(e) = store::set_outcome(&mut tx, &row.id, outcome).await {
                        if e.is_unique_violation() && attempt == 0 {
                            tx.rollback().await?;
                            continue;
                        }
                        return Err(e.into());
                    }
                    let draft = receipt::draft(schema, &row.idempotency_key, body)?;
                    self.log.append(&mut tx, draft, now).await?
                }
            };
            let response = respond(oa_service::receipts::to_proto(&sealed));
            let json = receipt::to_json(&response)?;
            store::set_result(&mut tx, &row.id, &sealed.hash.to_string(), &json).await?;
            idempotency::complete(
                &mut tx,
                &row.idempotency_scope,
                &row.idempotency_key,
                200,
                &json,
                now,
            )
            .await?;
            tx.commit().await?;
            return Ok(Some(response));
        }
        Err(WalletError::Store(oa_store::StoreError::Corrupt(
            "a channel action's outcome was claimed twice".into(),
        )))
    }

    /// Undoes step 2 after a definite refusal: row, window share and key, in one transaction.
    async fn undo(&self, row: &ActionRow) -> Result<(), WalletError> {
        let mut tx = self.db.begin().await?;
        if store::delete_pending(&mut tx, &row.id).await? {
            if !row.committed.is_zero() {
                self.caps
                    .give_back(&mut tx, row.created_at_ms, row.committed)
                    .await?;
            }
            idempotency::release(&mut tx, &row.idempotency_scope, &row.idempotency_key).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A node error after step 2: undo on a definite refusal, keep the intent otherwise.
    async fn failed_at_node(&self, row: &ActionRow, e: NodeError) -> WalletError {
        let e = WalletError::from(e);
        if e.is_definite_node_refusal()
            && let Err(undo) = self.undo(row).await
        {
            return undo;
        }
        e
    }

    /// The stored answer of an action that ended.
    async fn stored<R: serde::de::DeserializeOwned>(&self, id: &str) -> Result<R, WalletError> {
        let mut conn = self.db.reader().await?;
        let row = store::get(&mut conn, id)
            .await?
            .ok_or(WalletError::IdempotencyInProgress)?;
        match row.response_json {
            Some(json) => receipt::from_json(&json),
            None => Err(WalletError::IdempotencyInProgress),
        }
    }

    /// Opens a channel once per idempotency key.
    pub async fn open(
        &self,
        caller: &str,
        req: wallet::OpenChannelRequest,
    ) -> Result<wallet::OpenChannelResponse, WalletError> {
        idempotency::validate_key(&req.idempotency_key)?;
        let remote_pubkey = validate::pubkey("remote_pubkey", &req.remote_pubkey)?;
        let local_funding =
            validate::whole_sat("local_funding_msat", req.local_funding_msat, false)?;
        let push = validate::whole_sat("push_msat", req.push_msat, true)?;
        if push >= local_funding {
            return Err(WalletError::bad_input(
                "INVALID_AMOUNT",
                "push_msat must be below local_funding_msat",
            ));
        }
        let row = match self
            .begin(caller, OPEN, &req.idempotency_key, &req, Msat::ZERO)
            .await?
        {
            Begin::Replay(json) => return receipt::from_json(&json),
            // Opening again could open a second channel: the first attempt's outcome is left
            // to an operator (see the module docs).
            Begin::Resume(_) => return Err(WalletError::IdempotencyInProgress),
            Begin::New(row) => row,
        };
        let point = match self
            .node
            .open_channel(&OpenChannelRequest {
                remote_pubkey: remote_pubkey.clone(),
                local_funding,
                push,
                private: req.private,
            })
            .await
        {
            Ok(p) => p,
            Err(e) => return Err(self.failed_at_node(&row, e).await),
        };
        let body = ActionReceiptBody {
            action: OPEN,
            remote_pubkey: Some(&remote_pubkey),
            capacity_msat: Some(local_funding),
            local_funding_msat: Some(local_funding),
            push_msat: Some(push),
            private: Some(req.private),
            funding_txid: Some(&point.funding_txid),
            funding_output_index: Some(u64::from(point.output_index)),
            requested_by: caller,
            backend: self.node.backend(),
            ..ActionReceiptBody::default()
        };
        let done = self
            .finish(
                &row,
                receipt::CHANNEL_ACTION_SCHEMA,
                &body,
                &format!("{}:{}", point.funding_txid, point.output_index),
                None,
                false,
                |r| wallet::OpenChannelResponse {
                    funding_txid: point.funding_txid.clone(),
                    output_index: point.output_index,
                    receipt: Some(r),
                },
            )
            .await?;
        match done {
            Some(r) => Ok(r),
            None => self.stored(&row.id).await,
        }
    }

    /// Closes a channel once per idempotency key (asking again is safe: see the module docs).
    pub async fn close(
        &self,
        caller: &str,
        req: wallet::CloseChannelRequest,
    ) -> Result<wallet::CloseChannelResponse, WalletError> {
        idempotency::validate_key(&req.idempotency_key)?;
        validate::chan_id("chan_id", req.chan_id)?;
        let row = match self
            .begin(caller, CLOSE, &req.idempotency_key, &req, Msat::ZERO)
            .await?
        {
            Begin::Replay(json) => return receipt::from_json(&json),
            Begin::Resume(row) | Begin::New(row) => row,
        };
        self.drive_close(&row, req.chan_id, req.force).await
    }

    async fn drive_close(
        &self,
        row: &ActionRow,
        chan_id: u64,
        force: bool,
    ) -> Result<wallet::CloseChannelResponse, WalletError> {
        // What the channel held when we asked, for the receipt (absent once it is closing).
        let channel = match self.node.list_channels().await {
            Ok(list) => list.into_iter().find(|c| c.chan_id == chan_id),
            Err(e) => return Err(self.failed_at_node(row, e).await),
        };
        let closing = match self.node.close_channel(chan_id, force).await {
            Ok(c) => c,
            Err(e) => return Err(self.failed_at_node(row, e).await),
        };
        let body = ActionReceiptBody {
            action: CLOSE,
            chan_id: Some(chan_id.to_string()),
            remote_pubkey: channel.as_ref().map(|c| c.remote_pubkey.as_str()),
            capacity_msat: channel.as_ref().map(|c| c.capacity),
            local_balance_msat: channel.as_ref().map(|c| c.local_balance),
            force: Some(force),
            closing_txid: Some(&closing.closing_txid),
            requested_by: &row.requested_by,
            backend: self.node.backend(),
            ..ActionReceiptBody::default()
        };
        let done = self
            .finish(
                row,
                receipt::CHANNEL_ACTION_SCHEMA,
                &body,
                &closing.closing_txid,
                None,
                false,
                |r| wallet::CloseChannelResponse {
                    closing_txid: closing.closing_txid.clone(),
                    receipt: Some(r),
                },
            )
            .await?;
        match done {
            Some(r) => Ok(r),
            None => self.stored(&row.id).await,
        }
    }

    /// Rebalances once per idempotency key. The fee limit counts against the executor's caps.
    pub async fn rebalance(
        self: &Arc<Self>,
        caller: &str,
        req: wallet::RebalanceRequest,
    ) -> Result<wallet::RebalanceResponse, WalletError> {
        idempotency::validate_key(&req.idempotency_key)?;
        validate::chan_id("out_chan_id", req.out_chan_id)?;
        validate::chan_id("in_chan_id", req.in_chan_id)?;
        if req.out_chan_id == req.in_chan_id {
            return Err(WalletError::bad_input(
                "INVALID_CHANNEL_ID",
                "out_chan_id and in_chan_id must differ",
            ));
        }
        let amount = validate::amount("amount_msat", req.amount_msat, false)?;
        let fee_limit = validate::amount("fee_limit_msat", req.fee_limit_msat, true)?;
        self.caps.check_per_payment(fee_limit)?;
        let timeout = match req.timeout_ms {
            0 => DEFAULT_PAY_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)).min(MAX_PAY_TIMEOUT),
        };
        let row = match self
            .begin(caller, REBALANCE, &req.idempotency_key, &req, fee_limit)
            .await?
        {
            Begin::Replay(json) => return receipt::from_json(&json),
            Begin::Resume(row) => {
                return match row.payment_hash.as_deref() {
                    // In flight: its tracker reports the end; until then, say so.
                    Some(hash) => Ok(in_flight_response(hash, &req)),
                    // Paying again could pay twice (see the module docs).
                    None => Err(WalletError::IdempotencyInProgress),
                };
            }
            Begin::New(row) => row,
        };
        let asked = RebalanceRequest {
            out_chan_id: req.out_chan_id,
            in_chan_id: req.in_chan_id,
            amount,
            fee_limit,
            timeout,
        };
        let answer_by = timeout.saturating_add(REBALANCE_ANSWER_GRACE);
        let outcome = match tokio::time::timeout(answer_by, self.node.rebalance(&asked)).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(self.failed_at_node(&row, e).await),
            // No answer in time: the outcome (and the payment hash) is unknown.
            Err(_) => {
                return Err(WalletError::NodeUnavailable(
                    "the rebalance did not answer in time".into(),
                ));
            }
        };
        let hash = outcome.payment_hash.to_string();
        if !outcome.state.is_terminal() {
            let mut tx = self.db.begin().await?;
            store::set_in_flight(&mut tx, &row.id, &hash).await?;
            tx.commit().await?;
            self.spawn_tracker(row.clone(), outcome.payment_hash);
            return Ok(in_flight_response(&hash, &req));
        }
        match self
            .finish_rebalance(&row, &req, &hash, &outcome.state)
            .await?
        {
            Some(r) => Ok(r),
            None => self.stored(&row.id).await,
        }
    }

    async fn finish_rebalance(
        &self,
        row: &ActionRow,
        req: &wallet::RebalanceRequest,
        hash: &str,
        state: &PayState,
    ) -> Result<Option<wallet::RebalanceResponse>, WalletError> {
        let (status, proto_status, fee, preimage, code, reason) = match state {
            PayState::Succeeded { preimage, fee } => (
                "succeeded",
                wallet::PaymentStatus::Succeeded,
                *fee,
                Some(preimage.to_string()),
                None,
                None,
            ),
            PayState::Failed { code, reason } => (
                "failed",
                wallet::PaymentStatus::Failed,
                Msat::ZERO,
                None,
                Some(code.as_str()),
                Some(reason.as_str()),
            ),
            PayState::InFlight => return Ok(None),
        };
        let amount = validate::amount("amount_msat", req.amount_msat, false)?;
        let fee_limit = validate::amount("fee_limit_msat", req.fee_limit_msat, true)?;
        let body = RebalanceReceiptBody {
            out_chan_id: req.out_chan_id.to_string(),
            in_chan_id: req.in_chan_id.to_string(),
            payment_hash: hash,
            status,
            amount_msat: amount,
            fee_msat: fee,
            fee_limit_msat: fee_limit,
            preimage,
            failure_code: code,
            failure_reason: reason,
            requested_by: &row.requested_by,
            backend: self.node.backend(),
        };
        self.finish(
            row,
            receipt::REBALANCE_SCHEMA,
            &body,
            hash,
            Some(hash),
            status == "failed",
            |r| wallet::RebalanceResponse {
                payment_hash: hash.to_owned(),
                status: proto_status as i32,
                amount_msat: req.amount_msat,
                fee_msat: fee.as_u64(),
                fee_limit_msat: req.fee_limit_msat,
                failure_code: code.unwrap_or_default().to_owned(),
                failure_reason: reason.unwrap_or_default().to_owned(),
                receipt: Some(r),
            },
        )
        .await
    }

    /// Tracks a rebalance in flight until it ends (never re-sends).
    fn spawn_tracker(self: &Arc<Self>, row: ActionRow, hash: PaymentHash) {
        let this = Arc::clone(self);
        self.tracker.spawn(row.id.clone(), move || {
            let (this, row) = (this.clone(), row.clone());
            async move {
                let state = match this.node.track(&hash).await {
                    Ok(s) if s.is_terminal() => s,
                    Ok(_) => return Ok(false),
                    Err(NodeError::NotFound) => PayState::Failed {
                        code: FailureCode::NotSent,
                        reason: "the node has no record of this rebalance: it was never sent"
                            .into(),
                    },
                    Err(e) => return Err(WalletError::from(e)),
                };
                let req: wallet::RebalanceRequest = receipt::from_json(&row.request_json)?;
                this.finish_rebalance(&row, &req, &hash.to_string(), &state)
                    .await?;
                Ok::<bool, WalletError>(true)
            }
        });
    }

    /// After a restart: re-drives closes whose outcome was not recorded, and tracks rebalances
    /// in flight. Opens and rebalances left `pending` are reported, not re-driven. Returns how
    /// many actions were picked up.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, WalletError> {
        let mut conn = self.db.reader().await?;
        let in_flight = store::with_status(&mut conn, store::IN_FLIGHT, RECOVERY_BATCH).await?;
        let pending = store::with_status(&mut conn, store::PENDING, RECOVERY_BATCH).await?;
        drop(conn);
        let mut picked = 0;
        for row in in_flight {
            match row.payment_hash.as_deref().map(str::parse::<PaymentHash>) {
                Some(Ok(h)) => {
                    self.spawn_tracker(row, h);
                    picked += 1;
                }
                _ => {
                    tracing::error!(id = %row.id, "in-flight rebalance without a valid payment hash")
                }
            }
        }
        for row in pending {
            if row.kind == CLOSE {
                let req: wallet::CloseChannelRequest = receipt::from_json(&row.request_json)?;
                let this = Arc::clone(self);
                self.tracker.spawn(row.id.clone(), move || {
                    let (this, row, req) = (this.clone(), row.clone(), req.clone());
                    async move {
                        match this.drive_close(&row, req.chan_id, req.force).await {
                            Ok(_) => Ok(true),
                            Err(e) if e.is_definite_node_refusal() => Ok(true),
                            Err(e) => Err(e),
                        }
                    }
                });
                picked += 1;
            } else {
                tracing::warn!(
                    id = %row.id,
                    kind = %row.kind,
                    "a channel action's outcome is unknown (the process stopped while the node \
                     was asked); check the node before releasing its idempotency key"
                );
            }
        }
        Ok(picked)
    }
}

fn in_flight_response(hash: &str, req: &wallet::RebalanceRequest) -> wallet::RebalanceResponse {
    wallet::RebalanceResponse {
        payment_hash: hash.to_owned(),
        status: wallet::PaymentStatus::InFlight as i32,
        amount_msat: req.amount_msat,
        fee_msat: 0,
        fee_limit_msat: req.fee_limit_msat,
        failure_code: String::new(),
        failure_reason: String::new(),
        receipt: None,
    }
}
