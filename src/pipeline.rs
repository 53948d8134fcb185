//! One partition's worker: decode → buffer → decide → hand kept spans to the
//! producer → advance the watermark. The only place the stages meet.
//!
//! The worker owns its buffer, watermark and decision cache; workers share
//! nothing but the rule set and the producer. Kafka is reached only through
//! the [`Output`] and [`OffsetStore`] traits, so the worker is tested with
//! in-memory stand-ins.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use metrics::{counter, gauge, histogram, Counter, Gauge};
use tokio::sync::{mpsc, watch};

use crate::buffer::{BufferConfig, Occupancy, ReadyTrace, Reason, TraceBuffer};
use crate::kafka::watermark::Watermark;
use crate::metrics as m;
use crate::otlp::{self, Annotation, DecodeErrorKind, Encoding, SpanRecord, TraceId};
use crate::rules::{RuleSet, TraceSummary};

/// The rules in force; a reload sends a new set, which each worker picks up
/// before its next decision. Buffered traces are kept across a reload.
pub type Rules = watch::Receiver<Arc<RuleSet>>;

/// A decision remembered for the trace's late spans. It names its rule and
/// carries its annotation itself, so it stays right across a rule reload.
#[derive(Clone)]
struct Decided {
    keep: bool,
    rule: Arc<str>,
    /// The kept spans' annotation (absent for a drop).
    annotation: Option<Arc<Annotation>>,
}

/// The decision clock handed to the rules: time since the first decision in
/// this process, the same for every worker (the `limit` and `dynamic`
/// samplers are per instance).
fn decision_clock(now: Instant) -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    now.saturating_duration_since(*ORIGIN.get_or_init(|| now))
}

/// One message read from the input partition.
#[derive(Debug, Clone)]
pub struct InputMessage {
    pub offset: i64,
    /// The message key, kept for the dead-letter copy.
    pub key: Option<Bytes>,
    pub payload: Bytes,
}

/// Which topic an outgoing message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The output topic: kept spans.
    Sampled,
    /// The dead-letter topic: malformed input, unchanged.
    DeadLetter,
}

/// One message to produce.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub destination: Destination,
    pub key: Option<Bytes>,
    pub payload: Bytes,
    pub headers: Vec<(&'static str, String)>,
}

/// Header naming why a dead-lettered message was rejected (a decode-error reason).
pub const DLQ_REASON_HEADER: &str = "tailgate.error.reason";
/// Header with a human-readable description of the problem.
pub const DLQ_DETAIL_HEADER: &str = "tailgate.error.detail";
/// Headers locating the original message.
pub const DLQ_PARTITION_HEADER: &str = "tailgate.source.partition";
pub const DLQ_OFFSET_HEADER: &str = "tailgate.source.offset";

/// Why a produce failed; retried until it succeeds or the process stops.
pub type ProduceError = String;

/// Where kept spans (and dead letters) go.
pub trait Output: Send + Sync + 'static {
    /// Sends one message; resolves once it is acknowledged or has definitively failed.
    fn send(&self, message: Outgoing) -> BoxFuture<'static, Result<(), ProduceError>>;
}

/// Where the watermark goes (the consumer's stored offsets).
pub trait OffsetStore: Send + Sync + 'static {
    /// Stores `next_offset`, the next offset to read after a restart; false
    /// if it could not be stored (the partition was revoked meanwhile).
    fn store(&self, partition: i32, next_offset: i64) -> bool;
}

/// Exactly-once mode: kept spans and the partition's next offset enter the
/// open Kafka transaction together, so they commit, or abort, together.
pub trait Transaction: Send + Sync + 'static {
    /// Enqueues `messages` into the open transaction and records `next_offset`
    /// as the partition's offset to commit with them; no commit can fall
    /// between the two. An error means the transaction is lost: it will be
    /// aborted, and the process stops without committing.
    fn write(
        self: Arc<Self>,
        partition: i32,
        messages: Vec<Outgoing>,
        next_offset: Option<i64>,
    ) -> BoxFuture<'static, Result<(), ProduceError>>;
}

/// What a worker needs, shared by all workers of the process.
#[derive(Clone)]
pub struct WorkerConfig {
    pub buffer: BufferConfig,
    pub decided_ttl: Duration,
    pub decided_capacity: u64,
    pub max_in_flight: usize,
    /// Copy malformed messages to the dead-letter topic (their offsets are
    /// held until the copy is acknowledged).
    pub dead_letter: bool,
    /// Bytes buffered by all workers of the process, for back-pressure.
    pub usage: Arc<AtomicUsize>,
    /// Exactly-once mode: produce through this transaction instead of the output.
    pub transaction: Option<Arc<dyn Transaction>>,
}

/// A produce waiting for its acknowledgement, with what it pins.
struct InFlight {
    message: Outgoing,
    offsets: Vec<i64>,
    spans: usize,
    attempt: u32,
}

type Flight = BoxFuture<'static, (InFlight, Result<(), ProduceError>)>;

/// Metric handles cached per worker, so the hot path does no registry lookups.
struct Metrics {
    messages: Counter,
    spans: Counter,
    decode_errors: HashMap<DecodeErrorKind, Counter>,
    decided: HashMap<(usize, bool, Reason), Counter>,
    spans_decided: HashMap<(usize, bool), Counter>,
    late: [Counter; 2],
    produced_messages: Counter,
    produced_spans: Counter,
    produce_errors: Counter,
    dead_letters: Counter,
    redelivered: Counter,
    traces_buffered: Gauge,
    spans_buffered: Gauge,
    bytes_buffered: Gauge,
    offsets_pending: Gauge,
    offsets_stored: Counter,
    /// What this worker last added to the process-wide gauges.
    shown: Occupancy,
    shown_pending: usize,
}

fn decision_label(keep: bool) -> &'static str {
    if keep {
        "keep"
    } else {
        "drop"
    }
}

/// Counters per rule, decision (and reason), indexed like the rule set.
type RuleCounters = (
    HashMap<(usize, bool, Reason), Counter>,
    HashMap<(usize, bool), Counter>,
);

fn rule_counters(rules: &RuleSet) -> RuleCounters {
    let mut decided = HashMap::new();
    let mut spans_decided = HashMap::new();
    for (i, name) in rules.names().iter().enumerate() {
        for keep in [true, false] {
            for reason in Reason::ALL {
                decided.insert(
                        (i, keep, reason),
                        counter!(m::TRACES_DECIDED, "rule" => name.to_string(), "decision" => decision_label(keep), "reason" => reason.as_str()),
                    );
            }
            spans_decided.insert(
                    (i, keep),
                    counter!(m::SPANS_DECIDED, "rule" => name.to_string(), "decision" => decision_label(keep)),
                );
        }
    }
    (decided, spans_decided)
}

impl Metrics {
    fn new(rules: &RuleSet) -> Self {
        let (decided, spans_decided) = rule_counters(rules);
        Self {
            messages: counter!(m::MESSAGES_RECEIVED),
            spans: counter!(m::SPANS_RECEIVED),
            decode_errors: DecodeErrorKind::ALL
                .iter()
                .map(|k| (*k, counter!(m::DECODE_ERRORS, "reason" => k.as_str())))
                .collect(),
            decided,
            spans_decided,
            late: [
                counter!(m::LATE_SPANS, "decision" => "drop"),
                counter!(m::LATE_SPANS, "decision" => "keep"),
            ],
            produced_messages: counter!(m::MESSAGES_PRODUCED),
            produced_spans: counter!(m::SPANS_PRODUCED),
            produce_errors: counter!(m::PRODUCE_ERRORS),
            dead_letters: counter!(m::DEAD_LETTERS),
            redelivered: counter!(m::REDELIVERED_SPANS),
            traces_buffered: gauge!(m::TRACES_BUFFERED),
            spans_buffered: gauge!(m::SPANS_BUFFERED),
            bytes_buffered: gauge!(m::BYTES_BUFFERED),
            offsets_pending: gauge!(m::OFFSETS_PENDING),
            offsets_stored: counter!(m::OFFSETS_STORED),
            shown: Occupancy::default(),
            shown_pending: 0,
        }
    }

    /// Switches the per-rule counters to a reloaded rule set.
    fn set_rules(&mut self, rules: &RuleSet) {
        (self.decided, self.spans_decided) = rule_counters(rules);
    }

    /// Moves the process-wide gauges by this worker's change since last time.
    fn show(&mut self, now: Occupancy, pending: usize) {
        let delta = |g: &Gauge, new: usize, old: usize| g.increment(new as f64 - old as f64);
        delta(&self.traces_buffered, now.traces, self.shown.traces);
        delta(&self.spans_buffered, now.spans, self.shown.spans);
        delta(&self.bytes_buffered, now.bytes, self.shown.bytes);
        delta(&self.offsets_pending, pending, self.shown_pending);
        self.shown = now;
        self.shown_pending = pending;
    }
}

/// Logs rejected input at most once per interval per reason, with a count of
/// what was not logged.
struct RateLimitedLog {
    /// Per reason: when it was last logged, and how many were not logged since.
    last: HashMap<DecodeErrorKind, (Option<Instant>, u64)>,
    interval: Duration,
}

impl RateLimitedLog {
    fn warn(&mut self, partition: i32, offset: i64, e: &otlp::DecodeError, now: Instant) {
        let entry = self.last.entry(e.kind).or_insert((None, 0));
        if entry
            .0
            .is_none_or(|at| now.saturating_duration_since(at) >= self.interval)
        {
            tracing::warn!(
                partition,
                offset,
                reason = e.kind.as_str(),
                suppressed = entry.1,
                "skipping bad input: {}",
                e.detail
            );
            *entry = (Some(now), 0);
        } else {
            entry.1 += 1;
        }
    }
}

/// How a worker left its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Traces still being assembled; their offsets stay uncommitted.
    pub undecided_traces: usize,
    /// Kept spans delivered from messages the partition's next reader reads again.
    pub redelivered_spans: u64,
}

/// Messages a worker takes from its queue at once.
const RECEIVE_BATCH: usize = 256;

/// One partition's worker.
pub struct PartitionWorker {
    partition: i32,
    config: WorkerConfig,
    rules: Arc<RuleSet>,
    rules_updates: Rules,
    buffer: TraceBuffer,
    watermark: Watermark,
    /// Decisions of recently decided traces, followed by their late spans.
    decided: moka::sync::Cache<TraceId, Decided, foldhash::fast::RandomState>,
    output: Arc<dyn Output>,
    offsets: Arc<dyn OffsetStore>,
    in_flight: FuturesUnordered<Flight>,
    metrics: Metrics,
    bad_input_log: RateLimitedLog,
    ready: Vec<ReadyTrace>,
    /// Kept spans delivered, by the highest offset of the messages they came
    /// from, while that offset is not yet committed: if the partition is let
    /// go now, its next reader reads those messages again and delivers the
    /// spans a second time.
    delivered_ahead: BTreeMap<i64, u64>,
    /// Exactly-once mode: messages decided but not yet in the transaction, by
    /// the highest offset they came from, which each of them pins.
    held: BTreeMap<i64, Vec<InFlight>>,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl PartitionWorker {
    pub fn new(
        partition: i32,
        config: WorkerConfig,
        mut rules_updates: Rules,
        output: Arc<dyn Output>,
        offsets: Arc<dyn OffsetStore>,
    ) -> Self {
        let rules = rules_updates.borrow_and_update().clone();
        Self {
            partition,
            buffer: TraceBuffer::new(config.buffer),
            decided: moka::sync::Cache::builder()
                .max_capacity(config.decided_capacity)
                .time_to_live(config.decided_ttl)
                .initial_capacity(config.decided_capacity.min(1 << 14) as usize)
                .build_with_hasher(foldhash::fast::RandomState::default()),
            config,
            metrics: Metrics::new(&rules),
            rules,
            rules_updates,
            watermark: Watermark::new(),
            output,
            offsets,
            in_flight: FuturesUnordered::new(),
            bad_input_log: RateLimitedLog {
                last: HashMap::new(),
                interval: Duration::from_secs(10),
            },
            ready: Vec::new(),
            delivered_ahead: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// Runs until `input` closes, then drains in-flight produces and stores the
    /// final watermark. Traces still undecided at that point are not decided:
    /// their offsets stay uncommitted, so whoever reads the partition next
    /// re-reads and decides them.
    pub async fn run(mut self, mut input: mpsc::Receiver<InputMessage>) -> Stopped {
        // Everything queued is taken at once, so deciding, storing the
        // watermark and the gauges run once per batch, not once per message.
        let mut batch = Vec::with_capacity(RECEIVE_BATCH);
        loop {
            let next = self
                .buffer
                .next_deadline()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let can_read = self.in_flight.len() < self.config.max_in_flight;
            tokio::select! {
                biased;
                Some((flight, result)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.delivered(flight, result);
                }
                n = input.recv_many(&mut batch, RECEIVE_BATCH), if can_read => {
                    if n == 0 {
                        break;
                    }
                    let now = now();
                    for msg in batch.drain(..) {
                        self.handle(msg, now);
                    }
                }
                _ = tokio::time::sleep_until(next) => {}
            }
            self.decide_due(now());
            self.release_held().await;
            self.publish();
        }
        while let Some((flight, result)) = self.in_flight.next().await {
            self.delivered(flight, result);
            self.publish();
        }
        self.release_held().await;
        self.publish();
        let again: u64 = self.delivered_ahead.values().sum();
        if again > 0 {
            self.metrics.redelivered.increment(again);
            tracing::info!(
                partition = self.partition,
                spans = again,
                "letting the partition go with kept spans delivered past its committed offset; its next reader delivers up to this many again"
            );
        }
        // What is left undecided is let go: it no longer counts.
        self.show(Occupancy::default());
        self.metrics.show(Occupancy::default(), 0);
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

    /// Stores the watermark if it moved and updates the gauges.
    fn publish(&mut self) {
        if let Some(next) = self.watermark.advance() {
            if self.offsets.store(self.partition, next) {
                self.metrics.offsets_stored.increment(1);
                // Delivered spans from messages before `next` will not be read again.
                self.delivered_ahead = self.delivered_ahead.split_off(&next);
            } else {
                // Not stored (not assigned at this moment): try again next time.
                self.watermark.unstored();
            }
        }
        self.show(self.buffer.occupancy());
    }

    /// Updates the gauges and the shared usage by this worker's change.
    fn show(&mut self, now: Occupancy) {
        let before = self.metrics.shown.bytes;
        if now.bytes >= before {
            self.config
                .usage
                .fetch_add(now.bytes - before, Ordering::Relaxed);
        } else {
            self.config
                .usage
                .fetch_sub(before - now.bytes, Ordering::Relaxed);
        }
        self.metrics.show(now, self.watermark.pending());
    }

    /// Decodes one message and buffers its spans by trace.
    pub fn handle(&mut self, msg: InputMessage, now: Instant) {
        self.metrics.messages.increment(1);
        self.watermark.track(msg.offset, 0);
        let original = msg.payload.clone();
        let decoded = match otlp::decode(msg.payload) {
            Ok(d) => d,
            Err(e) => {
                self.metrics.decode_errors[&e.kind].increment(1);
                self.bad_input_log.warn(self.partition, msg.offset, &e, now);
                if self.config.dead_letter {
                    self.dead_letter(msg.offset, msg.key, original, &e);
                }
                return;
            }
        };
        for e in &decoded.rejected {
            self.metrics.decode_errors[&e.kind].increment(1);
            self.bad_input_log.warn(self.partition, msg.offset, e, now);
        }
        self.metrics.spans.increment(decoded.spans.len() as u64);
        let encoding = decoded.encoding;
        let mut spans = decoded.spans;
        // Group by trace id, keeping each trace's spans in message order.
        spans.sort_by_key(|(id, _)| *id);
        let mut rest = spans.into_iter().peekable();
        while let Some((id, first)) = rest.next() {
            let mut group = vec![first];
            while let Some((_, s)) = rest.next_if(|(next, _)| *next == id) {
                group.push(s);
            }
            self.add(id, group, msg.offset, encoding, now);
        }
    }

    fn add(
        &mut self,
        id: TraceId,
        spans: Vec<SpanRecord>,
        offset: i64,
        encoding: Encoding,
        now: Instant,
    ) {
        if !self.buffer.contains(&id) {
            if let Some(decided) = self.decided.get(&id) {
                // A late span: follow the trace's decision.
                self.metrics.late[usize::from(decided.keep)].increment(spans.len() as u64);
                counter!(m::SPANS_DECIDED, "rule" => decided.rule.to_string(), "decision" => decision_label(decided.keep))
                    .increment(spans.len() as u64);
                if let Some(annotation) = decided.annotation {
                    self.watermark.pin(offset, 1);
                    self.produce(id, &spans, &annotation, encoding, vec![offset]);
                }
                return;
            }
        }
        self.watermark.pin(offset, 1);
        let evicted = self.buffer.insert(id, spans, offset, encoding, now);
        for t in evicted {
            self.decide(t, now);
        }
    }

    /// Decides every trace whose deadline has passed.
    pub fn decide_due(&mut self, now: Instant) {
        let mut ready = std::mem::take(&mut self.ready);
        self.buffer.pop_due(now, &mut ready);
        for t in ready.drain(..) {
            self.decide(t, now);
        }
        self.ready = ready;
    }

    /// Picks up reloaded rules, if any.
    fn refresh_rules(&mut self) {
        if self.rules_updates.has_changed().unwrap_or(false) {
            self.rules = self.rules_updates.borrow_and_update().clone();
            self.metrics.set_rules(&self.rules);
        }
    }

    fn decide(&mut self, t: ReadyTrace, now: Instant) {
        self.refresh_rules();
        let decision = self
            .rules
            .decide(&TraceSummary::of(t.trace_id, &t.spans), decision_clock(now));
        let annotation = decision.keep.then(|| self.rules.annotation(&decision));
        self.decided.insert(
            t.trace_id,
            Decided {
                keep: decision.keep,
                rule: self.rules.names()[decision.rule].clone(),
                annotation: annotation.clone(),
            },
        );
        self.metrics.decided[&(decision.rule, decision.keep, t.reason)].increment(1);
        self.metrics.spans_decided[&(decision.rule, decision.keep)].increment(t.spans.len() as u64);
        histogram!(m::DECISION_LATENESS)
            .record(now.saturating_duration_since(t.deadline).as_secs_f64());
        if let Some(annotation) = annotation {
            // The offsets' pins pass from the trace to the produce.
            self.produce(t.trace_id, &t.spans, &annotation, t.encoding, t.offsets);
        } else {
            for o in t.offsets {
                self.release(o);
            }
        }
    }

    fn release(&mut self, offset: i64) {
        if !self.watermark.release(offset) {
            // A pin released twice would let the watermark pass undecided data.
            tracing::error!(
                partition = self.partition,
                offset,
                "released an offset that was not pinned; this is a bug"
            );
        }
    }

    fn produce(
        &mut self,
        id: TraceId,
        spans: &[SpanRecord],
        annotation: &Annotation,
        encoding: Encoding,
        offsets: Vec<i64>,
    ) {
        let (payload, _) = otlp::encode_trace(spans, annotation, encoding);
        self.send(InFlight {
            message: Outgoing {
                destination: Destination::Sampled,
                key: Some(Bytes::from(id.to_hex())),
                payload: Bytes::from(payload),
                headers: Vec::new(),
            },
            offsets,
            spans: spans.len(),
            attempt: 0,
        });
    }

    /// Copies a malformed message, unchanged, to the dead-letter topic; its
    /// offset is held until the copy is acknowledged.
    fn dead_letter(
        &mut self,
        offset: i64,
        key: Option<Bytes>,
        payload: Bytes,
        e: &otlp::DecodeError,
    ) {
        self.watermark.pin(offset, 1);
        self.send(InFlight {
            message: Outgoing {
                destination: Destination::DeadLetter,
                key,
                payload,
                headers: vec![
                    (DLQ_REASON_HEADER, e.kind.as_str().to_string()),
                    (DLQ_DETAIL_HEADER, e.detail.clone()),
                    (DLQ_PARTITION_HEADER, self.partition.to_string()),
                    (DLQ_OFFSET_HEADER, offset.to_string()),
                ],
            },
            offsets: vec![offset],
            spans: 0,
            attempt: 0,
        });
    }

    fn send(&mut self, flight: InFlight) {
        if self.config.transaction.is_some() {
            self.hold(flight);
            return;
        }
        let output = self.output.clone();
        let backoff = match flight.attempt {
            0 => Duration::ZERO,
            n => Duration::from_millis(100 * 2u64.pow(n.min(6))),
        };
        self.in_flight.push(Box::pin(async move {
            if !backoff.is_zero() {
                tokio::time::sleep(backoff).await;
            }
            let result = output.send(flight.message.clone()).await;
            (flight, result)
        }));
    }

    /// Exactly-once mode: holds a message until nothing before its last offset
    /// is pending. Committed with the offset just past it, the message then
    /// covers every span it carries: a crash cannot make them read again
    /// after they were committed, nor commit them without their offsets.
    fn hold(&mut self, mut flight: InFlight) {
        let Some(&last) = flight.offsets.iter().max() else {
            tracing::error!(
                partition = self.partition,
                "a message without offsets; this is a bug"
            );
            return;
        };
        // The last offset's pin stays with the held message; the others go.
        let mut offsets = std::mem::take(&mut flight.offsets);
        if let Some(i) = offsets.iter().position(|o| *o == last) {
            offsets.swap_remove(i);
        }
        for o in offsets {
            self.release(o);
        }
        flight.offsets = vec![last];
        self.held.entry(last).or_default().push(flight);
    }

    /// Exactly-once mode: writes the held messages whose offsets are now the
    /// lowest pending, in offset order, into the transaction together with the
    /// offset that follows them.
    async fn release_held(&mut self) {
        let Some(transaction) = self.config.transaction.clone() else {
            return;
        };
        let mut ready: Vec<InFlight> = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            let last = *entry.key();
            // Only when every pin at or below `last` is one of these messages.
            match self.watermark.lowest() {
                Some((o, pins)) if o == last && pins as usize == entry.get().len() => {}
                _ => break,
            }
            for flight in entry.remove() {
                self.release(last);
                ready.push(flight);
            }
        }
        if ready.is_empty() {
            return;
        }
        let next = self.watermark.advance();
        let (mut messages, mut spans, mut dead_letters) = (Vec::new(), 0, 0);
        for flight in ready {
            match flight.message.destination {
                Destination::Sampled => spans += flight.spans as u64,
                Destination::DeadLetter => dead_letters += 1,
            }
            messages.push(flight.message);
        }
        let sampled = messages.len() as u64 - dead_letters;
        match transaction.write(self.partition, messages, next).await {
            Ok(()) => {
                if next.is_some() {
                    self.metrics.offsets_stored.increment(1);
                }
                self.metrics.produced_messages.increment(sampled);
                self.metrics.produced_spans.increment(spans);
                self.metrics.dead_letters.increment(dead_letters);
            }
            // The transaction will be aborted and the process stops without
            // committing, so what was read since the last commit is read again.
            Err(e) => tracing::error!(
                partition = self.partition,
                "cannot write into the transaction: {e}"
            ),
        }
    }

    fn delivered(&mut self, mut flight: InFlight, result: Result<(), ProduceError>) {
        match result {
            Ok(()) => {
                match flight.message.destination {
                    Destination::Sampled => {
                        self.metrics.produced_messages.increment(1);
                        self.metrics.produced_spans.increment(flight.spans as u64);
                        if let Some(&last) = flight.offsets.iter().max() {
                            *self.delivered_ahead.entry(last).or_default() += flight.spans as u64;
                        }
                    }
                    Destination::DeadLetter => self.metrics.dead_letters.increment(1),
                }
                for o in std::mem::take(&mut flight.offsets) {
                    self.release(o);
                }
            }
            Err(e) => {
                // Never dropped: retried with backoff, and the offsets it pins
                // hold the watermark until it is delivered.
                self.metrics.produce_errors.increment(1);
                tracing::warn!(partition = self.partition, attempt = flight.attempt, destination = ?flight.message.destination, "produce failed, retrying: {e}");
                flight.attempt += 1;
                self.send(flight);
            }
        }
    }

    /// Offsets still pinned and buffer occupancy, for tests and status.
    pub fn status(&self) -> (Option<i64>, Occupancy) {
        (self.watermark.committable(), self.buffer.occupancy())
    }
}

#[cfg(test)]
mod tests;
