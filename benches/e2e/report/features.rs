//! What each durable feature costs, and the production policy.

use std::fmt::Write as _;

use super::{mib, ratio};
use crate::bench::Bench;
use crate::figures::{TailgateFigures, Throughput, Variant};

impl Bench {
    /// The 4-partition topic's feature runs, if they ran.
    pub(super) fn feature_runs(&self) -> Option<&Throughput> {
        self.results
            .throughput
            .iter()
            .find(|t| t.partitions == 4 && !t.features.is_empty())
    }

    /// The targets table's rows for the features: each one's cost as a
    /// ratio of spans per CPU-second, and the production policy's figure.
    pub(super) fn report_feature_targets(&self, r: &mut String) {
        let Some(t) = self.feature_runs() else {
            return;
        };
        let default = t.tailgate();
        let rate = |f: &TailgateFigures| f.run.spans_per_cpu_s();
        // A feature's cost: spans per CPU-second of `a` ÷ those of `b`.
        let mut cost = |what: &str, a: &TailgateFigures, b: &TailgateFigures| {
            let _ = writeln!(
                r,
                "| {what}, 4 partitions, one run each | {:.0} ÷ {:.0} = **{}** | reported |",
                rate(a),
                rate(b),
                ratio(rate(a), rate(b))
            );
        };
        if let Some(off) = t.feature(Variant::NoDecisionLog) {
            cost(
                "the decision log's cost: spans per CPU-second with it ÷ without (`kafka.decision_log: false`)",
                default,
                off,
            );
        }
        if let Some(eo) = t.feature(Variant::ExactlyOnce) {
            cost(
                "exactly-once's cost: spans per CPU-second exactly-once ÷ at-least-once (`kafka.exactly_once: true`)",
                eo,
                default,
            );
        }
        if let Some(off) = t.feature(Variant::NoCriticalPath) {
            cost(
                "the critical path's cost (its summary written onto kept traces, latency attribution on every trace): spans per CPU-second with it ÷ without (`output.critical_path`, `metrics.critical_path`: false)",
                default,
                off,
            );
        }
        if let Some(p) = t.feature(Variant::Production) {
            let _ = writeln!(
                r,
                "| the production policy (`policies/production.yaml`'s rules: critical-path and per-endpoint dynamic rules), 4 partitions | {:.0} spans per CPU-second, {} of the copy's, {} of the bench rules' | reported |",
                rate(p),
                ratio(rate(p), t.copy.spans_per_cpu_s()),
                ratio(rate(p), rate(default))
            );
        }
    }

    /// The feature runs beside the default run they are compared with.
    pub(super) fn report_features(&self, r: &mut String) {
        let Some(t) = self.feature_runs() else {
            return;
        };
        let default = t.tailgate();
        let _ = writeln!(
            r,
            "\n## What each durable feature costs, and the production policy\n"
        );
        let _ = writeln!(
            r,
            "On the 4-partition topic, after the runs above: tailgate with one feature changed from its \
             defaults — the decision log off (`kafka.decision_log: false`), exactly-once mode \
             (`kafka.exactly_once: true`, output read committed), the critical path's summary and \
             metrics off (`output.critical_path`, `metrics.critical_path`: false) — and with the rules of \
             `policies/production.yaml` (errors, 5xx, a slow checkout, a critical path dominated by one \
             dependency, slow traces, a limit on huge traces, a per-endpoint dynamic sample, 1 % of the \
             rest) instead of the bench's. Each against the first default run (stream clock, decision log \
             on, at-least-once, the bench's rules). One run each: single runs move by ± 5–10 %.\n"
        );
        let _ = writeln!(
            r,
            "| run | CPU s | spans / CPU-s | ÷ default run | of the copy's | drain wall s | peak RSS MiB | p99 lateness | kept traces | output messages | split traces |\n\
             |---|---|---|---|---|---|---|---|---|---|---|"
        );
        for f in std::iter::once(default).chain(&t.features) {
            let name = f.variant.name();
            let _ = writeln!(
                r,
                "| {name} | {:.2} | {:.0} | {} | {} | {:.1} | {} | {} | {} | {} | {} |",
                f.run.cpu_s,
                f.run.spans_per_cpu_s(),
                ratio(f.run.spans_per_cpu_s(), default.run.spans_per_cpu_s()),
                ratio(f.run.spans_per_cpu_s(), t.copy.spans_per_cpu_s()),
                f.run.drain_s,
                mib(f.run.peak_rss as f64),
                f.p99(),
                f.parts.kept,
                f.parts.messages,
                f.parts.split
            );
        }
    }
}
