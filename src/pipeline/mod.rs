//! One partition's pipeline: decode → buffer → decide → deliver → advance
//! the watermark. The only place the stages meet.
//!
//! [`Partition`] is the whole of it as a synchronous state machine, with no
//! I/O and no reading of time: input messages, the time (an `Instant`
//! passed in with every call, from which its stream clock and its
//! rate-limited logs count) and delivery results go in;
//! [`Command`]s to produce (or, in exactly-once mode, to write into the
//! transaction) come out, and the watermark is stored through the
//! [`OffsetStore`] port. [`PartitionWorker`] runs it as a task against the
//! [`Output`] and [`Transaction`] ports. So the model test
//! (`pipeline/model/`) drives the real pipeline step by step, in any
//! interleaving, without a runtime.
//!
//! The worker owns its buffer, clock, watermark and remembered decisions;
//! workers share the rule set (with the per-instance state of the `limit`
//! and `dynamic` samplers), the producer, the message size limits and the
//! count of bytes buffered (for back-pressure).

mod attribution;
mod decide;
mod decisions;
mod delivery;
mod events;
mod exactly_once;
mod ports;
mod read;
mod record;
mod telemetry;
mod worker;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

pub use attribution::{PathOutput, ServiceLabels, OTHER};
pub use delivery::DeliveryId;
pub use ports::{
    DeadLetterOf, DecisionSource, Destination, Input, InputMessage, LoadError, LoadErrorKind,
    OffsetStore, Outgoing, Output, ProduceError, ProduceErrorKind, Transaction, DLQ_DETAIL_HEADER,
    DLQ_OFFSET_HEADER, DLQ_PARTITION_HEADER, DLQ_REASON_HEADER, DLQ_TRACE_HEADER,
};
pub use record::{
    LatestRecords, LoggedDecision, Recalled, RecordBatch, JSON_RECORD_VERSION, RECORD_VERSION,
};
pub use telemetry::{undeliverable_reasons, RateLimited, SPAN_TOO_LARGE};
pub use worker::{Edges, PartitionWorker, Stopped};

use crate::buffer::{BufferConfig, Occupancy, ReadyTrace, TraceBuffer};
use crate::clock::{ClockConfig, Epoch, StreamClock};
use crate::otlp::TraceId;
use crate::rules::RuleSet;
use crate::watermark::Watermark;
use decisions::Decisions;
use delivery::InFlightSet;
use events::Events;
use exactly_once::Held;
use telemetry::{Shown, Telemetry};

/// The rules in force; a reload sends a new set, which each worker picks up
/// before its next decision. Buffered traces are kept across a reload.
pub type Rules = watch::Receiver<Arc<RuleSet>>;

/// What a worker needs, shared by all workers of the process.
#[derive(Clone)]
pub struct WorkerConfig {
    pub buffer: BufferConfig,
    /// Which clock deadlines count on, and how timestamps are clamped.
    pub clock: ClockConfig,
    /// Calendar time of the process's monotonic clock.
    pub epoch: Epoch,
    /// While the input is paused for memory, the partition decides traces
    /// early down to this fraction of its share of the budget: below
    /// `buffer.low_water`, so that the input resumes.
    pub paused_share: f64,
    pub decided_ttl: Duration,
    /// This partition's share of `decision.remembered_bytes`.
    pub remembered_bytes: usize,
    pub max_in_flight: usize,
    /// Copy malformed messages, and kept spans that can never be delivered,
    /// to the dead-letter topic (their offsets are held until the copy is
    /// acknowledged).
    pub dead_letter: bool,
    /// Write every decision to the decision log (`kafka.decision_topic`);
    /// its record pins the trace's offsets until it is acknowledged.
    pub decision_log: bool,
    /// A record not acknowledged within this is given up
    /// (`kafka.decision_log_timeout`; at-least-once mode).
    pub decision_log_timeout: Duration,
    /// The largest payloads messages may have, per destination: kept traces
    /// are split to fit. Shared by all workers, and lowered when a broker
    /// refuses a message as too large.
    pub limits: Arc<MessageLimits>,
    /// Bytes buffered by all workers of the process, for back-pressure.
    pub usage: Arc<AtomicUsize>,
    /// The critical path of decided traces: written onto kept ones,
    /// measured on all.
    pub path: PathOutput,
    /// Also write each kept span's adjusted count, rounded, as this integer
    /// attribute (`output.sample_rate_attribute`; Honeycomb's `SampleRate`).
    pub sample_rate_attribute: Option<Arc<str>>,
}

/// How a partition's progress is committed: the mode, with what each
/// needs. The one place the mode is chosen; nothing else asks.
pub enum Commit {
    /// At-least-once: kept spans are produced, and the watermark (the
    /// offset below which everything is decided and delivered) is stored
    /// here, for the consumer to commit.
    Offsets(Arc<dyn OffsetStore>),
    /// Exactly-once: decided messages are held and written into the open
    /// Kafka transaction, in offset order, together with the offset they
    /// let the partition commit (see `exactly_once.rs`).
    Transaction,
}

/// The state of the commit mode.
enum Mode {
    AtLeastOnce {
        offsets: Arc<dyn OffsetStore>,
        /// The last store was refused: to be tried again soon, not only
        /// when something next happens.
        store_refused: bool,
    },
    ExactlyOnce {
        /// Messages decided but not yet in the transaction.
        held: Held,
    },
}

/// The largest payload a message may have, per destination: the producer's
/// `message.max.bytes`, or the topic's `max.message.bytes` if lower, less
/// what a record adds.
#[derive(Debug)]
pub struct MessageLimits {
    pub output: AtomicUsize,
    pub dead_letter: AtomicUsize,
}

impl MessageLimits {
    /// The same limit for both destinations.
    pub fn new(bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            output: AtomicUsize::new(bytes),
            dead_letter: AtomicUsize::new(bytes),
        })
    }

    pub fn of(&self, destination: Destination) -> usize {
        match destination {
            Destination::Sampled => self.output.load(std::sync::atomic::Ordering::Relaxed),
            Destination::DeadLetter(_) => {
                self.dead_letter.load(std::sync::atomic::Ordering::Relaxed)
            }
            // A batch of records is at most `RECORD_BATCH_BYTES` and a
            // record: any topic takes it.
            Destination::Decisions(_) => self.output.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// A batch of decision records is sent once it reaches this size, if the
/// wake-up it is gathered in has not ended before (about 420 records): far
/// under any decision topic's `max.message.bytes` (which tailgate does not
/// look up; the broker's default is 1 MB).
pub const RECORD_BATCH_BYTES: usize = 16 * 1024;

/// What the pipeline asks of its edges.
#[derive(Debug)]
pub enum Command {
    /// Produce `message` after `delay`, and report how it went with
    /// [`Partition::delivered`].
    Send {
        id: DeliveryId,
        message: Outgoing,
        delay: Duration,
    },
    /// A trace was decided (the model test checks them; with the decision
    /// log on, a record of it is also sent, as a [`Command::Send`] or in a
    /// [`Command::Write`], to [`Destination::Decisions`]).
    Decided(DecisionRecord),
    /// Late spans of a trace decided earlier followed its decision (kept
    /// ones are also sent). Nothing for the edges to do; what `replay`
    /// and the tests read.
    Followed {
        trace_id: TraceId,
        keep: bool,
        rule: Arc<str>,
        spans: usize,
    },
    /// Exactly-once mode: enqueue `messages` into the open transaction
    /// together with `next_offset`, in one step; then report it with
    /// [`Partition::written`]. Writes must be carried out in order.
    Write {
        messages: Vec<Outgoing>,
        next_offset: Option<i64>,
        receipt: Written,
    },
}

/// One decision: which trace, kept or dropped, by which rule, why then, and
/// over how many spans.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRecord {
    pub trace_id: TraceId,
    pub keep: bool,
    pub rule: Arc<str>,
    pub reason: crate::buffer::Reason,
    pub spans: usize,
    /// The trace's critical path, summed up (with [`PathOutput::report`]).
    pub critical_path: Option<Box<crate::rules::path_summary::PathDigest>>,
    /// What its root (else first) span came and left with, when kept (with
    /// [`PathOutput::report`]).
    pub counted: Option<Box<SpanCount>>,
}

/// The sampling threshold a kept span came with and leaves with, and its
/// adjusted count (for replay's report).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanCount {
    pub incoming: Option<crate::otlp::tracestate::Threshold>,
    pub outgoing: Option<crate::otlp::tracestate::Threshold>,
    pub adjusted_count: Option<f64>,
}

/// What a partition has read: its messages, their valid spans, and what
/// was rejected (whole messages and single spans, each counted once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCounts {
    pub messages: u64,
    pub spans: u64,
    pub rejected: u64,
}

/// What a transactional write carried, for the counters once it is done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Output messages and their spans.
    pub sampled: u64,
    pub spans: u64,
    /// Dead letters of malformed input.
    pub input_dead_letters: u64,
    /// Dead letters of kept spans.
    pub output_dead_letters: u64,
    /// Decision records.
    pub decisions: u64,
    /// It carries the partition's next offset.
    pub stored: bool,
}

/// One partition's pipeline.
pub struct Partition {
    partition: i32,
    config: WorkerConfig,
    rules: Arc<RuleSet>,
    rules_updates: Rules,
    buffer: TraceBuffer,
    /// The partition's stream clock, which the buffer's deadlines count on.
    clock: StreamClock,
    watermark: Watermark,
    /// Decisions of recently decided traces, followed by their late spans.
    decisions: Decisions,
    /// How progress is committed.
    mode: Mode,
    /// Produces awaiting their result.
    in_flight: InFlightSet,
    telemetry: Telemetry,
    /// Latency attribution metrics (`metrics.critical_path`).
    attribution: Option<attribution::Attribution>,
    /// What the partition tells its operator: counters and log lines together.
    events: Events,
    /// Watermark pins released that were not held: a bug, counted so the
    /// model test sees it.
    anomalies: u64,
    /// Decision records given up or not written (the log was unwritable).
    unlogged: u64,
    /// After records were given up, decisions go unlogged until then.
    log_paused_until: Option<Instant>,
    /// Decisions for the decision log's next message.
    records: decide::PendingRecords,
    /// The input is paused for memory.
    paused_for_memory: bool,
    /// What the edges are to do, taken by [`Partition::commands`].
    commands: Vec<Command>,
    read: ReadCounts,
    /// What of `read` the metrics have counted.
    read_shown: ReadCounts,
    /// The latest wall-clock instant a call brought: what the rate-limited
    /// logs of code reached from several entry points count from.
    now: Option<Instant>,
    ready: Vec<ReadyTrace>,
}

impl Partition {
    pub fn new(
        partition: i32,
        config: WorkerConfig,
        mut rules_updates: Rules,
        commit: Commit,
    ) -> Self {
        let rules = rules_updates.borrow_and_update().clone();
        Self {
            partition,
            buffer: TraceBuffer::new(config.buffer),
            clock: StreamClock::new(config.clock, config.epoch),
            decisions: Decisions::new(config.decided_ttl, config.remembered_bytes),
            attribution: config
                .path
                .metrics
                .clone()
                .map(attribution::Attribution::new),
            config,
            telemetry: Telemetry::new(&rules),
            rules,
            rules_updates,
            watermark: Watermark::new(),
            mode: match commit {
                Commit::Offsets(offsets) => Mode::AtLeastOnce {
                    offsets,
                    store_refused: false,
                },
                Commit::Transaction => Mode::ExactlyOnce {
                    held: Held::default(),
                },
            },
            in_flight: InFlightSet::default(),
            events: Events::new(partition),
            anomalies: 0,
            unlogged: 0,
            log_paused_until: None,
            records: decide::PendingRecords::default(),
            paused_for_memory: false,
            commands: Vec::new(),
            read: ReadCounts::default(),
            read_shown: ReadCounts::default(),
            now: None,
            ready: Vec::new(),
        }
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// What the edges are to do now, in order.
    pub fn commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// True while fewer produces than `max_in_flight` await their result,
    /// and their bytes are under the partition's share of the budget:
    /// reading more input may only add to them. (Kept traces that share one
    /// large resource each carry a copy of it: output can be many times its
    /// input, and it is resident until acknowledged. Exactly-once output,
    /// held for earlier traces, is not bounded here: those traces are
    /// decided only as input is read.)
    pub fn can_read(&self) -> bool {
        self.in_flight.len() < self.config.max_in_flight
            && self.in_flight.bytes() < self.config.buffer.max_bytes
    }

    /// What the partition has read so far.
    pub fn read_counts(&self) -> ReadCounts {
        self.read
    }

    /// Produces awaiting their result.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// When, in wall-clock time, the next buffered trace is due as far as
    /// can be told at `now`: its `max_trace_age`, or its deadline on the
    /// stream clock if that clock runs (else it comes with the next message).
    pub fn next_deadline(&mut self, now: Instant) -> Option<Instant> {
        let stream = self
            .buffer
            .next_deadline()
            .and_then(|d| self.clock.wall_at(d, now));
        [
            stream,
            self.buffer.next_age_limit(),
            self.in_flight.next_give_up(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The consumer reached the end of the partition: the clock runs with
    /// wall-clock time until the next message.
    pub fn caught_up(&mut self, now: Instant) {
        self.now = Some(now);
        self.clock.caught_up(now);
    }

    /// The input is paused for memory (or resumed). While it is paused,
    /// the partition decides its traces early, for memory, down to
    /// `paused_share` of its budget — the earliest deadlines first, the
    /// ones most likely complete — after every read and wake-up, so the
    /// process gets under `buffer.low_water` and its input resumes. Its
    /// clock stands meanwhile: running it with the wall would decide, once
    /// the pause outlasted `after_root`, the traces the pause cut in half
    /// (their root read, the rest still in Kafka) on half their spans.
    pub fn input_paused(&mut self, paused: bool, now: Instant) {
        self.now = Some(now);
        self.paused_for_memory = paused;
        if paused {
            self.shrink_for_memory(now);
            self.flush_records();
            self.sync_blocked(now);
            self.show();
        }
    }

    /// While the input is paused for memory: decides the partition's
    /// traces, earliest deadline first, down to its paused share.
    fn shrink_for_memory(&mut self, now: Instant) {
        if !self.paused_for_memory {
            return;
        }
        let target = (self.config.buffer.max_bytes as f64 * self.config.paused_share) as usize;
        let mut ready = std::mem::take(&mut self.ready);
        self.buffer.shrink_to(target, &mut ready);
        let time = self.clock.time(now);
        for t in ready.drain(..) {
            self.decide(t, time);
        }
        self.ready = ready;
    }

    /// What to do with one input, read at `now`.
    pub fn input(&mut self, input: Input, now: Instant) {
        match input {
            Input::Message(msg) => self.handle(msg, now),
            Input::CaughtUp => self.caught_up(now),
        }
    }

    /// The last store of the watermark was refused: [`Partition::advance`]
    /// should run again soon even if nothing else happens.
    pub fn store_refused(&self) -> bool {
        matches!(
            self.mode,
            Mode::AtLeastOnce {
                store_refused: true,
                ..
            }
        )
    }

    /// Exactly-once mode: decided messages go into the transaction.
    pub(super) fn exactly_once(&self) -> bool {
        matches!(self.mode, Mode::ExactlyOnce { .. })
    }

    /// The offset it is safe to commit now, and what the buffer holds.
    pub fn status(&self) -> (Option<i64>, Occupancy) {
        (self.watermark.committable(), self.buffer.occupancy())
    }

    /// Advance: in exactly-once mode the held messages whose turn has come
    /// go into the transaction; the watermark is stored if it moved; the
    /// gauges follow.
    pub fn advance(&mut self) {
        // Decisions not yet sent (made by `handle` since the last
        // `decide_due`) go to the log now.
        if self.flush_records() {
            if let Some(now) = self.now {
                // The batch may have filled the produces in flight.
                self.sync_blocked(now);
            }
        }
        match &mut self.mode {
            // The offset travels with the transaction's messages (or alone).
            Mode::ExactlyOnce { .. } => self.release_held(),
            Mode::AtLeastOnce {
                offsets,
                store_refused,
            } => {
                if let Some(next) = self.watermark.advance() {
                    *store_refused = !offsets.store(self.partition, next);
                    if *store_refused {
                        // Not stored (not assigned at this moment): try again next time.
                        self.watermark.unstored();
                    } else {
                        self.telemetry.offsets_stored.increment(1);
                        self.in_flight.committed(next);
                    }
                }
            }
        }
        self.show();
    }

    /// Updates the gauges and the shared usage by this worker's change,
    /// and the counters of what was read since the last time.
    pub(super) fn show(&mut self) {
        self.report_reads();
        let now = Shown {
            buffer: self.buffer.occupancy(),
            offsets_pending: self.watermark.pending(),
            output_bytes: self.in_flight.bytes()
                + match &self.mode {
                    Mode::ExactlyOnce { held } => held.bytes(),
                    Mode::AtLeastOnce { .. } => 0,
                },
            remembered: self.decisions.len(),
            remembered_bytes: self.decisions.bytes(),
        };
        self.telemetry.show(now, &self.config.usage);
    }

    /// Messages and spans read since they were last counted in the metrics.
    fn report_reads(&mut self) {
        let (read, shown) = (self.read, &mut self.read_shown);
        self.telemetry
            .messages
            .increment(read.messages - shown.messages);
        self.telemetry.spans.increment(read.spans - shown.spans);
        *shown = read;
    }

    /// Decisions whose record never reached the log (given up, or not sent
    /// while the log was unwritable).
    pub fn unlogged(&self) -> u64 {
        self.unlogged
    }

    /// Watermark pins released that were not held (a bug; zero).
    pub fn anomalies(&self) -> u64 {
        self.anomalies
    }

    fn release(&mut self, offset: i64) {
        if !self.watermark.release(offset) {
            self.anomalies += 1;
            // A pin released twice would let the watermark pass undecided data.
            tracing::error!(
                partition = self.partition,
                offset,
                "released an offset that was not pinned; this is a bug"
            );
        }
    }

    /// Lets the partition go: what is still undecided no longer counts, and
    /// kept spans delivered past the stored offset are reported, since the
    /// partition's next reader delivers them again.
    pub fn finish(self) -> Stopped {
        let again = self.in_flight.delivered_ahead();
        if again > 0 {
            self.telemetry.redelivered.increment(again);
            tracing::info!(
                partition = self.partition,
                spans = again,
                "letting the partition go with kept spans delivered past its committed offset; its next reader delivers up to this many again"
            );
        }
        let o = self.buffer.occupancy();
        if o.traces > 0 {
            tracing::info!(
                partition = self.partition,
                traces = o.traces,
                spans = o.spans,
                "stopping with undecided traces; their offsets stay uncommitted and will be re-read"
            );
        }
        Stopped {
            undecided_traces: o.traces,
            redelivered_spans: again,
        }
    }
}

impl Drop for Partition {
    /// A worker that ends, however it ends (a panic included), takes its
    /// share of the gauges and of the memory usage with it.
    fn drop(&mut self) {
        self.report_reads();
        self.telemetry.show(Shown::default(), &self.config.usage);
    }
}

/// The key of a kept trace's output messages: its id in the Collector's form.
fn trace_key(id: TraceId) -> Bytes {
    Bytes::from(id.to_hex())
}

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;
