//! The background loops: continuous reconcile and forwarding ingestion.
//!
//! Reconcile (`--reconcile-interval-secs`, 0 = off): each tick ingests the forwarding history,
//! observes the node (an uptime sample), plans, and applies, which also executes deferred updates
//! whose window has passed. With `--dry-run` a tick only observes and plans: it changes nothing
//! and records what it would have done in the journal (`ops.reconcile`, kind `dry_run_plan`) and
//! the log. Decisions read the service [`oa_service::Clock`]; only the pacing of ticks is real
//! time. The first tick runs at start.
//!
//! Ingestion (`--ingest-interval-secs`, 0 = off) keeps the forwarding history current between
//! reports even when reconcile is off.

use std::{sync::Arc, time::Duration};

use oa_proto::ops;
use oa_store::journal;
use serde_json::json;
use tokio::{sync::watch, task::JoinHandle, time::MissedTickBehavior};

use crate::{apply::status, error::OpsError, forwards::MAX_PAGES_PER_RUN, ops::Ops};

/// Journal topic of reconcile ticks.
pub const RECONCILE_TOPIC: &str = "ops.reconcile";

impl Ops {
    /// One reconcile tick (see the module docs). Ticks that found nothing to execute, defer or
    /// plan (only flags, skipped rebalances and actions the backend does not support) record
    /// nothing.
    pub async fn tick(&self, dry_run: bool) -> Result<Vec<ops::ActionResult>, OpsError> {
        if self.channels.is_some()
            && let Err(e) = self.ingest(MAX_PAGES_PER_RUN).await
        {
            tracing::warn!(code = %e.to_api().code, "reconcile: forwarding history not ingested: {e}");
        }
        let results = self.apply(dry_run).await?;
        let acted = results
            .iter()
            .filter(|r| r.status != status::SKIPPED && r.status != status::NOT_SUPPORTED)
            .count();
        if acted > 0 {
            let summary: Vec<_> = results
                .iter()
                .map(|r| {
                    json!({
                        "action": r.action,
                        "channel_id": r.channel_id,
                        "status": r.status,
                        "description": r.description,
                        "not_before_ms": r.not_before_ms.to_string(),
                    })
                })
                .collect();
            let now = self.clock.now_ms();
            let mut tx = self.db.begin().await?;
            journal::append(
                &mut tx,
                RECONCILE_TOPIC,
                if dry_run { "dry_run_plan" } else { "tick" },
                &json!({ "results": summary }),
                now,
            )
            .await?;
            tx.commit().await?;
            for r in &results {
                tracing::info!(
                    dry_run,
                    action = %r.action,
                    channel_id = %r.channel_id,
                    status = %r.status,
                    "reconcile: {}",
                    r.description
                );
            }
        }
        Ok(results)
    }
}

/// The running background loops; [`Background::stop`] ends them.
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// Starts the loops that are switched on (a `None` or zero interval is off).
    pub fn spawn(
        ops: Arc<Ops>,
        reconcile_every: Option<Duration>,
        dry_run: bool,
        ingest_every: Option<Duration>,
    ) -> Background {
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        if let Some(every) = reconcile_every.filter(|d| !d.is_zero()) {
            let ops = ops.clone();
            tasks.push(tokio::spawn(every_until_stopped(
                every,
                rx.clone(),
                move || {
                    let ops = ops.clone();
                    async move {
                        if let Err(e) = ops.tick(dry_run).await {
                            tracing::warn!(code = %e.to_api().code, "reconcile tick failed: {e}");
                        }
                    }
                },
            )));
        }
        if let Some(every) = ingest_every.filter(|d| !d.is_zero())
            && ops.channels.is_some()
        {
            tasks.push(tokio::spawn(every_until_stopped(every, rx, move || {
                let ops = ops.clone();
                async move {
                    if let Err(e) = ops.ingest(MAX_PAGES_PER_RUN).await {
                        tracing::warn!(code = %e.to_api().code, "forwarding ingestion failed: {e}");
                    }
                }
            })));
        }
        Background { stop, tasks }
    }

    /// Stops the loops, letting a tick in progress finish.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn every_until_stopped<F, Fut>(every: Duration, mut stop: watch::Receiver<bool>, mut run: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        run().await;
    }
}
