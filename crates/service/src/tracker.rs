//! Driving work to a terminal state in the background, with the one backoff policy the services
//! share: a payment in flight, a dependency that did not answer.
//!
//! A [`Tracker`] runs at most one task per key. The task calls `attempt` after a capped
//! exponential backoff until it reports the work terminal (`Ok(true)`); errors are logged and
//! retried. Attempts must be safe to repeat (they use the same idempotency keys every time).

use std::{
    collections::HashSet,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

/// First pause before an attempt: short, because most in-flight work ends within milliseconds.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause between attempts, so a recovered dependency is noticed within seconds.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Tracker {
    active: Mutex<HashSet<String>>,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking `key` unless it is already tracked.
    pub fn spawn<F, Fut, E>(self: &Arc<Self>, key: String, attempt: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<bool, E>> + Send,
        E: std::fmt::Display,
    {
        if !self
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone())
        {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = BACKOFF_MIN;
            loop {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                match attempt().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(%key, "tracking attempt failed, will retry: {e}"),
                }
            }
            this.active
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
        });
    }

    /// How many keys are being tracked.
    pub fn len(&self) -> usize {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn retries_until_terminal_and_tracks_each_key_once() {
        let tracker = Arc::new(Tracker::new());
        let calls = Arc::new(AtomicU32::new(0));
        for _ in 0..3 {
            let calls = calls.clone();
            tracker.spawn("k".into(), move || {
                let calls = calls.clone();
                async move {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    if n == 0 {
                        Err("first attempt fails")
                    } else {
                        Ok(n >= 2)
                    }
                }
            });
        }
        assert_eq!(tracker.len(), 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !tracker.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "tracker did not finish"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
