//! The tables of the throughput, partitions, buffer and memory phases.

use std::fmt::Write as _;

use tailgate::clock::ClockMode;

use super::{mib, ratio};
use crate::bench::Bench;
use crate::figures::{fmt_secs, TailgateFigures};
use crate::workload::Workload;
use crate::{MEMORY_STEPS, SCRAPE_EVERY};

impl Bench {
    /// Throughput on 4 input partitions: the copy, tailgate, the clocks, lateness.
    pub(super) fn report_throughput(&self, r: &mut String) {
        if let Some((copy, tg, t)) = self.main_run() {
            let _ = writeln!(r, "\n## Throughput, 4 input partitions\n");
            let _ = writeln!(
                r,
                "| program | CPU s (user + sys) | spans per CPU-second | drain wall s | peak RSS MiB |\n|---|---|---|---|---|"
            );
            let runs: Vec<String> = t
                .copy_runs
                .iter()
                .map(|f| format!("{:.2}", f.cpu_s))
                .collect();
            let _ = writeln!(
                r,
                "| raw copy (mean of its runs before and after tailgate's: {} CPU s) | {:.2} | {:.0} | {:.1} | {} |",
                runs.join(", "),
                copy.cpu_s,
                copy.spans_per_cpu_s(),
                copy.drain_s,
                mib(copy.peak_rss as f64)
            );
            let _ = writeln!(
                r,
                "| tailgate (stream clock) | {:.2} | {:.0} | {:.1} (of which decision wait {:.1}) | {} |",
                tg.run.cpu_s,
                tg.run.spans_per_cpu_s(),
                tg.run.drain_s,
                tg.decision_wait.as_secs_f64(),
                mib(tg.run.peak_rss as f64)
            );
            let _ = writeln!(
                r,
                "| **tailgate / copy** | {} | {} | {} ({} without the decision wait) | {} |",
                ratio(tg.run.cpu_s, copy.cpu_s),
                ratio(tg.run.spans_per_cpu_s(), copy.spans_per_cpu_s()),
                ratio(tg.run.drain_s, copy.drain_s),
                ratio(
                    tg.run.drain_s - tg.decision_wait.as_secs_f64(),
                    copy.drain_s
                ),
                ratio(tg.run.peak_rss as f64, copy.peak_rss as f64)
            );
            if let (Some(stream), Some(wall)) = (t.rate(ClockMode::Stream), t.rate(ClockMode::Wall))
            {
                let n = t.of(ClockMode::Wall).count();
                let mean = |clock, figure: fn(&TailgateFigures) -> f64| {
                    t.mean(clock, figure).unwrap_or(f64::NAN)
                };
                let _ = writeln!(
                    r,
                    "| tailgate, `decision.clock: wall`{} | {:.2} | {wall:.0} | {:.1} | {} |",
                    if n > 1 {
                        format!(" (mean of {n} runs)")
                    } else {
                        String::new()
                    },
                    mean(ClockMode::Wall, |f| f.run.cpu_s),
                    mean(ClockMode::Wall, |f| f.run.drain_s),
                    mib(mean(ClockMode::Wall, |f| f.run.peak_rss as f64))
                );
                let _ = writeln!(
                    r,
                    "| **stream clock / wall clock**{} | {} | **{}** | {} | {} |",
                    if n > 1 {
                        format!(" ({n} runs of each)")
                    } else {
                        String::new()
                    },
                    ratio(
                        mean(ClockMode::Stream, |f| f.run.cpu_s),
                        mean(ClockMode::Wall, |f| f.run.cpu_s)
                    ),
                    ratio(stream, wall),
                    ratio(
                        mean(ClockMode::Stream, |f| f.run.drain_s),
                        mean(ClockMode::Wall, |f| f.run.drain_s)
                    ),
                    ratio(
                        mean(ClockMode::Stream, |f| f.run.peak_rss as f64),
                        mean(ClockMode::Wall, |f| f.run.peak_rss as f64)
                    )
                );
            }
            let _ = writeln!(
                r,
                "\nWhile draining, the copy used {:.2} cores on average and tailgate {:.2} (CPU seconds per wall \
                 second; the machine has {}). tailgate's start-up takes {} CPU s (on an empty topic, until a \
                 second after its partitions are assigned); without it, {} spans per CPU-second. It had read every span {} s after it started, at up to \
                 {:.0} spans per second between two scrapes; at most {:.0} traces ({:.0} spans, {} MiB by its \
                 own count) were buffered at once; its `metrics.csv` in target/e2e/ has what each scrape saw.",
                copy.cpu_s / copy.drain_s,
                tg.run.cpu_s / tg.run.drain_s,
                std::thread::available_parallelism().map_or(0, |n| n.get()),
                tg.startup_cpu_s.map_or("—".into(), |c| format!("{c:.2}")),
                tg.after_start().map_or("—".into(), |r| format!("{r:.0}")),
                tg.ingest_s.map_or("—".into(), |s| format!("{s:.1}")),
                tg.peak_ingest,
                tg.peak_traces,
                tg.peak_spans,
                mib(tg.peak_bytes)
            );
            let _ = writeln!(
                r,
                "\nDecision lateness (`tailgate_decision_lateness_seconds`, cumulative):\n"
            );
            let total = tg.lateness.last().map_or(0.0, |b| b.1);
            let cells: Vec<String> = tg
                .lateness
                .iter()
                .map(|(b, c)| {
                    let bound = if b.is_infinite() {
                        "+Inf".to_string()
                    } else {
                        fmt_secs(*b)
                    };
                    format!("≤ {bound}: {:.2} %", 100.0 * c / total.max(1.0))
                })
                .collect();
            let _ = writeln!(r, "{}", cells.join(", "));
        }
    }

    /// The same on 1, 4 and 16 input partitions.
    pub(super) fn report_partitions(&self, r: &mut String) {
        if self.results.throughput.len() > 1 {
            let _ = writeln!(r, "\n## Scaling with input partitions\n");
            let _ = writeln!(
                r,
                "The same workload on topics of 1, 4 and 16 partitions; each program reads it from the start.\n"
            );
            let _ = writeln!(
                r,
                "| partitions | copy CPU s | copy spans / CPU-s | tailgate CPU s | tailgate spans / CPU-s | tailgate / copy | copy drain s | tailgate drain s | copy peak RSS MiB | tailgate peak RSS MiB | tailgate peak buffered traces | p99 lateness |"
            );
            let _ = writeln!(r, "|---|---|---|---|---|---|---|---|---|---|---|---|");
            for row in &self.results.throughput {
                let (p, c, t) = (row.partitions, &row.copy, row.tailgate());
                let _ = writeln!(
                    r,
                    "| {p} | {:.2} | {:.0} | {:.2} | {:.0} | {} | {:.1} | {:.1} | {} | {} | {:.0} | {} |",
                    c.cpu_s,
                    c.spans_per_cpu_s(),
                    t.run.cpu_s,
                    t.run.spans_per_cpu_s(),
                    ratio(t.run.spans_per_cpu_s(), c.spans_per_cpu_s()),
                    c.drain_s,
                    t.run.drain_s,
                    mib(c.peak_rss as f64),
                    mib(t.run.peak_rss as f64),
                    t.peak_traces,
                    t.p99()
                );
            }
        }
    }

    /// Spans per CPU-second as the buffer grows.
    pub(super) fn report_buffer(&self, r: &mut String) {
        if !self.results.buffer.is_empty() {
            let _ = writeln!(r, "\n## Scaling with buffered traces\n");
            let _ = writeln!(
                r,
                "tailgate with `decision.wait` = `after_root` longer than reading the topic takes (1.5 × the \
                 throughput run's read time for as many spans, + 1 s), on a 4-partition topic of the first tenth \
                 of the traces and on the full 4-partition topic: the buffer fills with the whole topic, then \
                 every trace is decided. The CPU seconds include the idle rest of the wait (an idle tailgate \
                 spends about 13 ms of CPU a second). Peaks of `tailgate_buffered_traces` are \
                 sampled every {} ms. *After start-up* leaves out tailgate's start-up, measured on an empty \
                 topic: {} CPU s from start until a second after its partitions are assigned.\n",
                SCRAPE_EVERY.as_millis(),
                self.results
                    .startup_cpu_s
                    .map_or("—".into(), |c| format!("{c:.2}"))
            );
            let _ = writeln!(
                r,
                "| traces in the topic | decision wait | peak buffered traces | peak buffered spans | CPU s | spans / CPU-s | after start-up | drain wall s | peak RSS MiB | split traces |\n|---|---|---|---|---|---|---|---|---|---|"
            );
            for (traces, wait, f) in &self.results.buffer {
                let _ = writeln!(
                    r,
                    "| {traces} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {} | {:.1} | {} | {} |",
                    fmt_secs(wait.as_secs_f64()),
                    f.peak_traces,
                    f.peak_spans,
                    f.run.cpu_s,
                    f.run.spans_per_cpu_s(),
                    f.after_start().map_or("—".into(), |r| format!("{r:.0}")),
                    f.run.drain_s,
                    mib(f.run.peak_rss as f64),
                    f.parts.split,
                );
            }
        }
    }

    /// Resident memory per buffered span.
    pub(super) fn report_memory(&self, r: &mut String, w: &Workload) {
        let spans = w.total_spans();
        if let Some(m) = &self.results.memory {
            let _ = writeln!(r, "\n## Memory per buffered span\n");
            let _ = writeln!(
                r,
                "A fresh 4-partition topic filled in {MEMORY_STEPS} steps of {} traces; tailgate with `decision.wait` = \
                 `after_root` = `max_trace_age` = 1 h (nothing is decided) and `buffer.max_bytes` = 16 GiB. After each \
                 step, once every span is buffered and a second has passed: VmRSS and the buffer gauges.\n",
                w.traces() / MEMORY_STEPS
            );
            let _ = writeln!(
                r,
                "| traces in the topic | buffered traces | buffered spans | span encodings MiB | message bytes MiB | `tailgate_buffered_bytes` MiB | RSS MiB |\n|---|---|---|---|---|---|---|"
            );
            let _ = writeln!(
                r,
                "| 0 (idle, partitions assigned) | 0 | 0 | 0 | 0 | 0 | {} |",
                mib(m.idle_rss as f64)
            );
            for p in &m.points {
                let _ = writeln!(
                    r,
                    "| {} | {:.0} | {:.0} | {} | {} | {} | {} |",
                    p.traces,
                    p.buffered_traces,
                    p.buffered_spans,
                    mib(p.span_bytes as f64),
                    mib(p.message_bytes as f64),
                    mib(p.buffered_bytes),
                    mib(p.rss as f64)
                );
            }
            let per_enc = w.span_bytes() as f64 / spans as f64;
            let accounted = m.points.last().map_or(0.0, |p| {
                (p.buffered_bytes - p.span_bytes as f64) / p.buffered_spans.max(1.0)
            });
            let _ = writeln!(
                r,
                "\nLeast squares over the {MEMORY_STEPS} filled steps: RSS = **{:.2}** × span-encoding bytes + **{} MiB** \
                 (the fixed overhead; idle RSS before any input {} MiB, peak RSS {} MiB). Per buffered span: {:.0} bytes \
                 of RSS for {per_enc:.0} bytes of span encoding and {:.0} message bytes ({:.2} × the message bytes). \
                 tailgate's own accounting (`tailgate_buffered_bytes`, what `buffer.max_bytes` limits) is the encodings \
                 plus {accounted:.0} bytes per span.",
                m.slope,
                mib(m.intercept),
                mib(m.idle_rss as f64),
                mib(m.peak_rss as f64),
                m.per_span,
                w.message_bytes() as f64 / spans as f64,
                m.slope_message,
            );
        }
    }

    pub(super) fn report_route(&self, r: &mut String) {
        let Some((batches, route)) = &self.results.route else {
            return;
        };
        let _ = writeln!(r, "\n## tailgate route\n");
        let _ = writeln!(
            r,
            "`tailgate route` on the workload as the Collector's exporter writes it without \
             `partition_traces_by_id`: {batches} unkeyed batches of {} messages, round-robin over 4 \
             partitions; every batch split into one message per trace, keyed by trace id, to a topic of 4 \
             partitions. Measured from start until its group committed the end of every partition.\n",
            crate::route::BATCH
        );
        let _ = writeln!(
            r,
            "| program | CPU s | spans / CPU-s | drain wall s | peak RSS |\n|---|---|---|---|---|"
        );
        let copy = self.main_run().map(|(c, _, _)| c);
        for (name, f) in [
            ("raw copy, 4 partitions", copy),
            ("tailgate route", Some(route)),
        ] {
            if let Some(f) = f {
                let _ = writeln!(
                    r,
                    "| {name} | {:.2} | {:.0} | {:.1} | {} |",
                    f.cpu_s,
                    f.spans_per_cpu_s(),
                    f.drain_s,
                    mib(f.peak_rss as f64)
                );
            }
        }
        if let Some(c) = copy {
            let _ = writeln!(
                r,
                "\nroute ÷ raw copy, spans per CPU-second: **{}** (the copy forwards a tenth of the \
                 messages unchanged; route decodes every message and writes every span).",
                ratio(route.spans_per_cpu_s(), c.spans_per_cpu_s())
            );
        }
    }
}
