//! The rule set: ordered rules, first match wins.
//!
//! Pure code: a [`TraceSummary`] and the time in, a [`Decision`] out. No
//! Kafka, no reading of time. `keep`, `drop` and `rate` give the same trace
//! the same decision on any instance and after any restart; `limit` and
//! `dynamic` count rates per instance, in the stream time they are given.

mod action;
pub mod condition;
pub mod critical_path;
pub mod dynamic;
pub mod language;
pub mod limit;
pub mod path_summary;
pub mod sampler;

use std::cell::OnceCell;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::otlp::tracestate::{Randomness, Sampling, Stage};
use crate::otlp::{SpanRecord, TraceId};
use action::Sampler;
pub use condition::Check;
use condition::Cond;
pub use critical_path::CriticalPath;
pub use dynamic::dynamic_key;
pub use language::{RuleSpec, Sample};
pub use path_summary::PathSummary;

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
    /// What its spans' `tracestate` says about its sampling upstream: its
    /// root's (else its first span's), else the first span's that has a
    /// `th` or an `rv` ([`Sampling::of_trace`]).
    pub sampling: Sampling,
    /// The randomness the consistent samplers decide by: the explicit `rv`
    /// of that, else the trace id's low 56 bits.
    pub randomness: Randomness,
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
        let key = root.or(spans.first()).map_or(&[][..], |s| s.trace_state());
        let sampling = Sampling::of_trace(key, spans.iter().map(|s| s.trace_state()));
        Self {
            trace_id,
            spans,
            span_count: spans.len(),
            error,
            duration: Duration::from_nanos(end.saturating_sub(start)),
            root,
            sampling,
            randomness: sampling.randomness_of(&trace_id),
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
    /// What the deciding rule does to the threshold of the spans it keeps
    /// (their adjusted count follows from it and their incoming one).
    pub stage: Stage,
}

struct CompiledRule {
    when: Option<Cond>,
    sampler: Box<dyn Sampler>,
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
            let sampler = action::compile(&spec.sample)
                .map_err(|(field, message)| fail(i, spec, &field, message))?;
            names.push(Arc::from(spec.name.as_str()));
            rules.push(CompiledRule { when, sampler });
        }
        names.push(Arc::from(UNMATCHED));
        Ok(Self {
            rules,
            specs: specs.to_vec(),
            names,
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

    /// Decides a trace: the first matching rule wins. `now` is the decision
    /// clock (any monotonic origin), read only by `limit` and `dynamic`.
    pub fn decide(&self, t: &TraceSummary<'_>, now: Duration) -> Decision {
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.when.as_ref().is_none_or(|c| c.holds(t)) {
                return action::decide(&*rule.sampler, i, t, now);
            }
        }
        Decision {
            keep: false,
            rule: self.rules.len(),
            stage: Stage::Unchanged,
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
                    decision: action::decide(&*rule.sampler, i, t, now),
                    sampler: rule.sampler.describe(),
                };
            }
        }
        Explanation {
            rules,
            decision: Decision {
                keep: false,
                rule: self.rules.len(),
                stage: Stage::Unchanged,
            },
            sampler: "drop (no rule matched)".into(),
        }
    }
}

#[cfg(test)]
mod tests;
