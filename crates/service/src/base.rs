//! The composition every service shares: its keys, its database, and its full router (API routes,
//! receipt routes, standard routes, limits), so a service's `build` only adds its own domain.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use oa_store::{Db, MigrationSet, receipt_log::ReceiptLog};

use crate::{
    CommonArgs, Route, ServiceKeys, ServiceRouter, audit, events, metrics::Metrics, receipts,
    router::StatsSource,
};

pub struct Base {
    pub service: &'static str,
    pub keys: ServiceKeys,
    pub db: Db,
    request_timeout: std::time::Duration,
    checkpoints: crate::audit::CheckpointPolicy,
    event_retention: std::time::Duration,
}

impl Base {
    /// Loads keys (tokens must name `service` as audience) and opens the migrated database.
    pub async fn open(
        service: &'static str,
        common: &CommonArgs,
        migrations: &[&MigrationSet],
    ) -> anyhow::Result<Base> {
        let keys = common.load_keys(service, service)?;
        let db = common.open_db(migrations).await.context("database")?;
        Ok(Base {
            service,
            keys,
            db,
            request_timeout: common.request_timeout(),
            checkpoints: common.checkpoint_policy(),
            event_retention: std::time::Duration::from_millis(common.event_retention_ms),
        })
    }

    /// The service's full router: `api` (already with its state) plus the receipt, checkpoint and
    /// proof routes (and the background checkpointer), the event stream, the
    /// standard routes, `NOT_SUPPORTED` stubs for unbuilt routes in `routes`, and the limits.
    pub fn router(&self, api: Router, routes: &[Route], stats: Option<StatsSource>) -> Router {
        let api = api.merge(receipts::router(receipts::ReceiptsState {
            db: self.db.clone(),
            service: self.service.into(),
            key_id: self.keys.receipt_key.key_id().to_owned(),
            verifier: self.keys.verifier.clone(),
        }));
        let api = api.merge(audit::router(audit::AuditState {
            db: self.db.clone(),
            service: self.service.into(),
            key_id: self.keys.receipt_key.key_id().to_owned(),
            verifier: self.keys.verifier.clone(),
        }));
        let api = api.merge(events::router(events::EventsState {
            db: self.db.clone(),
            verifier: self.keys.verifier.clone(),
            config: events::EventsConfig::default(),
        }));
        // The background tasks run for the life of the database pool (closed at shutdown).
        let _ = events::spawn_pruner(self.db.clone(), self.event_retention);
        let _ = audit::spawn_checkpointer(
            self.db.clone(),
            ReceiptLog::new(self.service, self.keys.receipt_key.clone()),
            self.checkpoints,
        );
        let all: Vec<Route> = routes
            .iter()
            .chain(receipts::ROUTES.iter())
            .chain(audit::ROUTES.iter())
            .chain(events::ROUTES.iter())
            .copied()
            .collect();
        let ready_db = self.db.clone();
        let mut r = ServiceRouter::new(
            self.service,
            api,
            Arc::new(Metrics::new().with_db(self.db.clone())),
        )
        .routes(&all)
        .timeout(self.request_timeout)
        .readiness(Arc::new(move || {
            let db = ready_db.clone();
            Box::pin(async move { db.ping().await.map_err(|e| e.to_string()) })
        }));
        if let Some(s) = stats {
            r = r.stats(s);
        }
        r.build()
    }
}

/// A `/stats` source counting the rows of `table` grouped by `column` (for example payments by
/// state). `table` and `column` are compile-time names, never caller input.
pub fn count_by(db: &Db, table: &'static str, column: &'static str) -> StatsSource {
    let db = db.clone();
    Arc::new(move || {
        let db = db.clone();
        Box::pin(async move {
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT {column}, CAST(COUNT(*) AS BIGINT) FROM {table} GROUP BY {column} ORDER BY {column}"
            ));
            let rows: Result<Vec<(String, i64)>, sqlx::Error> =
                sqlx::query_as(sql).fetch_all(db.pool()).await;
            rows.map(|r| serde_json::json!({ format!("{table}_by_{column}"): r.into_iter().collect::<std::collections::BTreeMap<_, _>>() }))
                .unwrap_or_default()
        })
    })
}

/// Binds `listen` and serves an HTTP-only service until SIGINT/SIGTERM, then closes its database.
pub async fn run_http(
    service: &str,
    listen: std::net::SocketAddr,
    router: Router,
    db: Db,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .context("bind HTTP")?;
    tracing::info!(http = %listen, "{service} listening");
    crate::serve(listener, router, crate::shutdown_signal()).await?;
    db.close().await;
    Ok(())
}
