//! `tailgate replay` and `tailgate explain`: the rules run over captured
//! traffic, producing nothing.
//!
//! A capture is a set of Kafka message payloads (from OTLP files, or a range
//! of a topic read by [`crate::kafka::range`]). Spans are grouped into whole
//! traces over the entire capture, as if every trace had completed before its
//! deadline, and each trace is decided once. Traces are decided in the order
//! they ended, with their end time as the decision clock, so `limit` and
//! `dynamic` rules see the traffic's recorded rate.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;

use crate::otlp::{self, Encoding, SpanRecord, TraceId};
use crate::rules::{Check, CriticalPath, RuleSet, TraceSummary};

/// Traces assembled from captured messages.
#[derive(Default)]
pub struct Capture {
    traces: HashMap<TraceId, (Vec<SpanRecord>, Encoding)>,
    pub messages: u64,
    pub bytes_in: u64,
    pub spans: u64,
    /// Messages or spans rejected, by reason.
    pub rejected: HashMap<&'static str, u64>,
}

impl Capture {
    /// Adds one message payload.
    pub fn add(&mut self, payload: Bytes) {
        self.messages += 1;
        self.bytes_in += payload.len() as u64;
        match otlp::decode(payload) {
            Ok(d) => {
                for e in &d.rejected {
                    *self.rejected.entry(e.kind.as_str()).or_default() += 1;
                }
                self.spans += d.spans.len() as u64;
                for (id, span) in d.spans {
                    self.traces
                        .entry(id)
                        .or_insert_with(|| (Vec::new(), d.encoding))
                        .0
                        .push(span);
                }
            }
            Err(e) => *self.rejected.entry(e.kind.as_str()).or_default() += 1,
        }
    }

    /// Reads an OTLP file: OTLP JSON (one `TracesData` object, or one per
    /// line as the Collector's file exporter writes), or one protobuf
    /// `TracesData`.
    pub fn add_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let first = data.iter().find(|b| !b.is_ascii_whitespace()).copied();
        if first != Some(b'{') {
            self.add(Bytes::from(data));
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
            self.add(Bytes::from(data));
            return Ok(());
        }
        for line in data.split(|b| *b == b'\n') {
            if line.iter().any(|b| !b.is_ascii_whitespace()) {
                self.add(Bytes::copy_from_slice(line));
            }
        }
        Ok(())
    }

    pub fn trace_count(&self) -> usize {
        self.traces.len()
    }

    /// The traces, in the order they ended (ties by trace id).
    pub fn into_traces(self) -> Vec<(TraceId, Vec<SpanRecord>, Encoding)> {
        let mut out: Vec<_> = self
            .traces
            .into_iter()
            .map(|(id, (spans, enc))| (id, spans, enc))
            .collect();
        out.sort_by_key(|(id, spans, _)| (spans.iter().map(|s| s.end_ns).max(), *id));
        out
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
    /// Over the capture's time span: its first span start to its last span end.
    pub captured_seconds: f64,
    /// Output bytes per second at the captured rate.
    pub bytes_out_per_second: f64,
}

/// Decides every trace of `capture`; `progress` is told after each trace.
pub fn replay(rules: &RuleSet, capture: Capture, mut progress: impl FnMut(u64)) -> Report {
    let mut report = Report {
        messages: capture.messages,
        bytes_in: capture.bytes_in,
        spans: capture.spans,
        rejected: capture.rejected.values().sum(),
        rules: rules
            .names()
            .iter()
            .map(|n| RuleStats {
                rule: n.to_string(),
                ..RuleStats::default()
            })
            .collect(),
        ..Report::default()
    };
    let traces = capture.into_traces();
    report.traces = traces.len() as u64;
    let first_start = traces
        .iter()
        .flat_map(|(_, s, _)| s.iter().map(|s| s.start_ns))
        .min()
        .unwrap_or(0);
    let mut last_end = first_start;
    for (i, (id, spans, encoding)) in traces.iter().enumerate() {
        let end = spans.iter().map(|s| s.end_ns).max().unwrap_or(0);
        last_end = last_end.max(end);
        let t = TraceSummary::of(*id, spans);
        let d = rules.decide(&t, Duration::from_nanos(end.saturating_sub(first_start)));
        let stats = &mut report.rules[d.rule];
        let n = spans.len() as u64;
        if d.keep {
            let (bytes, _) = otlp::encode_trace(spans, &rules.annotation(&d), *encoding);
            stats.traces_kept += 1;
            stats.spans_kept += n;
            stats.bytes_out += bytes.len() as u64;
        } else {
            stats.traces_dropped += 1;
            stats.spans_dropped += n;
        }
        progress(i as u64 + 1);
    }
    for s in &report.rules {
        report.traces_kept += s.traces_kept;
        report.spans_kept += s.spans_kept;
        report.bytes_out += s.bytes_out;
    }
    if report.bytes_in > 0 {
        report.reduction = 1.0 - report.bytes_out as f64 / report.bytes_in as f64;
    }
    report.captured_seconds = last_end.saturating_sub(first_start) as f64 / 1e9;
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
        writeln!(f)
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
                capture.add(bytes);
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
        capture.add(Bytes::from_static(b"garbage"));
        let mut seen = 0;
        let report = replay(&r, capture, |n| seen = n);
        assert_eq!(seen, 500);
        assert_eq!(
            (report.traces, report.spans, report.rejected),
            (500, 3_500, 1)
        );
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
        assert_eq!(c.trace_count(), 2);
        assert!(c.rejected.is_empty(), "{:?}", c.rejected);
        assert!(c.add_file(&dir.path().join("missing.json")).is_err());
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
