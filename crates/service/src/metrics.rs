//! Prometheus metrics (`/metrics`) and the numbers behind `/stats`.
//!
//! Each service owns one [`Metrics`]; it registers its own domain metrics on the registry before
//! the router is built. The HTTP layer records every request by matched route, method and status.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use oa_store::{Backend, Db};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        TypedMetric,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// Latency bucket upper bounds in milliseconds, shared by the histogram and the `/stats` summary.
const BUCKETS_MS: [u64; 14] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000,
];

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    totals: Totals,
}

#[derive(Default)]
struct Totals {
    requests: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS_MS.len() + 1],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("oa");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            #[allow(clippy::cast_precision_loss, clippy::float_arithmetic)]
            Histogram::new(BUCKETS_MS.iter().map(|ms| *ms as f64 / 1000.0))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            totals: Totals::default(),
        }
    }

    /// Adds the use of `db`'s writing connection, read at each scrape:
    /// `oa_db_writer_loans_total`, `oa_db_writer_wait_seconds_total` and
    /// `oa_db_writer_held_seconds_total`; on SQLite also the log's checkpoints beside the
    /// writer (`oa_db_checkpoints_total`, `oa_db_wal_pages_behind`). On SQLite, the held rate
    /// nearing 1 (second per second) means writes queue behind the one writer.
    #[must_use]
    pub fn with_db(mut self, db: Db) -> Self {
        self.registry
            .register_collector(Box::new(WriterCollector(db)));
        self
    }

    /// For a service to register its own metrics before it starts serving.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        #[allow(clippy::float_arithmetic)]
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
        let t = &self.totals;
        t.requests.fetch_add(1, Ordering::Relaxed);
        if (400..500).contains(&status) {
            t.client_errors.fetch_add(1, Ordering::Relaxed);
        } else if status >= 500 {
            t.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let i = BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BUCKETS_MS.len());
        t.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Golden signals since start: traffic, errors and latency quantiles (bucket upper bounds).
    pub fn golden_signals(&self) -> serde_json::Value {
        let t = &self.totals;
        let counts: Vec<u64> = t
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let quantile = |permille: u64| -> Option<u64> {
            if total == 0 {
                return None;
            }
            let rank = (total * permille).div_ceil(1000);
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Some(BUCKETS_MS.get(i).copied().unwrap_or(u64::MAX));
                }
            }
            None
        };
        serde_json::json!({
            "requests_total": t.requests.load(Ordering::Relaxed),
            "client_errors_total": t.client_errors.load(Ordering::Relaxed),
            "server_errors_total": t.server_errors.load(Ordering::Relaxed),
            "latency_p50_ms_at_most": quantile(500),
            "latency_p99_ms_at_most": quantile(990),
        })
    }
}

#[derive(Debug)]
struct WriterCollector(Db);

impl Collector for WriterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let used = self.0.writer_use();
        let loans = ConstCounter::new(used.loans);
        loans.encode(encoder.encode_descriptor(
            "db_writer_loans",
            "Write transactions begun and other loans of the writing connection",
            None,
            ConstCounter::<u64>::TYPE,
        )?)?;
        for (name, help, time) in [
            (
                "db_writer_wait_seconds",
                "Time spent waiting for the writing connection",
                used.waited,
            ),
            (
                "db_writer_held_seconds",
                "Time the writing connection was held",
                used.held,
            ),
        ] {
            ConstCounter::new(time.as_secs_f64()).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::<f64>::TYPE,
            )?)?;
        }
        if self.0.backend() == Backend::Sqlite {
            let c = self.0.checkpoints();
            ConstCounter::new(c.runs).encode(encoder.encode_descriptor(
                "db_checkpoints",
                "Checkpoints of the SQLite write-ahead log run beside the writer",
                None,
                ConstCounter::<u64>::TYPE,
            )?)?;
            let behind = c.wal_pages.saturating_sub(c.wal_pages_copied);
            ConstGauge::new(i64::try_from(behind).unwrap_or(i64::MAX)).encode(
                encoder.encode_descriptor(
                    "db_wal_pages_behind",
                    "Pages of the SQLite write-ahead log the last checkpoint could not copy (a \
                     reader still needed them); growing means the log grows",
                    None,
                    ConstGauge::<i64>::TYPE,
                )?,
            )?;
        }
        Ok(())
    }
}
