//! Split traces per run, and the stream clock's cost against the wall clock.

use std::fmt::Write as _;

use tailgate::clock::ClockMode;

use super::{mib, ratio};
use crate::bench::Bench;
use crate::figures::{clock_name, TailgateFigures};
use crate::kafka::partitions;
use crate::ONE_MESSAGE_BYTES;

impl Bench {
    /// Split traces per run, and the stream clock against the wall clock.
    pub(super) fn report_clock(&self, r: &mut String) {
        let _ = writeln!(r, "\n## Split traces and the stream clock's cost\n");
        let _ = writeln!(
            r,
            "tailgate decides `decision.wait` and `after_root` on each partition's stream clock (the largest \
             message timestamp read; with wall-clock time only at the end of the partition) by default; `decision.clock: wall` measures them from when each span is read, as before. \
             Both run on the same topic, one after the other. A *split trace* is a kept trace that came out in \
             more than one message although one message would have held it (under {} payload bytes; the \
             workload's traces are about 1 KiB): it was decided in parts, the rest following as late spans. \
             *Late spans* (`tailgate_late_spans_total`) counts spans read after their trace's decision, kept or \
             dropped; *decisions* (`tailgate_traces_decided_total`) counts a trace twice if its late spans \
             outlived the remembered decision. With the stream clock, none of them may happen on these \
             pre-filled topics (a correctness check); with the wall clock they are reported. {}\n",
            ONE_MESSAGE_BYTES,
            self.stamps()
        );
        let _ = writeln!(
            r,
            "Runs on each topic in the order they ran, then the stream clock against the wall clock over all of \
             them (spans over CPU seconds): the second run on a topic tends to be the cheaper, so the clocks take \
             turns going first. Single runs move by ± 10–15 %.\n"
        );
        let _ = writeln!(
            r,
            "| partitions | run | clock | CPU s | spans / CPU-s | of the copy's | drain wall s | peak RSS MiB | peak buffered traces | p99 lateness | kept traces (library) | output messages | split traces | late spans kept + dropped | decisions |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for t in &self.results.throughput {
            for (i, f) in t.runs.iter().enumerate() {
                let p = &f.parts;
                let _ = writeln!(
                    r,
                    "| {} | {} | {} | {:.2} | {:.0} | {} | {:.1} | {} | {:.0} | {} | {} ({}) | {} | {}{} | {:.0} + {:.0} | {:.0} of {} traces |",
                    t.partitions,
                    i + 1,
                    clock_name(f.clock),
                    f.run.cpu_s,
                    f.run.spans_per_cpu_s(),
                    ratio(f.run.spans_per_cpu_s(), t.copy.spans_per_cpu_s()),
                    f.run.drain_s,
                    mib(f.run.peak_rss as f64),
                    f.peak_traces,
                    f.p99(),
                    p.kept,
                    p.expected_kept,
                    p.messages,
                    p.split,
                    if p.oversize > 0 {
                        format!(" (+{} over the size limit)", p.oversize)
                    } else {
                        String::new()
                    },
                    p.late_kept,
                    p.late_dropped,
                    p.decided,
                    p.traces
                );
            }
            if let (Some(stream), Some(wall)) = (t.rate(ClockMode::Stream), t.rate(ClockMode::Wall))
            {
                let mean = |clock, figure: fn(&TailgateFigures) -> f64| {
                    t.mean(clock, figure).unwrap_or(f64::NAN)
                };
                let _ = writeln!(
                    r,
                    "| {} | **stream / wall** | | {} | **{}** ({stream:.0} / {wall:.0}) | | {} | {} | {} | | | | {} / {} | | |",
                    t.partitions,
                    ratio(mean(ClockMode::Stream, |f| f.run.cpu_s), mean(ClockMode::Wall, |f| f.run.cpu_s)),
                    ratio(stream, wall),
                    ratio(mean(ClockMode::Stream, |f| f.run.drain_s), mean(ClockMode::Wall, |f| f.run.drain_s)),
                    ratio(
                        mean(ClockMode::Stream, |f| f.run.peak_rss as f64),
                        mean(ClockMode::Wall, |f| f.run.peak_rss as f64)
                    ),
                    ratio(mean(ClockMode::Stream, |f| f.peak_traces), mean(ClockMode::Wall, |f| f.peak_traces)),
                    t.of(ClockMode::Stream).map(|f| f.parts.split).sum::<usize>(),
                    t.of(ClockMode::Wall).map(|f| f.parts.split).sum::<usize>(),
                );
            }
        }
        let examples: Vec<String> = self
            .results
            .throughput
            .iter()
            .flat_map(|t| {
                t.runs
                    .iter()
                    .enumerate()
                    .map(move |(i, f)| (t.partitions, i + 1, f))
            })
            .filter(|(_, _, f)| !f.parts.examples.is_empty())
            .map(|(p, i, f)| {
                format!(
                    "- {}, run {i}, {} clock, {} messages more than one per split trace: {}",
                    partitions(p),
                    clock_name(f.clock),
                    f.parts.extra_messages,
                    f.parts.examples.join("; ")
                )
            })
            .collect();
        if !examples.is_empty() {
            let _ = writeln!(
                r,
                "\nSplit traces (the first few in topic order; spans in each of its messages):\n\n{}",
                examples.join("\n")
            );
        }
    }

    /// How the input topics' messages are stamped, and the time they span.
    pub(super) fn stamps(&self) -> String {
        let spans: Vec<String> = self
            .results
            .throughput
            .iter()
            .map(|t| format!("{:.1} s", t.stamped_s))
            .collect();
        let span = if spans.is_empty() {
            String::new()
        } else {
            format!(" (the topics above: {})", spans.join(", "))
        };
        if self.args.stamp_rate > 0.0 {
            format!(
                "Message timestamps: each trace's messages share one, traces {:.3} ms apart, as if written at \
                 {:.0} traces a second{span}, about the rate a wall-clock tailgate reads 4 partitions at, so \
                 that both clocks buffer about as many traces (`--stamp-rate`).",
                1000.0 / self.args.stamp_rate,
                self.args.stamp_rate
            )
        } else {
            format!(
                "Message timestamps: each trace's messages share one, taken as it is produced \
                 (`--stamp-rate 0`): the topic is a burst of message time{span}, read far slower than it \
                 was written, so the stream clock buffers much more of it than the wall clock."
            )
        }
    }
}
