//! What the rules would have done with a capture, per rule, and as a
//! person reads it.

use serde::Serialize;

use crate::rules::path_summary::PathDigest;

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

/// One trace as decided when its deadline came (late spans that followed
/// it are in the totals, not here).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TraceRow {
    /// 32 lowercase hex characters.
    pub trace_id: String,
    pub keep: bool,
    pub rule: String,
    /// Why then: `wait`, `after_root`, `max_age`, `memory`.
    pub reason: &'static str,
    pub spans: usize,
    /// Its critical path summed up, as a kept trace carries it
    /// (`tailgate.critical_path.*`); `null` for a trace without spans.
    pub critical_path: Option<PathDigest>,
    /// Kept: the sampling threshold its root (else first) span came with,
    /// as `th` hex (`null`: none, or dropped).
    pub incoming_threshold: Option<String>,
    /// Kept: the threshold that span leaves with (`null`: none, or erased).
    pub outgoing_threshold: Option<String>,
    /// Kept: its adjusted count, head sampling included (`null` when not
    /// known: kept by `limit`, or an erased threshold).
    pub adjusted_count: Option<f64>,
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
    /// Each trace, in the order decided, with its critical path.
    pub decided: Vec<TraceRow>,
}

impl Report {
    /// The kept traces by the service that dominates their critical path,
    /// most first (then by name).
    pub fn dominant_in_kept(&self) -> Vec<(String, u64)> {
        let mut by: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        for t in self.decided.iter().filter(|t| t.keep) {
            if let Some(p) = &t.critical_path {
                *by.entry(p.service.as_str()).or_default() += 1;
            }
        }
        let mut out: Vec<(String, u64)> = by.into_iter().map(|(s, n)| (s.to_string(), n)).collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }
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
        )?;
        let dominant = self.dominant_in_kept();
        if !dominant.is_empty() {
            let cells: Vec<String> = dominant
                .iter()
                .map(|(service, n)| format!("{service} {n}"))
                .collect();
            writeln!(
                f,
                "kept traces by the service with the most time on their critical path: {}",
                cells.join(", ")
            )?;
        }
        Ok(())
    }
}
