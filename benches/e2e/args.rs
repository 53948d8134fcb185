//! The command line: `cargo bench --bench e2e -- ARGS`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{BOOTSTRAP_ENV, STAMP_RATE, THROUGHPUT_AFTER_ROOT};

pub const USAGE: &str = "usage: cargo bench --bench e2e -- [--quick] [--traces N] [--seed S] \
[--only throughput,features,partitions,buffer,memory,route] [--clock-pairs N] [--after-root-ms MS] [--stamp-rate R] [--brokers HOST:PORT] [--report FILE] [--keep-topics]

  --quick        a shortened workload (20 000 traces), as CI runs it
  --traces N     traces in the workload (default 200 000; 7 spans each)
  --only LIST    phases to run (default all): throughput (4 partitions, copy and
                 tailgate), features (on 4 partitions beside the default run: the
                 decision log off, exactly-once, the production policy's rules),
                 partitions (1, 4 and 16), buffer (N / 10 and N traces
                 buffered at once), memory (RSS per buffered span), route
                 (`tailgate route` on the workload as unkeyed batches of 12 messages)
  --clock-pairs N  tailgate runs on each topic of the throughput and partitions
                 phases: N with the stream clock and N with `decision.clock: wall`,
                 in alternating order (the stream clock's cost); default 2, with
                 --quick 1; 0: one stream-clock run
  --after-root-ms MS  decision.after_root of the throughput and partitions runs
                 (default 1000); e.g. 20 to put the split-trace check under stress
  --stamp-rate R traces per second of message time in the input topics: each
                 trace's messages share a timestamp, traces 1/R s apart, the last
                 one now (default 20 000, about tailgate's read speed; 0: stamped
                 as produced, a burst of about a second for the whole topic)
  --brokers      bootstrap address (default: $TAILGATE_BENCH_BOOTSTRAP, set by scripts/bench)
  --report FILE  where to write the markdown report (default target/e2e-report.md)";

#[derive(Debug, Clone)]
pub struct Args {
    pub traces: usize,
    pub quick: bool,
    pub seed: u64,
    pub throughput: bool,
    /// Runs on 4 partitions with one durable feature changed, and with the
    /// production policy.
    pub features: bool,
    pub partitions: bool,
    pub buffer: bool,
    pub memory: bool,
    /// `tailgate route` on the workload as unkeyed batches.
    pub route: bool,
    /// Pairs of tailgate runs, stream clock and `decision.clock: wall`, on
    /// each topic of the throughput and partitions phases (0: one run, with
    /// the stream clock).
    pub clock_pairs: usize,
    /// `decision.after_root` of the throughput and partitions runs.
    pub after_root: Duration,
    /// Traces a second the input's message timestamps are spaced at (0:
    /// when produced).
    pub stamp_rate: f64,
    pub brokers: Option<String>,
    pub report: PathBuf,
    pub keep_topics: bool,
}

impl Args {
    pub fn parse(raw: &[String]) -> Result<Self, String> {
        let mut a = Args {
            traces: 200_000,
            quick: false,
            seed: 6,
            throughput: true,
            features: true,
            partitions: true,
            buffer: true,
            memory: true,
            route: true,
            clock_pairs: 0,
            after_root: THROUGHPUT_AFTER_ROOT,
            stamp_rate: STAMP_RATE,
            brokers: std::env::var(BOOTSTRAP_ENV).ok().filter(|s| !s.is_empty()),
            report: default_report_path(),
            keep_topics: false,
        };
        let mut traces = None;
        let mut clock_pairs = None;
        let mut it = raw.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--bench" => {}
                "--quick" => a.quick = true,
                "--keep-topics" => a.keep_topics = true,
                "--clock-pairs" => {
                    let v = value("--clock-pairs")?;
                    clock_pairs = Some(
                        v.parse()
                            .map_err(|_| format!("--clock-pairs {v}: not a number"))?,
                    );
                }
                "--traces" => {
                    let v = value("--traces")?;
                    let n: usize = v
                        .replace('_', "")
                        .parse()
                        .map_err(|_| format!("--traces {v}: not a number"))?;
                    if n < 100 {
                        return Err("--traces must be at least 100".into());
                    }
                    traces = Some(n);
                }
                "--after-root-ms" => {
                    let v = value("--after-root-ms")?;
                    let ms: u64 = v
                        .parse()
                        .map_err(|_| format!("--after-root-ms {v}: not a number"))?;
                    a.after_root = Duration::from_millis(ms);
                }
                "--stamp-rate" => {
                    let v = value("--stamp-rate")?;
                    a.stamp_rate = v
                        .replace('_', "")
                        .parse::<f64>()
                        .ok()
                        .filter(|r| r.is_finite() && *r >= 0.0)
                        .ok_or_else(|| format!("--stamp-rate {v}: not a rate"))?;
                }
                "--seed" => {
                    let v = value("--seed")?;
                    a.seed = v.parse().map_err(|_| format!("--seed {v}: not a number"))?;
                }
                "--brokers" => a.brokers = Some(value("--brokers")?),
                "--report" => a.report = PathBuf::from(value("--report")?),
                "--only" => {
                    let v = value("--only")?;
                    a.throughput = false;
                    a.features = false;
                    a.partitions = false;
                    a.buffer = false;
                    a.memory = false;
                    a.route = false;
                    for phase in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        match phase {
                            "throughput" => a.throughput = true,
                            "features" => a.features = true,
                            "partitions" => a.partitions = true,
                            "buffer" => a.buffer = true,
                            "memory" => a.memory = true,
                            "route" => a.route = true,
                            other => return Err(format!("--only: unknown phase {other:?}")),
                        }
                    }
                }
                "-h" | "--help" => return Err("help".into()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        a.traces = traces.unwrap_or(if a.quick { 20_000 } else { 200_000 });
        a.clock_pairs = clock_pairs.unwrap_or(if a.quick { 1 } else { 2 });
        Ok(a)
    }
}

/// `target/e2e-report.md` of this checkout (or of `CARGO_TARGET_DIR`).
fn default_report_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("e2e-report.md")
}
