//! What a rule does with a trace it matches: keep, drop, or sample (at a
//! fixed rate, within a limit, or dynamically by key), compiled and
//! described.

use std::time::Duration;

use super::dynamic::{Dynamic, DynamicConfig};
use super::language::Sample;
use super::limit::{Limit, Per};
use super::sampler::RateSampler;
use super::{Decision, TraceSummary};

/// A compiled sampler.
pub(super) enum Action {
    Keep,
    Drop,
    Rate(RateSampler),
    Limit(Limit),
    Dynamic { sampler: Dynamic, key: Vec<String> },
}

pub(super) fn describe_sample(s: &Sample) -> String {
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
pub(super) fn action(sample: &Sample) -> Result<(Action, f64), (String, String)> {
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
    pub(super) fn decide(&self, rule: usize, t: &TraceSummary<'_>, now: Duration) -> Decision {
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
