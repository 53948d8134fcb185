//! What the user writes in `policies/<env>.yaml` under `rules:`.
//!
//! Every struct denies unknown fields, so a misspelt condition is an error
//! with a line and column rather than a rule that silently matches everything.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One rule: a name, an optional condition, and what to do with a trace that
/// matches. Rules are evaluated in order and the first match decides.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name; the `rule` label of the metrics and the `tailgate.rule`
    /// attribute of every span the rule keeps.
    pub name: String,
    /// When the rule applies; absent means "every trace".
    #[serde(default)]
    pub when: Option<When>,
    /// What happens to a matching trace.
    pub sample: Sample,
}

/// Conditions of a rule; all given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Conditions on the trace as a whole.
    #[serde(default)]
    pub trace: Option<TraceCondition>,
    /// Conditions on the root span (a trace without a root never matches them).
    #[serde(default)]
    pub root: Option<RootCondition>,
}

/// Conditions on the whole trace.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TraceCondition {
    /// `true`: some span has status ERROR; `false`: none has.
    #[serde(default)]
    pub error: Option<bool>,
    /// The trace's duration, from its earliest span start to its latest span end.
    #[serde(default)]
    pub duration: Option<DurationComparison>,
}

/// Conditions on the root span.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RootCondition {
    /// The root span's resource `service.name` equals this.
    #[serde(default)]
    pub service: Option<String>,
    /// The root span's name equals this.
    #[serde(default)]
    pub name: Option<String>,
}

/// Bounds on a duration, written like `30s`, `1500ms`, `2m`; all given bounds must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DurationComparison {
    #[serde(default, with = "humantime_serde")]
    pub gt: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub gte: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub lt: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub lte: Option<Duration>,
}

impl DurationComparison {
    pub fn is_empty(&self) -> bool {
        self.gt.is_none() && self.gte.is_none() && self.lt.is_none() && self.lte.is_none()
    }

    pub fn matches(&self, d: Duration) -> bool {
        self.gt.is_none_or(|b| d > b)
            && self.gte.is_none_or(|b| d >= b)
            && self.lt.is_none_or(|b| d < b)
            && self.lte.is_none_or(|b| d <= b)
    }
}

/// What a rule does with the traces it matches: `keep`, `drop`, or
/// `{ rate: p }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sample {
    /// Keep every matching trace.
    Keep,
    /// Drop every matching trace.
    Drop,
    /// Keep this fraction of matching traces, in (0, 1], chosen by trace id so
    /// that every instance and every restart makes the same choice.
    Rate(f64),
}

const SAMPLE_EXPECTED: &str = "`keep`, `drop` or `{ rate: <probability> }`";

impl<'de> Deserialize<'de> for Sample {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Sample;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(SAMPLE_EXPECTED)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Sample, E> {
                match v {
                    "keep" => Ok(Sample::Keep),
                    "drop" => Ok(Sample::Drop),
                    other => Err(E::custom(format!(
                        "unknown sampler `{other}`, expected {SAMPLE_EXPECTED}"
                    ))),
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Sample, A::Error> {
                use serde::de::Error;
                let mut rate = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "rate" if rate.is_none() => rate = Some(map.next_value::<RateValue>()?.0),
                        "rate" => return Err(A::Error::custom("`rate` given twice")),
                        other => {
                            return Err(A::Error::custom(format!(
                                "unknown sampler `{other}`, expected {SAMPLE_EXPECTED}"
                            )))
                        }
                    }
                }
                rate.map(Sample::Rate).ok_or_else(|| {
                    A::Error::custom(format!("empty sampler, expected {SAMPLE_EXPECTED}"))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A probability written as a number, or as a string holding one (what
/// environment variables and some layered sources produce).
struct RateValue(f64);

impl<'de> Deserialize<'de> for RateValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RateValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a probability in (0, 1]")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RateValue, E> {
                Ok(RateValue(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RateValue, E> {
                Ok(RateValue(v as f64))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RateValue, E> {
                Ok(RateValue(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RateValue, E> {
                v.trim()
                    .parse()
                    .map(RateValue)
                    .map_err(|_| E::custom(format!("rate `{v}` is not a number")))
            }
        }
        d.deserialize_any(V)
    }
}
