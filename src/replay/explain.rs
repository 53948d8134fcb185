//! `tailgate explain`: one trace's shape, its critical path, and each rule
//! tried on it — as text ([`explain`]) or in parts ([`Explained`], what
//! `tailgate why --json` prints).

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::otlp::counting::Counted;
use crate::otlp::{SpanRecord, TraceId};
use crate::rules::path_summary::PathDigest;
use crate::rules::{Check, CriticalPath, PathSummary, RuleSet, TraceSummary};

/// One trace explained, in parts. The field names are stable: `tailgate why
/// --json` prints them (docs/output.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explained {
    /// 32 lowercase hex characters.
    pub trace_id: String,
    /// Spans looked at.
    pub spans: usize,
    /// From the earliest start to the latest end, in nanoseconds.
    pub duration_ns: u64,
    /// Whether a span has an error status.
    pub error: bool,
    /// The root span, if it is among the spans.
    pub root: Option<SpanName>,
    /// The chain of spans that determined when the trace ended.
    pub critical_path: PathParts,
    /// Each rule tried, in order, ending with the one that matched (none
    /// matched if the last is not `matched`).
    pub rules: Vec<RuleTried>,
    /// What the rules decide.
    pub decision: Verdict,
}

/// A span, by service and name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanName {
    pub service: String,
    pub name: String,
}

/// The critical path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathParts {
    pub total_ns: u64,
    /// Each span on the path once, in the order the path reaches it.
    pub steps: Vec<PathStep>,
    /// The summary a kept trace carries (`tailgate.critical_path.*`):
    /// `service`, `share`, `duration_ms`, `span`, `services`; absent for a
    /// trace without spans.
    #[serde(flatten)]
    pub summary: Option<PathDigest>,
}

/// One span on the critical path, with its time on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathStep {
    pub service: String,
    pub name: String,
    /// The span's kind: `server`, `client`, `internal`, ...
    pub kind: String,
    /// Its time on the path.
    pub ns: u64,
    /// That time's share of the path, 0 to 1.
    pub share: f64,
}

/// One rule tried, and why it matched or not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleTried {
    pub name: String,
    pub matched: bool,
    /// Its condition checked against the trace.
    pub check: CheckPart,
}

/// A condition checked: what it says, whether it holds, and its parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckPart {
    pub text: String,
    pub ok: bool,
    pub children: Vec<CheckPart>,
}

impl From<&Check> for CheckPart {
    fn from(c: &Check) -> Self {
        Self {
            text: c.text.clone(),
            ok: c.ok,
            children: c.children.iter().map(Self::from).collect(),
        }
    }
}

/// What the rules decide of a trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub keep: bool,
    /// The deciding rule (`unmatched` when none matched).
    pub rule: String,
    /// The deciding rule's sampler, as written (`keep`, `rate 0.1`, ...).
    pub sampler: String,
    /// The probability with which the deciding rule keeps a trace like
    /// this (`null` for `limit`, which is not a probability sampler).
    pub probability: Option<f64>,
    /// The sampling threshold the trace came with: `ot=th:` in the
    /// `tracestate` of its root (else its first span), as written there.
    pub incoming_threshold: Option<String>,
    /// The threshold its kept spans leave with (`null`: none, or erased).
    pub outgoing_threshold: Option<String>,
    /// How many traces a kept one stands for, head sampling included: 1 /
    /// the probability of every stage (`null` when that is not known).
    pub adjusted_count: Option<f64>,
    /// Why the incoming threshold was erased (`malformed`, `inconsistent`).
    pub erased: Option<&'static str>,
}

/// Explains one trace in parts: its shape, its critical path, each rule
/// tried, the decision.
pub fn explained(rules: &RuleSet, id: TraceId, spans: &[SpanRecord]) -> Explained {
    let t = TraceSummary::of(id, spans);
    let cp = CriticalPath::of(spans);
    let e = rules.explain(&t, Duration::ZERO);
    // What the pipeline writes on the trace's root, worked out as it does.
    let rule = &rules.names()[e.decision.rule];
    let counted = Counted::of(spans, &id, &t.sampling, e.decision.stage, rule, None);
    let out = counted.of_root(spans);
    Explained {
        trace_id: id.to_hex(),
        spans: spans.len(),
        duration_ns: t.duration.as_nanos() as u64,
        error: t.error,
        root: t.root.map(|r| SpanName {
            service: r.service().into_owned(),
            name: r.name().into_owned(),
        }),
        critical_path: PathParts {
            total_ns: cp.total_ns,
            steps: cp
                .steps()
                .into_iter()
                .map(|(i, ns)| PathStep {
                    service: spans[i].service().into_owned(),
                    name: spans[i].name().into_owned(),
                    kind: spans[i].kind_name().to_string(),
                    ns,
                    share: if cp.total_ns == 0 {
                        0.0
                    } else {
                        ns as f64 / cp.total_ns as f64
                    },
                })
                .collect(),
            summary: PathSummary::of(&cp, spans).map(|p| p.digest(spans)),
        },
        rules: e
            .rules
            .iter()
            .map(|(name, check)| RuleTried {
                name: name.to_string(),
                matched: check.ok,
                check: check.into(),
            })
            .collect(),
        decision: Verdict {
            keep: e.decision.keep,
            rule: rules.names()[e.decision.rule].to_string(),
            sampler: e.sampler,
            probability: e.decision.stage.probability(),
            incoming_threshold: t.sampling.threshold.map(|t| t.encode()),
            outgoing_threshold: out.and_then(|o| o.threshold).map(|t| t.encode()),
            adjusted_count: out.and_then(|o| o.adjusted_count),
            erased: out.and_then(|o| o.erased).map(|why| why.as_str()),
        },
    }
}

/// Explains the decision for one trace: its shape, its critical path, and
/// each rule tried.
pub fn explain(rules: &RuleSet, id: TraceId, spans: &[SpanRecord]) -> String {
    explained(rules, id, spans).to_string()
}

fn render_check(f: &mut fmt::Formatter<'_>, c: &CheckPart, depth: usize) -> fmt::Result {
    writeln!(
        f,
        "{:indent$}{} {}",
        "",
        if c.ok { "✓" } else { "✗" },
        c.text,
        indent = 4 + depth * 2
    )?;
    for child in &c.children {
        render_check(f, child, depth + 1)?;
    }
    Ok(())
}

fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

/// The text `tailgate explain` prints.
impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "trace {}: {} spans, {}, {}, {}",
            self.trace_id,
            self.spans,
            ms(self.duration_ns),
            if self.error {
                "has an error"
            } else {
                "no error"
            },
            match &self.root {
                Some(r) => format!("root {:?} in {}", r.name, r.service),
                None => "root span missing".into(),
            }
        )?;
        let cp = &self.critical_path;
        writeln!(f, "critical path ({}):", ms(cp.total_ns))?;
        for s in &cp.steps {
            writeln!(
                f,
                "    {:>6.1}%  {:>10}  {} {:?} ({})",
                if cp.total_ns == 0 {
                    0.0
                } else {
                    100.0 * s.ns as f64 / cp.total_ns as f64
                },
                ms(s.ns),
                s.service,
                s.name,
                s.kind
            )?;
        }
        if let Some(d) = &cp.summary {
            writeln!(
                f,
                "  written on the trace: {} has {:.1}% of the path; the most time of its own: {:?}; along {}",
                d.service,
                100.0 * d.share,
                d.span,
                d.services.join(" → ")
            )?;
        }
        writeln!(f, "rules:")?;
        for r in &self.rules {
            writeln!(
                f,
                "  {} {}",
                if r.matched { "matched" } else { "skipped" },
                r.name
            )?;
            render_check(f, &r.check, 0)?;
        }
        let d = &self.decision;
        writeln!(
            f,
            "decision: {} by rule {:?} ({}{})",
            if d.keep { "KEEP" } else { "DROP" },
            d.rule,
            d.sampler,
            match d.probability {
                Some(p) if p < 1.0 => format!(", probability {p}"),
                _ => String::new(),
            }
        )?;
        if d.keep {
            let th = |t: &Option<String>| t.as_deref().map_or("none".into(), |t| format!("th:{t}"));
            writeln!(
                f,
                "counted as: threshold in {}, out {}{}; adjusted count {}",
                th(&d.incoming_threshold),
                th(&d.outgoing_threshold),
                d.erased.map_or(String::new(), |why| format!(
                    " (the incoming one erased: {why})"
                )),
                d.adjusted_count
                    .map_or("unknown".into(), |n| format!("{n:.3}")),
            )?;
        }
        Ok(())
    }
}

/// What replay decided of one trace, as `tailgate explain` prints it under
/// the rules' view of the whole trace: the decision a running tailgate
/// makes when the trace's deadline comes on its partition's stream clock,
/// and any late spans that followed it.
pub fn as_decided(outcomes: &[super::Outcome]) -> String {
    let mut out = String::from("as tailgate decides it, reading the input in order:");
    if outcomes.is_empty() {
        out.push_str(" not decided (no valid span)\n");
        return out;
    }
    out.push('\n');
    for o in outcomes {
        let verdict = if o.keep { "KEEP" } else { "DROP" };
        match o.reason {
            Some(reason) => out.push_str(&format!(
                "    {verdict} by rule {:?} over {} spans (partition {}, {})\n",
                &*o.rule,
                o.spans,
                o.partition,
                reason.as_str()
            )),
            None => out.push_str(&format!(
                "    then {} late spans followed it ({verdict} by rule {:?})\n",
                o.spans, &*o.rule
            )),
        }
    }
    out
}
