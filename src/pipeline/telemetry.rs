//! What a partition worker counts and shows: metric handles cached per
//! worker (the hot path does no registry lookups), the process-wide gauges
//! moved by this worker's change, and rate-limited logs.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use super::ports::{DeadLetterOf, ProduceErrorKind};
use crate::buffer::{Occupancy, Reason};
use crate::clock::Clamp;
use crate::metrics as m;
use crate::otlp::keying::Unkeyed;
use crate::otlp::tracestate::Erased;
use crate::otlp::DecodeErrorKind;
use crate::rules::RuleSet;

pub(super) fn decision_label(keep: bool) -> &'static str {
    if keep {
        "keep"
    } else {
        "drop"
    }
}

/// The `reason` of `tailgate_undeliverable_spans_total` for a span that fits
/// no output message even alone.
pub const SPAN_TOO_LARGE: &str = "span_too_large";

/// Counters per rule, decision (and reason), indexed like the rule set;
/// looked up once or twice per decision, so with a fast hash.
type Fast = foldhash::fast::RandomState;
type RuleCounters = (
    HashMap<(usize, bool, Reason), Counter, Fast>,
    HashMap<(usize, bool), Counter, Fast>,
);

fn rule_counters(rules: &RuleSet) -> RuleCounters {
    let mut decided = HashMap::default();
    let mut spans_decided = HashMap::default();
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

/// What a worker last added to the process-wide gauges and usage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shown {
    pub buffer: Occupancy,
    pub offsets_pending: usize,
    /// Encoded kept spans awaiting acknowledgement (or, in exactly-once
    /// mode, their turn in the transaction).
    pub output_bytes: usize,
    /// Decisions remembered for late spans, and their bytes.
    pub remembered: usize,
    pub remembered_bytes: usize,
}

/// Metric handles of one worker.
pub(super) struct Telemetry {
    pub messages: Counter,
    pub spans: Counter,
    pub decode_errors: HashMap<DecodeErrorKind, Counter>,
    /// Messages not keyed by their trace id, by why.
    pub unkeyed: HashMap<Unkeyed, Counter>,
    /// Message timestamps the stream clock did not take as they were.
    pub clamped: HashMap<Clamp, Counter>,
    pub decided: HashMap<(usize, bool, Reason), Counter, Fast>,
    pub spans_decided: HashMap<(usize, bool), Counter, Fast>,
    /// How late each decision came after its deadline.
    pub lateness: Histogram,
    /// Late spans that followed a decision made here, kept and dropped.
    late_kept: Counter,
    late_dropped: Counter,
    /// Late spans that followed a decision read back from the log.
    late_kept_from_log: Counter,
    late_dropped_from_log: Counter,
    /// Kept spans' incoming thresholds erased: malformed, inconsistent.
    erased: [Counter; 2],
    /// Decisions forgotten before their TTL for lack of room.
    pub forgotten: Counter,
    /// Decision records acknowledged by the decision log.
    pub decisions_written: Counter,
    pub produced_messages: Counter,
    pub produced_spans: Counter,
    pub produce_errors: HashMap<ProduceErrorKind, Counter>,
    /// Kept spans given up on, by reason (a permanent produce error's kind,
    /// or [`SPAN_TOO_LARGE`]).
    pub undeliverable: HashMap<&'static str, Counter>,
    /// Dead letters acknowledged, of input and of output.
    input_dead_letters: Counter,
    output_dead_letters: Counter,
    pub redelivered: Counter,
    pub offsets_stored: Counter,
    traces_buffered: Gauge,
    spans_buffered: Gauge,
    bytes_buffered: Gauge,
    offsets_pending: Gauge,
    output_pending: Gauge,
    remembered: Gauge,
    remembered_bytes: Gauge,
    shown: Shown,
}

impl Telemetry {
    /// Late spans that followed a decision to keep (or drop) them, made
    /// here or read back from the decision log.
    pub fn late(&self, keep: bool, from_log: bool) -> &Counter {
        match (keep, from_log) {
            (true, false) => &self.late_kept,
            (false, false) => &self.late_dropped,
            (true, true) => &self.late_kept_from_log,
            (false, true) => &self.late_dropped_from_log,
        }
    }

    /// Kept spans whose incoming threshold was erased, and why.
    pub fn erased(&self, why: Erased) -> &Counter {
        &self.erased[why.index()]
    }

    /// Dead letters acknowledged, by what they are copies of.
    pub fn dead_letter(&self, of: DeadLetterOf) -> &Counter {
        match of {
            DeadLetterOf::Input => &self.input_dead_letters,
            DeadLetterOf::Output => &self.output_dead_letters,
        }
    }

    pub fn new(rules: &RuleSet) -> Self {
        let (decided, spans_decided) = rule_counters(rules);
        Self {
            messages: counter!(m::MESSAGES_RECEIVED),
            spans: counter!(m::SPANS_RECEIVED),
            decode_errors: DecodeErrorKind::ALL
                .iter()
                .map(|k| (*k, counter!(m::DECODE_ERRORS, "reason" => k.as_str())))
                .collect(),
            unkeyed: Unkeyed::ALL
                .iter()
                .map(|u| (*u, counter!(m::UNKEYED_MESSAGES, "why" => u.as_str())))
                .collect(),
            clamped: Clamp::ALL
                .iter()
                .map(|c| (*c, counter!(m::CLOCK_CLAMPED, "reason" => c.as_str())))
                .collect(),
            decided,
            spans_decided,
            lateness: histogram!(m::DECISION_LATENESS),
            late_kept: counter!(m::LATE_SPANS, "decision" => "keep", "source" => "memory"),
            late_dropped: counter!(m::LATE_SPANS, "decision" => "drop", "source" => "memory"),
            late_kept_from_log: counter!(m::LATE_SPANS, "decision" => "keep", "source" => "log"),
            late_dropped_from_log: counter!(m::LATE_SPANS, "decision" => "drop", "source" => "log"),
            erased: Erased::ALL.map(|why| counter!(m::THRESHOLDS_ERASED, "why" => why.as_str())),
            forgotten: counter!(m::DECISIONS_FORGOTTEN),
            decisions_written: counter!(m::DECISIONS_WRITTEN),
            produced_messages: counter!(m::MESSAGES_PRODUCED),
            produced_spans: counter!(m::SPANS_PRODUCED),
            produce_errors: ProduceErrorKind::ALL
                .iter()
                .map(|k| (*k, counter!(m::PRODUCE_ERRORS, "kind" => k.as_str())))
                .collect(),
            undeliverable: undeliverable_reasons()
                .map(|r| (r, counter!(m::UNDELIVERABLE_SPANS, "reason" => r)))
                .collect(),
            input_dead_letters: counter!(m::DEAD_LETTERS, "source" => DeadLetterOf::Input.as_str()),
            output_dead_letters: counter!(m::DEAD_LETTERS, "source" => DeadLetterOf::Output.as_str()),
            redelivered: counter!(m::REDELIVERED_SPANS),
            offsets_stored: counter!(m::OFFSETS_STORED),
            traces_buffered: gauge!(m::TRACES_BUFFERED),
            spans_buffered: gauge!(m::SPANS_BUFFERED),
            bytes_buffered: gauge!(m::BYTES_BUFFERED),
            offsets_pending: gauge!(m::OFFSETS_PENDING),
            output_pending: gauge!(m::OUTPUT_PENDING_BYTES),
            remembered: gauge!(m::DECISIONS_REMEMBERED),
            remembered_bytes: gauge!(m::DECISIONS_REMEMBERED_BYTES),
            shown: Shown::default(),
        }
    }

    /// Switches the per-rule counters to a reloaded rule set.
    pub fn set_rules(&mut self, rules: &RuleSet) {
        (self.decided, self.spans_decided) = rule_counters(rules);
    }

    /// Moves the process-wide gauges, and the memory `usage` shared by all
    /// workers, by this worker's change since last time.
    pub fn show(&mut self, now: Shown, usage: &AtomicUsize) {
        let delta = |g: &Gauge, new: usize, old: usize| g.increment(new as f64 - old as f64);
        let old = self.shown;
        delta(&self.traces_buffered, now.buffer.traces, old.buffer.traces);
        delta(&self.spans_buffered, now.buffer.spans, old.buffer.spans);
        delta(&self.bytes_buffered, now.buffer.bytes, old.buffer.bytes);
        delta(
            &self.offsets_pending,
            now.offsets_pending,
            old.offsets_pending,
        );
        delta(&self.output_pending, now.output_bytes, old.output_bytes);
        delta(&self.remembered, now.remembered, old.remembered);
        delta(
            &self.remembered_bytes,
            now.remembered_bytes,
            old.remembered_bytes,
        );
        // Remembered decisions are not in it: they have a budget of their
        // own (`decision.remembered_bytes`, kept by forgetting the oldest),
        // and pausing the input would not shrink them — counted here they
        // held the input paused until they expired.
        let (new_used, old_used) = (
            now.buffer.bytes + now.output_bytes,
            old.buffer.bytes + old.output_bytes,
        );
        if new_used >= old_used {
            usage.fetch_add(new_used - old_used, Ordering::Relaxed);
        } else {
            usage.fetch_sub(old_used - new_used, Ordering::Relaxed);
        }
        self.shown = now;
    }
}

/// Every `reason` of `tailgate_undeliverable_spans_total`.
pub fn undeliverable_reasons() -> impl Iterator<Item = &'static str> {
    std::iter::once(SPAN_TOO_LARGE).chain(
        ProduceErrorKind::ALL
            .into_iter()
            .filter(|k| k.permanent())
            .map(ProduceErrorKind::as_str),
    )
}

/// Lets a log line through at most once per interval per key, counting what
/// it held back.
pub struct RateLimited<K> {
    /// Per key: when it was last let through, and how many were held back since.
    last: HashMap<K, (Option<Instant>, u64)>,
    interval: Duration,
}

impl<K: Hash + Eq> RateLimited<K> {
    pub fn new(interval: Duration) -> Self {
        Self {
            last: HashMap::new(),
            interval,
        }
    }

    /// `Some(held back since the last one)` if a line for `key` may be logged now.
    pub fn allow(&mut self, key: K, now: Instant) -> Option<u64> {
        let entry = self.last.entry(key).or_insert((None, 0));
        if entry
            .0
            .is_none_or(|at| now.saturating_duration_since(at) >= self.interval)
        {
            let suppressed = entry.1;
            *entry = (Some(now), 0);
            Some(suppressed)
        } else {
            entry.1 += 1;
            None
        }
    }
}
