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
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;

use crate::buffer::{BufferConfig, ReadyTrace, TraceBuffer};
use crate::clock::Time;
use crate::otlp::{self, Annotation, Encoding, SpanRecord, TraceId};
use crate::rules::{Check, CriticalPath, RuleSet, TraceSummary};

/// One captured message.
#[derive(Debug, Clone)]
struct Captured {
    partition: i32,
    /// Milliseconds since the Unix epoch, if it has a timestamp.
    timestamp: Option<i64>,
    payload: Bytes,
}

/// Whole traces, each with its spans and encoding.
pub type Traces = Vec<(TraceId, Vec<SpanRecord>, Encoding)>;

/// Captured messages, in the order they were read.
#[derive(Default)]
pub struct Capture {
    captured: Vec<Captured>,
    pub messages: u64,
    pub bytes_in: u64,
}

impl Capture {
    /// Adds one message payload of `partition`, stamped `timestamp`
    /// (milliseconds since the Unix epoch) if it has one.
    pub fn add(&mut self, partition: i32, timestamp: Option<i64>, payload: Bytes) {
        self.messages += 1;
        self.bytes_in += payload.len() as u64;
        self.captured.push(Captured {
            partition,
            timestamp,
            payload,
        });
    }

    /// Reads an OTLP file: OTLP JSON (one `TracesData` object, or one per
    /// line as the Collector's file exporter writes), or one protobuf
    /// `TracesData`. Its messages have no timestamps.
    pub fn add_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let first = data.iter().find(|b| !b.is_ascii_whitespace()).copied();
        if first != Some(b'{') {
            self.add(0, None, Bytes::from(data));
            return Ok(());
        }
        // One JSON document (skimmed, not built), or one per line.
        let mut values =
            serde_json::Deserializer::from_slice(&data).into_iter::<serde::de::IgnoredAny>();
        let one = matches!(values.next(), Some(Ok(_)))
            && data[values.byte_offset()..]
                .iter()
                .all(u8::is_ascii_whitespace);
        if one {
            self.add(0, None, Bytes::from(data));
            return Ok(());
        }
        for line in data.split(|b| *b == b'\n') {
            if line.iter().any(|b| !b.is_ascii_whitespace()) {
                self.add(0, None, Bytes::copy_from_slice(line));
            }
        }
        Ok(())
    }

    /// Whole traces: every span of the capture grouped by trace id, in the
    /// order the traces ended (ties by trace id); and what was rejected, by
    /// reason.
    pub fn into_traces(self) -> (Traces, HashMap<&'static str, u64>) {
        let mut traces: HashMap<TraceId, (Vec<SpanRecord>, Encoding)> = HashMap::new();
        let mut rejected = HashMap::new();
        for m in self.captured {
            match otlp::decode(m.payload) {
                Ok(d) => {
                    for e in &d.rejected {
                        *rejected.entry(e.kind.as_str()).or_default() += 1;
                    }
                    for (id, span) in d.spans {
                        traces
                            .entry(id)
                            .or_insert_with(|| (Vec::new(), d.encoding))
                            .0
                            .push(span);
                    }
                }
                Err(e) => *rejected.entry(e.kind.as_str()).or_default() += 1,
            }
        }
        let mut out: Vec<_> = traces
            .into_iter()
            .map(|(id, (spans, enc))| (id, spans, enc))
            .collect();
        out.sort_by_key(|(id, spans, _)| (spans.iter().map(|s| s.end_ns).max(), *id));
        (out, rejected)
    }
}

/// What one rule did over the capture.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct RuleStats {
    pub rule: String,
    pub traces_kept: u64,
    pub traces_dropped: u64,
    pub spans_kept: u64,
    pub spans_dropped: u64,
    /// Bytes the kept traces take on the output topic (annotated, re-encoded).
    pub bytes_out: u64,
}

/// What the rules would have done with a capture.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub messages: u64,
    pub bytes_in: u64,
    pub traces: u64,
    pub spans: u64,
    pub rejected: u64,
    /// One entry per rule, in order, `unmatched` last.
    pub rules: Vec<RuleStats>,
    pub traces_kept: u64,
    pub spans_kept: u64,
    pub bytes_out: u64,
    /// 1 − bytes out / bytes in.
    pub reduction: f64,
    /// Traces decided in more than one part: spans of theirs arrived after
    /// the decision (on the stream clock) and followed it.
    pub split_traces: u64,
    /// Spans that followed their trace's earlier decision.
    pub late_spans: u64,
    /// Over the capture's stream time: its first message to its last.
    pub captured_seconds: f64,
    /// Output bytes per second at the captured rate.
    pub bytes_out_per_second: f64,
}

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

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "captured: {} messages, {}, {} traces, {} spans over {:.1} s ({} rejected)",
            self.messages,
            bytes(self.bytes_in as f64),
            self.traces,
            self.spans,
            self.captured_seconds,
            self.rejected
        )?;
        writeln!(f)?;
        let width = self
            .rules
            .iter()
            .map(|r| r.rule.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            f,
            "{:<width$}  {:>10} {:>10} {:>12} {:>12} {:>7} {:>12}",
            "rule", "kept", "dropped", "spans kept", "spans drop", "of all", "bytes out"
        )?;
        for r in &self.rules {
            writeln!(
                f,
                "{:<width$}  {:>10} {:>10} {:>12} {:>12} {:>7} {:>12}",
                r.rule,
                r.traces_kept,
                r.traces_dropped,
                r.spans_kept,
                r.spans_dropped,
                pct(r.traces_kept + r.traces_dropped, self.traces),
                bytes(r.bytes_out as f64)
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "kept {} of {} traces ({}), {} of {} spans ({})",
            self.traces_kept,
            self.traces,
            pct(self.traces_kept, self.traces),
            self.spans_kept,
            self.spans,
            pct(self.spans_kept, self.spans)
        )?;
        write!(
            f,
            "output {} of {} in: {:.1}% reduction",
            bytes(self.bytes_out as f64),
            bytes(self.bytes_in as f64),
            self.reduction * 100.0
        )?;
        if self.captured_seconds > 0.0 {
            write!(
                f,
                "; {}/s at the captured rate",
                bytes(self.bytes_out_per_second)
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "decided in more than one part: {} traces ({} spans came after their trace's decision and followed it)",
            self.split_traces, self.late_spans
        )
    }
}

fn render_check(out: &mut String, c: &Check, depth: usize) {
    let _ = writeln!(
        out,
        "{:indent$}{} {}",
        "",
        if c.ok { "✓" } else { "✗" },
        c.text,
        indent = 4 + depth * 2
    );
    for child in &c.children {
        render_check(out, child, depth + 1);
    }
}

fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

/// Explains the decision for one trace: its shape, its critical path, and
/// each rule tried.
pub fn explain(rules: &RuleSet, id: TraceId, spans: &[SpanRecord]) -> String {
    let mut out = String::new();
    let t = TraceSummary::of(id, spans);
    let _ = writeln!(
        out,
        "trace {id}: {} spans, {}, {}, {}",
        spans.len(),
        ms(t.duration.as_nanos() as u64),
        if t.error { "has an error" } else { "no error" },
        match t.root {
            Some(r) => format!("root {:?} in {}", r.name(), r.service()),
            None => "root span missing".into(),
        }
    );
    let cp = CriticalPath::of(spans);
    let _ = writeln!(out, "critical path ({}):", ms(cp.total_ns));
    for (i, ns) in cp.steps() {
        let s = &spans[i];
        let _ = writeln!(
            out,
            "    {:>6.1}%  {:>10}  {} {:?} ({})",
            if cp.total_ns == 0 {
                0.0
            } else {
                100.0 * ns as f64 / cp.total_ns as f64
            },
            ms(ns),
            s.service(),
            s.name(),
            s.kind_name()
        );
    }
    let e = rules.explain(&t, Duration::ZERO);
    let _ = writeln!(out, "rules:");
    for (name, check) in &e.rules {
        let _ = writeln!(
            out,
            "  {} {name}",
            if check.ok { "matched" } else { "skipped" }
        );
        render_check(&mut out, check, 0);
    }
    let name = &rules.names()[e.decision.rule];
    let _ = writeln!(
        out,
        "decision: {} by rule {name:?} ({}{})",
        if e.decision.keep { "KEEP" } else { "DROP" },
        e.sampler,
        if e.decision.sample_rate < 1.0 {
            format!(
                ", probability {}, adjusted count {:.3}",
                e.decision.sample_rate,
                1.0 / e.decision.sample_rate
            )
        } else {
            String::new()
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{encode, ShopWorkload};

    fn buffer() -> BufferConfig {
        BufferConfig {
            wait: Duration::from_secs(30),
            after_root: Duration::from_secs(5),
            max_trace_age: Duration::from_secs(300),
            max_bytes: 1 << 30,
        }
    }

    /// Issue 15: replay decides on the stream clock, as production does: a
    /// trace's part that came after its quiet period follows the decision
    /// on the rest, and is counted as a trace decided in more than one part.
    #[test]
    fn replay_decides_on_the_stream_clock_as_production_does() {
        use crate::workload::{build_trace, SpanSpec};
        let r = rules(
            "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: rest, sample: drop}]",
        );
        // A root in one message, an erring asynchronous hop in another,
        // stamped `gap_ms` later; on two partitions, interleaved with a
        // second trace whose messages come close together.
        let report = |gap_ms: i64| {
            let mut capture = Capture::default();
            let base = 1_767_225_600_000i64;
            for (p, n) in [(0, 1u8), (1, 2u8)] {
                let id = TraceId([n; 16]);
                let mut hop = SpanSpec::new("notifier", "orders process", Some(0), 50, 10);
                hop.error = true;
                let parts = build_trace(
                    id,
                    &[[1; 8], [2; 8]],
                    base as u64 * 1_000_000,
                    &[SpanSpec::new("gateway", "POST /checkout", None, 0, 40), hop],
                );
                let gap = if p == 0 { gap_ms } else { 100 };
                for (i, data) in parts.iter().enumerate() {
                    let payload = Bytes::from(prost::Message::encode_to_vec(data));
                    capture.add(p, Some(base + 40 + i as i64 * gap), payload);
                }
            }
            replay(&r, buffer(), capture, |_| {})
        };
        let whole = report(4_000);
        assert_eq!((whole.traces, whole.traces_kept), (2, 2));
        assert_eq!((whole.split_traces, whole.late_spans), (0, 0));
        // Six seconds after the root, past its 5 s quiet period: the root
        // alone was dropped, and the error followed the drop.
        let split = report(6_000);
        assert_eq!((split.traces, split.traces_kept), (2, 1));
        assert_eq!((split.split_traces, split.late_spans), (1, 1));
        assert_eq!(split.rules[1].spans_dropped, 2, "{split:?}");
        assert!(split.to_string().contains("more than one part: 1 traces"));
    }

    fn rules(yaml: &str) -> RuleSet {
        let specs: Vec<crate::rules::RuleSpec> = serde_yaml::from_str(yaml).expect("yaml");
        RuleSet::compile(&specs).expect("rules")
    }

    /// Replay agrees with deciding each generated trace directly.
    #[test]
    fn replay_counts_match_direct_decisions() {
        let r = rules(
            "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: slow, when: {trace: {duration: {gt: 2s}}}, sample: keep}, {name: baseline, sample: {rate: 0.1}}]",
        );
        let mut w = ShopWorkload::new(5);
        let mut capture = Capture::default();
        let mut expected = HashMap::<usize, (u64, u64)>::new();
        for i in 0..500u64 {
            let t = w.next_trace(1_760_000_000_000_000_000 + i * 10_000_000);
            let mut spans = Vec::new();
            for m in &t.messages {
                let bytes = Bytes::from(encode(m, Encoding::OtlpProto));
                spans.extend(otlp::decode(bytes.clone()).expect("decodes").spans);
                capture.add(0, None, bytes);
            }
            let spans: Vec<SpanRecord> = spans.into_iter().map(|(_, s)| s).collect();
            let d = r.decide(&TraceSummary::of(t.truth.trace_id, &spans), Duration::ZERO);
            let e = expected.entry(d.rule).or_default();
            if d.keep {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        capture.add(0, None, Bytes::from_static(b"garbage"));
        let mut seen = 0;
        let report = replay(&r, buffer(), capture, |n| seen = n);
        assert_eq!(seen, report.messages);
        assert_eq!(
            (report.traces, report.spans, report.rejected),
            (500, 3_500, 1)
        );
        assert_eq!(report.split_traces, 0, "each trace's spans came in time");
        for (i, s) in report.rules.iter().enumerate() {
            let (k, d) = expected.get(&i).copied().unwrap_or_default();
            assert_eq!((s.traces_kept, s.traces_dropped), (k, d), "rule {}", s.rule);
        }
        assert!(report.bytes_out > 0 && report.bytes_out < report.bytes_in);
        assert!(
            (report.reduction - (1.0 - report.bytes_out as f64 / report.bytes_in as f64)).abs()
                < 1e-12
        );
        let text = report.to_string();
        assert!(
            text.contains("errors") && text.contains("reduction"),
            "{text}"
        );
    }

    #[test]
    fn files_in_json_lines_json_and_protobuf_are_read() {
        let dir = tempfile::tempdir().expect("dir");
        let mut w = ShopWorkload::new(1);
        let a = w.next_trace(1_000);
        let b = w.next_trace(2_000);
        let lines: Vec<u8> = a
            .messages
            .iter()
            .flat_map(|m| {
                let mut l = encode(m, Encoding::OtlpJson);
                l.push(b'\n');
                l
            })
            .collect();
        std::fs::write(dir.path().join("a.jsonl"), lines).expect("write");
        std::fs::write(
            dir.path().join("b0.json"),
            encode(&b.messages[0], Encoding::OtlpJson),
        )
        .expect("write");
        std::fs::write(
            dir.path().join("b1.pb"),
            encode(&b.messages[1], Encoding::OtlpProto),
        )
        .expect("write");
        let mut c = Capture::default();
        for f in ["a.jsonl", "b0.json", "b1.pb"] {
            c.add_file(&dir.path().join(f)).expect("read");
        }
        assert_eq!(c.messages, a.messages.len() as u64 + 2);
        assert!(c.add_file(&dir.path().join("missing.json")).is_err());
        let (traces, rejected) = c.into_traces();
        assert_eq!(traces.len(), 2);
        assert!(rejected.is_empty(), "{rejected:?}");
    }

    #[test]
    fn explain_prints_path_rules_and_decision() {
        let r = rules(
            "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: fraud, when: {critical_path: {service: fraud-detection, share: {gt: 0.3}}}, sample: keep}, {name: rest, sample: drop}]",
        );
        let mut w = ShopWorkload::new(3);
        let t = w.next_trace(0);
        let spans: Vec<SpanRecord> = t
            .messages
            .iter()
            .flat_map(|m| {
                otlp::decode(Bytes::from(encode(m, Encoding::OtlpProto)))
                    .expect("ok")
                    .spans
            })
            .map(|(_, s)| s)
            .collect();
        let text = explain(&r, t.truth.trace_id, &spans);
        assert!(text.contains("critical path ("), "{text}");
        assert!(
            text.contains("skipped errors") || text.contains("matched errors"),
            "{text}"
        );
        assert!(text.contains("decision: "), "{text}");
        let d = r.decide(&TraceSummary::of(t.truth.trace_id, &spans), Duration::ZERO);
        assert!(
            text.contains(&format!("by rule {:?}", &*r.names()[d.rule])),
            "{text}"
        );
    }
}
