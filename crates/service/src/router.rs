//! The router every service is wrapped in: standard routes, limits, ids, tracing and metrics.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodFilter, get, on},
};
use http::{HeaderName, Method, StatusCode};
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{ApiError, metrics::Metrics, openapi};

/// Default largest request body: a BOLT11 invoice is at most a few KiB; 64 KiB leaves room for
/// every request body in the contracts while bounding what an abusive caller can make us buffer.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 64 * 1024;
/// Default bound on one request's handling time, including calls to other services.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `/stats` serves a computed snapshot before computing a new one.
pub const STATS_CACHE_TTL: Duration = Duration::from_secs(60);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// Checks the service's dependencies (database, ...) for `/readyz`.
pub type Readiness = Arc<dyn Fn() -> BoxFuture<Result<(), String>> + Send + Sync>;
/// The service's own numbers for `/stats`.
pub type StatsSource = Arc<dyn Fn() -> BoxFuture<serde_json::Value> + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteStatus {
    Built,
    /// Part of the contract, not built yet: answers `501 NOT_SUPPORTED`.
    NotSupported,
}

/// One route of a service's public API, for `/openapi.json` and for `NOT_SUPPORTED` stubs.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub method: &'static str,
    /// axum syntax: `/v1/aegis/verification/{id}`.
    pub path: &'static str,
    pub summary: &'static str,
    /// Full proto name of the request body message, if any.
    pub request: Option<&'static str>,
    /// Full proto name of the success response message, if any.
    pub response: Option<&'static str>,
    /// The scope a token needs, or `None` for a public route.
    pub scope: Option<&'static str>,
    /// Other scopes that each grant the route as well (set with [`Route::or_any_of`]).
    pub also: &'static [&'static str],
    pub status: RouteStatus,
}

impl Route {
    pub const fn built(
        method: &'static str,
        path: &'static str,
        summary: &'static str,
        request: Option<&'static str>,
        response: Option<&'static str>,
        scope: Option<&'static str>,
    ) -> Self {
        Self {
            method,
            path,
            summary,
            request,
            response,
            scope,
            also: &[],
            status: RouteStatus::Built,
        }
    }

    /// The route is granted by any of `also` as well as by its scope.
    pub const fn or_any_of(mut self, also: &'static [&'static str]) -> Self {
        self.also = also;
        self
    }

    /// Every scope that grants the route, its own first; empty for a public route.
    pub fn scopes(&self) -> Vec<&'static str> {
        self.scope
            .into_iter()
            .chain(self.also.iter().copied())
            .collect()
    }

    pub const fn not_supported(
        method: &'static str,
        path: &'static str,
        summary: &'static str,
    ) -> Self {
        Self {
            method,
            path,
            summary,
            request: None,
            response: None,
            scope: None,
            also: &[],
            status: RouteStatus::NotSupported,
        }
    }
}

/// Builds the full router of a service around its API routes.
pub struct ServiceRouter {
    service: &'static str,
    api: Router,
    routes: Vec<Route>,
    metrics: Arc<Metrics>,
    readiness: Option<Readiness>,
    stats: Option<StatsSource>,
    body_limit: usize,
    timeout: Duration,
}

impl ServiceRouter {
    pub fn new(service: &'static str, api: Router, metrics: Arc<Metrics>) -> Self {
        Self {
            service,
            api,
            routes: Vec::new(),
            metrics,
            readiness: None,
            stats: None,
            body_limit: DEFAULT_BODY_LIMIT_BYTES,
            timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    pub fn routes(mut self, routes: &[Route]) -> Self {
        self.routes.extend_from_slice(routes);
        self
    }

    pub fn readiness(mut self, f: Readiness) -> Self {
        self.readiness = Some(f);
        self
    }

    pub fn stats(mut self, f: StatsSource) -> Self {
        self.stats = Some(f);
        self
    }

    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn build(self) -> Router {
        let mut router = self.api;
        for route in self
            .routes
            .iter()
            .filter(|r| r.status == RouteStatus::NotSupported)
        {
            let what = format!(
                "{} {} is not supported in this version",
                route.method, route.path
            );
            let filter = method_filter(route.method);
            router = router.route(
                route.path,
                on(filter, move || {
                    let what = what.clone();
                    async move { ApiError::not_supported(what) }
                }),
            );
        }

        let openapi_doc = Arc::new(openapi::document(
            self.service,
            env!("CARGO_PKG_VERSION"),
            &self.routes,
        ));
        let readiness = self.readiness.clone();
        let metrics = self.metrics.clone();
        let stats_metrics = self.metrics.clone();
        let stats_source = self.stats.clone();
        let service = self.service;
        let started = Instant::now();
        let cache: Arc<Mutex<Option<(Instant, serde_json::Value)>>> = Arc::new(Mutex::new(None));

        router =
            router
                .route(
                    "/healthz",
                    get(|| async { Json(serde_json::json!({"status": "ok"})) }),
                )
                .route(
                    "/readyz",
                    get(move || {
                        let readiness = readiness.clone();
                        async move {
                            match readiness {
                                Some(check) => match check().await {
                                    Ok(()) => {
                                        Json(serde_json::json!({"status": "ready"})).into_response()
                                    }
                                    Err(why) => {
                                        ApiError::unavailable("NOT_READY", why).into_response()
                                    }
                                },
                                None => {
                                    Json(serde_json::json!({"status": "ready"})).into_response()
                                }
                            }
                        }
                    }),
                )
                .route(
                    "/metrics",
                    get(move || {
                        let metrics = metrics.clone();
                        async move {
                            (
                                [(
                                    http::header::CONTENT_TYPE,
                                    "text/plain; version=0.0.4; charset=utf-8",
                                )],
                                metrics.encode(),
                            )
                        }
                    }),
                )
                .route(
                    "/stats",
                    get(move || {
                        let (cache, metrics, source) =
                            (cache.clone(), stats_metrics.clone(), stats_source.clone());
                        async move {
                            Json(cached_stats(service, started, &cache, &metrics, source).await)
                        }
                    }),
                )
                .route(
                    "/openapi.json",
                    get(move || async move { Json((*openapi_doc).clone()) }),
                );

        let metrics = self.metrics.clone();
        let timeout = self.timeout;
        router
            .route_layer(middleware::from_fn(move |req: Request, next: Next| {
                let metrics = metrics.clone();
                async move { record_metrics(metrics, req, next).await }
            }))
            .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route") })
            .method_not_allowed_fallback(|| async {
                ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "method not allowed on this route")
            })
            .layer(DefaultBodyLimit::max(self.body_limit))
            // Inside the timeout: a request that times out (or whose caller goes away) answers,
            // and its handler still finishes what it started.
            .layer(crate::DetachLayer)
            .layer(middleware::from_fn(move |req: Request, next: Next| async move {
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(resp) => resp,
                    Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "TIMEOUT", "request timed out")
                        .retryable()
                        .into_response(),
                }
            }))
            .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
                ApiError::internal("handler panicked").into_response()
            }))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }))
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
    }
}

fn method_filter(method: &str) -> MethodFilter {
    match Method::from_bytes(method.as_bytes()) {
        Ok(Method::GET) => MethodFilter::GET,
        Ok(Method::PUT) => MethodFilter::PUT,
        Ok(Method::DELETE) => MethodFilter::DELETE,
        Ok(Method::PATCH) => MethodFilter::PATCH,
        _ => MethodFilter::POST,
    }
}

async fn record_metrics(metrics: Arc<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    metrics.record(&route, &method, resp.status().as_u16(), start.elapsed());
    resp
}

async fn cached_stats(
    service: &str,
    started: Instant,
    cache: &Mutex<Option<(Instant, serde_json::Value)>>,
    metrics: &Metrics,
    source: Option<StatsSource>,
) -> serde_json::Value {
    if let Ok(guard) = cache.lock()
        && let Some((at, v)) = guard.as_ref()
        && at.elapsed() < STATS_CACHE_TTL
    {
        return v.clone();
    }
    let domain = match source {
        Some(f) => f().await,
        None => serde_json::json!({}),
    };
    let v = serde_json::json!({
        "service": service,
        "uptime_s": started.elapsed().as_secs(),
        "cache_ttl_s": STATS_CACHE_TTL.as_secs(),
        "http": metrics.golden_signals(),
        "domain": domain,
    });
    if let Ok(mut guard) = cache.lock() {
        *guard = Some((Instant::now(), v.clone()));
    }
    v
}
