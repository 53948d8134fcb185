//! What the user writes in `policies/<env>.yaml` under `rules:` (see
//! `docs/rules.md`). These types only carry what was written; `compile.rs`
//! checks meaning (types, operators, regexes, rates) and builds matchers.
//!
//! Every struct denies unknown fields, so a misspelt condition is an error
//! with a line and column rather than a rule that silently matches everything.

use std::collections::BTreeMap;

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

/// What a rule does with the traces it matches: a sampler's name and what
/// follows it — `keep`, `drop`, `{ rate: 0.1 }`, `{ limit: {...} }`,
/// `{ dynamic: {...} }`. Which samplers there are, and what each reads
/// from its settings, is the sampler table's (`rules/action.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// What follows the name; `None` when it is written bare (`keep`).
    pub settings: Option<serde_yaml::Value>,
}

impl Sample {
    /// A sampler written bare, as `keep` is.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            settings: None,
        }
    }

    /// A sampler written `{ name: settings }`.
    pub fn with(name: &str, settings: impl Into<serde_yaml::Value>) -> Self {
        Self {
            name: name.to_string(),
            settings: Some(settings.into()),
        }
    }
}

impl<'de> Deserialize<'de> for Sample {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let known = |name: &str| super::action::SAMPLERS.iter().any(|k| k.name == name);
        let unknown = |name: &str| {
            D::Error::custom(format!(
                "unknown sampler `{name}`, expected {}",
                super::action::expected()
            ))
        };
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(name) if known(&name) => Ok(Self::named(&name)),
            serde_yaml::Value::String(name) => Err(unknown(&name)),
            serde_yaml::Value::Mapping(map) => {
                let mut entries = map.into_iter();
                let Some((key, settings)) = entries.next() else {
                    return Err(D::Error::custom(format!(
                        "empty sampler, expected {}",
                        super::action::expected()
                    )));
                };
                let name = key.as_str().unwrap_or_default().to_string();
                if !known(&name) {
                    return Err(unknown(&name));
                }
                if let Some((extra, _)) = entries.next() {
                    return Err(D::Error::custom(format!(
                        "a rule has one sampler; `{}` follows `{name}`",
                        extra.as_str().unwrap_or("?")
                    )));
                }
                Ok(Self::with(&name, settings))
            }
            _ => Err(D::Error::custom(format!(
                "expected {}",
                super::action::expected()
            ))),
        }
    }
}
