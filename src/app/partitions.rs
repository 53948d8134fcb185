//! The partition workers of this instance: started on a partition's first
//! message, handed over when the partition is revoked, drained at shutdown.
//!
//! The handover is a handshake with librdkafka: the revoke callback stops the
//! revoked partitions' workers and waits (at most the drain timeout) until
//! their in-flight produces are acknowledged and their final watermarks
//! stored, while the partitions are still this instance's. The commit that
//! follows then covers them, and their next owner starts exactly there.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;

use crate::pipeline::{Input, Stopped};

/// A running partition worker.
pub struct Worker {
    pub input: mpsc::Sender<Input>,
    pub task: JoinHandle<Stopped>,
    /// The offset the worker last stored, `-1` before the first (see
    /// [`crate::pipeline::PartitionWorker::stored`]).
    pub stored: Arc<AtomicI64>,
}

/// A worker whose queue was full: the messages read for it since, in order,
/// and the task waiting for room in its queue.
struct Waiting {
    backlog: VecDeque<Input>,
    /// Payload bytes of `backlog`.
    bytes: usize,
    /// The partition is paused: the backlog went over its bound.
    paused: bool,
    task: JoinHandle<()>,
}

/// A running worker, and what waits for room in its queue.
struct Entry {
    worker: Worker,
    /// Tells room messages for this worker from those for an earlier one.
    generation: u64,
    waiting: Option<Waiting>,
}

/// Room in a waiting worker's queue. It holds nothing of the worker (no
/// sender, no permit), so a stale one cannot keep a stopped worker's input
/// open.
pub struct Room {
    pub partition: i32,
    generation: u64,
}

/// What became of a message handed to [`Partitions::dispatch`] (or of the
/// backlog, on [`Partitions::room`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatched {
    /// In the worker's queue (or behind others waiting for it).
    Queued,
    /// What waits for the worker's full queue is over its bound: pause
    /// reading the partition; a [`Room`] comes when there is room again.
    Full,
    /// The backlog of a paused partition is down to half its bound: resume
    /// reading it (what is left keeps its worker busy while the consumer
    /// fetches again).
    Drained,
    /// The worker stopped by itself (a bug). Its messages in hand are
    /// dropped; the partition must be read again from `resume_from` (what it
    /// last stored, or its predecessor's resume point if it stored nothing;
    /// `None`: the committed offset), and a new worker starts with the next
    /// message. `deaths` counts the workers of this partition that died in a
    /// row without storing a new offset: a message that kills every worker.
    Dead {
        resume_from: Option<i64>,
        deaths: u32,
    },
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
    workers: Mutex<HashMap<i32, Entry>>,
    start: Start,
    drain_timeout: Duration,
    /// What may wait for a full worker before its partition is paused.
    backlog_bytes: usize,
    generations: std::sync::atomic::AtomicU64,
    /// Where the waiting tasks say there is room.
    room: mpsc::UnboundedSender<Room>,
    /// Per partition whose worker died: where its replacement resumed, and
    /// how many died in a row from there.
    resumed: Mutex<HashMap<i32, (Option<i64>, u32)>>,
}

impl Partitions {
    /// The workers, and where [`Room`] for a full worker's queue is
    /// announced. Up to `backlog_bytes` read for a partition wait for its
    /// full worker before the partition is paused: a worker that is only
    /// busy never pauses its partition (a pause drops what the consumer
    /// fetched for it), one that cannot take input does.
    pub fn new(
        start: Start,
        drain_timeout: Duration,
        backlog_bytes: usize,
    ) -> (Self, mpsc::UnboundedReceiver<Room>) {
        let (room, rooms) = mpsc::unbounded_channel();
        let partitions = Self {
            workers: Mutex::new(HashMap::new()),
            start,
            drain_timeout,
            backlog_bytes,
            generations: Default::default(),
            room,
            resumed: Mutex::new(HashMap::new()),
        };
        (partitions, rooms)
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Entry>> {
        // A panic elsewhere while holding the lock leaves the map intact.
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `msg` to `partition`'s worker, started if it is not running
    /// (for a message: the end of the partition tells a worker that is not
    /// running nothing), without ever waiting for it: a worker that cannot
    /// take input holds up its own partition only.
    pub fn dispatch(&self, partition: i32, assigned: usize, msg: Input) -> Dispatched {
        let mut workers = self.workers();
        if matches!(msg, Input::CaughtUp) && !workers.contains_key(&partition) {
            return Dispatched::Queued;
        }
        let entry = workers.entry(partition).or_insert_with(|| Entry {
            worker: (self.start)(partition, assigned),
            generation: self
                .generations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            waiting: None,
        });
        let msg = match &mut entry.waiting {
            Some(_) => msg,
            None => match entry.worker.input.try_send(msg) {
                Ok(()) => return Dispatched::Queued,
                Err(TrySendError::Full(msg)) => {
                    entry.waiting = Some(self.wait_for_room(partition, entry, VecDeque::new()));
                    msg
                }
                Err(TrySendError::Closed(_)) => return self.dead(&mut workers, partition),
            },
        };
        let Some(waiting) = &mut entry.waiting else {
            return Dispatched::Queued;
        };
        waiting.bytes += msg.len();
        waiting.backlog.push_back(msg);
        if !waiting.paused && waiting.bytes > self.backlog_bytes {
            waiting.paused = true;
            return Dispatched::Full;
        }
        Dispatched::Queued
    }

    fn wait_for_room(&self, partition: i32, entry: &Entry, backlog: VecDeque<Input>) -> Waiting {
        let (input, generation, room) = (
            entry.worker.input.clone(),
            entry.generation,
            self.room.clone(),
        );
        Waiting {
            bytes: backlog.iter().map(Input::len).sum(),
            backlog,
            paused: false,
            task: tokio::spawn(async move {
                // Waits until half the queue is free and gives the room back
                // at once: only the dispatch loop sends to a worker, so the
                // room is still there for it. Half, not one slot: a pause
                // drops what the consumer had fetched for the partition, so
                // resuming at the first free slot would pause, refetch and
                // pause again for every message. (A worker gone ends the wait
                // too; `room` then finds it dead.)
                let half = (input.max_capacity() / 2).max(1);
                let _ = input.reserve_many(half).await;
                drop(input);
                let _ = room.send(Room {
                    partition,
                    generation,
                });
            }),
        }
    }

    /// A worker stopped by itself: forgotten, and where to read again from.
    fn dead(&self, workers: &mut HashMap<i32, Entry>, partition: i32) -> Dispatched {
        let entry = workers.remove(&partition);
        let stored = entry
            .as_ref()
            .map(|e| e.worker.stored.load(Ordering::Relaxed))
            .filter(|o| *o >= 0);
        if let Some(w) = entry.and_then(|e| e.waiting) {
            w.task.abort();
        }
        let mut resumed = self.resumed.lock().unwrap_or_else(PoisonError::into_inner);
        let before = resumed.get(&partition).copied();
        let (resume_from, deaths) = match (stored, before) {
            // It stored nothing new: its predecessor's resume point stands.
            (None, Some((from, n))) => (from, n + 1),
            (Some(s), Some((Some(from), n))) if s == from => (Some(s), n + 1),
            (stored, _) => (stored, 1),
        };
        resumed.insert(partition, (resume_from, deaths));
        tracing::error!(
            partition,
            ?resume_from,
            deaths,
            "partition worker stopped unexpectedly; reading the partition again from its last stored offset with a new worker"
        );
        Dispatched::Dead {
            resume_from,
            deaths,
        }
    }

    /// Workers that stopped by themselves, found without waiting for their
    /// partition's next message: each is forgotten, with where its partition
    /// must be read again from (see [`Dispatched::Dead`]).
    pub fn reap(&self) -> Vec<(i32, Dispatched)> {
        let mut workers = self.workers();
        // A worker runs until its input closes, and the input is held here:
        // a worker that finished while listed here died.
        let dead: Vec<i32> = workers
            .iter()
            .filter(|(_, e)| e.worker.task.is_finished())
            .map(|(p, _)| *p)
            .collect();
        dead.into_iter()
            .map(|p| (p, self.dead(&mut workers, p)))
            .collect()
    }

    /// There is room in a full worker's queue: its backlog goes in, in order.
    pub fn room(&self, room: Room) -> Dispatched {
        let mut workers = self.workers();
        let Some(entry) = workers.get_mut(&room.partition) else {
            return Dispatched::Queued;
        };
        if entry.generation != room.generation {
            // For a worker stopped since; this one is not waiting on it.
            return Dispatched::Queued;
        }
        let Some(mut waiting) = entry.waiting.take() else {
            return Dispatched::Queued;
        };
        while let Some(msg) = waiting.backlog.pop_front() {
            let len = msg.len();
            match entry.worker.input.try_send(msg) {
                Ok(()) => waiting.bytes -= len,
                Err(TrySendError::Full(msg)) => {
                    waiting.backlog.push_front(msg);
                    let paused = waiting.paused;
                    let mut next = self.wait_for_room(room.partition, entry, waiting.backlog);
                    // Resumed at half the bound: the rest keeps the worker
                    // busy while the consumer fetches again.
                    let resume = paused && next.bytes <= self.backlog_bytes / 2;
                    next.paused = paused && !resume;
                    entry.waiting = Some(next);
                    return if resume {
                        Dispatched::Drained
                    } else {
                        Dispatched::Queued
                    };
                }
                Err(TrySendError::Closed(_)) => return self.dead(&mut workers, room.partition),
            }
        }
        if waiting.paused {
            Dispatched::Drained
        } else {
            Dispatched::Queued
        }
    }

    /// Stops the workers of `partitions` (all of them when `None`): each reads
    /// what is queued for it, waits for its in-flight produces and stores its
    /// final watermark. Waits at most the drain timeout.
    pub async fn stop(&self, partitions: Option<&[i32]>) -> Handed {
        {
            let mut resumed = self.resumed.lock().unwrap_or_else(PoisonError::into_inner);
            match partitions {
                None => resumed.clear(),
                Some(ps) => resumed.retain(|p, _| !ps.contains(p)),
            }
        }
        let stopping: Vec<(i32, Worker)> = {
            let mut workers = self.workers();
            let entries: Vec<(i32, Entry)> = match partitions {
                None => workers.drain().collect(),
                Some(ps) => ps
                    .iter()
                    .filter_map(|p| workers.remove(p).map(|w| (*p, w)))
                    .collect(),
            };
            entries
                .into_iter()
                .map(|(p, e)| {
                    // What waits for room is let go: it was never handed
                    // over, so nothing of it is stored, and the partition's
                    // next reader reads it again.
                    if let Some(w) = e.waiting {
                        w.task.abort();
                    }
                    (p, e.worker)
                })
                .collect()
        };
        let mut handed = Handed::default();
        if stopping.is_empty() {
            return handed;
        }
        // Dropping a worker's input is what tells it to finish.
        let tasks: Vec<(i32, JoinHandle<Stopped>)> =
            stopping.into_iter().map(|(p, w)| (p, w.task)).collect();
        // (The waiting tasks hold senders too; aborted, they drop them.)
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
            if let Some(w) = workers.remove(p).and_then(|e| e.waiting) {
                w.task.abort();
            }
        }
    }

    /// Partitions with a running worker.
    #[cfg(test)]
    pub fn running(&self) -> Vec<i32> {
        let mut ps: Vec<i32> = self.workers().keys().copied().collect();
        ps.sort_unstable();
        ps
    }
}

#[cfg(test)]
mod tests;
