//! The rule set: ordered rules, first match wins.
//!
//! Pure code: a [`TraceSummary`] in, a [`Decision`] out. No Kafka, no clock;
//! the same trace gets the same decision on any instance and after any restart.

pub mod condition;
pub mod critical_path;
pub mod dynamic;
pub mod language;
pub mod limit;
pub mod sampler;

use std::cell::OnceCell;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::otlp::{Annotation, SpanRecord, TraceId};
pub use condition::Check;
use condition::Cond;
pub use critical_path::CriticalPath;
use dynamic::{Dynamic, DynamicConfig};
pub use language::{RuleSpec, Sample};
use limit::{Limit, Per};
use sampler::RateSampler;

/// A rule that cannot be compiled, naming the rule and the field.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("rule {rule:?}: {field}: {message}")]
pub struct RuleError {
    /// The rule's name (or `#<index>` if it has none).
    pub rule: String,
    /// Index of the rule in the list.
    pub index: usize,
    /// Path of the offending field within the rule, e.g. `sample.rate`.
    pub field: String,
    pub message: String,
}

/// A trace being decided: its spans, what every rule asks about them, and
/// the critical path, computed only if a rule asks for it.
#[derive(Debug)]
pub struct TraceSummary<'a> {
    pub trace_id: TraceId,
    pub spans: &'a [SpanRecord],
    pub span_count: usize,
    pub error: bool,
    /// Earliest span start to latest span end.
    pub duration: Duration,
    /// The root span, if it arrived.
    pub root: Option<&'a SpanRecord>,
    critical_path: OnceCell<CriticalPath>,
}

impl<'a> TraceSummary<'a> {
    /// Summarises the spans of one trace.
    pub fn of(trace_id: TraceId, spans: &'a [SpanRecord]) -> Self {
        let mut start = u64::MAX;
        let mut end = 0u64;
        let mut error = false;
        let mut root = None;
        for s in spans {
            start = start.min(s.start_ns);
            end = end.max(s.end_ns);
            error |= s.error();
            if root.is_none() && s.is_root() {
                root = Some(s);
            }
        }
        Self {
            trace_id,
            spans,
            span_count: spans.len(),
            error,
            duration: Duration::from_nanos(end.saturating_sub(start)),
            root,
            critical_path: OnceCell::new(),
        }
    }

    /// The critical path (computed on first use).
    pub fn critical_path(&self) -> &CriticalPath {
        self.critical_path
            .get_or_init(|| CriticalPath::of(self.spans))
    }

    /// The span a `dynamic` key is read from: the root, else the first span.
    fn key_span(&self) -> Option<&'a SpanRecord> {
        self.root.or(self.spans.first())
    }
}

/// The outcome for one trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub keep: bool,
    /// Index of the deciding rule in [`RuleSet::names`]; the last index is the
    /// implicit `unmatched` rule that drops what no rule matched.
    pub rule: usize,
    /// Probability with which a trace like this is kept; the adjusted count of
    /// each kept span is its inverse.
    pub sample_rate: f64,
}

enum Action {
    Keep,
    Drop,
    Rate(RateSampler),
    Limit(Limit),
    Dynamic { sampler: Dynamic, key: Vec<String> },
}

struct CompiledRule {
    when: Option<Cond>,
    action: Action,
}

/// Name of the implicit last rule: a trace that no rule matched is dropped.
pub const UNMATCHED: &str = "unmatched";

/// Compiled rules, ready to decide. Shared by all partitions' workers; the
/// `limit` and `dynamic` samplers keep their per-instance state inside.
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    /// The rules as written, for comparing a reloaded file with these.
    specs: Vec<RuleSpec>,
    /// Rule names, plus [`UNMATCHED`] last.
    names: Vec<Arc<str>>,
    /// Attributes added to spans kept by each rule at its fixed rate.
    annotations: Vec<Arc<Annotation>>,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("names", &self.names)
            .finish()
    }
}

/// How a trace fared against each rule up to the one that decided it.
#[derive(Debug)]
pub struct Explanation {
    /// Rule name and the check of its condition, in order, ending with the
    /// deciding rule (absent if no rule matched).
    pub rules: Vec<(Arc<str>, Check)>,
    pub decision: Decision,
    /// The sampler of the deciding rule, as written.
    pub sampler: String,
}

/// Pseudo-fields a `dynamic` key may use besides attribute names.
pub const KEY_FIELDS: [&str; 4] = ["span.name", "span.kind", "span.status", "trace.error"];

impl RuleSet {
    /// Validates and compiles rules. Errors name the rule and the field.
    pub fn compile(specs: &[RuleSpec]) -> Result<Self, RuleError> {
        let fail = |index: usize, spec: &RuleSpec, field: &str, message: String| RuleError {
            rule: if spec.name.is_empty() {
                format!("#{}", index + 1)
            } else {
                spec.name.clone()
            },
            index,
            field: field.into(),
            message,
        };
        if specs.is_empty() {
            return Err(RuleError {
                rule: String::new(),
                index: 0,
                field: "rules".into(),
                message: "the rule list is empty; add at least one rule (e.g. `- name: all, sample: keep`)".into(),
            });
        }
        let mut rules = Vec::with_capacity(specs.len());
        let mut names: Vec<Arc<str>> = Vec::with_capacity(specs.len() + 1);
        let mut annotations = Vec::with_capacity(specs.len() + 1);
        for (i, spec) in specs.iter().enumerate() {
            if spec.name.trim().is_empty() {
                return Err(fail(
                    i,
                    spec,
                    "name",
                    "a rule needs a non-empty name".into(),
                ));
            }
            if spec.name == UNMATCHED {
                return Err(fail(
                    i,
                    spec,
                    "name",
                    format!("`{UNMATCHED}` is reserved for traces no rule matched"),
                ));
            }
            if names.iter().any(|n| **n == *spec.name) {
                return Err(fail(
                    i,
                    spec,
                    "name",
                    "two rules have this name; names must be unique".into(),
                ));
            }
            let when = spec
                .when
                .as_ref()
                .map(|c| condition::compile(c, "when"))
                .transpose()
                .map_err(|(field, message)| fail(i, spec, &field, message))?;
            let (action, rate) =
                action(&spec.sample).map_err(|(field, message)| fail(i, spec, &field, message))?;
            annotations.push(Arc::new(Annotation::new(&spec.name, 1.0 / rate)));
            names.push(Arc::from(spec.name.as_str()));
            rules.push(CompiledRule { when, action });
        }
        names.push(Arc::from(UNMATCHED));
        annotations.push(Arc::new(Annotation::new(UNMATCHED, 1.0)));
        Ok(Self {
            rules,
            specs: specs.to_vec(),
            names,
            annotations,
        })
    }

    /// The rules as written.
    pub fn specs(&self) -> &[RuleSpec] {
        &self.specs
    }

    /// Rule names in order, [`UNMATCHED`] last.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The attributes to add to the spans of a kept trace: the deciding rule
    /// and the adjusted count, 1 / the probability the trace was kept with.
    /// Shared for rules with a fixed rate; built per trace for `limit` and
    /// `dynamic`, whose rate varies.
    pub fn annotation(&self, d: &Decision) -> Arc<Annotation> {
        let i = d.rule.min(self.annotations.len() - 1);
        match self.rules.get(i).map(|r| &r.action) {
            Some(Action::Limit(_) | Action::Dynamic { .. }) => Arc::new(Annotation::new(
                &self.names[i],
                1.0 / d.sample_rate.max(f64::MIN_POSITIVE),
            )),
            _ => self.annotations[i].clone(),
        }
    }

    /// Decides a trace: the first matching rule wins. `now` is the decision
    /// clock (any monotonic origin), read only by `limit` and `dynamic`.
    pub fn decide(&self, t: &TraceSummary<'_>, now: Duration) -> Decision {
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.when.as_ref().is_none_or(|c| c.holds(t)) {
                return rule.action.decide(i, t, now);
            }
        }
        Decision {
            keep: false,
            rule: self.rules.len(),
            sample_rate: 1.0,
        }
    }

    /// Decides a trace and says why, rule by rule.
    pub fn explain(&self, t: &TraceSummary<'_>, now: Duration) -> Explanation {
        let mut rules = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let check = match &rule.when {
                Some(c) => c.explain(t),
                None => Check {
                    text: "no condition: every trace".into(),
                    ok: true,
                    children: Vec::new(),
                },
            };
            let matched = check.ok;
            rules.push((self.names[i].clone(), check));
            if matched {
                return Explanation {
                    rules,
                    decision: rule.action.decide(i, t, now),
                    sampler: describe_sample(&self.specs[i].sample),
                };
            }
        }
        Explanation {
            rules,
            decision: Decision {
                keep: false,
                rule: self.rules.len(),
                sample_rate: 1.0,
            },
            sampler: "drop (no rule matched)".into(),
        }
    }
}

fn describe_sample(s: &Sample) -> String {
    match s {
        Sample::Keep => "keep".into(),
        Sample::Drop => "drop".into(),
        Sample::Rate(p) => format!("rate {p}"),
        Sample::Limit(l) => match (l.traces_per_second, l.spans_per_second) {
            (Some(n), _) => format!("limit {n} traces per second; depends on the traffic around the trace"),
            (_, Some(n)) => format!("limit {n} spans per second; depends on the traffic around the trace"),
            _ => "limit".into(),
        },
        Sample::Dynamic(d) => format!(
            "dynamic by [{}], {} traces per second; the probability depends on the traffic around the trace",
            d.key.join(", "),
            d.target_per_second
        ),
    }
}

/// Compiles a sampler; returns it with the probability its annotation states
/// (1 for samplers whose probability varies per trace: theirs is computed then).
fn action(sample: &Sample) -> Result<(Action, f64), (String, String)> {
    let err = |f: &str, m: String| Err((f.to_string(), m));
    Ok(match sample {
        Sample::Keep => (Action::Keep, 1.0),
        Sample::Drop => (Action::Drop, 1.0),
        Sample::Rate(p) => {
            if !(*p > 0.0 && *p <= 1.0) {
                return err(
                    "sample.rate",
                    format!("{p} is outside (0, 1]; use `drop` to keep nothing"),
                );
            }
            (Action::Rate(RateSampler::new(*p)), *p)
        }
        Sample::Limit(l) => {
            let per = match (l.traces_per_second, l.spans_per_second) {
                (Some(n), None) => Per::Traces(n),
                (None, Some(n)) => Per::Spans(n),
                _ => {
                    return err(
                        "sample.limit",
                        "give exactly one of traces_per_second and spans_per_second".into(),
                    )
                }
            };
            let (Per::Traces(n) | Per::Spans(n)) = per;
            if !(n.is_finite() && n > 0.0) {
                return err("sample.limit", format!("{n} must be above zero"));
            }
            (Action::Limit(Limit::new(per)), 1.0)
        }
        Sample::Dynamic(d) => {
            if d.key.is_empty() || d.key.iter().any(|k| k.trim().is_empty()) {
                return err(
                    "sample.dynamic.key",
                    "list the fields that make the key, e.g. [service.name, http.route]".into(),
                );
            }
            if !(d.target_per_second.is_finite() && d.target_per_second > 0.0) {
                return err(
                    "sample.dynamic.target_per_second",
                    format!("{} must be above zero", d.target_per_second),
                );
            }
            if d.interval < Duration::from_secs(1) {
                return err("sample.dynamic.interval", "must be at least 1s".into());
            }
            if d.max_keys == 0 {
                return err("sample.dynamic.max_keys", "must be at least 1".into());
            }
            if !(d.smoothing > 0.0 && d.smoothing <= 1.0) {
                return err(
                    "sample.dynamic.smoothing",
                    format!("{} is outside (0, 1]", d.smoothing),
                );
            }
            (
                Action::Dynamic {
                    sampler: Dynamic::new(DynamicConfig {
                        target_per_second: d.target_per_second,
                        interval: d.interval,
                        max_keys: d.max_keys,
                        smoothing: d.smoothing,
                    }),
                    key: d.key.clone(),
                },
                1.0,
            )
        }
    })
}

/// The `dynamic` key of a trace: the values of `fields`, joined.
pub fn dynamic_key(t: &TraceSummary<'_>, fields: &[String]) -> String {
    let mut key = String::new();
    let span = t.key_span();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            key.push('\u{1f}');
        }
        match (f.as_str(), span) {
            ("trace.error", _) => key.push_str(if t.error { "true" } else { "false" }),
            (_, None) => {}
            ("span.name", Some(s)) => key.push_str(&s.name()),
            ("span.kind", Some(s)) => key.push_str(s.kind_name()),
            ("span.status", Some(s)) => key.push_str(s.status_name()),
            (attr, Some(s)) => match s.attribute(attr) {
                Some(crate::otlp::AttrValue::Str(v)) => key.push_str(v),
                Some(v) => key.push_str(&v.to_string()),
                None => {}
            },
        }
    }
    key
}

impl Action {
    fn decide(&self, rule: usize, t: &TraceSummary<'_>, now: Duration) -> Decision {
        let (keep, sample_rate) = match self {
            Action::Keep => (true, 1.0),
            Action::Drop => (false, 1.0),
            Action::Rate(s) => (s.keeps(&t.trace_id), s.probability()),
            Action::Limit(l) => l.decide(t.span_count, now),
            Action::Dynamic { sampler, key } => {
                let p = sampler.probability(&dynamic_key(t, key), now);
                (RateSampler::new(p).keeps(&t.trace_id), p)
            }
        };
        Decision {
            keep,
            rule,
            sample_rate,
        }
    }
}

#[cfg(test)]
mod tests;
