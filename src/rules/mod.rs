//! The rule set: ordered rules, first match wins.
//!
//! Pure code: a [`TraceSummary`] in, a [`Decision`] out. No Kafka, no clock;
//! the same trace gets the same decision on any instance and after any restart.

pub mod language;
pub mod sampler;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::otlp::{Annotation, SpanRecord, TraceId};
use language::When;
pub use language::{RuleSpec, Sample};
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

/// What is known about a trace when it is decided.
#[derive(Debug, Clone, Copy)]
pub struct TraceSummary<'a> {
    pub trace_id: TraceId,
    pub span_count: usize,
    pub error: bool,
    /// Earliest span start to latest span end.
    pub duration: Duration,
    /// The root span, if it arrived.
    pub root: Option<&'a SpanRecord>,
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
            error |= s.error;
            if root.is_none() && s.is_root() {
                root = Some(s);
            }
        }
        Self {
            trace_id,
            span_count: spans.len(),
            error,
            duration: Duration::from_nanos(end.saturating_sub(start)),
            root,
        }
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
}

struct CompiledRule {
    when: When,
    action: Action,
}

/// Name of the implicit last rule: a trace that no rule matched is dropped.
pub const UNMATCHED: &str = "unmatched";

/// Compiled rules, ready to decide.
pub struct RuleSet {
    rules: Vec<CompiledRule>,
    /// Rule names, plus [`UNMATCHED`] last.
    names: Vec<Arc<str>>,
    /// Attributes added to spans kept by each rule.
    annotations: Vec<Annotation>,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("names", &self.names)
            .finish()
    }
}

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
            let when = spec.when.clone().unwrap_or_default();
            if let Some(d) = when.trace.as_ref().and_then(|t| t.duration.as_ref()) {
                if d.is_empty() {
                    return Err(fail(
                        i,
                        spec,
                        "when.trace.duration",
                        "give at least one bound: gt, gte, lt or lte".into(),
                    ));
                }
            }
            let (action, rate) = match spec.sample {
                Sample::Keep => (Action::Keep, 1.0),
                Sample::Drop => (Action::Drop, 1.0),
                Sample::Rate(p) => {
                    if !(p > 0.0 && p <= 1.0) {
                        return Err(fail(
                            i,
                            spec,
                            "sample.rate",
                            format!("{p} is outside (0, 1]; use `drop` to keep nothing"),
                        ));
                    }
                    (Action::Rate(RateSampler::new(p)), p)
                }
            };
            annotations.push(Annotation::new(&spec.name, 1.0 / rate));
            names.push(Arc::from(spec.name.as_str()));
            rules.push(CompiledRule { when, action });
        }
        names.push(Arc::from(UNMATCHED));
        annotations.push(Annotation::new(UNMATCHED, 1.0));
        Ok(Self {
            rules,
            names,
            annotations,
        })
    }

    /// Rule names in order, [`UNMATCHED`] last.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The attributes to add to spans kept by rule `index`.
    pub fn annotation(&self, index: usize) -> &Annotation {
        &self.annotations[index.min(self.annotations.len() - 1)]
    }

    /// Decides a trace: the first matching rule wins.
    pub fn decide(&self, t: &TraceSummary<'_>) -> Decision {
        for (i, rule) in self.rules.iter().enumerate() {
            if !matches(&rule.when, t) {
                continue;
            }
            return match &rule.action {
                Action::Keep => Decision {
                    keep: true,
                    rule: i,
                    sample_rate: 1.0,
                },
                Action::Drop => Decision {
                    keep: false,
                    rule: i,
                    sample_rate: 1.0,
                },
                Action::Rate(s) => Decision {
                    keep: s.keeps(&t.trace_id),
                    rule: i,
                    sample_rate: s.probability(),
                },
            };
        }
        Decision {
            keep: false,
            rule: self.rules.len(),
            sample_rate: 1.0,
        }
    }
}

fn matches(when: &When, t: &TraceSummary<'_>) -> bool {
    if let Some(tc) = &when.trace {
        if tc.error.is_some_and(|e| e != t.error) {
            return false;
        }
        if tc.duration.as_ref().is_some_and(|d| !d.matches(t.duration)) {
            return false;
        }
    }
    if let Some(rc) = &when.root {
        let Some(root) = t.root else { return false };
        if rc
            .service
            .as_ref()
            .is_some_and(|s| root.service() != s.as_str())
        {
            return false;
        }
        if rc.name.as_ref().is_some_and(|n| root.name() != n.as_str()) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests;
