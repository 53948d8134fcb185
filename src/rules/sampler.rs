//! Deterministic probability sampling by trace id.
//!
//! Follows the OpenTelemetry consistent-probability rule: the randomness is the
//! trace's explicit `rv`, else its id's low 56 bits, and a trace is kept when that randomness is at or
//! above the rejection threshold `2^56 - round(p * 2^56)` (the same
//! [`Threshold`] a kept span's `tracestate` can say: `otlp::tracestate`).
//! The same trace gets the same answer on any instance and after any
//! restart, and a rate composes with head sampling done upstream by the
//! same rule.

use crate::otlp::tracestate::{Randomness, Stage, Threshold};
use crate::otlp::TraceId;

/// A compiled rate: the rejection threshold for probability `p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSampler {
    probability: f64,
    /// `None`: probability 0, nothing is kept.
    threshold: Option<Threshold>,
}

impl RateSampler {
    /// `probability` must be in (0, 1]; validated when rules are compiled.
    pub fn new(probability: f64) -> Self {
        let p = probability.clamp(0.0, 1.0);
        Self {
            probability: p,
            threshold: Threshold::from_probability(p),
        }
    }

    pub fn probability(&self) -> f64 {
        self.probability
    }

    /// The threshold it keeps at.
    pub fn threshold(&self) -> Option<Threshold> {
        self.threshold
    }

    /// True when the trace is kept at this rate.
    pub fn keeps(&self, trace_id: &TraceId) -> bool {
        self.keeps_randomness(Randomness::of(trace_id))
    }

    /// True when a trace of randomness `r` is kept at this rate.
    pub fn keeps_randomness(&self, r: Randomness) -> bool {
        self.threshold.is_some_and(|t| t.keeps(r))
    }

    /// Decides a trace of randomness `r`: kept or not, and the stage.
    pub fn decide(&self, r: Randomness) -> (bool, Stage) {
        match self.threshold {
            Some(t) => (t.keeps(r), Stage::Sampled(t)),
            None => (false, Stage::Unknown),
        }
    }
}

impl super::action::Sampler for RateSampler {
    fn decide(&self, t: &super::TraceSummary<'_>, _now: std::time::Duration) -> (bool, Stage) {
        RateSampler::decide(self, t.randomness)
    }

    fn describe(&self) -> String {
        format!("rate {}", self.probability)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> TraceId {
        // Spread n over the id with a fixed mixing function, as random ids would be.
        let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 32;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&n.to_be_bytes());
        b[8..].copy_from_slice(&x.to_be_bytes());
        TraceId(b)
    }

    #[test]
    fn rate_one_keeps_everything() {
        let s = RateSampler::new(1.0);
        assert!((0..10_000).all(|n| s.keeps(&id(n))));
        let zero = TraceId([0; 16]);
        assert!(s.keeps(&zero));
    }

    #[test]
    fn rate_is_close_to_probability_and_deterministic() {
        for p in [0.01, 0.1, 0.25, 0.5, 0.9] {
            let s = RateSampler::new(p);
            let n = 100_000;
            let kept = (0..n).filter(|&i| s.keeps(&id(i))).count();
            let got = kept as f64 / n as f64;
            assert!((got - p).abs() < 0.01, "p={p} got={got}");
            let again = (0..n)
                .filter(|&i| RateSampler::new(p).keeps(&id(i)))
                .count();
            assert_eq!(kept, again);
        }
    }

    #[test]
    fn lower_rate_keeps_a_subset_of_higher_rate() {
        let low = RateSampler::new(0.1);
        let high = RateSampler::new(0.3);
        for i in 0..50_000 {
            if low.keeps(&id(i)) {
                assert!(high.keeps(&id(i)), "consistent sampling keeps subsets");
            }
        }
    }

    #[test]
    fn threshold_reads_only_the_low_56_bits() {
        let s = RateSampler::new(0.5);
        let mut a = [0u8; 16];
        a[9] = 0x80; // randomness = 2^55: exactly at the threshold for p=0.5
        let mut b = a;
        b[..9].copy_from_slice(&[0xff; 9]); // high bits differ
        assert!(s.keeps(&TraceId(a)));
        assert_eq!(s.keeps(&TraceId(a)), s.keeps(&TraceId(b)));
        a[9] = 0x7f;
        a[10..].copy_from_slice(&[0xff; 6]);
        assert!(!s.keeps(&TraceId(a)), "just below the threshold is dropped");
    }
}
