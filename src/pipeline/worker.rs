//! A partition's pipeline as a task: reads its input queue, sleeps until the
//! next deadline, carries out the pipeline's commands against the output
//! (or the transaction) and feeds the results back.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, watch};

use super::ports::{
    DecisionSource, Input, LoadErrorKind, OffsetStore, Output, ProduceError, ProduceErrorKind,
    Transaction,
};
use super::{Command, Commit, DeliveryId, Partition, Rules, WorkerConfig};
use crate::metrics as m;

/// How a worker left its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Traces still being assembled; their offsets stay uncommitted.
    pub undecided_traces: usize,
    /// Kept spans delivered from messages the partition's next reader reads again.
    pub redelivered_spans: u64,
}

/// How soon a refused store of the watermark is tried again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// How long after a deadline the worker wakes: traces due within this of
/// one another are decided in one wake-up (with the watermark and the
/// gauges once), not one each — 20 000 traces due over a second cost a
/// fifth of a core more in the benchmark when each woke the worker alone.
const DEADLINE_SLACK: Duration = Duration::from_millis(5);

/// Messages a worker takes from its queue at once.
const RECEIVE_BATCH: usize = 256;

type Flight = BoxFuture<'static, (DeliveryId, Result<(), ProduceError>)>;

/// Where a worker's results go: the commit mode, with its ports.
pub enum Edges {
    /// At-least-once: kept spans (and dead letters, and decision records)
    /// are produced to `output`; the watermark is stored in `offsets`.
    AtLeastOnce {
        output: Arc<dyn Output>,
        offsets: Arc<dyn OffsetStore>,
    },
    /// Exactly-once: all of it, with the partition's offset, is written
    /// into the transaction.
    ExactlyOnce(Arc<dyn Transaction>),
}

/// What the worker sends through, as its mode has it.
enum Out {
    Output(Arc<dyn Output>),
    Transaction(Arc<dyn Transaction>),
}

/// One partition's worker.
pub struct PartitionWorker {
    pipeline: Partition,
    out: Out,
    in_flight: FuturesUnordered<Flight>,
    /// The offset last stored (or written with the transaction) for this
    /// partition, `-1` before the first: where a replacement resumes if
    /// this worker dies.
    stored: Arc<AtomicI64>,
    /// The decision log, read back when the first input comes (it says
    /// where in the stream the partition resumes), before it is handled.
    decision_log: Option<Arc<dyn DecisionSource>>,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Records what a worker stored, for its replacement.
struct Recorded {
    inner: Arc<dyn OffsetStore>,
    stored: Arc<AtomicI64>,
}

impl OffsetStore for Recorded {
    fn store(&self, partition: i32, next_offset: i64) -> bool {
        let ok = self.inner.store(partition, next_offset);
        if ok {
            self.stored.store(next_offset, Ordering::Relaxed);
        }
        ok
    }
}

impl PartitionWorker {
    pub fn new(partition: i32, config: WorkerConfig, rules: Rules, edges: Edges) -> Self {
        let stored = Arc::new(AtomicI64::new(-1));
        let (commit, out) = match edges {
            Edges::AtLeastOnce { output, offsets } => {
                let offsets = Arc::new(Recorded {
                    inner: offsets,
                    stored: stored.clone(),
                });
                (Commit::Offsets(offsets), Out::Output(output))
            }
            Edges::ExactlyOnce(transaction) => (Commit::Transaction, Out::Transaction(transaction)),
        };
        Self {
            pipeline: Partition::new(partition, config, rules, commit),
            out,
            in_flight: FuturesUnordered::new(),
            stored,
            decision_log: None,
        }
    }

    /// Reads the partition's decisions back from `log` before taking input.
    pub fn with_decision_log(mut self, log: Arc<dyn DecisionSource>) -> Self {
        self.decision_log = Some(log);
        self
    }

    /// The partition's decisions made within `decided_ttl` (of stream time)
    /// before where it resumes — at its first message, stamped `first` —
    /// read back from the decision log, so that late spans of traces its
    /// earlier workers decided follow those decisions, however long ago by
    /// the wall they were made; at most as many as the partition remembers.
    /// Retried for about half a minute; if the log cannot be read, the
    /// worker goes on without (their late spans are then decided anew),
    /// saying so. Given up at once, the read cancelled, if the partition
    /// goes meanwhile (`input` closed: a revoke, a shutdown).
    async fn load_decisions(
        &mut self,
        log: &dyn DecisionSource,
        first: Option<i64>,
        input: &mpsc::Receiver<Input>,
    ) {
        let partition = self.pipeline.partition();
        let started = Instant::now();
        let resume = self.pipeline.resume_at(first, now());
        let since = self.pipeline.remembered_since(resume);
        let at_most = self.pipeline.remember_capacity();
        let mut wait = Duration::from_millis(500);
        for attempt in 1..=6 {
            let loaded = tokio::select! {
                loaded = log.load(partition, since, at_most) => loaded,
                () = closed(input) => {
                    tracing::info!(partition, "the partition went while its decisions were read back: read cancelled");
                    return;
                }
            };
            match loaded {
                Ok(records) => {
                    let read = records.len();
                    let remembered = self.pipeline.remember(records, resume, now());
                    let seconds = started.elapsed().as_secs_f64();
                    metrics::counter!(m::DECISIONS_LOADED).increment(read as u64);
                    metrics::histogram!(m::DECISIONS_LOAD_SECONDS).record(seconds);
                    tracing::info!(
                        partition,
                        read,
                        remembered,
                        ms = (seconds * 1e3) as u64,
                        "read the partition's decisions back from the decision log"
                    );
                    return;
                }
                Err(e) if e.kind == LoadErrorKind::Cancelled => {
                    tracing::info!(
                        partition,
                        "reading the partition's decisions back was cancelled: {e}"
                    );
                    return;
                }
                Err(e) if e.kind == LoadErrorKind::Unavailable && attempt < 6 => {
                    tracing::warn!(partition, attempt, "cannot read the decision log yet: {e}");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = closed(input) => return,
                    }
                    wait *= 2;
                }
                Err(e) => {
                    tracing::error!(
                        partition,
                        "cannot read the decision log ({e}); going on without it: late spans of traces decided before this worker started are decided anew"
                    );
                    return;
                }
            }
        }
    }

    /// The offset this worker last stored, `-1` before the first; it stays
    /// readable after the worker is gone.
    pub fn stored(&self) -> Arc<AtomicI64> {
        self.stored.clone()
    }

    /// Runs until `input` closes, then drains in-flight produces and stores the
    /// final watermark. Traces still undecided at that point are not decided:
    /// their offsets stay uncommitted, so whoever reads the partition next
    /// re-reads and decides them. `paused` says when the input is paused
    /// for memory (the partition's clock then runs with wall-clock time).
    pub async fn run(
        mut self,
        mut input: mpsc::Receiver<Input>,
        mut paused: watch::Receiver<bool>,
    ) -> Stopped {
        // Everything queued is taken at once, so deciding, storing the
        // watermark and the gauges run once per batch, not once per message.
        let mut batch = Vec::with_capacity(RECEIVE_BATCH);
        fault::stall(self.pipeline.partition(), &input).await;
        let mut watching = true;
        // Messages read, for the test-only read pauses.
        let mut read = 0u64;
        self.pipeline
            .input_paused(*paused.borrow_and_update(), now());
        if let Some(log) = self.decision_log.take() {
            // Where the partition resumes in the stream is its first
            // message's time; until it comes there is nothing to follow.
            if let Some(first) = input.recv().await {
                let stamp = match &first {
                    Input::Message(msg) => msg.timestamp,
                    Input::CaughtUp => None,
                };
                self.load_decisions(log.as_ref(), stamp, &input).await;
                if let Input::Message(msg) = &first {
                    fault::before(self.pipeline.partition(), msg.offset);
                }
                self.pipeline.input(first, now());
                self.pipeline.decide_due(now());
                self.pipeline.advance();
                if self.execute().await.is_break() {
                    return self.pipeline.finish();
                }
            }
        }
        loop {
            let mut next = self
                .pipeline
                .next_deadline(now())
                .map(|d| tokio::time::Instant::from_std(d) + DEADLINE_SLACK)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            if self.pipeline.store_refused() {
                // Try the store again within a second, idle or not.
                next = next.min(tokio::time::Instant::now() + STORE_RETRY);
            }
            let can_read = self.pipeline.can_read();
            tokio::select! {
                biased;
                Some((id, result)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    let now = now();
                    self.pipeline.delivered(id, result, now);
                    // The other results already in, in the same pass: the
                    // watermark, its store and the gauges then move once
                    // for all of them, not once per produce (a decision
                    // record per trace made that the worker's main cost).
                    for _ in 1..RECEIVE_BATCH {
                        let Some(Some((id, result))) = self.in_flight.next().now_or_never() else {
                            break;
                        };
                        self.pipeline.delivered(id, result, now);
                    }
                }
                n = input.recv_many(&mut batch, RECEIVE_BATCH), if can_read => {
                    if n == 0 {
                        break;
                    }
                    fault::read_pause(&mut read, n).await;
                    let now = now();
                    for input in batch.drain(..) {
                        if let Input::Message(msg) = &input {
                            fault::before(self.pipeline.partition(), msg.offset);
                        }
                        self.pipeline.input(input, now);
                    }
                }
                changed = paused.changed(), if watching => match changed {
                    Ok(()) => self.pipeline.input_paused(*paused.borrow_and_update(), now()),
                    // No one to say so any more: as it stands.
                    Err(_) => watching = false,
                },
                _ = tokio::time::sleep_until(next) => {}
            }
            self.pipeline.decide_due(now());
            self.pipeline.advance();
            if self.execute().await.is_break() {
                // Its partition is no longer its own: nothing more is
                // written, nothing drained; the owner reads it again.
                return self.pipeline.finish();
            }
        }
        // Input closed: what is in flight finishes (retries included).
        while let Some((id, result)) = self.in_flight.next().await {
            self.pipeline.delivered(id, result, now());
            self.pipeline.advance();
            if self.execute().await.is_break() {
                return self.pipeline.finish();
            }
        }
        self.pipeline.advance();
        let _ = self.execute().await;
        self.pipeline.finish()
    }

    /// Carries out the pipeline's commands: produces start (after their
    /// backoff), transactional writes are done in order before anything else.
    /// `Break` when a transactional write was fenced: the worker lost its
    /// partition and must stop (what is left of the commands is dropped).
    async fn execute(&mut self) -> ControlFlow<()> {
        for command in self.pipeline.commands() {
            match command {
                Command::Send { id, message, delay } => {
                    let Out::Output(output) = &self.out else {
                        // A partition committing through the transaction
                        // writes everything into it.
                        unreachable!("a produce outside the transaction in exactly-once mode");
                    };
                    let output = output.clone();
                    self.in_flight.push(Box::pin(async move {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        (id, output.send(message).await)
                    }));
                }
                Command::Decided(_) | Command::Followed { .. } => {}
                Command::Write {
                    messages,
                    next_offset,
                    receipt,
                } => {
                    let Out::Transaction(transaction) = &self.out else {
                        // A partition that stores offsets produces.
                        unreachable!("a transactional write in at-least-once mode");
                    };
                    let transaction = transaction.clone();
                    let partition = self.pipeline.partition();
                    match transaction.write(partition, messages, next_offset).await {
                        Ok(()) => {
                            if let Some(next) = next_offset {
                                self.stored.store(next, Ordering::Relaxed);
                            }
                            self.pipeline.written(receipt);
                        }
                        Err(e) if e.kind == ProduceErrorKind::Fenced => {
                            tracing::warn!(
                                partition,
                                "stopping: the partition was revoked while this worker ran on (its drain timed out): {e}"
                            );
                            return ControlFlow::Break(());
                        }
                        // The transaction will be aborted and the process stops without
                        // committing, so what was read since the last commit is read again.
                        Err(e) => {
                            tracing::error!(partition, "cannot write into the transaction: {e}")
                        }
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Resolves once `input` is closed (its partition revoked, or shutdown).
async fn closed(input: &mpsc::Receiver<Input>) {
    while !input.is_closed() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Faults to inject in the real-broker tests, with the `kafka-tests`
/// feature only (without it they are nothing): with
/// `TAILGATE_TEST_WORKER_PANIC=<partition>:<offset>` the worker of that
/// partition panics, once per process, before it handles the message at that
/// offset — a worker that stops, as a bug would stop it; and see [`stall`]
/// and [`read_pause`].
mod fault {
    #[cfg(feature = "kafka-tests")]
    pub fn before(partition: i32, offset: i64) {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::OnceLock;
        static AT: OnceLock<Option<(i32, i64)>> = OnceLock::new();
        static DONE: AtomicBool = AtomicBool::new(false);
        let at = AT.get_or_init(|| {
            let v = std::env::var("TAILGATE_TEST_WORKER_PANIC").ok()?;
            let (p, o) = v.split_once(':')?;
            Some((p.parse().ok()?, o.parse().ok()?))
        });
        if *at == Some((partition, offset)) && !DONE.swap(true, Ordering::SeqCst) {
            panic!("TAILGATE_TEST_WORKER_PANIC: partition {partition} offset {offset}");
        }
    }

    /// With `TAILGATE_TEST_WORKER_STALL=<partition>`, that partition's
    /// worker reads nothing until its input closes — a worker that cannot
    /// take input, as one whose produces are stuck would be.
    #[cfg(feature = "kafka-tests")]
    pub async fn stall(partition: i32, input: &tokio::sync::mpsc::Receiver<super::Input>) {
        let stalled = std::env::var("TAILGATE_TEST_WORKER_STALL")
            .ok()
            .and_then(|v| v.parse::<i32>().ok());
        if stalled == Some(partition) {
            while !input.is_closed() {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }

    /// With `TAILGATE_TEST_READ_PAUSE=<messages>:<milliseconds>`, every
    /// worker stops reading for that long each time it has read that many
    /// more messages (at most once per batch it takes, which is up to 256
    /// messages) — reading that pauses for reasons of its own (a slow
    /// output, a busy host) while the input was written without a gap.
    #[cfg(feature = "kafka-tests")]
    pub async fn read_pause(read: &mut u64, n: usize) {
        use std::sync::OnceLock;
        static PAUSE: OnceLock<Option<(u64, u64)>> = OnceLock::new();
        let pause = PAUSE.get_or_init(|| {
            let v = std::env::var("TAILGATE_TEST_READ_PAUSE").ok()?;
            let (every, ms) = v.split_once(':')?;
            Some((every.parse().ok()?, ms.parse().ok()?))
        });
        let Some((every, ms)) = *pause else { return };
        let before = *read / every.max(1);
        *read += n as u64;
        if *read / every.max(1) != before {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }

    #[cfg(not(feature = "kafka-tests"))]
    #[inline(always)]
    pub async fn read_pause(_read: &mut u64, _n: usize) {}

    #[cfg(not(feature = "kafka-tests"))]
    #[inline(always)]
    pub fn before(_partition: i32, _offset: i64) {}

    #[cfg(not(feature = "kafka-tests"))]
    #[inline(always)]
    pub async fn stall(_partition: i32, _input: &tokio::sync::mpsc::Receiver<super::Input>) {}
}
