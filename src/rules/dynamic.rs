//! The `dynamic` sampler: a keep probability per key, aimed at a target
//! throughput, that keeps rare keys more often than frequent ones — the idea
//! of Refinery's EMA dynamic sampler.
//!
//! Traces are counted per key over an interval. At the end of each interval
//! a moving average of those counts is updated and the interval's budget
//! (`target_per_second × interval`) is shared among the keys in proportion
//! to the logarithm of their traffic, starting with the rarest: a key whose
//! share covers all its traces keeps them all, and what it leaves over goes
//! to the more frequent keys. Each key's probability is its share over its
//! traffic. Every key keeps at least about one trace per interval, so with
//! more keys than the target allows (at most `max_keys`) the target is
//! exceeded rather than a key going unseen. The keep decision itself is the
//! consistent-probability rule on
//! the trace id, so the adjusted count of every kept span is 1 / probability.
//!
//! Until the first interval ends, rates are recomputed every 100 ms from the
//! traffic so far, so a fresh instance keeps everything for at most the first
//! 100 ms rather than a whole interval. A key not seen in the last interval is kept (it is rare).
//! State is per instance and starts afresh when the rules are reloaded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use super::action::Sampler;
use super::sampler::RateSampler;
use super::TraceSummary;
use crate::otlp::tracestate::Stage;

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

/// How often rates are recomputed during the first interval.
const WARM_UP_STEP: Duration = Duration::from_millis(100);

/// Key of the bucket shared by keys beyond `max_keys`.
pub const OVERFLOW_KEY: &str = "(other)";

#[derive(Debug, Clone, PartialEq)]
pub struct DynamicConfig {
    pub target_per_second: f64,
    pub interval: Duration,
    pub max_keys: usize,
    pub smoothing: f64,
}

#[derive(Debug, Default)]
struct State {
    /// Start of the current interval; `None` before the first trace.
    interval_start: Option<Duration>,
    /// Traces per key in the current interval.
    counts: HashMap<String, u64>,
    /// Moving average of traces per key per interval.
    average: HashMap<String, f64>,
    /// Keep probability per key.
    rates: HashMap<String, f64>,
    /// Whether a whole interval has been seen.
    warm: bool,
    /// When rates were last recomputed during the first interval.
    provisional_at: Duration,
}

#[derive(Debug)]
pub struct Dynamic {
    config: DynamicConfig,
    state: Mutex<State>,
}

/// Shares `goal` among keys with traffic `counts`, rarest first, in proportion
/// to `ln(1 + count)`; returns each key's keep probability.
pub fn rates(counts: &HashMap<String, f64>, goal: f64) -> HashMap<String, f64> {
    let mut keys: Vec<(&String, f64)> = counts
        .iter()
        .filter(|(_, c)| **c > 0.0)
        .map(|(k, c)| (k, *c))
        .collect();
    keys.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    let mut weight: f64 = keys.iter().map(|(_, c)| c.ln_1p()).sum();
    let mut left = goal.max(0.0);
    let mut out = HashMap::with_capacity(keys.len());
    for (k, c) in keys {
        let w = c.ln_1p();
        let share = if weight > 0.0 { left * w / weight } else { 0.0 };
        // Every key keeps about one trace per interval, however little budget is left.
        let kept = share.max(1.0).min(c);
        // Never zero: a key keeps at least a trace now and then.
        out.insert(k.clone(), (kept / c).clamp(1e-6, 1.0));
        left -= kept;
        weight -= w;
    }
    out
}

impl Dynamic {
    pub fn new(config: DynamicConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
        }
    }

    pub fn config(&self) -> &DynamicConfig {
        &self.config
    }

    /// Counts one trace of `key` at `now` and returns its keep probability.
    pub fn probability(&self, key: &str, now: Duration) -> f64 {
        let c = &self.config;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let start = *s.interval_start.get_or_insert(now);
        let elapsed = now.saturating_sub(start);
        if elapsed >= c.interval {
            // Fold the finished interval (and any empty ones after it) into the average.
            let intervals = (elapsed.as_secs_f64() / c.interval.as_secs_f64()).floor() as u32;
            let counts = std::mem::take(&mut s.counts);
            let alpha = c.smoothing;
            let mut average = std::mem::take(&mut s.average);
            // Each key once: those averaged before, and those new this interval.
            let mut keys: Vec<String> = average.keys().cloned().collect();
            keys.extend(counts.keys().filter(|k| !average.contains_key(*k)).cloned());
            for k in keys {
                let n = counts.get(&k).copied().unwrap_or(0) as f64;
                let a = average.entry(k).or_insert(n);
                *a = if s.warm {
                    alpha * n + (1.0 - alpha) * *a
                } else {
                    n
                };
                // Empty intervals after it decay the average.
                *a *= (1.0 - alpha).powi(intervals.saturating_sub(1).min(64) as i32);
            }
            average.retain(|_, a| *a >= 0.01);
            s.rates = rates(&average, c.target_per_second * c.interval.as_secs_f64());
            s.average = average;
            s.warm = true;
            s.interval_start = Some(start + c.interval * intervals);
        } else if !s.warm && now.saturating_sub(s.provisional_at) >= WARM_UP_STEP {
            // First interval: project the traffic so far onto a whole interval.
            let scale =
                c.interval.as_secs_f64() / elapsed.as_secs_f64().max(WARM_UP_STEP.as_secs_f64());
            let projected: HashMap<String, f64> = s
                .counts
                .iter()
                .map(|(k, n)| (k.clone(), *n as f64 * scale))
                .collect();
            s.rates = rates(&projected, c.target_per_second * c.interval.as_secs_f64());
            s.provisional_at = now;
        }
        let key = match s.counts.get_mut(key) {
            Some(n) => {
                *n += 1;
                key
            }
            None => {
                let key = if s.counts.len() < c.max_keys {
                    key
                } else {
                    OVERFLOW_KEY
                };
                *s.counts.entry(key.to_string()).or_insert(0) += 1;
                key
            }
        };
        s.rates.get(key).copied().unwrap_or(1.0)
    }
}

/// A `dynamic` rule's sampler: [`Dynamic`] over the key its fields make.
pub(super) struct ByKey {
    pub sampler: Dynamic,
    /// The fields that make a trace's key.
    pub key: Vec<String>,
}

impl Sampler for ByKey {
    fn decide(&self, t: &TraceSummary<'_>, now: Duration) -> (bool, Stage) {
        let p = self.sampler.probability(&dynamic_key(t, &self.key), now);
        RateSampler::new(p).decide(t.randomness)
    }

    fn describe(&self) -> String {
        format!(
            "dynamic by [{}], {} traces per second; the probability depends on the traffic around the trace",
            self.key.join(", "),
            self.sampler.config().target_per_second
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(list: &[(&str, f64)]) -> HashMap<String, f64> {
        list.iter().map(|(k, c)| (k.to_string(), *c)).collect()
    }

    #[test]
    fn rare_keys_are_kept_and_frequent_ones_share_the_rest() {
        let r = rates(
            &counts(&[("rare", 3.0), ("mid", 300.0), ("hot", 30_000.0)]),
            150.0,
        );
        assert_eq!(r["rare"], 1.0);
        assert!(r["mid"] > r["hot"], "{r:?}");
        let kept = 3.0 * r["rare"] + 300.0 * r["mid"] + 30_000.0 * r["hot"];
        assert!((kept - 150.0).abs() < 1e-6, "budget used exactly: {kept}");
        // With almost no budget, each key still keeps about one per interval.
        let r = rates(&counts(&[("a", 1.0), ("b", 1_000.0)]), 0.5);
        assert_eq!(r["a"], 1.0);
        assert!((r["b"] - 0.001).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn a_goal_above_the_traffic_keeps_everything() {
        let r = rates(&counts(&[("a", 10.0), ("b", 20.0)]), 100.0);
        assert_eq!((r["a"], r["b"]), (1.0, 1.0));
    }

    /// Steady traffic converges on the target throughput.
    #[test]
    fn converges_on_the_target() {
        let d = Dynamic::new(DynamicConfig {
            target_per_second: 10.0,
            interval: Duration::from_secs(10),
            max_keys: 100,
            smoothing: 0.5,
        });
        // 1 000 traces per second: "GET /" 90 %, "POST /pay" 9 %, "DELETE" 1 %.
        let mut expected_kept = HashMap::<&str, f64>::new();
        for ms in 0..60_000u64 {
            let key = match ms % 100 {
                0 => "DELETE",
                1..=9 => "POST /pay",
                _ => "GET /",
            };
            let p = d.probability(key, Duration::from_millis(ms));
            if ms >= 40_000 {
                *expected_kept.entry(key).or_default() += p;
            }
        }
        let per_second = expected_kept.values().sum::<f64>() / 20.0;
        assert!((per_second - 10.0).abs() < 1.0, "{per_second} per second");
        assert!(
            expected_kept["DELETE"] / 200.0 > expected_kept["GET /"] / 18_000.0,
            "the rare key is kept more often: {expected_kept:?}"
        );
    }

    /// The moving average takes each interval once per key.
    #[test]
    fn the_average_moves_by_the_smoothing_once_per_interval() {
        let d = Dynamic::new(DynamicConfig {
            target_per_second: 1.0,
            interval: Duration::from_secs(10),
            max_keys: 10,
            smoothing: 0.5,
        });
        for i in 0..100u64 {
            d.probability("k", Duration::from_millis(i * 100));
        }
        for i in 0..300u64 {
            d.probability("k", Duration::from_millis(10_000 + i * 30));
        }
        d.probability("k", Duration::from_secs(20));
        let s = d.state.lock().expect("not poisoned");
        assert_eq!(s.average["k"], 0.5 * 300.0 + 0.5 * 100.0);
    }

    #[test]
    fn keys_beyond_the_limit_share_a_bucket() {
        let d = Dynamic::new(DynamicConfig {
            target_per_second: 1.0,
            interval: Duration::from_secs(1),
            max_keys: 2,
            smoothing: 0.5,
        });
        for k in ["a", "b", "c", "d"] {
            d.probability(k, Duration::ZERO);
        }
        let s = d.state.lock().expect("not poisoned");
        assert_eq!(s.counts.len(), 3);
        assert_eq!(s.counts[OVERFLOW_KEY], 2);
    }
}
