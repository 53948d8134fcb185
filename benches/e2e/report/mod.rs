//! The report, printed and written to `target/e2e-report.md`: the run and
//! its workload, then [`targets`], the [`tables`] of each phase, the
//! [`clock`] comparison, the [`features`]' costs, and every check.

mod about;
mod clock;
mod features;
mod tables;
mod targets;

use std::fmt::Write as _;

use about::{machine, revision, utc_now};

use crate::bench::Bench;
use crate::figures::{Figures, TailgateFigures, Throughput};
use crate::workload::Workload;
use crate::{COMMIT_INTERVAL, MIB, THROUGHPUT_WAIT};

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".into()
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1}", bytes / MIB)
}

fn yes_no(ok: bool) -> &'static str {
    if ok {
        "**yes**"
    } else {
        "**no**"
    }
}

impl Bench {
    /// The copy and tailgate's first stream-clock run on the 4-partition topic.
    fn main_run(&self) -> Option<(&Figures, &TailgateFigures, &Throughput)> {
        self.results
            .throughput
            .iter()
            .find(|t| t.partitions == 4)
            .map(|t| (&t.copy, t.tailgate(), t))
    }

    pub fn report(&self, w: &Workload, error: Option<&String>) -> String {
        let mut r = String::new();
        let spans = w.total_spans();
        let args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect();
        let _ = writeln!(r, "# End to end: tailgate against a raw rdkafka copy\n");
        let _ = writeln!(
            r,
            "Run {} with `scripts/bench{}{}` ({:.0} s, fills and checks included), tailgate at {}, on {}; \
             one Kafka broker (scripts/kafka, KRaft, single node) at {} on the same machine. \
             Each program runs as a process of its own and is measured as a whole (`/proc/<pid>`).\n",
            utc_now(),
            if args.is_empty() { "" } else { " " },
            args.join(" "),
            self.started.elapsed().as_secs_f64(),
            revision(),
            machine(),
            self.kafka.brokers
        );
        let errors = w.error.iter().filter(|e| **e).count();
        let slow = w.slow.iter().filter(|s| **s).count();
        let _ = writeln!(
            r,
            "Workload (`ShopWorkload::lean`, seed {}): {} traces of 7 spans, {spans} spans in {} messages \
             (one per resource and trace, keyed by the trace id in hex, uncompressed), {} MiB: \
             {:.0} message bytes per span, {:.0} bytes per span encoding; {errors} traces with an error \
             ({:.1} %), {slow} slow ones ({:.1} %). {}\n",
            self.args.seed,
            w.traces(),
            w.messages.len(),
            mib(w.message_bytes() as f64),
            w.message_bytes() as f64 / spans as f64,
            w.span_bytes() as f64 / spans as f64,
            errors as f64 * 100.0 / w.traces() as f64,
            slow as f64 * 100.0 / w.traces() as f64,
            self.stamps(),
        );
        let _ = writeln!(
            r,
            "- **raw copy**: this bench's executable in a copy role: rdkafka `BaseConsumer` → `BaseProducer`, \
             forwards the messages of every tenth trace (FNV-1a of the key) unchanged, stores an offset once \
             every forwarded message up to it is acknowledged (as tailgate does), auto-commit every {} ms; lz4, \
             `linger.ms` 5, idempotent, `acks=all` (tailgate's producer settings). No decoding. It forwards \
             10 % of the traces as they came (5 messages each); tailgate keeps about 17 % (errors, slow traces \
             and 10 % of the rest), one message per trace. It runs on each topic before tailgate's runs and \
             again after them, and its figures are the mean of the two: its CPU moves by ± 25 % from run to \
             run on this machine, tailgate's by ± 5 %.\n\
             - **tailgate**: `tailgate run` with rules errors → keep, trace duration ≥ 1 s → keep, `rate: 0.1`; \
             `decision.after_root` {} s (`wait` {} s), `kafka.commit_interval` {} ms, defaults otherwise: so \
             deadlines on each partition's stream clock (message timestamps). {}\n\
             - **CPU s**: user + sys of the whole process, read when the topic is drained. **Drain wall s**: from \
             process start (start-up and joining the group included) until the group's committed offsets are the \
             end offsets of every input partition; tailgate's includes its decision wait. **Peak RSS**: VmHWM.\n",
            COMMIT_INTERVAL.as_millis(),
            self.args.after_root.as_secs_f64(),
            THROUGHPUT_WAIT.as_secs_f64(),
            COMMIT_INTERVAL.as_millis(),
            match self.args.clock_pairs {
                0 => "No wall-clock runs (`--clock-pairs 0`).".to_string(),
                n => format!(
                    "On each topic of the throughput runs, {n} run{} with the stream clock and {n} with \
                     `decision.clock: wall` (deadlines from when each span is read), taking turns going first; \
                     the other tables give the first stream-clock run.",
                    if n == 1 { "" } else { "s" }
                ),
            },
        );
        if let Some(e) = error {
            let _ = writeln!(r, "**The run stopped early:** {e}\n");
        }
        if w.traces() < 100_000 {
            let _ = writeln!(
                r,
                "**A shortened workload:** runs of a second or two, CPU times counted in 10 ms ticks and \
                 start-up included, so the ratios below swing by tens of percent from run to run and with \
                 anything else running on the machine. A smoke test of the harness and of tailgate's output; \
                 the figures to quote come from the full workload (docs/benchmarks.md).\n"
            );
        }

        self.report_targets(&mut r, w, error);
        self.report_throughput(&mut r);
        self.report_partitions(&mut r);
        if !self.results.throughput.is_empty() {
            self.report_clock(&mut r);
        }
        self.report_features(&mut r);
        self.report_buffer(&mut r);
        self.report_memory(&mut r, w);
        self.report_route(&mut r);

        let _ = writeln!(r, "\n## Correctness\n");
        let _ = writeln!(r, "| run | check | passed | detail |\n|---|---|---|---|");
        for c in &self.checks {
            let _ = writeln!(
                r,
                "| {} | {} | {} | {} |",
                c.run,
                c.what,
                match (c.asserted, c.ok) {
                    (true, ok) => yes_no(ok),
                    (false, true) => "yes (reported)",
                    (false, false) => "no (reported)",
                },
                c.detail
            );
        }
        r
    }
}
