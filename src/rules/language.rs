//! What the user writes in `policies/<env>.yaml` under `rules:` (see
//! `docs/rules.md`). These types only carry what was written; `compile.rs`
//! checks meaning (types, operators, regexes, rates) and builds matchers.
//!
//! Every struct denies unknown fields, so a misspelt condition is an error
//! with a line and column rather than a rule that silently matches everything.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// One rule: a name, an optional condition, and what to do with a trace that
/// matches. Rules are evaluated in order and the first match decides.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name; the `rule` label of the metrics and the `tailgate.rule`
    /// attribute of every span the rule keeps.
    pub name: String,
    /// When the rule applies; absent means "every trace".
    #[serde(default)]
    pub when: Option<Condition>,
    /// What happens to a matching trace.
    pub sample: Sample,
}

/// A condition. Every key given must hold; `all`, `any` and `not` combine
/// conditions.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Every listed condition holds.
    #[serde(default)]
    pub all: Option<Vec<Condition>>,
    /// At least one listed condition holds.
    #[serde(default)]
    pub any: Option<Vec<Condition>>,
    /// The condition does not hold.
    #[serde(default)]
    pub not: Option<Box<Condition>>,
    /// The trace as a whole.
    #[serde(default)]
    pub trace: Option<TraceCondition>,
    /// The root span (a trace without a root never matches).
    #[serde(default)]
    pub root: Option<SpanCondition>,
    /// Some span matches all of these.
    #[serde(default)]
    pub span: Option<SpanCondition>,
    /// Every span matches all of these.
    #[serde(default)]
    pub every_span: Option<SpanCondition>,
    /// The critical path: the chain of spans that determined the trace's end.
    #[serde(default)]
    pub critical_path: Option<CriticalPathCondition>,
}

/// Conditions on the whole trace.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceCondition {
    /// `true`: some span has status ERROR; `false`: none has.
    #[serde(default)]
    pub error: Option<bool>,
    /// From the earliest span start to the latest span end.
    #[serde(default)]
    pub duration: Option<ValueSpec>,
    /// Number of spans.
    #[serde(default)]
    pub span_count: Option<ValueSpec>,
    /// `true`: the root span arrived; `false`: it did not.
    #[serde(default)]
    pub has_root: Option<bool>,
}

/// Conditions on one span; all given must hold for the same span.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanCondition {
    /// The resource's `service.name`.
    #[serde(default)]
    pub service: Option<ValueSpec>,
    /// The span name.
    #[serde(default)]
    pub name: Option<ValueSpec>,
    /// `internal`, `server`, `client`, `producer`, `consumer` or `unspecified`.
    #[serde(default)]
    pub kind: Option<ValueSpec>,
    /// `unset`, `ok` or `error`.
    #[serde(default)]
    pub status: Option<ValueSpec>,
    /// The span's own duration.
    #[serde(default)]
    pub duration: Option<ValueSpec>,
    /// Attributes looked up on the span, then its scope, then its resource.
    #[serde(default)]
    pub attribute: Option<BTreeMap<String, ValueSpec>>,
    /// Attributes of the span's resource only.
    #[serde(default)]
    pub resource: Option<BTreeMap<String, ValueSpec>>,
}

/// Conditions on the critical path. `service` and `name` select the part of
/// the path spent in matching spans; `duration` and `share` measure that part
/// (the whole path when nothing is selected); `total` is the whole path.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriticalPathCondition {
    #[serde(default)]
    pub service: Option<ValueSpec>,
    #[serde(default)]
    pub name: Option<ValueSpec>,
    /// Time on the path spent in the selected spans.
    #[serde(default)]
    pub duration: Option<ValueSpec>,
    /// That time as a fraction of the whole path, `0.5` or `"50%"`.
    #[serde(default)]
    pub share: Option<ValueSpec>,
    /// The whole path's length.
    #[serde(default)]
    pub total: Option<ValueSpec>,
}

/// A literal value in a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        i64::try_from(v)
            .map(Scalar::Int)
            .or(Ok(Scalar::Float(v as f64)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_string()))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// Operators on a value; all given must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operators {
    #[serde(default)]
    pub equals: Option<Scalar>,
    #[serde(default)]
    pub not_equals: Option<Scalar>,
    #[serde(default, rename = "in")]
    pub in_: Option<Vec<Scalar>>,
    #[serde(default)]
    pub not_in: Option<Vec<Scalar>>,
    /// `true`: the attribute is present; `false`: it is absent.
    #[serde(default)]
    pub exists: Option<bool>,
    /// A regular expression (RE2 syntax, linear time), matched anywhere in the
    /// value unless anchored with `^...$`.
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub gt: Option<Scalar>,
    #[serde(default)]
    pub gte: Option<Scalar>,
    #[serde(default)]
    pub lt: Option<Scalar>,
    #[serde(default)]
    pub lte: Option<Scalar>,
}

/// A test on one value: a literal (equals), a list (in), or operators.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueSpec {
    Is(Scalar),
    OneOf(Vec<Scalar>),
    Ops(Operators),
}

impl<'de> Deserialize<'de> for ValueSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ValueSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a value, a list of values, or operators such as `{ gt: 2s }`, `{ in: [a, b] }`, `{ regex: ... }`")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ValueSpec, E> {
                ScalarVisitor.visit_bool(v).map(ValueSpec::Is)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ValueSpec, E> {
                ScalarVisitor.visit_i64(v).map(ValueSpec::Is)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ValueSpec, E> {
                ScalarVisitor.visit_u64(v).map(ValueSpec::Is)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ValueSpec, E> {
                ScalarVisitor.visit_f64(v).map(ValueSpec::Is)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ValueSpec, E> {
                ScalarVisitor.visit_str(v).map(ValueSpec::Is)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ValueSpec, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<Scalar>()? {
                    out.push(v);
                }
                Ok(ValueSpec::OneOf(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ValueSpec, A::Error> {
                Operators::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(ValueSpec::Ops)
            }
        }
        d.deserialize_any(V)
    }
}

/// What a rule does with the traces it matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// Keep every matching trace.
    Keep,
    /// Drop every matching trace.
    Drop,
    /// Keep this fraction of matching traces, in (0, 1], chosen by trace id so
    /// that every instance and every restart makes the same choice.
    Rate(f64),
    /// Keep at most so many traces (or spans) per second, per instance.
    Limit(LimitSpec),
    /// A per-key rate aimed at a target throughput.
    Dynamic(DynamicSpec),
}

/// `{ limit: { traces_per_second: N } }` or `{ limit: { spans_per_second: N } }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    #[serde(default)]
    pub traces_per_second: Option<f64>,
    #[serde(default)]
    pub spans_per_second: Option<f64>,
}

const fn default_interval() -> Duration {
    Duration::from_secs(15)
}
const fn default_max_keys() -> usize {
    1000
}
const fn default_smoothing() -> f64 {
    0.5
}

/// `{ dynamic: { key: [...], target_per_second: N } }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicSpec {
    /// Fields whose values, read from the root span (or the first span when
    /// the root is missing), make the key: attribute names (span, then scope,
    /// then resource), or `span.name`, `span.kind`, `span.status`, `trace.error`.
    pub key: Vec<String>,
    /// Traces per second this rule aims to keep, per instance.
    pub target_per_second: f64,
    /// How often the per-key rates are recomputed.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Distinct keys tracked; further keys share one bucket.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Weight of the latest interval in the moving average, in (0, 1].
    #[serde(default = "default_smoothing")]
    pub smoothing: f64,
}

const SAMPLE_EXPECTED: &str =
    "`keep`, `drop`, `{ rate: <probability> }`, `{ limit: {...} }` or `{ dynamic: {...} }`";

impl<'de> Deserialize<'de> for Sample {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Sample;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(SAMPLE_EXPECTED)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Sample, E> {
                match v {
                    "keep" => Ok(Sample::Keep),
                    "drop" => Ok(Sample::Drop),
                    other => Err(E::custom(format!(
                        "unknown sampler `{other}`, expected {SAMPLE_EXPECTED}"
                    ))),
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Sample, A::Error> {
                use serde::de::Error;
                let Some(key) = map.next_key::<String>()? else {
                    return Err(A::Error::custom(format!(
                        "empty sampler, expected {SAMPLE_EXPECTED}"
                    )));
                };
                let sample = match key.as_str() {
                    "rate" => Sample::Rate(map.next_value::<RateValue>()?.0),
                    "limit" => Sample::Limit(map.next_value()?),
                    "dynamic" => Sample::Dynamic(map.next_value()?),
                    other => {
                        return Err(A::Error::custom(format!(
                            "unknown sampler `{other}`, expected {SAMPLE_EXPECTED}"
                        )))
                    }
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(A::Error::custom(format!(
                        "a rule has one sampler; `{extra}` follows `{key}`"
                    )));
                }
                Ok(sample)
            }
        }
        d.deserialize_any(V)
    }
}

/// A probability written as a number, or as a string holding one (what
/// environment variables and some layered sources produce).
struct RateValue(f64);

impl<'de> Deserialize<'de> for RateValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
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
