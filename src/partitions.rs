//! The partition workers of this instance: started on a partition's first
//! message, handed over when the partition is revoked, drained at shutdown.
//!
//! The handover is a handshake with librdkafka: the revoke callback stops the
//! revoked partitions' workers and waits (at most the drain timeout) until
//! their in-flight produces are acknowledged and their final watermarks
//! stored, while the partitions are still this instance's. The commit that
//! follows then covers them, and their next owner starts exactly there.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::pipeline::{InputMessage, Stopped};

/// A running partition worker.
pub struct Worker {
    pub input: mpsc::Sender<InputMessage>,
    pub task: JoinHandle<Stopped>,
}

/// Starts the worker of a partition, given how many partitions this instance
/// holds (they share the buffer budget).
pub type Start = Box<dyn Fn(i32, usize) -> Worker + Send + Sync>;

/// What stopping some workers came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handed {
    /// Workers that finished within the drain timeout.
    pub stopped: usize,
    /// Workers still delivering when the drain timeout passed; their last
    /// offsets are not stored, so their next reader reads those messages again.
    pub timed_out: usize,
    /// Undecided traces let go (their offsets are not committed).
    pub undecided_traces: usize,
}

/// Runs `f` to completion from synchronous code on the multi-threaded
/// runtime: this thread blocks, the runtime's other threads run the tasks `f`
/// waits for. `None` off such a runtime.
pub fn block_on_runtime<F: std::future::Future>(f: F) -> Option<F::Output> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return None;
    }
    Some(tokio::task::block_in_place(|| runtime.block_on(f)))
}

/// The workers of the partitions this instance reads.
pub struct Partitions {
    workers: Mutex<HashMap<i32, Worker>>,
    start: Start,
    drain_timeout: Duration,
}

impl Partitions {
    pub fn new(start: Start, drain_timeout: Duration) -> Self {
        Self {
            workers: Mutex::new(HashMap::new()),
            start,
            drain_timeout,
        }
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Worker>> {
        // A panic elsewhere while holding the lock leaves the map intact.
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The input of `partition`'s worker, started if it is not running.
    pub fn input(&self, partition: i32, assigned: usize) -> mpsc::Sender<InputMessage> {
        self.workers()
            .entry(partition)
            .or_insert_with(|| (self.start)(partition, assigned))
            .input
            .clone()
    }

    /// Forgets a worker that stopped on its own (a bug, logged by the caller).
    pub fn forget(&self, partition: i32) {
        self.workers().remove(&partition);
    }

    /// Stops the workers of `partitions` (all of them when `None`): each reads
    /// what is queued for it, waits for its in-flight produces and stores its
    /// final watermark. Waits at most the drain timeout.
    pub async fn stop(&self, partitions: Option<&[i32]>) -> Handed {
        let stopping: Vec<(i32, Worker)> = {
            let mut workers = self.workers();
            match partitions {
                None => workers.drain().collect(),
                Some(ps) => ps
                    .iter()
                    .filter_map(|p| workers.remove(p).map(|w| (*p, w)))
                    .collect(),
            }
        };
        let mut handed = Handed::default();
        if stopping.is_empty() {
            return handed;
        }
        // Dropping a worker's input is what tells it to finish.
        let tasks: Vec<(i32, JoinHandle<Stopped>)> =
            stopping.into_iter().map(|(p, w)| (p, w.task)).collect();
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        for (partition, task) in tasks {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(stopped)) => {
                    handed.stopped += 1;
                    handed.undecided_traces += stopped.undecided_traces;
                }
                Ok(Err(e)) => {
                    tracing::error!(partition, "partition worker failed: {e}");
                }
                Err(_) => {
                    handed.timed_out += 1;
                    tracing::warn!(
                        partition,
                        "in-flight produces did not finish within {}; the offsets behind them stay uncommitted",
                        humantime::format_duration(self.drain_timeout)
                    );
                }
            }
        }
        handed
    }

    /// [`Partitions::stop`] from synchronous code running on the runtime (the
    /// rebalance callback, called inside the consumer's poll).
    pub fn stop_blocking(&self, partitions: &[i32]) -> Handed {
        block_on_runtime(self.stop(Some(partitions))).unwrap_or_else(|| {
            // Nothing to wait with: their produces still finish, only their
            // last offsets are not stored.
            self.forget_all(partitions);
            Handed::default()
        })
    }

    fn forget_all(&self, partitions: &[i32]) {
        let mut workers = self.workers();
        for p in partitions {
            workers.remove(p);
        }
    }

    /// Partitions with a running worker.
    pub fn running(&self) -> Vec<i32> {
        let mut ps: Vec<i32> = self.workers().keys().copied().collect();
        ps.sort_unstable();
        ps
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Workers that, once their input closes, take `finish` to "deliver" and
    /// then store the last offset they read.
    fn partitions(finish: Duration, drain_timeout: Duration) -> (Partitions, Arc<AtomicI64>) {
        let stored = Arc::new(AtomicI64::new(-1));
        let store = stored.clone();
        let start: Start = Box::new(move |_partition, _assigned| {
            let (tx, mut rx) = mpsc::channel::<InputMessage>(8);
            let store = store.clone();
            let task = tokio::spawn(async move {
                let mut last = -1;
                while let Some(m) = rx.recv().await {
                    last = m.offset;
                }
                tokio::time::sleep(finish).await;
                store.store(last + 1, Ordering::SeqCst);
                Stopped {
                    undecided_traces: 2,
                    redelivered_spans: 0,
                }
            });
            Worker { input: tx, task }
        });
        (Partitions::new(start, drain_timeout), stored)
    }

    fn message(offset: i64) -> InputMessage {
        InputMessage {
            offset,
            key: None,
            payload: bytes::Bytes::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revoke_returns_only_after_the_workers_stored_their_last_offsets() {
        let (partitions, stored) = partitions(Duration::from_millis(200), Duration::from_secs(10));
        let input = partitions.input(3, 1);
        for o in 0..5 {
            input.send(message(o)).await.expect("worker running");
        }
        drop(input);
        // The revoke callback is synchronous code inside a poll on the runtime.
        let handed = partitions.stop_blocking(&[3]);
        assert_eq!(
            stored.load(Ordering::SeqCst),
            5,
            "final watermark stored before returning"
        );
        assert_eq!(
            handed,
            Handed {
                stopped: 1,
                timed_out: 0,
                undecided_traces: 2
            }
        );
        assert!(partitions.running().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revoke_waits_no_longer_than_the_drain_timeout() {
        let (partitions, stored) = partitions(Duration::from_secs(30), Duration::from_millis(100));
        let _ = partitions.input(0, 2);
        let _ = partitions.input(1, 2);
        let handed = partitions.stop_blocking(&[1]);
        assert_eq!(handed.timed_out, 1);
        assert_eq!(stored.load(Ordering::SeqCst), -1, "nothing stored yet");
        assert_eq!(
            partitions.running(),
            vec![0],
            "only the revoked worker stopped"
        );
        let all = partitions.stop(None).await;
        assert_eq!(all.timed_out, 1);
    }
}
