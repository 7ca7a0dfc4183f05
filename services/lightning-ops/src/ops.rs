//! The lightning-ops domain object: what the routes and the background loops share.
//!
//! [`Ops`] holds the policy, the custody channel, the database, the clock and the receipt log.
//! Its behaviour is split by concern: `apply.rs` (plan execution, rate limit, deferrals,
//! receipts), `rebalance.rs` (rebalances within the budget), `lifecycle.rs` (channel opens and
//! closes), `forwards.rs` (forwarding-history ingestion), `report.rs` (P&L and channel health)
//! and `reconcile.rs` (the continuous loop). Observations of the node are recorded here, and what
//! is under way ([`Known`]) is gathered here for the plan.

use std::{sync::Arc, time::Duration};

use oa_service::Clock;
use oa_store::{Db, receipt_log::ReceiptLog};

use crate::{
    apply::corrupt,
    error::OpsError,
    executor::{Channels, RebalanceAsk},
    lifecycle::OPEN_CONFIRMATION_WINDOW_MS,
    plan::{self, Action, Known, Observed},
    policy::Policy,
    store,
};

/// Tunables from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Shortest time between two policy changes of one channel; a change planned sooner is
    /// deferred (stored, executed once the window has passed), never dropped.
    pub min_update_interval: Duration,
    /// Default report window (ending now) when a report does not name one.
    pub report_window: Duration,
    /// Forwarding events asked for per page.
    pub forwards_page: u32,
    /// Receipt key ids (hex) of the wallet-executor that lightning-ops trusts; empty accepts any
    /// key whose signature verifies (development only).
    pub executor_receipt_keys: Vec<String>,
}

pub struct Ops {
    pub db: Db,
    pub policy: Option<Arc<Policy>>,
    pub channels: Option<Arc<dyn Channels>>,
    pub clock: Arc<dyn Clock>,
    pub log: ReceiptLog,
    pub settings: Settings,
    /// Applies run one at a time in this process (the HTTP route and the loop share it), so each
    /// plans against the state the previous one left. lightning-ops runs as one instance; the
    /// unique keys in its tables keep a second one from double-recording, not from racing.
    pub(crate) apply_lock: tokio::sync::Mutex<()>,
    /// Ingestion runs one at a time (the cursor's guarded update makes a race harmless, this
    /// makes it rare).
    pub(crate) ingest_lock: tokio::sync::Mutex<()>,
}

impl Ops {
    pub fn new(
        db: Db,
        policy: Option<Arc<Policy>>,
        channels: Option<Arc<dyn Channels>>,
        clock: Arc<dyn Clock>,
        log: ReceiptLog,
        settings: Settings,
    ) -> Self {
        Self {
            db,
            policy,
            channels,
            clock,
            log,
            settings,
            apply_lock: tokio::sync::Mutex::new(()),
            ingest_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn policy(&self) -> Result<&Arc<Policy>, OpsError> {
        self.policy
            .as_ref()
            .ok_or(OpsError::NotConfigured("a --policy-file"))
    }

    pub(crate) fn channels(&self) -> Result<&Arc<dyn Channels>, OpsError> {
        self.channels
            .as_ref()
            .ok_or(OpsError::NotConfigured("an --executor-url"))
    }

    /// Reads the node's channels through the executor and records the observation (latest
    /// state per channel, one uptime observation each).
    pub async fn observe(&self) -> Result<Vec<Observed>, OpsError> {
        let observed = self.channels()?.list().await.map_err(OpsError::Executor)?;
        let mut tx = self.db.begin().await?;
        store::observe(&mut tx, &observed, self.clock.now_ms()).await?;
        tx.commit().await?;
        Ok(observed)
    }

    /// What is under way that the channel list does not show (see [`Known`]): closed channels
    /// (asked of the executor only when the policy has close intents), and lightning-ops's own
    /// unfinished or unconfirmed opens, closes and rebalances. Reads only.
    pub async fn known(&self, policy: &Policy) -> Result<Known, OpsError> {
        let mut known = Known::default();
        if !policy.intents.close.is_empty() {
            match self.channels()?.list_closed().await {
                Ok(closed) => known.closing.extend(closed.iter().map(|c| c.chan_id)),
                // A backend without the closed list: lightning-ops's own closes still count.
                Err(e) if e.code == "NOT_SUPPORTED" => {
                    tracing::warn!("the executor cannot list closed channels: {}", e.message);
                }
                Err(e) => return Err(OpsError::Executor(e)),
            }
        }
        let mut conn = self.conn().await?;
        known
            .closing
            .extend(store::closing_channels(&mut conn).await?);
        let since = self
            .clock
            .now_ms()
            .saturating_sub(OPEN_CONFIRMATION_WINDOW_MS);
        known
            .opening
            .extend(store::opening_peers(&mut conn, since).await?);
        for row in store::pending_actions(&mut conn).await? {
            if row.kind == store::REBALANCE {
                let ask: RebalanceAsk =
                    serde_json::from_str(&row.desired).map_err(|e| corrupt("desired", e))?;
                known
                    .rebalancing
                    .extend([row.chan_id, ask.out_chan_id, ask.in_chan_id]);
            }
        }
        Ok(known)
    }

    /// The plan against the node as it is now (`POST /v1/ops/plan`): reads the channels and
    /// what is under way; records nothing.
    pub async fn plan_now(&self) -> Result<Vec<Action>, OpsError> {
        let policy = self.policy()?.clone();
        let observed = self.channels()?.list().await.map_err(OpsError::Executor)?;
        let known = self.known(&policy).await?;
        Ok(plan::plan_with(&policy, &observed, &known))
    }

    pub(crate) async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, OpsError> {
        Ok(self.db.reader().await?)
    }
}
