//! Deliver: kept traces become output messages that each fit the
//! producer's limit, every message pins the input offsets its spans came
//! from until it is acknowledged, transient failures are retried with
//! backoff, and what can never be delivered — a span too large for any
//! message, a produce error no retry can fix — is counted, dead-lettered
//! where possible and released, so it never freezes the partition.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::events::Event;
use super::ports::*;
use super::telemetry::SPAN_TOO_LARGE;
use super::{trace_key, Command, Mode, Partition};
use crate::otlp::{self, Annotation, Encoding, SpanRecord, TraceId};

/// Names one produce while it is in flight.
pub type DeliveryId = u64;

/// A message on its way out, with what it pins.
#[derive(Debug)]
pub(super) struct InFlight {
    pub message: Outgoing,
    /// Input offsets it pins until it is acknowledged or given up.
    pub offsets: Vec<i64>,
    /// Kept spans it carries (none for a dead letter or a decision record).
    pub spans: usize,
    /// Decisions it records (a batch for the decision log), else none.
    pub decisions: usize,
    /// The trace whose kept spans it carries: what a dead letter of them
    /// names, and what a re-split is keyed by.
    pub trace: Option<TraceId>,
    /// Failed attempts so far.
    pub attempt: u32,
    /// A decision record (at-least-once mode) is given up at this instant
    /// if not acknowledged by then: the decision log must not hold the input.
    pub give_up_at: Option<Instant>,
}

impl InFlight {
    pub fn last_offset(&self) -> Option<i64> {
        self.offsets.iter().max().copied()
    }
}

/// Delay before the attempt after `attempt` failed ones: 200 ms doubling to 6.4 s.
pub fn backoff(attempt: u32) -> Duration {
    match attempt {
        0 => Duration::ZERO,
        n => Duration::from_millis(100 * 2u64.pow(n.min(6))),
    }
}

/// Produces awaiting their result.
#[derive(Default)]
pub(super) struct InFlightSet {
    flights: HashMap<DeliveryId, InFlight>,
    next: DeliveryId,
    /// Payload bytes of `flights`.
    bytes: usize,
    /// Kept spans delivered, by the highest offset of the messages they came
    /// from, while that offset is not yet stored: if the partition is let go
    /// now, its next reader reads those messages again and delivers the
    /// spans a second time.
    ahead: BTreeMap<i64, u64>,
    /// Decision records in flight by when they are given up.
    give_up: BTreeSet<(Instant, DeliveryId)>,
    /// Records given up while still in the producer, with the decisions
    /// each holds: their late results are expected, not a bug.
    abandoned: HashMap<DeliveryId, usize>,
}

impl InFlightSet {
    pub fn id(&mut self) -> DeliveryId {
        self.next += 1;
        self.next
    }

    pub fn insert(&mut self, id: DeliveryId, flight: InFlight) {
        self.bytes += flight.message.payload.len();
        if let Some(at) = flight.give_up_at {
            self.give_up.insert((at, id));
        }
        self.flights.insert(id, flight);
    }

    pub fn remove(&mut self, id: DeliveryId) -> Option<InFlight> {
        let flight = self.flights.remove(&id)?;
        self.bytes -= flight.message.payload.len();
        if let Some(at) = flight.give_up_at {
            self.give_up.remove(&(at, id));
        }
        Some(flight)
    }

    /// The first instant a record in flight is to be given up at.
    pub fn next_give_up(&self) -> Option<Instant> {
        self.give_up.first().map(|(at, _)| *at)
    }

    /// Takes the records due to be given up at `now`; their results, when
    /// they come, are let go quietly.
    pub fn overdue(&mut self, now: Instant) -> Vec<InFlight> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.give_up.first() {
            if at > now {
                break;
            }
            if let Some(flight) = self.remove(id) {
                self.abandoned.insert(id, flight.decisions);
                out.push(flight);
            } else {
                self.give_up.remove(&(at, id));
            }
        }
        out
    }

    /// A result for produce `id`, given up earlier: forget it. The
    /// decisions it held, if it was.
    pub fn was_abandoned(&mut self, id: DeliveryId) -> Option<usize> {
        self.abandoned.remove(&id)
    }

    pub fn len(&self) -> usize {
        self.flights.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Kept spans from messages up to `last` were delivered.
    pub fn delivered(&mut self, last: i64, spans: u64) {
        *self.ahead.entry(last).or_default() += spans;
    }

    /// `next` is stored: delivered spans from messages before it will not be read again.
    pub fn committed(&mut self, next: i64) {
        self.ahead = self.ahead.split_off(&next);
    }

    /// Delivered spans whose messages the partition's next reader reads again.
    pub fn delivered_ahead(&self) -> u64 {
        self.ahead.values().sum()
    }
}

impl Partition {
    /// Delivers the kept spans of one trace, from messages at `offsets`
    /// (one pin each, held by the caller and released here once the
    /// messages that carry the spans pin them instead).
    pub(super) fn deliver_kept(
        &mut self,
        id: TraceId,
        spans: &[SpanRecord],
        annotation: &Annotation,
        encoding: Encoding,
        offsets: Vec<i64>,
    ) {
        let limit = self.config.limits.of(Destination::Sampled);
        let split = otlp::encode_within(spans, annotation, encoding, limit);
        self.send_split(id, split, annotation, encoding, &offsets, limit);
        for o in offsets {
            self.release(o);
        }
    }

    /// Sends the messages of a split trace (each pinning `offsets`), and
    /// gives up on the spans too large for any.
    fn send_split(
        &mut self,
        id: TraceId,
        split: otlp::Split<'_>,
        annotation: &Annotation,
        encoding: Encoding,
        offsets: &[i64],
        limit: usize,
    ) {
        let key = trace_key(id);
        for m in split.messages {
            let message = Outgoing {
                destination: Destination::Sampled,
                key: Some(key.clone()),
                payload: Bytes::from(m.payload),
                headers: Vec::new(),
            };
            self.pin_and_send(message, offsets, Some((id, m.spans)));
        }
        for span in split.oversized {
            let event = Event::SpanTooLarge {
                trace: id,
                span: span.span_id,
                bytes: span.encoded().len(),
                limit,
                copied: self.config.dead_letter,
            };
            self.events.emit(&self.telemetry, event, self.now);
            if self.config.dead_letter {
                let (payload, _) = otlp::encode_trace([span], annotation, encoding);
                let message = self.output_dead_letter(
                    id,
                    offsets,
                    Bytes::from(payload),
                    SPAN_TOO_LARGE,
                    format!(
                        "span of {} bytes; output messages are limited to {}",
                        span.encoded().len(),
                        limit
                    ),
                );
                self.pin_and_send(message, offsets, None);
            }
        }
    }

    /// Sends `message`, pinning `offsets` until it is acknowledged or given
    /// up; `kept`: the trace whose kept spans it carries, and how many.
    pub(super) fn pin_and_send(
        &mut self,
        message: Outgoing,
        offsets: &[i64],
        kept: Option<(TraceId, usize)>,
    ) {
        self.pin_and_send_until(message, offsets, kept, None);
    }

    /// As [`Partition::pin_and_send`], given up at `give_up_at` if still not
    /// acknowledged then.
    pub(super) fn pin_and_send_until(
        &mut self,
        message: Outgoing,
        offsets: &[i64],
        kept: Option<(TraceId, usize)>,
        give_up_at: Option<Instant>,
    ) {
        for o in offsets {
            self.watermark.pin(*o, 1);
        }
        self.send(InFlight {
            message,
            offsets: offsets.to_vec(),
            spans: kept.map_or(0, |(_, n)| n),
            decisions: 0,
            trace: kept.map(|(t, _)| t),
            attempt: 0,
            give_up_at,
        });
    }

    /// Decision records not acknowledged within `kafka.decision_log_timeout`
    /// are given up: the decision stands, the offsets they pinned are
    /// released, each is counted as unlogged, and the partition logs no
    /// decision for as long again — the input is never held for the log,
    /// whose loss only costs late spans (read back by a later owner) their
    /// decision.
    pub(super) fn give_up_overdue_records(&mut self, now: Instant) {
        let overdue = self.in_flight.overdue(now);
        if overdue.is_empty() {
            return;
        }
        let n = overdue.iter().map(|f| f.decisions as u64).sum();
        self.unlogged += n;
        self.log_paused_until = Some(now + self.config.decision_log_timeout);
        let event = Event::RecordsGivenUp {
            n,
            timeout: self.config.decision_log_timeout,
        };
        self.events.emit(&self.telemetry, event, Some(now));
        for flight in overdue {
            for o in flight.offsets {
                self.release(o);
            }
        }
    }

    /// Copies a malformed message, unchanged, to the dead-letter topic; its
    /// offset is held until the copy is acknowledged.
    pub(super) fn dead_letter_input(
        &mut self,
        offset: i64,
        key: Option<Bytes>,
        payload: Bytes,
        e: &otlp::DecodeError,
    ) {
        let message = Outgoing {
            destination: Destination::DeadLetter(DeadLetterOf::Input),
            key,
            payload,
            headers: vec![
                (DLQ_REASON_HEADER, e.kind.as_str().to_string()),
                (DLQ_DETAIL_HEADER, e.detail.clone()),
                (DLQ_PARTITION_HEADER, self.partition.to_string()),
                (DLQ_OFFSET_HEADER, offset.to_string()),
            ],
        };
        self.pin_and_send(message, &[offset], None);
    }

    /// The dead-letter copy of kept spans that cannot reach the output.
    fn output_dead_letter(
        &self,
        id: TraceId,
        offsets: &[i64],
        payload: Bytes,
        reason: &str,
        detail: String,
    ) -> Outgoing {
        let lowest = offsets.iter().min().copied().unwrap_or(-1);
        Outgoing {
            destination: Destination::DeadLetter(DeadLetterOf::Output),
            key: Some(trace_key(id)),
            payload,
            headers: vec![
                (DLQ_REASON_HEADER, reason.to_string()),
                (DLQ_DETAIL_HEADER, detail.chars().take(200).collect()),
                (DLQ_PARTITION_HEADER, self.partition.to_string()),
                (DLQ_OFFSET_HEADER, lowest.to_string()),
                (DLQ_TRACE_HEADER, id.to_hex()),
            ],
        }
    }

    /// Hands a message to the producer — or in exactly-once mode holds it
    /// for the transaction.
    pub(super) fn send(&mut self, flight: InFlight) {
        let limit = self.config.limits.of(flight.message.destination);
        if flight.message.payload.len() > limit {
            // The producer or the topic would refuse it: no use trying, and
            // in exactly-once mode it would fail the transaction.
            let e = ProduceError::new(
                ProduceErrorKind::MessageTooLarge,
                format!(
                    "{} bytes, over the {limit}-byte limit of the {:?} topic",
                    flight.message.payload.len(),
                    flight.message.destination
                ),
            );
            let event = Event::ProduceFailed {
                destination: flight.message.destination,
                attempt: flight.attempt,
                error: &e,
            };
            self.events.emit(&self.telemetry, event, self.now);
            if flight.message.destination == Destination::Sampled && flight.spans > 1 {
                // Encoded before the limit was lowered: split it at the limit.
                return self.split(flight, &e, limit);
            }
            return self.given_up(flight, e);
        }
        if let Mode::ExactlyOnce { held } = &mut self.mode {
            held.hold(flight);
            return;
        }
        let id = self.in_flight.id();
        self.commands.push(Command::Send {
            id,
            message: flight.message.clone(),
            delay: backoff(flight.attempt),
        });
        self.in_flight.insert(id, flight);
    }

    /// The result of produce `id`.
    pub fn delivered(
        &mut self,
        id: DeliveryId,
        result: Result<(), ProduceError>,
        now: std::time::Instant,
    ) {
        self.now = Some(now);
        let Some(mut flight) = self.in_flight.remove(id) else {
            if let Some(decisions) = self.in_flight.was_abandoned(id) {
                // Given up already (its offsets released): written after all,
                // or not.
                if result.is_ok() {
                    self.telemetry.decisions_written.increment(decisions as u64);
                }
                return;
            }
            tracing::error!(
                partition = self.partition,
                id,
                "a delivery result for no produce in flight; this is a bug"
            );
            return;
        };
        let e = match result {
            Ok(()) => {
                match flight.message.destination {
                    Destination::Sampled => {
                        self.telemetry.produced_messages.increment(1);
                        self.telemetry.produced_spans.increment(flight.spans as u64);
                        if let Some(last) = flight.last_offset() {
                            self.in_flight.delivered(last, flight.spans as u64);
                        }
                    }
                    Destination::DeadLetter(of) => self.telemetry.dead_letter(of).increment(1),
                    Destination::Decisions(_) => self
                        .telemetry
                        .decisions_written
                        .increment(flight.decisions as u64),
                }
                return self.release_all(flight.offsets);
            }
            Err(e) => e,
        };
        let event = Event::ProduceFailed {
            destination: flight.message.destination,
            attempt: flight.attempt,
            error: &e,
        };
        self.events.emit(&self.telemetry, event, Some(now));
        if e.kind == ProduceErrorKind::Fatal {
            // The producer will never deliver it, and it must not be given
            // up either: it is dropped with its pins, so the watermark never
            // passes its offsets, and the process stops (it sees the
            // producer's fatal state) for a new producer to deliver it.
            return;
        }
        if !e.kind.permanent() {
            // Retried with backoff; the offsets it pins hold the watermark
            // until it is delivered.
            flight.attempt += 1;
            return self.send(flight);
        }
        self.given_up(flight, e);
    }

    /// A message no retry can deliver: count it, dead-letter what can be,
    /// release it. An output message refused as too large is split smaller
    /// first (the limit was learnt late, or the topic's was lowered).
    fn given_up(&mut self, flight: InFlight, e: ProduceError) {
        match flight.message.destination {
            Destination::Sampled
                if e.kind == ProduceErrorKind::MessageTooLarge && flight.spans > 1 =>
            {
                // A broker refused it: its limit is below this message, and
                // every worker splits below it from now on.
                let lower = (flight.message.payload.len() / 2).max(1);
                let was = self
                    .config
                    .limits
                    .output
                    .fetch_min(lower, Ordering::Relaxed);
                let event = Event::LimitLowered {
                    bytes: flight.message.payload.len(),
                    to: was.min(lower),
                    error: &e,
                };
                self.events.emit(&self.telemetry, event, self.now);
                return self.split(flight, &e, was.min(lower));
            }
            Destination::Sampled => {
                let copy = self.config.dead_letter;
                let event = Event::Undeliverable {
                    spans: flight.spans as u64,
                    error: &e,
                    copied: copy,
                };
                self.events.emit(&self.telemetry, event, self.now);
                if copy {
                    let message = self.output_dead_letter(
                        flight.trace.unwrap_or(TraceId([0; 16])),
                        &flight.offsets,
                        flight.message.payload,
                        e.kind.as_str(),
                        e.detail,
                    );
                    // The pins pass from the failed message to its copy.
                    return self.send(InFlight {
                        message,
                        offsets: flight.offsets,
                        spans: 0,
                        decisions: 0,
                        trace: None,
                        attempt: 0,
                        give_up_at: None,
                    });
                }
            }
            Destination::DeadLetter(_) => {
                let event = Event::DeadLetterRefused { error: &e };
                self.events.emit(&self.telemetry, event, self.now);
            }
            Destination::Decisions(_) => {
                let event = Event::RecordRefused {
                    n: flight.decisions as u64,
                    error: &e,
                };
                self.events.emit(&self.telemetry, event, self.now);
            }
        }
        self.release_all(flight.offsets);
    }

    /// Splits an output message too large to send into messages of at most
    /// `limit` bytes.
    fn split(&mut self, flight: InFlight, e: &ProduceError, limit: usize) {
        let Ok(decoded) = otlp::decode(flight.message.payload.clone()) else {
            // Our own output always decodes; if not, it is given up as it is.
            let event = Event::Undeliverable {
                spans: flight.spans as u64,
                error: e,
                copied: false,
            };
            self.events.emit(&self.telemetry, event, self.now);
            return self.release_all(flight.offsets);
        };
        let spans: Vec<SpanRecord> = decoded.spans.into_iter().map(|(_, s)| s).collect();
        // The spans carry their annotation already.
        let none = Annotation::none();
        let split = otlp::encode_within(&spans, &none, decoded.encoding, limit);
        let id = flight.trace.unwrap_or(TraceId([0; 16]));
        self.send_split(id, split, &none, decoded.encoding, &flight.offsets, limit);
        self.release_all(flight.offsets);
    }

    fn release_all(&mut self, offsets: Vec<i64>) {
        for o in offsets {
            self.release(o);
        }
    }
}
