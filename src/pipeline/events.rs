//! What a partition tells its operator: each event is its counters and its
//! log line, written together in one place — never one without the other —
//! at most one line per kind of event (and error kind) per interval, saying
//! how many were held back. The time is the one the partition's call
//! brought.

use std::time::{Duration, Instant};

use super::ports::{Destination, ProduceError, ProduceErrorKind};
use super::telemetry::{RateLimited, Telemetry, SPAN_TOO_LARGE};
use crate::metrics as m;
use crate::otlp::keying::Unkeyed;
use crate::otlp::{DecodeError, TraceId};

/// Interval of the rate-limited lines.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Something that happened in a partition worth counting and saying.
pub(super) enum Event<'a> {
    /// A message, or a span in it, that is not OTLP: skipped.
    BadInput { offset: i64, error: &'a DecodeError },
    /// A message not keyed by its trace id.
    Unkeyed { offset: i64, why: Unkeyed },
    /// Remembered decisions forgotten before `decided_ttl` for lack of room.
    Forgotten {
        n: u64,
        remembered: usize,
        max_bytes: usize,
    },
    /// Decision records not acknowledged in time, given up.
    RecordsGivenUp { n: u64, timeout: Duration },
    /// A batch of `n` decision records refused for good: the decisions
    /// stand unlogged.
    RecordRefused { n: u64, error: &'a ProduceError },
    /// A produce failed: retried (transient), or not (the producer is in
    /// its fatal state, or the error is permanent: given up after).
    ProduceFailed {
        destination: Destination,
        attempt: u32,
        error: &'a ProduceError,
    },
    /// Kept spans given up on: no retry can deliver them.
    Undeliverable {
        spans: u64,
        error: &'a ProduceError,
        copied: bool,
    },
    /// A kept span larger than any output message may be.
    SpanTooLarge {
        trace: TraceId,
        span: [u8; 8],
        bytes: usize,
        limit: usize,
        copied: bool,
    },
    /// An output message refused as too large: every worker splits below it.
    LimitLowered {
        bytes: usize,
        to: usize,
        error: &'a ProduceError,
    },
    /// A dead letter refused for good: released.
    DeadLetterRefused { error: &'a ProduceError },
}

/// A partition's events: where they are counted, and their lines' limits.
pub(super) struct Events {
    partition: i32,
    lines: RateLimited<(&'static str, &'static str)>,
}

impl Events {
    pub fn new(partition: i32) -> Self {
        Self {
            partition,
            lines: RateLimited::new(LOG_INTERVAL),
        }
    }

    /// Whether a line of `event` (of `kind`) may be written at `now`, with
    /// how many were held back; always, if no time came yet.
    fn allow(
        &mut self,
        event: &'static str,
        kind: &'static str,
        now: Option<Instant>,
    ) -> Option<u64> {
        match now {
            Some(now) => self.lines.allow((event, kind), now),
            None => Some(0),
        }
    }

    /// Counts `event` in `t` and says it (rate-limited) at `now`.
    pub fn emit(&mut self, t: &Telemetry, event: Event<'_>, now: Option<Instant>) {
        let partition = self.partition;
        match event {
            Event::BadInput { offset, error } => {
                t.decode_errors[&error.kind].increment(1);
                if let Some(suppressed) = self.allow("bad_input", error.kind.as_str(), now) {
                    tracing::warn!(
                        partition,
                        offset,
                        reason = error.kind.as_str(),
                        suppressed,
                        "skipping bad input: {}",
                        error.detail
                    );
                }
            }
            Event::Unkeyed { offset, why } => {
                t.unkeyed[&why].increment(1);
                if let Some(suppressed) = self.allow("unkeyed", "", now) {
                    tracing::warn!(
                        partition,
                        offset,
                        why = why.as_str(),
                        suppressed,
                        "input not keyed by trace id: the spans of one trace may reach several partitions, and each decides a fragment of it; set `partition_traces_by_id: true` in the Collector's Kafka exporter, or run `tailgate route` in front (docs/operations.md)"
                    );
                }
            }
            Event::Forgotten {
                n,
                remembered,
                max_bytes,
            } => {
                t.forgotten.increment(n);
                if self.allow("forgotten", "", now).is_some() {
                    tracing::warn!(
                        partition,
                        remembered,
                        bytes = max_bytes,
                        "decision.remembered_bytes is full: the oldest decisions are forgotten before decision.decided_ttl, and late spans of their traces are decided anew"
                    );
                }
            }
            Event::RecordsGivenUp { n, timeout } => {
                metrics::counter!(m::DECISIONS_UNLOGGED).increment(n);
                if self.allow("records_given_up", "", now).is_some() {
                    tracing::error!(
                        partition,
                        records = n,
                        ?timeout,
                        "decision records not acknowledged within kafka.decision_log_timeout: given up (their decisions stand); this partition logs no decision for as long again"
                    );
                }
            }
            Event::RecordRefused { n, error } => {
                // The decision stands and is remembered here; only its
                // record is missing, so a later owner of the partition
                // decides the trace's late spans anew.
                metrics::counter!(m::DECISIONS_UNLOGGED).increment(n);
                if self
                    .allow("record_refused", error.kind.as_str(), now)
                    .is_some()
                {
                    tracing::error!(
                        partition,
                        kind = error.kind.as_str(),
                        "a decision cannot be written to the decision log: {error}; going on without it"
                    );
                }
            }
            Event::ProduceFailed {
                destination,
                attempt,
                error,
            } => {
                t.produce_errors[&error.kind].increment(1);
                let kind = error.kind.as_str();
                // A permanent failure is given up: what becomes of it is
                // its own event.
                let say = error.kind == ProduceErrorKind::Fatal || !error.kind.permanent();
                if say && self.allow("produce_failed", kind, now).is_some() {
                    if error.kind == ProduceErrorKind::Fatal {
                        tracing::error!(partition, ?destination, "produce failed for good, the producer is in a fatal state: not retried, its offsets stay uncommitted: {error}");
                    } else {
                        tracing::warn!(
                            partition,
                            attempt,
                            ?destination,
                            "produce failed, retrying: {error}"
                        );
                    }
                }
            }
            Event::Undeliverable {
                spans,
                error,
                copied,
            } => {
                if let Some(c) = t.undeliverable.get(error.kind.as_str()) {
                    c.increment(spans);
                }
                tracing::error!(
                    partition,
                    kind = error.kind.as_str(),
                    spans,
                    "kept spans can never reach the output topic: {error}; {}",
                    if copied {
                        "copying them to the dead-letter topic"
                    } else {
                        "releasing them (no dead-letter topic)"
                    }
                );
            }
            Event::SpanTooLarge {
                trace,
                span,
                bytes,
                limit,
                copied,
            } => {
                if let Some(c) = t.undeliverable.get(SPAN_TOO_LARGE) {
                    c.increment(1);
                }
                tracing::error!(
                    partition,
                    trace = %trace,
                    span = %hex::encode(span),
                    bytes,
                    limit,
                    "a kept span fits no output message even alone; {}",
                    if copied {
                        "copying it to the dead-letter topic"
                    } else {
                        "releasing it (no dead-letter topic)"
                    }
                );
            }
            Event::LimitLowered { bytes, to, error } => {
                tracing::warn!(
                    partition,
                    bytes,
                    "an output message was refused as too large ({error}); splitting at {to} bytes from now on"
                );
            }
            Event::DeadLetterRefused { error } => {
                tracing::error!(
                    partition,
                    kind = error.kind.as_str(),
                    "a dead letter cannot be written: {error}; releasing it"
                );
            }
        }
    }
}
