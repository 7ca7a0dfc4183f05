//! A client for calling another service of the suite over HTTP: the base URL, a connection pool
//! with connect and call timeouts, a bearer token from this service's identity on every request,
//! and a bound on the answer read. Each caller interprets the status and body for its contract.

use std::time::Duration;

use oa_auth::TokenSource;
use serde::Serialize;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a peer could not be asked, or its answer not read.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("no token for the peer: {0}")]
    Token(String),
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

pub struct PeerClient {
    base: String,
    client: reqwest::Client,
    tokens: TokenSource,
    max_answer: usize,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl PeerClient {
    /// A client for the service at `base` (its trailing `/` ignored); every call is bounded by
    /// `call_timeout` and reads at most `max_answer` bytes of answer.
    pub fn new(
        base: &str,
        tokens: TokenSource,
        call_timeout: Duration,
        max_answer: usize,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(call_timeout)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            client,
            tokens,
            max_answer,
        })
    }

    /// `GET base + path`; the answer's status and body.
    pub async fn get(&self, path: &str) -> Result<(http::StatusCode, Vec<u8>), PeerError> {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    /// `POST base + path` with a JSON body; the answer's status and body.
    pub async fn post<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(http::StatusCode, Vec<u8>), PeerError> {
        self.send(self.client.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(http::StatusCode, Vec<u8>), PeerError> {
        let token = self
            .tokens
            .token()
            .map_err(|e| PeerError::Token(e.to_string()))?;
        let mut resp = req.bearer_auth(token).send().await?;
        let status = http::StatusCode::from_u16(resp.status().as_u16())
            .unwrap_or(http::StatusCode::BAD_GATEWAY);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if body.len() + chunk.len() > self.max_answer {
                return Err(PeerError::TooLarge(self.max_answer));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::{Router, http::HeaderMap, routing::get};
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn answers_are_read_with_the_token_and_bounded() {
        let app = Router::new()
            .route(
                "/small",
                get(|h: HeaderMap| async move {
                    let bearer = h
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("Bearer "));
                    (http::StatusCode::ACCEPTED, if bearer { "ok" } else { "no" })
                }),
            )
            .route("/big", get(|| async { "x".repeat(10_000) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let identity = Arc::new(oa_auth::SigningIdentity::generate("t-1", "t", "svc:t").unwrap());
        let tokens =
            TokenSource::new(identity, "peer", ["peer:read"], Duration::from_secs(60)).unwrap();
        let peer = PeerClient::new(
            &format!("http://{addr}/"),
            tokens,
            Duration::from_secs(5),
            1_000,
        )
        .unwrap();
        let (status, body) = peer.get("/small").await.unwrap();
        assert_eq!(
            (status, body.as_slice()),
            (http::StatusCode::ACCEPTED, &b"ok"[..])
        );
        assert!(matches!(
            peer.get("/big").await,
            Err(PeerError::TooLarge(1_000))
        ));
        // Nothing listening: a transport error, not a panic or a hang.
        drop(peer);
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = closed.local_addr().unwrap();
        drop(closed);
        let identity = Arc::new(oa_auth::SigningIdentity::generate("t-2", "t", "svc:t").unwrap());
        let tokens =
            TokenSource::new(identity, "peer", ["peer:read"], Duration::from_secs(60)).unwrap();
        let peer = PeerClient::new(
            &format!("http://{gone}"),
            tokens,
            Duration::from_secs(5),
            1_000,
        )
        .unwrap();
        assert!(matches!(peer.get("/").await, Err(PeerError::Transport(_))));
    }

    /// A peer that hangs, before answering or halfway through its answer, costs a caller its
    /// call timeout and a transport error, never a hang.
    #[tokio::test]
    async fn a_hanging_peer_is_a_timeout() {
        let silent_addr = oa_testkit::silent_peer().await.unwrap();
        // Answers the status line and headers, then stalls the body.
        let app = Router::new().route(
            "/stall",
            get(|| async {
                let body = futures::stream::once(async {
                    Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"par"))
                })
                .chain(futures::stream::pending());
                axum::body::Body::from_stream(body)
            }),
        );
        let stalling = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stalling_addr = stalling.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(stalling, app).await });
        for url in [
            format!("http://{silent_addr}/"),
            format!("http://{stalling_addr}/stall"),
        ] {
            let identity =
                Arc::new(oa_auth::SigningIdentity::generate("t-3", "t", "svc:t").unwrap());
            let tokens =
                TokenSource::new(identity, "peer", ["peer:read"], Duration::from_secs(60)).unwrap();
            let (base, path) = url.rsplit_once('/').unwrap();
            let peer = PeerClient::new(base, tokens, Duration::from_millis(300), 1_000).unwrap();
            let started = std::time::Instant::now();
            let answered =
                tokio::time::timeout(Duration::from_secs(10), peer.get(&format!("/{path}")))
                    .await
                    .expect("bounded by the call timeout");
            assert!(
                matches!(&answered, Err(PeerError::Transport(e)) if e.is_timeout()),
                "{url}: {answered:?}"
            );
            assert!(started.elapsed() >= Duration::from_millis(300), "{url}");
        }
    }
}
