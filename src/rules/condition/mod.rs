//! Conditions compiled from the rule language, evaluated against a trace, and
//! explained (`tailgate explain`).
//!
//! Compilation checks what serde cannot: that an operator fits the field's
//! type (`gt` on a duration, not on a service name), that durations carry a
//! unit, that span kinds and status codes exist, that regexes compile. Each
//! error names the field by its path within the rule.

use std::time::Duration;

use super::language::{Condition, CriticalPathCondition, SpanCondition, TraceCondition};
use super::TraceSummary;

mod span;
mod value;

use span::{span_match, SpanMatch};
pub(crate) use value::FieldError;
use value::{matcher, Field, Kind, Matcher};

/// A compiled condition.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    TraceError(bool),
    TraceDuration(Matcher),
    SpanCount(Matcher),
    HasRoot(bool),
    Root(SpanMatch),
    SomeSpan(SpanMatch),
    EverySpan(SpanMatch),
    CriticalPath(PathMatch),
}

/// Conditions on the critical path.
#[derive(Debug, Clone)]
pub(crate) struct PathMatch {
    select: SpanMatch,
    duration: Option<Matcher>,
    share: Option<Matcher>,
    total: Option<Matcher>,
}

/// Compiles a `when` condition; `path` is where it sits in the rule.
pub(crate) fn compile(c: &Condition, path: &str) -> Result<Cond, FieldError> {
    let at = |n: &str| format!("{path}.{n}");
    let mut all = Vec::new();
    for (name, list, any) in [("all", &c.all, false), ("any", &c.any, true)] {
        if let Some(list) = list {
            if list.is_empty() {
                return Err((at(name), "the list is empty".into()));
            }
            let cs = list
                .iter()
                .enumerate()
                .map(|(i, c)| compile(c, &format!("{}[{i}]", at(name))))
                .collect::<Result<Vec<_>, _>>()?;
            all.push(if any { Cond::Any(cs) } else { Cond::All(cs) });
        }
    }
    if let Some(n) = &c.not {
        all.push(Cond::Not(Box::new(compile(n, &at("not"))?)));
    }
    if let Some(t) = &c.trace {
        trace_conditions(t, &at("trace"), &mut all)?;
    }
    if let Some(r) = &c.root {
        all.push(Cond::Root(span_match(r, &at("root"))?));
    }
    if let Some(s) = &c.span {
        all.push(Cond::SomeSpan(span_match(s, &at("span"))?));
    }
    if let Some(s) = &c.every_span {
        all.push(Cond::EverySpan(span_match(s, &at("every_span"))?));
    }
    if let Some(p) = &c.critical_path {
        all.push(Cond::CriticalPath(path_match(p, &at("critical_path"))?));
    }
    Ok(match all.len() {
        1 => all.pop().expect("one condition"),
        _ => Cond::All(all),
    })
}

fn trace_conditions(t: &TraceCondition, path: &str, out: &mut Vec<Cond>) -> Result<(), FieldError> {
    let at = |n: &str| format!("{path}.{n}");
    if let Some(e) = t.error {
        out.push(Cond::TraceError(e));
    }
    if let Some(d) = &t.duration {
        out.push(Cond::TraceDuration(matcher(
            Kind::Duration,
            d,
            &at("duration"),
        )?));
    }
    if let Some(n) = &t.span_count {
        out.push(Cond::SpanCount(matcher(
            Kind::Number,
            n,
            &at("span_count"),
        )?));
    }
    if let Some(r) = t.has_root {
        out.push(Cond::HasRoot(r));
    }
    Ok(())
}

fn path_match(p: &CriticalPathCondition, path: &str) -> Result<PathMatch, FieldError> {
    let at = |n: &str| format!("{path}.{n}");
    let select = span_match(
        &SpanCondition {
            service: p.service.clone(),
            name: p.name.clone(),
            ..SpanCondition::default()
        },
        path,
    )?;
    let m = PathMatch {
        select,
        duration: p
            .duration
            .as_ref()
            .map(|d| matcher(Kind::Duration, d, &at("duration")))
            .transpose()?,
        share: p
            .share
            .as_ref()
            .map(|d| matcher(Kind::Share, d, &at("share")))
            .transpose()?,
        total: p
            .total
            .as_ref()
            .map(|d| matcher(Kind::Duration, d, &at("total")))
            .transpose()?,
    };
    if m.duration.is_none() && m.share.is_none() && m.total.is_none() {
        return Err((
            path.to_string(),
            "say what to measure: duration, share or total (e.g. `{ service: db, share: { gt: 50% } }`)".into(),
        ));
    }
    Ok(m)
}

/// One step of an explanation: what was tested, whether it held, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub text: String,
    pub ok: bool,
    pub children: Vec<Check>,
}

impl Check {
    fn leaf(text: String, ok: bool) -> Self {
        Self {
            text,
            ok,
            children: Vec::new(),
        }
    }
}

fn ms(ns: u64) -> String {
    humantime::format_duration(Duration::from_millis(ns / 1_000_000)).to_string()
}

impl PathMatch {
    /// (selected time, total) on the trace's critical path.
    fn measure(&self, t: &TraceSummary<'_>) -> (u64, u64) {
        let cp = t.critical_path();
        let selected = if self.select.is_empty() {
            cp.total_ns
        } else {
            cp.time_in(t.spans, |s| self.select.holds(s))
        };
        (selected, cp.total_ns)
    }

    fn holds(&self, t: &TraceSummary<'_>) -> bool {
        let (sel, total) = self.measure(t);
        if total == 0 {
            return false;
        }
        let share = sel as f64 / total as f64;
        self.duration
            .as_ref()
            .is_none_or(|m| m.matches(Field::Num(sel as f64)))
            && self
                .share
                .as_ref()
                .is_none_or(|m| m.matches(Field::Num(share)))
            && self
                .total
                .as_ref()
                .is_none_or(|m| m.matches(Field::Num(total as f64)))
    }
}

impl Cond {
    pub(crate) fn holds(&self, t: &TraceSummary<'_>) -> bool {
        match self {
            Cond::All(cs) => cs.iter().all(|c| c.holds(t)),
            Cond::Any(cs) => cs.iter().any(|c| c.holds(t)),
            Cond::Not(c) => !c.holds(t),
            Cond::TraceError(e) => t.error == *e,
            Cond::TraceDuration(m) => m.matches(Field::Num(t.duration.as_nanos() as f64)),
            Cond::SpanCount(m) => m.matches(Field::Num(t.span_count as f64)),
            Cond::HasRoot(r) => t.root.is_some() == *r,
            Cond::Root(m) => t.root.is_some_and(|r| m.holds(r)),
            Cond::SomeSpan(m) => t.spans.iter().any(|s| m.holds(s)),
            Cond::EverySpan(m) => t.spans.iter().all(|s| m.holds(s)),
            Cond::CriticalPath(p) => p.holds(t),
        }
    }

    /// Evaluates the condition and says why it holds or not.
    pub(crate) fn explain(&self, t: &TraceSummary<'_>) -> Check {
        let ok = self.holds(t);
        match self {
            Cond::All(cs) => Check {
                text: "all of".into(),
                ok,
                children: cs.iter().map(|c| c.explain(t)).collect(),
            },
            Cond::Any(cs) => Check {
                text: "any of".into(),
                ok,
                children: cs.iter().map(|c| c.explain(t)).collect(),
            },
            Cond::Not(c) => Check {
                text: "not".into(),
                ok,
                children: vec![c.explain(t)],
            },
            Cond::TraceError(e) => Check::leaf(
                format!(
                    "trace has an error: {} (wanted {e})",
                    if t.error { "yes" } else { "no" }
                ),
                ok,
            ),
            Cond::TraceDuration(m) => Check::leaf(
                format!(
                    "trace duration {} {}",
                    m.show(Field::Num(t.duration.as_nanos() as f64)),
                    m.describe()
                ),
                ok,
            ),
            Cond::SpanCount(m) => {
                Check::leaf(format!("span count {} {}", t.span_count, m.describe()), ok)
            }
            Cond::HasRoot(r) => Check::leaf(
                format!(
                    "root span arrived: {} (wanted {r})",
                    if t.root.is_some() { "yes" } else { "no" }
                ),
                ok,
            ),
            Cond::Root(m) => Check::leaf(
                match t.root {
                    Some(r) => format!("root span: {} ({})", m.describe(), m.show_values(r)),
                    None => format!("root span: {} (no root span)", m.describe()),
                },
                ok,
            ),
            Cond::SomeSpan(m) => Check::leaf(
                match t.spans.iter().find(|s| m.holds(s)) {
                    Some(s) => format!(
                        "some span: {} (span {:?} in {})",
                        m.describe(),
                        s.name(),
                        s.service()
                    ),
                    None => format!(
                        "some span: {} (none of {} spans)",
                        m.describe(),
                        t.spans.len()
                    ),
                },
                ok,
            ),
            Cond::EverySpan(m) => Check::leaf(
                match t.spans.iter().find(|s| !m.holds(s)) {
                    Some(s) => format!(
                        "every span: {} (span {:?} in {} has {})",
                        m.describe(),
                        s.name(),
                        s.service(),
                        m.show_values(s)
                    ),
                    None => format!("every span: {} (all {} do)", m.describe(), t.spans.len()),
                },
                ok,
            ),
            Cond::CriticalPath(p) => {
                let (sel, total) = p.measure(t);
                let what = if p.select.is_empty() {
                    "critical path".to_string()
                } else {
                    format!("critical path in spans with {}", p.select.describe())
                };
                let mut parts = Vec::new();
                if let Some(m) = &p.duration {
                    parts.push(format!("time {} {}", ms(sel), m.describe()));
                }
                if let Some(m) = &p.share {
                    let share = if total == 0 {
                        0.0
                    } else {
                        sel as f64 / total as f64
                    };
                    parts.push(format!("share {:.1}% {}", share * 100.0, m.describe()));
                }
                if let Some(m) = &p.total {
                    parts.push(format!("total {} {}", ms(total), m.describe()));
                }
                Check::leaf(format!("{what}: {}", parts.join(", ")), ok)
            }
        }
    }
}
