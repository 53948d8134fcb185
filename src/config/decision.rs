//! The `decision` section: when traces are decided, and on which clock.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::buffer::BufferConfig;
use crate::clock::{ClockConfig, ClockMode};

/// When a trace is decided: the first of `wait` after its first span, a quiet
/// period of `after_root` after its root span (reset by each later span) —
/// both on the partition's stream clock — and `max_trace_age` in wall-clock
/// time from its first read.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionSettings {
    #[serde(with = "humantime_serde")]
    pub wait: Duration,
    #[serde(with = "humantime_serde")]
    pub after_root: Duration,
    #[serde(with = "humantime_serde")]
    pub max_trace_age: Duration,
    /// How long spans arriving after their trace's decision follow it.
    #[serde(with = "humantime_serde")]
    pub decided_ttl: Duration,
    /// Bytes for remembered decisions, over all partitions (split evenly
    /// between those this instance owns, like `buffer.max_bytes`): about 61
    /// bytes each (the budget is held as a count at 64), so `decided_ttl` ×
    /// the trace rate × 64 is enough to
    /// remember every decision for its whole TTL. When full, the oldest are
    /// forgotten early (`tailgate_decisions_forgotten_total`).
    pub remembered_bytes: u64,
    /// The clock `wait` and `after_root` count on: `stream` (each
    /// partition's message timestamps, so decisions do not depend on read
    /// speed) or `wall` (when each span is read).
    pub clock: ClockMode,
    /// The largest step ahead one message timestamp is trusted with: a
    /// stamp further ahead of its partition's clock moves it only once
    /// `clock::CONFIRM` stamps in a row agree, and none takes it further
    /// than this ahead of wall-clock time. Shorter than `after_root` and
    /// `wait`, the deadlines it protects.
    #[serde(with = "humantime_serde")]
    pub clock_ahead: Duration,
    /// Message timestamps further behind wall-clock time count as none.
    #[serde(with = "humantime_serde")]
    pub clock_behind: Duration,
}

impl Default for DecisionSettings {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(30),
            after_root: Duration::from_secs(5),
            max_trace_age: Duration::from_secs(300),
            decided_ttl: Duration::from_secs(600),
            remembered_bytes: 64 * 1024 * 1024,
            clock: ClockMode::default(),
            clock_ahead: ClockConfig::DEFAULT_AHEAD,
            clock_behind: ClockConfig::DEFAULT_BEHIND,
        }
    }
}

impl DecisionSettings {
    /// This section's own checks.
    pub(super) fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("decision.wait", self.wait),
            ("decision.after_root", self.after_root),
            ("decision.max_trace_age", self.max_trace_age),
        ] {
            if v.is_zero() {
                return Err(format!("{name} must be longer than zero"));
            }
        }
        // One message may move the clock by `clock_ahead`: that must not be
        // enough to decide a trace that just began, or one whose root has
        // just come.
        for (name, v) in [
            ("decision.after_root", self.after_root),
            ("decision.wait", self.wait),
        ] {
            if self.clock == ClockMode::Stream && self.clock_ahead >= v {
                return Err(format!(
                    "decision.clock_ahead ({}) must be shorter than {name} ({}): one message stamped that far ahead would decide traces before their time",
                    humantime::format_duration(self.clock_ahead),
                    humantime::format_duration(v)
                ));
            }
        }
        if self.decided_ttl.is_zero() {
            return Err("decision.decided_ttl must be longer than zero".into());
        }
        if self.max_trace_age < self.wait {
            return Err(format!(
                "decision.max_trace_age ({}) is shorter than decision.wait ({}); it must be at least as long",
                humantime::format_duration(self.max_trace_age),
                humantime::format_duration(self.wait)
            ));
        }
        Ok(())
    }

    /// How each partition's clock is kept.
    pub fn clock_config(&self) -> ClockConfig {
        ClockConfig {
            mode: self.clock,
            ahead: self.clock_ahead,
            behind: self.clock_behind,
        }
    }

    /// One partition's buffer, given its share of the memory budget.
    pub fn buffer_config(&self, max_bytes: usize) -> BufferConfig {
        BufferConfig {
            wait: self.wait,
            after_root: self.after_root,
            max_trace_age: self.max_trace_age,
            max_bytes,
        }
    }
}
