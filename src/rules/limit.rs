//! The `limit` sampler: at most N traces (or spans) per second, per rule, per
//! instance.
//!
//! Fixed one-second windows on the decision clock. A trace is kept while the
//! window's allowance has room for it; a trace larger than the whole
//! allowance is never kept. It is not a probability sampler: what it keeps
//! stands for an unknown number of traces, so a kept span leaves without a
//! threshold (`ot=th`) and without an adjusted count (the specification:
//! a stage of unknown probability erases the threshold).

use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use super::action::Sampler;
use super::TraceSummary;
use crate::otlp::tracestate::Stage;

/// `{ limit: { traces_per_second: N } }` or `{ limit: { spans_per_second: N } }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    #[serde(default)]
    pub traces_per_second: Option<f64>,
    #[serde(default)]
    pub spans_per_second: Option<f64>,
}

/// What the limit counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Per {
    Traces(f64),
    Spans(f64),
}

#[derive(Debug, Default)]
struct Window {
    /// Window index (seconds on the decision clock).
    index: u64,
    used: f64,
}

/// A per-instance limit, shared by the partitions' workers.
#[derive(Debug)]
pub struct Limit {
    per: Per,
    window: Mutex<Window>,
}

impl Limit {
    pub fn new(per: Per) -> Self {
        Self {
            per,
            window: Mutex::new(Window::default()),
        }
    }

    pub fn per(&self) -> Per {
        self.per
    }

    /// Decides one matching trace of `spans` spans at `now`: whether it is
    /// kept.
    pub fn decide(&self, spans: usize, now: Duration) -> bool {
        let (cost, allowance) = match self.per {
            Per::Traces(n) => (1.0, n),
            Per::Spans(n) => (spans as f64, n),
        };
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        // The partitions' clocks agree only to within `decision.clock_ahead`:
        // a decision a moment behind the window counts in it, rather than
        // opening an old window again.
        let index = now.as_secs().max(w.index);
        if index != w.index {
            w.index = index;
            w.used = 0.0;
        }
        let keep = w.used + cost <= allowance;
        if keep {
            w.used += cost;
        }
        keep
    }
}

impl Sampler for Limit {
    fn decide(&self, t: &TraceSummary<'_>, now: Duration) -> (bool, Stage) {
        // Not a probability: what it keeps stands for an unknown number of
        // traces (the specification: its threshold is erased).
        (Limit::decide(self, t.span_count, now), Stage::Unknown)
    }

    fn describe(&self) -> String {
        match self.per {
            Per::Traces(n) => {
                format!("limit {n} traces per second; depends on the traffic around the trace")
            }
            Per::Spans(n) => {
                format!("limit {n} spans per second; depends on the traffic around the trace")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn keeps_at_most_n_traces_per_second() {
        let l = Limit::new(Per::Traces(10.0));
        let kept = (0..100)
            .filter(|i| l.decide(3, secs(5.0 + *i as f64 / 1000.0)))
            .count();
        assert_eq!(kept, 10);
        // The next second has a fresh allowance.
        assert!(l.decide(3, secs(6.2)));
    }

    #[test]
    fn counts_spans_and_never_keeps_a_trace_over_the_allowance() {
        let l = Limit::new(Per::Spans(10.0));
        assert!(l.decide(4, secs(1.0)));
        assert!(l.decide(4, secs(1.1)));
        assert!(!l.decide(4, secs(1.2)), "8 + 4 spans exceed 10");
        assert!(l.decide(2, secs(1.3)), "8 + 2 fit");
        assert!(!l.decide(11, secs(7.0)), "larger than the allowance");
    }

    #[test]
    fn a_decision_from_a_clock_a_moment_behind_counts_in_the_current_window() {
        let l = Limit::new(Per::Traces(2.0));
        assert!(l.decide(1, secs(10.1)));
        assert!(l.decide(1, secs(9.9)), "a partition slightly behind");
        assert!(
            !l.decide(1, secs(10.2)),
            "the window's allowance is used up"
        );
    }
}
