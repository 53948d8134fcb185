//! The targets table.

use std::fmt::Write as _;

use tailgate::clock::ClockMode;

use super::{mib, ratio, yes_no};
use crate::bench::Bench;
use crate::figures::{Check, TailgateFigures};
use crate::kafka::partitions;
use crate::workload::Workload;

impl Bench {
    /// The targets table: each target, what was measured, whether it was met.
    pub(super) fn report_targets(&self, r: &mut String, w: &Workload, error: Option<&String>) {
        let spans = w.total_spans();
        let main = self.main_run();
        let _ = writeln!(r, "## Targets\n");
        let _ = writeln!(r, "| target | measured | met |\n|---|---|---|");
        if let Some((copy, tg, _)) = main {
            let rel = tg.run.spans_per_cpu_s() / copy.spans_per_cpu_s();
            let _ = writeln!(
                r,
                "| throughput: tailgate ≥ 50 % of the raw copy's spans per CPU-second (4 partitions) | {:.0} % ({:.0} against {:.0} spans per CPU-second) | {} |",
                rel * 100.0,
                tg.run.spans_per_cpu_s(),
                copy.spans_per_cpu_s(),
                yes_no(rel >= 0.5)
            );
        }
        if let Some(m) = &self.results.memory {
            let _ = writeln!(
                r,
                "| memory: resident memory per buffered span ≤ 1.5 × its encoded size + a fixed overhead | {:.2} × the span encoding ({:.0} bytes of RSS per span of {:.0} encoded bytes; {:.2} × its {:.0} message bytes); fixed overhead {} MiB | {} |",
                m.slope,
                m.per_span,
                w.span_bytes() as f64 / spans as f64,
                m.slope_message,
                w.message_bytes() as f64 / spans as f64,
                mib(m.intercept),
                yes_no(m.slope <= 1.5)
            );
        }
        if let Some((_, tg, _)) = main {
            let within = tg.within_50ms();
            let _ = writeln!(
                r,
                "| latency: decided within 50 ms of the deadline at p99, under full load (4 partitions) | p99 {} (a bucket bound of `tailgate_decision_lateness_seconds`); {} of decisions within 50 ms | {} |",
                tg.p99(),
                within.map_or("—".into(), |f| format!("{:.2} %", f * 100.0)),
                yes_no(within.is_some_and(|f| f >= 0.99))
            );
        }
        if self.results.throughput.len() > 1 {
            let cells: Vec<String> = self
                .results
                .throughput
                .iter()
                .map(|t| {
                    format!(
                        "{}: {:.0} ({:.0} %)",
                        t.partitions,
                        t.tailgate().run.spans_per_cpu_s(),
                        100.0 * t.tailgate().run.spans_per_cpu_s() / t.copy.spans_per_cpu_s()
                    )
                })
                .collect();
            let _ = writeln!(
                r,
                "| scaling with input partitions: tailgate's spans per CPU-second (% of the copy's) | {} | reported |",
                cells.join("; ")
            );
        }
        if let [(_, _, a), (_, _, b)] = self.results.buffer.as_slice() {
            let _ = writeln!(
                r,
                "| scaling with buffered traces: spans per CPU-second as the buffer grows | {:.0} → {:.0} traces buffered ({:.1}×): {:.0} → {:.0} spans per CPU-second ({:.0} %) | reported |",
                a.peak_traces,
                b.peak_traces,
                b.peak_traces / a.peak_traces.max(1.0),
                a.run.spans_per_cpu_s(),
                b.run.spans_per_cpu_s(),
                100.0 * b.run.spans_per_cpu_s() / a.run.spans_per_cpu_s()
            );
        }
        let stream_runs: Vec<(String, &TailgateFigures)> = self
            .results
            .throughput
            .iter()
            .flat_map(|t| {
                t.of(ClockMode::Stream)
                    .enumerate()
                    .map(|(i, f)| {
                        let again = if i > 0 { ", again" } else { "" };
                        (format!("{}{again}", partitions(t.partitions)), f)
                    })
                    .collect::<Vec<_>>()
            })
            .chain(
                self.results
                    .buffer
                    .iter()
                    .map(|(traces, _, f)| (format!("{traces} traces buffered"), f)),
            )
            .collect();
        if !stream_runs.is_empty() {
            let cells: Vec<String> = stream_runs
                .iter()
                .map(|(what, f)| {
                    format!("{what}: {} of {} kept traces", f.parts.split, f.parts.kept)
                })
                .collect();
            let late: f64 = stream_runs
                .iter()
                .map(|(_, f)| f.parts.late_kept + f.parts.late_dropped)
                .sum();
            let ok = stream_runs.iter().all(|(_, f)| {
                f.parts.split == 0 && f.parts.late_kept + f.parts.late_dropped == 0.0
            });
            let _ = writeln!(
                r,
                "| split traces: none on a pre-filled topic with the stream clock (kept traces in more than one output message; spans read after their trace's decision) | {}; {late:.0} late spans | {} |",
                cells.join("; "),
                yes_no(ok)
            );
        }
        let costs: Vec<String> = self
            .results
            .throughput
            .iter()
            .filter_map(|t| {
                let (stream, wall) = (t.rate(ClockMode::Stream)?, t.rate(ClockMode::Wall)?);
                let walls: Vec<String> = t
                    .of(ClockMode::Wall)
                    .map(|f| f.parts.split.to_string())
                    .collect();
                Some(format!(
                    "{}: {stream:.0} against {wall:.0} spans per CPU-second, **{}** (split traces with the wall clock: {})",
                    t.partitions,
                    ratio(stream, wall),
                    walls.join(", ")
                ))
            })
            .collect();
        if !costs.is_empty() {
            let _ = writeln!(
                r,
                "| the stream clock's cost: tailgate's spans per CPU-second, stream clock / wall clock (`decision.clock: wall`), over {} run{} of each | {} | reported |",
                self.args.clock_pairs,
                if self.args.clock_pairs == 1 { "" } else { "s" },
                costs.join("; ")
            );
        }
        self.report_feature_targets(r);
        let asserted = self.checks.iter().filter(|c| c.asserted).count();
        let failed = self.checks.iter().filter(|c| c.asserted && !c.ok).count();
        let reported: Vec<&Check> = self.checks.iter().filter(|c| !c.asserted).collect();
        let _ = writeln!(
            r,
            "| correctness: every error and slow trace complete, the rest at 10 %, no trace split (stream clock) | {} of {asserted} checks passed{} | {} |",
            asserted - failed,
            if reported.is_empty() {
                String::new()
            } else {
                format!(
                    "; with the wall clock (reported, not asserted), {} of {} every error and slow trace complete",
                    reported.iter().filter(|c| c.ok).count(),
                    reported.len()
                )
            },
            yes_no(failed == 0 && error.is_none())
        );
    }
}
