//! How a service process runs: its allocator and its tokio runtime. Every service binary (and
//! `oa serve`) declares [`Allocator`] as its global allocator and runs on [`build`]'s runtime.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// jemalloc, which every service binary declares with `#[global_allocator]`. Under payment load
/// glibc's malloc took about a tenth of treasury's and Hydra's CPU; jemalloc measured about 5%
/// less CPU per payment in each, with the same idle memory (BENCHMARKS.md, ninth session).
pub use tikv_jemallocator::Jemalloc as Allocator;

/// Most threads a service's runtime may be given (`--worker-threads`).
pub const MAX_WORKER_THREADS: u16 = 256;

/// The name of a multi-thread runtime's threads (its workers and its blocking pool).
pub const WORKER_THREAD_NAME: &str = "oa-worker";
/// The name of a current-thread runtime's blocking-pool threads (its tasks run on the caller's).
pub const BLOCKING_THREAD_NAME: &str = "oa-blocking";

/// The runtime for `worker_threads` threads: `None`, one per CPU (or tokio's
/// `TOKIO_WORKER_THREADS`); `1`, every task on the calling thread (tokio's current-thread
/// scheduler, so no task is handed between threads); more, that many worker threads.
pub fn build(worker_threads: Option<u16>) -> io::Result<Runtime> {
    let (mut builder, name) = match worker_threads {
        Some(1) => (Builder::new_current_thread(), BLOCKING_THREAD_NAME),
        Some(n) => {
            let mut b = Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            (b, WORKER_THREAD_NAME)
        }
        None => (Builder::new_multi_thread(), WORKER_THREAD_NAME),
    };
    builder.thread_name(name).enable_all().build()
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    use super::*;

    fn shape(threads: Option<u16>) -> (RuntimeFlavor, usize) {
        let rt = build(threads).unwrap();
        let flavor = rt.handle().runtime_flavor();
        (flavor, rt.metrics().num_workers())
    }

    #[test]
    fn one_thread_is_the_current_thread_scheduler_and_more_are_workers() {
        assert_eq!(shape(Some(1)), (RuntimeFlavor::CurrentThread, 1));
        assert_eq!(shape(Some(3)), (RuntimeFlavor::MultiThread, 3));
        assert_eq!(shape(None).0, RuntimeFlavor::MultiThread);
    }

    #[test]
    fn worker_threads_carry_the_name_operators_and_tests_look_for() {
        let rt = build(Some(2)).unwrap();
        let name = rt.block_on(async {
            tokio::spawn(async { std::thread::current().name().map(str::to_owned) })
                .await
                .unwrap()
        });
        assert_eq!(name.as_deref(), Some(WORKER_THREAD_NAME));
    }

    #[test]
    fn the_current_thread_runtime_runs_spawned_tasks_and_timers() {
        let rt = build(Some(1)).unwrap();
        let got = rt.block_on(async {
            let task = tokio::spawn(async {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                std::thread::current().id()
            });
            (task.await.unwrap(), std::thread::current().id())
        });
        assert_eq!(got.0, got.1, "the spawned task ran on the calling thread");
    }
}
