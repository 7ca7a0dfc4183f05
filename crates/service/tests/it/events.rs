//! The event stream through `Base`: HTTP pages and a WebSocket that replays then follows; a
//! consumer that keeps disconnecting sees every event exactly once after dropping duplicates;
//! stale cursors and slow consumers are refused with a reason.

use std::time::{Duration, Instant};

use futures::StreamExt;
use http::StatusCode;
use oa_service::events::{
    self, CLOSE_SLOW_CONSUMER, CLOSE_STALE_CURSOR, EventsPage, StreamMessage,
};
use oa_store::{Db, journal};
use tokio_tungstenite::tungstenite::{
    self, client::IntoClientRequest, protocol::frame::coding::CloseCode,
};

use crate::audit::{get, kit};

const TOPIC: &str = "hydra.liquidity";

async fn append(db: &Db, n: usize, payload: &serde_json::Value) {
    let mut tx = db.begin().await.unwrap();
    for _ in 0..n {
        journal::append(&mut tx, TOPIC, "invoice_paid", payload, 1)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("ws://{addr}")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(base: &str, token: &str, after: u64) -> Ws {
    let mut req = format!("{base}/v1/events/ws?topic={TOPIC}&after_seq={after}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// A deterministic pseudo-random sequence, so a failure replays the same way.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_disconnects_at_random_points_sees_every_event_once_in_order() {
    const N: u64 = 300;
    let kit = kit(&[]).await;
    let token = kit
        .ring
        .operator_token("hydra", &["events:read"], Duration::from_secs(120))
        .unwrap();
    let base = serve(kit.router.clone()).await;
    append(&kit.base.db, 50, &serde_json::json!({"n": 1})).await;
    // The writer keeps appending while the consumer replays and follows.
    let db = kit.base.db.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..25 {
            append(&db, 10, &serde_json::json!({"n": 2})).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let mut rng = Lcg(7);
    let (mut last, mut got, mut duplicates, mut reconnects) = (0u64, Vec::new(), 0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while last < N {
        assert!(Instant::now() < deadline, "stuck at seq {last}");
        // Resume at or a little before the last applied event: at-least-once delivery means a
        // consumer must cope with replays, so provoke some.
        let from = last.saturating_sub(rng.next(3));
        let mut ws = connect(&base, &token, from).await;
        reconnects += 1;
        let take = 1 + rng.next(40);
        for _ in 0..take {
            let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await
            else {
                break;
            };
            let tungstenite::Message::Text(text) = msg.unwrap() else {
                continue;
            };
            let StreamMessage::Event { event } = serde_json::from_str(&text).unwrap();
            if event.seq <= last {
                duplicates += 1;
                continue;
            }
            assert_eq!(event.seq, last + 1, "events arrive in order without gaps");
            last = event.seq;
            got.push(event.seq);
        }
        if rng.next(2) == 0 {
            let _ = ws.close(None).await;
        }
        drop(ws);
    }
    writer.await.unwrap();
    assert_eq!(got, (1..=N).collect::<Vec<_>>());
    assert!(
        duplicates > 0 && reconnects > 5,
        "{duplicates} duplicates, {reconnects} connections"
    );

    // The HTTP pages tell the same story.
    let mut after = 0;
    let mut paged = Vec::new();
    loop {
        let (status, v) = get(
            &kit.router,
            &format!("/v1/events?topic={TOPIC}&after_seq={after}&limit=64"),
            Some(&token),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let page: EventsPage = serde_json::from_value(v).unwrap();
        if page.events.is_empty() {
            assert_eq!(page.head_seq, N);
            break;
        }
        paged.extend(page.events.iter().map(|e| e.seq));
        after = page.next_after_seq;
    }
    assert_eq!(paged, got);
}

#[tokio::test]
async fn a_cursor_below_the_retention_floor_is_stale_and_bad_queries_are_typed() {
    let kit = kit(&[]).await;
    let token = kit
        .ring
        .operator_token("hydra", &["events:read"], Duration::from_secs(60))
        .unwrap();
    append(&kit.base.db, 10, &serde_json::json!({})).await;
    let mut tx = kit.base.db.begin().await.unwrap();
    journal::prune(&mut tx, TOPIC, 5).await.unwrap();
    tx.commit().await.unwrap();

    let (status, v) = get(
        &kit.router,
        &format!("/v1/events?topic={TOPIC}&after_seq=3"),
        Some(&token),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (StatusCode::GONE, Some("STALE_CURSOR")),
        "{v}"
    );
    assert_eq!(v["error"]["details"]["floor_seq"], "5");
    let (status, v) = get(
        &kit.router,
        &format!("/v1/events?topic={TOPIC}&after_seq=5"),
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let page: EventsPage = serde_json::from_value(v).unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![6, 7, 8, 9, 10]
    );

    let base = serve(kit.router.clone()).await;
    let mut ws = connect(&base, &token, 3).await;
    let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let tungstenite::Message::Close(Some(frame)) = msg else {
        panic!("expected a close frame, got {msg:?}");
    };
    assert_eq!(frame.code, CloseCode::from(CLOSE_STALE_CURSOR));
    assert!(frame.reason.starts_with("stale_cursor"), "{}", frame.reason);

    for (path, status, code) in [
        (
            "/v1/events?topic=Bad%20Topic",
            StatusCode::BAD_REQUEST,
            "INVALID_TOPIC",
        ),
        ("/v1/events", StatusCode::BAD_REQUEST, "INVALID_QUERY"),
        (
            &*format!("/v1/events?topic={TOPIC}&after_seq=-1"),
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY",
        ),
        // The WebSocket route without an upgrade request.
        (
            &*format!("/v1/events/ws?topic={TOPIC}"),
            StatusCode::BAD_REQUEST,
            "NOT_A_WEBSOCKET",
        ),
    ] {
        let (s, v) = get(&kit.router, path, Some(&token)).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}"
        );
    }
    let other = kit
        .ring
        .operator_token("hydra", &["receipts:read"], Duration::from_secs(60))
        .unwrap();
    for path in ["/v1/events", "/v1/events/ws"] {
        // The scope is checked before the request: no upgrade, no answer but 403.
        let (s, _) = get(&kit.router, &format!("{path}?topic={TOPIC}"), Some(&other)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_is_disconnected_with_a_reason() {
    let kit = kit(&[]).await;
    let token = kit
        .ring
        .operator_token("hydra", &["events:read"], Duration::from_secs(60))
        .unwrap();
    // ~40 MB of events: more than the socket buffers and the bounded write buffer can hold.
    let big = serde_json::json!({"blob": "x".repeat(16 * 1024)});
    for _ in 0..10 {
        append(&kit.base.db, 250, &big).await;
    }
    let router = events::router(events::EventsState {
        db: kit.base.db.clone(),
        verifier: kit.base.keys.verifier.clone(),
        config: events::EventsConfig {
            follow_poll: Duration::from_millis(50),
            send_timeout: Duration::from_millis(300),
            close_grace: Duration::from_secs(20),
        },
    });
    let base = serve(router).await;
    let mut ws = connect(&base, &token, 0).await;
    // The scenario itself: a consumer that stops reading for 3 s (ten send timeouts), then
    // drains what was buffered and must find the reason it was cut off.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut received = 0;
    let mut close = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        match msg {
            Ok(tungstenite::Message::Text(_)) => received += 1,
            Ok(tungstenite::Message::Close(frame)) => {
                close = frame;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(
        received < 2500,
        "the server kept sending to a consumer that did not read"
    );
    let frame = close.expect("the consumer is told why it was cut off");
    assert_eq!(frame.code, CloseCode::from(CLOSE_SLOW_CONSUMER));
    assert!(
        frame.reason.starts_with("slow_consumer"),
        "{}",
        frame.reason
    );
}
