//! Group commit: many callers' writes in one transaction.
//!
//! On SQLite there is one writer, and each transaction costs its `BEGIN`, its `COMMIT` (a WAL
//! append of every page it touched) and a hand-off to the connection's worker thread per
//! statement. A service that records many small independent changes (one per payment) gets
//! more done by letting one task commit whatever is queued together: callers [`submit`] a job
//! and wait; the task takes up to `max_batch` queued jobs, hands them to
//! [`Committer::commit`] as one batch (one transaction), and answers each caller after that
//! commit. If a batch fails as a whole, its jobs are retried one batch each, so one bad job cannot
//! fail the others; each caller gets its own answer.
//!
//! On PostgreSQL it pays too, wherever every job writes the same row (a receipt log's or a
//! journal's head): each transaction holds that row's lock until its COMMIT, so one transaction
//! per job would run the jobs of all replicas one at a time.
//!
//! [`submit`]: GroupCommit::submit

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use tokio::sync::{mpsc, oneshot};

/// Commits a batch of jobs in one transaction.
pub trait Committer: Send + Sync + 'static {
    type Job: Send + 'static;
    /// What one job's caller gets back.
    type Out: Send + 'static;
    type Error: std::fmt::Display + From<Stopped> + Send + 'static;

    /// Commits all `jobs` in one transaction and returns one answer per job, in order; or fails
    /// as a whole, having changed nothing.
    fn commit(
        &self,
        jobs: &[Self::Job],
    ) -> impl Future<Output = Result<Vec<Self::Out>, Self::Error>> + Send;
}

/// The committing task stopped (the service is shutting down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the group commit task stopped")]
pub struct Stopped;

type Reply<C> = oneshot::Sender<Result<<C as Committer>::Out, <C as Committer>::Error>>;

/// The handle callers submit jobs through; cheap to clone.
pub struct GroupCommit<C: Committer> {
    queue: mpsc::Sender<(C::Job, Reply<C>)>,
    committer: Arc<C>,
    counts: Arc<Counts>,
}

/// What a group commit has done so far.
#[derive(Debug, Default)]
struct Counts {
    /// Jobs submitted and not yet answered (queued, or in the batch being committed).
    pending: AtomicUsize,
    /// Transactions committed.
    committed: AtomicU64,
}

impl<C: Committer> Clone for GroupCommit<C> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            committer: self.committer.clone(),
            counts: self.counts.clone(),
        }
    }
}

impl<C: Committer> std::fmt::Debug for GroupCommit<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl<C: Committer> GroupCommit<C> {
    /// Starts the committing task (on the current tokio runtime). At most `max_batch` jobs go in
    /// one transaction, which bounds how long the writer is held and the work redone if a batch
    /// fails; at most `queue` jobs wait, after which callers wait to submit (back-pressure).
    pub fn spawn(committer: C, max_batch: usize, queue: usize) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let counts = Arc::new(Counts::default());
        let committer = Arc::new(committer);
        tokio::spawn(run(committer.clone(), rx, max_batch.max(1), counts.clone()));
        Self {
            queue: tx,
            committer,
            counts,
        }
    }

    /// Commits one job in a transaction of its own, in the caller's task, beside the batches.
    pub async fn commit_alone(&self, job: C::Job) -> Result<C::Out, C::Error> {
        let mut outs = self.committer.commit(std::slice::from_ref(&job)).await?;
        self.counts.committed.fetch_add(1, Ordering::Relaxed);
        outs.pop().ok_or_else(|| C::Error::from(Stopped))
    }

    /// Submits one job and waits until the transaction holding it has committed (or failed).
    pub async fn submit(&self, job: C::Job) -> Result<C::Out, C::Error> {
        let (reply, answer) = oneshot::channel();
        let unsent = Unsent::count(&self.counts.pending);
        self.queue.send((job, reply)).await.map_err(|_| Stopped)?;
        // Queued: the committing task uncounts it when it answers.
        std::mem::forget(unsent);
        answer.await.map_err(|_| Stopped)?
    }

    /// Jobs submitted and not yet answered: queued, or in the batch being committed (not those of
    /// [`GroupCommit::commit_alone`]).
    pub fn pending(&self) -> usize {
        self.counts.pending.load(Ordering::Relaxed)
    }

    /// Transactions committed so far: a batch, one job of a failed batch retried alone, or one
    /// job of [`GroupCommit::commit_alone`].
    pub fn committed(&self) -> u64 {
        self.counts.committed.load(Ordering::Relaxed)
    }
}

/// Counts a job as pending while it is being submitted, and uncounts it if it never reaches the
/// queue (the task stopped, or the caller gave up waiting for room).
struct Unsent<'a>(&'a AtomicUsize);

impl<'a> Unsent<'a> {
    fn count(pending: &'a AtomicUsize) -> Self {
        pending.fetch_add(1, Ordering::Relaxed);
        Self(pending)
    }
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn run<C: Committer>(
    committer: Arc<C>,
    mut rx: mpsc::Receiver<(C::Job, Reply<C>)>,
    max: usize,
    counts: Arc<Counts>,
) {
    let answered = |n: usize| counts.pending.fetch_sub(n, Ordering::Relaxed);
    let committed = || counts.committed.fetch_add(1, Ordering::Relaxed);
    let mut jobs = Vec::with_capacity(max);
    let mut replies = Vec::with_capacity(max);
    while let Some((job, reply)) = rx.recv().await {
        jobs.push(job);
        replies.push(reply);
        while jobs.len() < max {
            match rx.try_recv() {
                Ok((job, reply)) => {
                    jobs.push(job);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        let result = committer.commit(&jobs).await;
        if result.is_ok() {
            committed();
        }
        match result {
            Ok(outs) => {
                answered(replies.len());
                for (reply, out) in replies.drain(..).zip(outs) {
                    let _ = reply.send(Ok(out));
                }
            }
            Err(e) if jobs.len() == 1 => {
                answered(1);
                if let Some(reply) = replies.pop() {
                    let _ = reply.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(
                    batch = jobs.len(),
                    "a group commit of {} jobs failed, retrying one by one: {e}",
                    jobs.len()
                );
                for (job, reply) in jobs.drain(..).zip(replies.drain(..)) {
                    let one = std::slice::from_ref(&job);
                    let answer = match committer.commit(one).await {
                        Ok(mut outs) => {
                            committed();
                            outs.pop().ok_or_else(|| C::Error::from(Stopped))
                        }
                        Err(e) => Err(e),
                    };
                    answered(1);
                    let _ = reply.send(answer);
                }
            }
        }
        jobs.clear();
        replies.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    #[derive(Debug, PartialEq, thiserror::Error)]
    enum E {
        #[error("bad job {0}")]
        Bad(u32),
        #[error(transparent)]
        Stopped(#[from] Stopped),
    }

    /// Doubles each job; a batch holding 13 fails as a whole. Records the batch sizes.
    struct Doubler {
        batches: Arc<Mutex<Vec<usize>>>,
        gate: Arc<tokio::sync::Semaphore>,
        calls: Arc<AtomicUsize>,
    }

    impl Committer for Doubler {
        type Job = u32;
        type Out = u32;
        type Error = E;

        async fn commit(&self, jobs: &[u32]) -> Result<Vec<u32>, E> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            // The first batch waits for the gate, so the rest queue up behind it.
            let _permit = self.gate.acquire().await.map_err(|_| Stopped)?;
            self.batches.lock().unwrap().push(jobs.len());
            if jobs.contains(&13) {
                return Err(E::Bad(13));
            }
            Ok(jobs.iter().map(|j| j * 2).collect())
        }
    }

    #[tokio::test]
    async fn queued_jobs_commit_together_and_a_bad_one_fails_alone() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let group = GroupCommit::spawn(
            Doubler {
                batches: batches.clone(),
                gate: gate.clone(),
                calls: calls.clone(),
            },
            8,
            64,
        );
        let first = tokio::spawn({
            let g = group.clone();
            async move { g.submit(1).await }
        });
        // Bounded wait until the first batch is inside commit (holding the committer).
        for _ in 0..1_000 {
            if calls.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let rest: Vec<_> = (10..20)
            .map(|j| {
                let g = group.clone();
                tokio::spawn(async move { (j, g.submit(j).await) })
            })
            .collect();
        // Let every submission reach the queue before opening the gate.
        for _ in 0..1_000 {
            if group.queue.capacity() == 64 - 10 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            group.pending(),
            11,
            "one in the batch being committed, ten queued"
        );
        assert_eq!(group.committed(), 0);
        gate.add_permits(1_000);
        assert_eq!(first.await.unwrap(), Ok(2));
        for t in rest {
            let (j, r) = t.await.unwrap();
            if j == 13 {
                assert_eq!(r, Err(E::Bad(13)));
            } else {
                assert_eq!(r, Ok(j * 2));
            }
        }
        let sizes = batches.lock().unwrap().clone();
        // 1 alone; then 8 of the ten queued (failing because 13 is among them, then retried
        // one by one: 8 batches of 1); then the last 2 together.
        assert_eq!(sizes, vec![1, 8, 1, 1, 1, 1, 1, 1, 1, 1, 2]);
        // Every batch but the two holding 13 committed.
        assert_eq!(group.committed(), 9);
        assert_eq!(group.pending(), 0);
    }
}
