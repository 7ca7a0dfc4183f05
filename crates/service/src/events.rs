//! The event stream every service serves from its journal (`crates/store/src/journal.rs`).
//!
//! - `GET /v1/events?topic=&after_seq=&limit=` (`events:read`): a page of events with
//!   `seq > after_seq`, oldest first.
//! - `GET /v1/events/ws?topic=&after_seq=` (`events:read`, WebSocket): replays from the cursor,
//!   then follows live. Each event is one text message `{"type":"event","event":{...}}`.
//!
//! Delivery is at least once: a consumer remembers the last `seq` it applied, resumes with
//! `after_seq` set to it, and drops anything with `seq <= last applied`. Events are read from the
//! database, never from memory, so a resumed consumer sees exactly what was committed, in `seq`
//! order, whichever replica it reconnects to. Following live polls the journal (see
//! [`EventsConfig::follow_poll`]) because events are written inside each service's own
//! transactions, which the kit cannot observe.
//!
//! A cursor below the topic's retention floor (events pruned by [`oa_store::journal::prune`])
//! is refused: `410 STALE_CURSOR` over HTTP, close code [`CLOSE_STALE_CURSOR`] over WebSocket.
//! A consumer that does not read is disconnected with close code [`CLOSE_SLOW_CONSUMER`] once a
//! send has waited [`EventsConfig::send_timeout`] (the close frame gets a bounded grace to reach
//! it); the server never buffers more than one page per connection plus the socket's bounded
//! write buffer.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{
        Query, State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    response::{IntoResponse, Response},
    routing::get,
};
use http::StatusCode;
use oa_auth::Authenticated;
use oa_store::{
    Db,
    journal::{self, Event},
};
use serde::{Deserialize, Serialize};

use crate::{ApiError, Route};

/// Scope needed to read a service's events.
pub const READ_SCOPE: &str = "events:read";
/// Default page of `GET /v1/events`.
const DEFAULT_PAGE: u32 = 100;
/// Page the WebSocket reads per database query while replaying: large enough to replay fast,
/// small enough that one connection holds little memory.
const WS_PAGE: u32 = 256;
/// Longest accepted topic name; topics are short identifiers like `treasury.payments`.
const MAX_TOPIC_LEN: usize = 128;
/// WebSocket close code for a cursor below the retention floor (private-use range 4000-4999).
pub const CLOSE_STALE_CURSOR: u16 = 4410;
/// WebSocket close code for a consumer too slow to keep up.
pub const CLOSE_SLOW_CONSUMER: u16 = 4408;
/// Bytes the socket may buffer for one consumer before a send waits; with the send timeout this
/// bounds what a slow consumer costs the server.
const WS_MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// Tuning of the stream.
#[derive(Debug, Clone, Copy)]
pub struct EventsConfig {
    /// How often a following WebSocket looks for new events.
    pub follow_poll: Duration,
    /// How long one send may wait for a consumer before it is disconnected as too slow.
    pub send_timeout: Duration,
    /// How long the close frame naming the reason may wait for the consumer. A consumer that
    /// resumes reading within it drains what was already sent, then reads why it was cut off.
    pub close_grace: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            follow_poll: Duration::from_millis(200),
            send_timeout: Duration::from_secs(5),
            close_grace: Duration::from_secs(10),
        }
    }
}

/// What the event routes need.
#[derive(Clone)]
pub struct EventsState {
    pub db: Db,
    pub verifier: std::sync::Arc<oa_auth::Verifier>,
    pub config: EventsConfig,
}

impl axum::extract::FromRef<EventsState> for std::sync::Arc<oa_auth::Verifier> {
    fn from_ref(s: &EventsState) -> Self {
        s.verifier.clone()
    }
}

/// The route table entries, for `/openapi.json`.
pub const ROUTES: [Route; 2] = [
    Route::built(
        "GET",
        "/v1/events",
        "Events of a topic after a cursor (at-least-once; drop seq <= last applied)",
        None,
        None,
        Some(READ_SCOPE),
    ),
    Route::built(
        "GET",
        "/v1/events/ws",
        "WebSocket: replay a topic from a cursor, then follow live",
        None,
        None,
        Some(READ_SCOPE),
    ),
];

pub fn router(state: EventsState) -> Router {
    Router::new()
        .route("/v1/events", get(list))
        .route("/v1/events/ws", get(ws))
        .with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    topic: String,
    after_seq: Option<u64>,
    limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WsQuery {
    topic: String,
    after_seq: Option<u64>,
}

/// A page of events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsPage {
    pub topic: String,
    pub events: Vec<Event>,
    /// The cursor to resume from: the last event's `seq`, or `after_seq` if none.
    #[serde(with = "oa_receipts::u64_string")]
    pub next_after_seq: u64,
    /// The topic's last `seq` when the page was read.
    #[serde(with = "oa_receipts::u64_string")]
    pub head_seq: u64,
}

/// One WebSocket message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamMessage {
    Event { event: Event },
}

fn valid_topic(topic: &str) -> Result<(), ApiError> {
    let ok = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "INVALID_TOPIC",
            format!("topic must be 1..={MAX_TOPIC_LEN} characters of [a-z0-9._-]"),
        ))
    }
}

fn stale(topic: &str, after_seq: u64, floor: u64) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "STALE_CURSOR",
        format!(
            "events of {topic} up to seq {floor} were pruned; after_seq {after_seq} is below the retention floor, restart from a snapshot"
        ),
    )
    .with_detail("floor_seq", floor.to_string())
}

/// Reads a page after checking the cursor against the retention floor.
async fn page(
    db: &Db,
    topic: &str,
    after_seq: u64,
    limit: u32,
) -> Result<(Vec<Event>, u64), ApiError> {
    let mut conn = db.reader().await.map_err(ApiError::internal)?;
    let floor = journal::floor(&mut conn, topic)
        .await
        .map_err(ApiError::internal)?;
    if after_seq < floor {
        return Err(stale(topic, after_seq, floor));
    }
    let head = journal::head(&mut conn, topic)
        .await
        .map_err(ApiError::internal)?;
    let events = journal::read(&mut conn, topic, after_seq, limit)
        .await
        .map_err(ApiError::internal)?;
    // Pruning may have run between reading the floor and the events; re-check so a reader is
    // never handed a page that silently skips pruned events.
    let floor = journal::floor(&mut conn, topic)
        .await
        .map_err(ApiError::internal)?;
    if after_seq < floor {
        return Err(stale(topic, after_seq, floor));
    }
    Ok((events, head))
}

async fn list(
    State(s): State<EventsState>,
    auth: Authenticated,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventsPage>, ApiError> {
    auth.require_scope(READ_SCOPE)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
    valid_topic(&q.topic)?;
    let after = q.after_seq.unwrap_or(0);
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, journal::MAX_PAGE);
    let (events, head) = page(&s.db, &q.topic, after, limit).await?;
    let next = events.last().map_or(after, |e| e.seq);
    Ok(Json(EventsPage {
        topic: q.topic,
        events,
        next_after_seq: next,
        head_seq: head,
    }))
}

async fn ws(
    State(s): State<EventsState>,
    auth: Authenticated,
    q: Result<Query<WsQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // The scope first: a caller without it learns nothing about the request it made.
    auth.require_scope(READ_SCOPE)?;
    let upgrade = upgrade.map_err(|e| ApiError::bad_request("NOT_A_WEBSOCKET", e.body_text()))?;
    let Query(q) = q.map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))?;
    valid_topic(&q.topic)?;
    let after = q.after_seq.unwrap_or(0);
    Ok(upgrade
        .max_write_buffer_size(WS_MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| follow(socket, s, q.topic, after))
        .into_response())
}

/// Why a stream ended, sent as the close frame.
enum End {
    ClientGone,
    Stale(String),
    Slow,
    Error,
}

async fn follow(mut socket: WebSocket, s: EventsState, topic: String, mut cursor: u64) {
    let end = stream(&mut socket, &s, &topic, &mut cursor).await;
    let (code, reason) = match end {
        End::ClientGone => return,
        End::Stale(reason) => (CLOSE_STALE_CURSOR, reason),
        End::Slow => (
            CLOSE_SLOW_CONSUMER,
            format!(
                "slow_consumer: a send waited over {:?}; resume from after_seq={cursor}",
                s.config.send_timeout
            ),
        ),
        End::Error => (1011, "internal error; resume later".to_owned()),
    };
    tracing::info!(topic, code, "closing event stream: {reason}");
    let close = Message::Close(Some(CloseFrame {
        code,
        // Close reasons are limited to 123 bytes by the protocol.
        reason: truncate(&reason, 123).into(),
    }));
    // A slow consumer may never take even the close frame: wait a bounded grace, then drop.
    let _ = tokio::time::timeout(s.config.close_grace, socket.send(close)).await;
}

/// How often the pruner runs: retention is coarse (hours or days in practice), so once a minute
/// keeps the journal within a minute of its bound at the cost of one query.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Starts the background pruner that drops events older than `retention` (if non-zero); it
/// ends when the database pool is closed. Without a Tokio runtime nothing is started.
pub fn spawn_pruner(db: Db, retention: Duration) -> Option<tokio::task::JoinHandle<()>> {
    if retention.is_zero() {
        return None;
    }
    let handle = tokio::runtime::Handle::try_current().ok()?;
    Some(handle.spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if db.pool().is_closed() {
                break;
            }
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let before =
                now_ms.saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
            let result = async {
                let mut tx = db.begin().await?;
                let n = journal::prune_older_than(&mut tx, before).await?;
                tx.commit().await.map_err(oa_store::StoreError::from)?;
                Ok::<usize, oa_store::StoreError>(n)
            }
            .await;
            match result {
                Ok(0) => {}
                Ok(n) => tracing::info!(topics = n, "pruned journal events past retention"),
                Err(_) if db.pool().is_closed() => break,
                Err(e) => tracing::warn!("journal pruning failed: {e}"),
            }
        }
    }))
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

async fn stream(socket: &mut WebSocket, s: &EventsState, topic: &str, cursor: &mut u64) -> End {
    loop {
        let events = match page(&s.db, topic, *cursor, WS_PAGE).await {
            Ok((events, _)) => events,
            Err(e) if e.code == "STALE_CURSOR" => {
                return End::Stale(format!("stale_cursor: {}", e.message));
            }
            Err(_) => return End::Error,
        };
        let caught_up = events.len() < WS_PAGE as usize;
        for event in events {
            let seq = event.seq;
            let Ok(text) = serde_json::to_string(&StreamMessage::Event { event }) else {
                return End::Error;
            };
            match tokio::time::timeout(
                s.config.send_timeout,
                socket.send(Message::Text(text.into())),
            )
            .await
            {
                Ok(Ok(())) => *cursor = seq,
                Ok(Err(_)) => return End::ClientGone,
                Err(_) => return End::Slow,
            }
        }
        if caught_up {
            // Wait for new events, noticing a client that closes meanwhile.
            tokio::select! {
                () = tokio::time::sleep(s.config.follow_poll) => {}
                msg = socket.recv() => match msg {
                    None | Some(Err(_) | Ok(Message::Close(_))) => return End::ClientGone,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
}
