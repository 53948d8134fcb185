//! Decode and buffer: one input message's spans, grouped by trace, into the
//! buffer — or, for a trace already decided, after its decision.

use std::time::Instant;

use super::events::Event;
use super::telemetry::decision_label;
use super::{Command, InputMessage, Partition};
use crate::clock::Time;
use crate::metrics as m;
use crate::otlp::tracestate::Sampling;
use crate::otlp::{self, Encoding, SpanRecord, TraceId};

impl Partition {
    /// Decode: one message's spans, grouped by trace, into the buffer (or
    /// after their trace's earlier decision).
    pub fn handle(&mut self, msg: InputMessage, now: Instant) {
        self.now = Some(now);
        // Counted here, and in the metrics once per wake-up (`show`).
        self.read.messages += 1;
        let reading = self.clock.read(msg.timestamp, now);
        if let Some(clamp) = reading.clamp {
            self.telemetry.clamped[&clamp].increment(1);
        }
        let (now, own) = (reading.now, reading.own);
        // What the message's time makes due goes first, so its spans of
        // such a trace are late whether it came in this batch or the next:
        // decisions do not depend on how reads are batched.
        self.decide_due_at(now);
        self.watermark.track(msg.offset, 0);
        let original = msg.payload.clone();
        let decoded = match otlp::decode(msg.payload) {
            Ok(d) => d,
            Err(e) => {
                self.read.rejected += 1;
                self.events.emit(
                    &self.telemetry,
                    Event::BadInput {
                        offset: msg.offset,
                        error: &e,
                    },
                    self.now,
                );
                if self.config.dead_letter {
                    self.dead_letter_input(msg.offset, msg.key, original, &e);
                }
                return;
            }
        };
        self.read.rejected += decoded.rejected.len() as u64;
        self.read.spans += decoded.spans.len() as u64;
        for error in &decoded.rejected {
            let event = Event::BadInput {
                offset: msg.offset,
                error,
            };
            self.events.emit(&self.telemetry, event, self.now);
        }
        let traces = decoded.spans.iter().map(|(id, _)| id);
        if let Some(why) = otlp::keying::unkeyed(msg.key.as_deref(), traces) {
            let event = Event::Unkeyed {
                offset: msg.offset,
                why,
            };
            self.events.emit(&self.telemetry, event, self.now);
        }
        let encoding = decoded.encoding;
        for (id, group) in otlp::by_trace(decoded.spans) {
            self.buffer_spans(id, group, msg.offset, encoding, now, own);
        }
    }

    /// Buffer: the spans of one trace from one message, placed at `own` (the
    /// message's time: the clock's, or its own stamp if it is an outlier
    /// ahead of the clock); `now` is the partition's clock.
    fn buffer_spans(
        &mut self,
        id: TraceId,
        spans: Vec<SpanRecord>,
        offset: i64,
        encoding: Encoding,
        now: Time,
        own: Time,
    ) {
        // A trace whose buffer cannot take these spans is decided first;
        // they follow its decision.
        let incoming = spans.iter().map(|s| s.encoded().len()).sum();
        if let Some(full) = self.buffer.take_if_full(&id, incoming) {
            self.decide(full, now);
        }
        if !self.buffer.contains(&id) {
            // Late in the stream: the partition's clock, not the wall's, nor
            // the message's own stamp (which may be an outlier).
            if let Some(decided) = self.decisions.get(&id, self.clock.unix(now.stream)) {
                // A late span: follow the trace's decision.
                self.telemetry
                    .late(decided.keep, decided.from_log)
                    .increment(spans.len() as u64);
                metrics::counter!(m::SPANS_DECIDED, "rule" => decided.rule.to_string(), "decision" => decision_label(decided.keep))
                    .increment(spans.len() as u64);
                self.commands.push(Command::Followed {
                    trace_id: id,
                    keep: decided.keep,
                    rule: decided.rule.clone(),
                    spans: spans.len(),
                });
                if decided.keep {
                    // As its trace's kept spans did, from its own
                    // `tracestate` (the trace's is not remembered).
                    let mut spans = spans;
                    let trace = Sampling::default();
                    let annotation = self
                        .count(&mut spans, id, &trace, decided.stage, &decided.rule, &[])
                        .annotation;
                    self.watermark.pin(offset, 1);
                    self.deliver_kept(id, &spans, &annotation, encoding, vec![offset]);
                }
                return;
            }
        }
        self.watermark.pin(offset, 1);
        let evicted = self.buffer.insert(id, spans, offset, encoding, own);
        for t in evicted {
            self.decide(t, now);
        }
    }
}
