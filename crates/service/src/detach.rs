//! Handlers run to completion, whatever happens to the caller.
//!
//! hyper and tonic drop a request's future when its connection closes, and a timeout drops the
//! future it wraps. A payment handler dropped between two of its steps (a row written `paying`,
//! the node already asked) leaves work that nobody drives until the next restart, while the
//! caller's retry with the same idempotency key finds it "in progress" forever. [`DetachLayer`]
//! runs each request in its own task: the caller may go away or time out, the handler still
//! records what happened.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tower::{Layer, Service};

/// Wraps a service so that every call runs in its own tokio task (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct DetachLayer;

impl<S> Layer<S> for DetachLayer {
    type Service = Detach<S>;

    fn layer(&self, inner: S) -> Detach<S> {
        Detach { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Detach<S> {
    inner: S,
}

impl<S, Req> Service<Req> for Detach<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let task = tokio::spawn(self.inner.call(req));
        Box::pin(async move {
            match task.await {
                Ok(result) => result,
                // A panic stays a panic (the layers outside turn it into a 500).
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled: only when the runtime shuts down, and then nobody is waiting.
                Err(_) => std::future::pending().await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    use tower::ServiceExt;

    use super::*;

    /// A handler whose caller gave up still finishes; without the layer it would not.
    #[tokio::test]
    async fn a_dropped_call_still_runs_to_completion() {
        for detached in [true, false] {
            let finished = Arc::new(AtomicBool::new(false));
            let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
            let gate = Arc::new(tokio::sync::Mutex::new(Some(gate_rx)));
            let handler = {
                let finished = finished.clone();
                tower::service_fn(move |(): ()| {
                    let (finished, gate) = (finished.clone(), gate.clone());
                    async move {
                        let rx = gate.lock().await.take();
                        if let Some(rx) = rx {
                            let _ = rx.await;
                        }
                        finished.store(true, Ordering::SeqCst);
                        Ok::<_, std::convert::Infallible>(())
                    }
                })
            };
            let call: Pin<Box<dyn Future<Output = _> + Send>> = if detached {
                Box::pin(DetachLayer.layer(handler).oneshot(()))
            } else {
                Box::pin(handler.oneshot(()))
            };
            // The caller gives up before the handler can finish.
            assert!(
                tokio::time::timeout(Duration::from_millis(20), call)
                    .await
                    .is_err()
            );
            gate_tx.send(()).unwrap_or_default();
            let done = oa_testkit::wait_until(
                Duration::from_millis(500),
                Duration::from_millis(5),
                || async { finished.load(Ordering::SeqCst).then_some(()) },
            )
            .await;
            assert_eq!(done.is_some(), detached, "detached: {detached}");
        }
    }

    #[tokio::test]
    async fn answers_and_panics_pass_through() {
        let ok = DetachLayer
            .layer(tower::service_fn(|x: u32| async move {
                Ok::<_, std::convert::Infallible>(x + 1)
            }))
            .oneshot(41)
            .await;
        assert_eq!(ok, Ok(42));
        let panicked = tokio::spawn(
            DetachLayer
                .layer(tower::service_fn(|x: u32| async move {
                    assert_ne!(x, 0, "boom");
                    Ok::<_, std::convert::Infallible>(x)
                }))
                .oneshot(0),
        )
        .await;
        assert!(panicked.is_err_and(|e| e.is_panic()));
    }
}
