//! What a rule does with a trace it matches: its sampler. Every sampler of
//! the rule language is one line of [`SAMPLERS`] — its name, its form as
//! written, and how it is compiled from what follows its name — and one
//! type implementing [`Sampler`]. Adding a sampler touches only those two
//! (and the docs).

use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

use super::dynamic::{ByKey, Dynamic, DynamicConfig, DynamicSpec};
use super::limit::{Limit, LimitSpec, Per};
use super::sampler::RateSampler;
use super::{Decision, TraceSummary};
use crate::otlp::tracestate::Stage;

/// A compiled sampler: whether a matching trace is kept, and what it does
/// to the threshold of the spans it keeps (from which their adjusted count
/// follows).
pub(super) trait Sampler: Send + Sync {
    /// Decides one matching trace at `now` (stream time, read only by the
    /// samplers that count rates).
    fn decide(&self, t: &TraceSummary<'_>, now: Duration) -> (bool, Stage);
    /// As `explain` shows it.
    fn describe(&self) -> String;
}

/// Why a sampler cannot be compiled: the field (within the rule) and what
/// is wrong with it.
pub(super) type Invalid = (String, String);

/// A sampler compiled from its settings.
pub(super) type Compiled = Result<Box<dyn Sampler>, Invalid>;

/// One sampler of the rule language.
pub(super) struct Kind {
    /// Its name as written: `keep`, or the key of `{ rate: 0.1 }`.
    pub name: &'static str,
    /// How it is written, for the error that lists them.
    pub form: &'static str,
    /// Compiles it from what follows its name (`None` when it is written
    /// bare, as `keep` is).
    pub compile: fn(Option<&Value>) -> Compiled,
}

/// Every sampler of the rule language, in the order the docs list them.
pub(super) const SAMPLERS: &[Kind] = &[
    Kind {
        name: "keep",
        form: "`keep`",
        compile: |v| bare("keep", v).map(|()| Box::new(Fixed(true)) as Box<dyn Sampler>),
    },
    Kind {
        name: "drop",
        form: "`drop`",
        compile: |v| bare("drop", v).map(|()| Box::new(Fixed(false)) as Box<dyn Sampler>),
    },
    Kind {
        name: "rate",
        form: "`{ rate: <probability> }`",
        compile: rate,
    },
    Kind {
        name: "limit",
        form: "`{ limit: {...} }`",
        compile: limit,
    },
    Kind {
        name: "dynamic",
        form: "`{ dynamic: {...} }`",
        compile: dynamic,
    },
];

/// The samplers as the error that lists them writes them.
pub(super) fn expected() -> String {
    let forms: Vec<&str> = SAMPLERS.iter().map(|k| k.form).collect();
    match forms.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => forms.join(""),
    }
}

/// Compiles a rule's sampler.
pub(super) fn compile(sample: &super::Sample) -> Compiled {
    match SAMPLERS.iter().find(|k| k.name == sample.name) {
        Some(kind) => (kind.compile)(sample.settings.as_ref()),
        None => Err((
            "sample".into(),
            format!("unknown sampler `{}`, expected {}", sample.name, expected()),
        )),
    }
}

/// A sampler written bare takes no settings.
fn bare(name: &str, settings: Option<&Value>) -> Result<(), Invalid> {
    match settings {
        None => Ok(()),
        Some(_) => Err((
            format!("sample.{name}"),
            format!("`{name}` takes no settings: write `sample: {name}`"),
        )),
    }
}

/// The settings of a sampler written `{ name: settings }`, read as `T`.
fn settings<T: for<'de> Deserialize<'de>>(name: &str, v: Option<&Value>) -> Result<T, Invalid> {
    let field = format!("sample.{name}");
    let v = v.ok_or_else(|| (field.clone(), format!("write `{{ {name}: ... }}`")))?;
    T::deserialize(v.clone()).map_err(|e| (field, e.to_string()))
}

/// `keep` and `drop`.
struct Fixed(bool);

impl Sampler for Fixed {
    fn decide(&self, _t: &TraceSummary<'_>, _now: Duration) -> (bool, Stage) {
        (self.0, Stage::Unchanged)
    }

    fn describe(&self) -> String {
        if self.0 { "keep" } else { "drop" }.into()
    }
}

fn rate(v: Option<&Value>) -> Compiled {
    let p = settings::<RateValue>("rate", v)?.0;
    if !(p > 0.0 && p <= 1.0) {
        return Err((
            "sample.rate".into(),
            format!("{p} is outside (0, 1]; use `drop` to keep nothing"),
        ));
    }
    Ok(Box::new(RateSampler::new(p)))
}

fn limit(v: Option<&Value>) -> Compiled {
    let spec: LimitSpec = settings("limit", v)?;
    let per = match (spec.traces_per_second, spec.spans_per_second) {
        (Some(n), None) => Per::Traces(n),
        (None, Some(n)) => Per::Spans(n),
        _ => {
            return Err((
                "sample.limit".into(),
                "give exactly one of traces_per_second and spans_per_second".into(),
            ))
        }
    };
    let (Per::Traces(n) | Per::Spans(n)) = per;
    if !(n.is_finite() && n > 0.0) {
        return Err(("sample.limit".into(), format!("{n} must be above zero")));
    }
    Ok(Box::new(Limit::new(per)))
}

fn dynamic(v: Option<&Value>) -> Compiled {
    let d: DynamicSpec = settings("dynamic", v)?;
    let err = |f: &str, m: String| Err((f.to_string(), m));
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
    Ok(Box::new(ByKey {
        sampler: Dynamic::new(DynamicConfig {
            target_per_second: d.target_per_second,
            interval: d.interval,
            max_keys: d.max_keys,
            smoothing: d.smoothing,
        }),
        key: d.key,
    }))
}

/// Decides a trace by `sampler`, for rule `rule`.
pub(super) fn decide(
    sampler: &dyn Sampler,
    rule: usize,
    t: &TraceSummary<'_>,
    now: Duration,
) -> Decision {
    let (keep, stage) = sampler.decide(t, now);
    Decision { keep, rule, stage }
}

/// A probability written as a number, or as a string holding one (what
/// environment variables and some layered sources produce).
struct RateValue(f64);

impl<'de> Deserialize<'de> for RateValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, Visitor};
        struct V;
        impl Visitor<'_> for V {
            type Value = RateValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a probability in (0, 1]")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RateValue, E> {
                Ok(RateValue(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RateValue, E> {
                Ok(RateValue(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RateValue, E> {
                Ok(RateValue(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RateValue, E> {
                v.trim()
                    .parse()
                    .map(RateValue)
                    .map_err(|_| E::custom(format!("rate `{v}` is not a number")))
            }
        }
        d.deserialize_any(V)
    }
}
