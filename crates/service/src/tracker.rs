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

/// How often [`spawn_resweep`] looks for work in flight that nobody drives.
pub const RESWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Work unchanged for this long is re-driven by the resweep: longer than a request takes, so
/// the request that started it has finished or given up.
pub const RESWEEP_AFTER: Duration = Duration::from_secs(10);

/// Every [`RESWEEP_INTERVAL`], calls `recover_before(now - RESWEEP_AFTER)`: work left in flight
/// by a step that failed half-way (the database went away between a write and its
/// acknowledgement, say) is tracked again without a restart. `recover_before` must spawn
/// trackers only (a key already tracked is skipped by [`Tracker::spawn`]).
pub fn spawn_resweep<F, Fut, E>(what: &'static str, recover_before: F, clock: Arc<dyn crate::Clock>)
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<usize, E>> + Send,
    E: std::fmt::Display,
{
    let after = u64::try_from(RESWEEP_AFTER.as_millis()).unwrap_or(u64::MAX);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RESWEEP_INTERVAL).await;
            match recover_before(clock.now_ms().saturating_sub(after)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(n, "re-driving {what} left in flight"),
                Err(e) => tracing::warn!("resweep of {what} failed: {e}"),
            }
        }
    });
}

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
