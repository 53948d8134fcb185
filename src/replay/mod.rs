//! `tailgate replay` and `tailgate explain`: the rules run over captured
//! traffic, producing nothing.
//!
//! A capture is a sequence of Kafka messages (from OTLP files, or a range of
//! a topic read by [`crate::kafka::range`]). `replay` decides them as a
//! running tailgate would: each partition's messages in order, buffered and
//! decided at the deadlines of `decision.wait` and `decision.after_root` on
//! the partition's stream clock (its messages' timestamps, see
//! [`crate::clock`]; a file's lines have none, so each line is stamped with
//! the latest end of its spans, as the Collector's exporter would stamp it
//! soon after). Spans that arrive after their trace's decision follow it, as
//! in production, and the report counts such traces as decided in more than
//! one part. Partitions are merged by timestamp, and the `limit` and
//! `dynamic` samplers see stream time, so they see the traffic's recorded
//! rate. What replay leaves out: the memory budget (nothing is decided
//! early for memory) and `max_trace_age` (a wall-clock bound).
//!
//! `explain` looks at whole traces: every span of the capture with the
//! trace's id, whatever its arrival.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::buffer::{BufferConfig, ReadyTrace, TraceBuffer};
use crate::clock::Time;
use crate::otlp::{self, Annotation, TraceId};
use crate::rules::{RuleSet, TraceSummary};

mod capture;
mod explain;
mod report;

use capture::Captured;
pub use capture::{Capture, Traces};
pub use explain::{
    explain, explained, CheckPart, Explained, PathParts, PathStep, RuleTried, SpanName, Verdict,
};
pub use report::{Report, RuleStats};

/// A decision, for the trace's late spans.
struct Remembered {
    rule: usize,
    annotation: Option<Arc<Annotation>>,
    split: bool,
}

/// One partition's replay: its buffer and its stream clock.
struct Lane {
    buffer: TraceBuffer,
    /// The stream clock: the largest timestamp read (ms since the Unix epoch).
    clock: Option<i64>,
}

/// The replay of a whole capture.
struct Replayer<'a> {
    rules: &'a RuleSet,
    report: Report,
    decided: HashMap<TraceId, Remembered>,
    /// Where stream time 0 sits on the `Instant` line the buffers use.
    origin: Instant,
    /// The capture's first timestamp: stream time 0.
    first: Option<i64>,
    ready: Vec<ReadyTrace>,
}

impl Replayer<'_> {
    fn instant(&self, ms: i64) -> Instant {
        let since = ms.saturating_sub(self.first.unwrap_or(ms)).max(0);
        self.origin + Duration::from_millis(since as u64)
    }

    /// One message of `lane`: what its time makes due is decided, then its
    /// spans are buffered, or follow their trace's decision.
    fn message(&mut self, lane: &mut Lane, m: Captured) {
        let decoded = match otlp::decode(m.payload.clone()) {
            Ok(d) => d,
            Err(_) => {
                self.report.rejected += 1;
                return;
            }
        };
        self.report.rejected += decoded.rejected.len() as u64;
        self.report.spans += decoded.spans.len() as u64;
        // A file's line is stamped with the latest end of its spans.
        let stamp = m.timestamp.filter(|t| *t > 0).or_else(|| {
            decoded
                .spans
                .iter()
                .map(|(_, s)| (s.end_ns / 1_000_000) as i64)
                .max()
        });
        if let Some(t) = stamp {
            self.first.get_or_insert(t);
            lane.clock = Some(lane.clock.map_or(t, |c| c.max(t)));
        }
        let now = self.instant(lane.clock.unwrap_or(0));
        self.due(lane, now);
        for (id, group) in otlp::by_trace(decoded.spans) {
            if !lane.buffer.contains(&id) {
                if let Some(r) = self.decided.get_mut(&id) {
                    // Late: it follows the decision.
                    let n = group.len() as u64;
                    self.report.late_spans += n;
                    if !r.split {
                        r.split = true;
                        self.report.split_traces += 1;
                    }
                    let stats = &mut self.report.rules[r.rule];
                    match &r.annotation {
                        Some(a) => {
                            stats.spans_kept += n;
                            stats.bytes_out +=
                                otlp::encode_trace(&group, a, decoded.encoding).0.len() as u64;
                        }
                        None => stats.spans_dropped += n,
                    }
                    continue;
                }
            }
            let len = m.payload.len();
            lane.buffer.insert(id, group, 0, len, decoded.encoding, now);
        }
    }

    /// Decides what is due on `lane` at stream time `now`.
    fn due(&mut self, lane: &mut Lane, now: Instant) {
        let mut ready = std::mem::take(&mut self.ready);
        lane.buffer.pop_due(now, &mut ready);
        for t in ready.drain(..) {
            self.decide(t, now);
        }
        self.ready = ready;
    }

    fn decide(&mut self, t: ReadyTrace, now: Instant) {
        let summary = TraceSummary::of(t.trace_id, &t.spans);
        let d = self
            .rules
            .decide(&summary, now.saturating_duration_since(self.origin));
        let stats = &mut self.report.rules[d.rule];
        let n = t.spans.len() as u64;
        let annotation = d.keep.then(|| self.rules.annotation(&d));
        match &annotation {
            Some(a) => {
                stats.traces_kept += 1;
                stats.spans_kept += n;
                stats.bytes_out += otlp::encode_trace(&t.spans, a, t.encoding).0.len() as u64;
            }
            None => {
                stats.traces_dropped += 1;
                stats.spans_dropped += n;
            }
        }
        self.decided.insert(
            t.trace_id,
            Remembered {
                rule: d.rule,
                annotation,
                split: false,
            },
        );
    }
}

/// Decides the messages of `capture` as tailgate would, with `buffer`'s
/// `wait` and `after_root` on each partition's stream clock;
/// `progress` is told after each message.
pub fn replay(
    rules: &RuleSet,
    buffer: BufferConfig,
    capture: Capture,
    mut progress: impl FnMut(u64),
) -> Report {
    // Nothing is decided for memory or age: the capture's own times decide.
    let buffer = BufferConfig {
        max_bytes: usize::MAX,
        max_trace_age: Duration::from_secs(100 * 365 * 24 * 3600),
        ..buffer
    };
    let mut r = Replayer {
        rules,
        report: Report {
            messages: capture.messages,
            bytes_in: capture.bytes_in,
            rules: rules
                .names()
                .iter()
                .map(|n| RuleStats {
                    rule: n.to_string(),
                    ..RuleStats::default()
                })
                .collect(),
            ..Report::default()
        },
        decided: HashMap::new(),
        origin: Instant::now(),
        first: None,
        ready: Vec::new(),
    };
    // Each partition in its own order; partitions merged by timestamp.
    let mut by_partition: HashMap<i32, VecDeque<Captured>> = HashMap::new();
    for m in capture.captured {
        by_partition.entry(m.partition).or_default().push_back(m);
    }
    let mut lanes: Vec<(Lane, VecDeque<Captured>)> = by_partition
        .into_values()
        .map(|q| {
            (
                Lane {
                    buffer: TraceBuffer::new(buffer),
                    clock: None,
                },
                q,
            )
        })
        .collect();
    let mut done = 0u64;
    loop {
        let next = lanes
            .iter()
            .enumerate()
            .filter_map(|(i, (_, q))| q.front().map(|m| (m.timestamp.unwrap_or(i64::MIN), i)))
            .min();
        let Some((_, i)) = next else { break };
        let (lane, queue) = &mut lanes[i];
        if let Some(m) = queue.pop_front() {
            r.message(lane, m);
        }
        done += 1;
        progress(done);
    }
    // The end of the capture: every partition's clock runs on until all is decided.
    let mut last = r.first.unwrap_or(0);
    for (lane, _) in &mut lanes {
        last = last.max(lane.clock.unwrap_or(0));
        while let Some(d) = lane.buffer.next_deadline() {
            r.due(lane, d);
        }
        // (`max_trace_age` is out of reach, so nothing is left.)
        let far = Time::from(r.origin + Duration::from_secs(200 * 365 * 24 * 3600));
        let mut rest = Vec::new();
        lane.buffer.pop_due(far, &mut rest);
        for t in rest {
            r.decide(t, far.stream);
        }
    }
    let mut report = r.report;
    report.traces = r.decided.len() as u64;
    for s in &report.rules {
        report.traces_kept += s.traces_kept;
        report.spans_kept += s.spans_kept;
        report.bytes_out += s.bytes_out;
    }
    if report.bytes_in > 0 {
        report.reduction = 1.0 - report.bytes_out as f64 / report.bytes_in as f64;
    }
    report.captured_seconds = last.saturating_sub(r.first.unwrap_or(last)) as f64 / 1e3;
    if report.captured_seconds > 0.0 {
        report.bytes_out_per_second = report.bytes_out as f64 / report.captured_seconds;
    }
    report
}

#[cfg(test)]
mod tests;
