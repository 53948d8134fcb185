//! `tailgate explain`: one trace's shape, its critical path, and each rule
//! tried on it.

use std::fmt::Write as _;
use std::time::Duration;

use crate::otlp::{SpanRecord, TraceId};
use crate::rules::{Check, CriticalPath, RuleSet, TraceSummary};

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
