//! What a run measured, kept for the report.

use std::time::Duration;

use tailgate::clock::ClockMode;

#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub cpu_s: f64,
    pub drain_s: f64,
    pub peak_rss: u64,
    pub spans: u64,
}

impl Figures {
    pub fn spans_per_cpu_s(&self) -> f64 {
        self.spans as f64 / self.cpu_s.max(1e-9)
    }

    /// Runs of one program on one topic as one: mean CPU and drain time,
    /// the highest peak RSS.
    pub fn mean(runs: &[Figures]) -> Figures {
        let n = runs.len().max(1) as f64;
        Figures {
            cpu_s: runs.iter().map(|f| f.cpu_s).sum::<f64>() / n,
            drain_s: runs.iter().map(|f| f.drain_s).sum::<f64>() / n,
            peak_rss: runs.iter().map(|f| f.peak_rss).max().unwrap_or(0),
            spans: runs.first().map_or(0, |f| f.spans),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TailgateFigures {
    pub run: Figures,
    /// The decision wait the drain time includes (after_root here).
    pub decision_wait: Duration,
    /// From start until every input span was received.
    pub ingest_s: Option<f64>,
    /// The fastest ingest between two scrapes, spans per second.
    pub peak_ingest: f64,
    /// CPU seconds tailgate spends starting up (see `Bench::startup`).
    pub startup_cpu_s: Option<f64>,
    pub peak_traces: f64,
    pub peak_spans: f64,
    pub peak_bytes: f64,
    pub lateness: Vec<(f64, f64)>,
    pub decided_memory: f64,
    /// The clock its deadlines counted on.
    pub clock: ClockMode,
    /// What else it changed from the defaults.
    pub variant: Variant,
    /// Its output per kept trace, and traces decided in parts.
    pub parts: Parts,
}

/// How tailgate's output came, per kept trace, and what its metrics say of
/// traces decided in parts (spans read after their trace's decision).
#[derive(Debug, Clone, Default)]
pub struct Parts {
    /// Kept traces in the output, and as the library decides.
    pub kept: usize,
    pub expected_kept: usize,
    /// Output messages; the library's decisions make one per kept trace.
    pub messages: usize,
    /// Kept traces in more than one message although one would have held
    /// them: decided in parts.
    pub split: usize,
    /// Messages beyond one per kept trace, of those split traces.
    pub extra_messages: usize,
    /// Kept traces too large for one message (legitimately in several).
    pub oversize: usize,
    /// Most messages for one kept trace.
    pub most: usize,
    /// `tailgate_late_spans_total`: spans read after their trace was
    /// decided, of kept and of dropped traces.
    pub late_kept: f64,
    pub late_dropped: f64,
    /// `tailgate_traces_decided_total`, and the traces in the topic: a trace
    /// decided twice (its late spans outlived the remembered decision)
    /// counts twice.
    pub decided: f64,
    pub traces: usize,
    /// A few split traces, described.
    pub examples: Vec<String>,
}

impl Parts {
    /// "0 split (3333 kept traces in 3333 messages)".
    pub fn summary(&self) -> String {
        format!(
            "{} split ({} kept traces in {} messages{}); late spans {:.0} kept, {:.0} dropped",
            self.split,
            self.kept,
            self.messages,
            if self.oversize > 0 {
                format!(", {} over the message size", self.oversize)
            } else {
                String::new()
            },
            self.late_kept,
            self.late_dropped
        )
    }
}

impl TailgateFigures {
    pub fn p99(&self) -> String {
        match quantile_bound(&self.lateness, 0.99) {
            Some((b, _)) if b.is_infinite() => "> 10 s".into(),
            Some((b, _)) => format!("≤ {}", fmt_secs(b)),
            None => "no decisions".into(),
        }
    }

    /// Spans per CPU-second without start-up.
    pub fn after_start(&self) -> Option<f64> {
        let cpu = self.run.cpu_s - self.startup_cpu_s?;
        (cpu > 0.0).then(|| self.run.spans as f64 / cpu)
    }

    pub fn within_50ms(&self) -> Option<f64> {
        fraction_within(&self.lateness, 0.05)
    }
}

pub fn fmt_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{} ms", (s * 1000.0).round())
    } else {
        format!("{} s", (s * 10.0).round() / 10.0)
    }
}

#[derive(Debug, Clone)]
pub struct Check {
    pub run: String,
    pub what: String,
    pub ok: bool,
    /// A failed check fails the run; one that is not asserted is reported
    /// only (what the wall clock makes of a pre-filled topic).
    pub asserted: bool,
    pub detail: String,
}

pub struct TailgateSettings {
    pub clock: ClockMode,
    pub wait: Duration,
    pub after_root: Duration,
    pub max_trace_age: Duration,
    pub max_bytes: u64,
    pub variant: Variant,
}

/// What a tailgate run changes from the defaults the bench measures with
/// (decision log on, at-least-once, the bench's rules): each durable
/// feature's cost is the default run against the run without it, and the
/// production policy is measured as it ships.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Variant {
    #[default]
    Default,
    /// `kafka.decision_log: false`.
    NoDecisionLog,
    /// `kafka.exactly_once: true`.
    ExactlyOnce,
    /// The rules of `policies/production.yaml` (critical-path and dynamic
    /// rules) instead of the bench's.
    Production,
    /// `output.critical_path: false` and `metrics.critical_path: false`:
    /// no summary written onto kept traces, no latency attribution.
    NoCriticalPath,
}

impl Variant {
    pub const FEATURES: [Variant; 4] = [
        Variant::NoDecisionLog,
        Variant::ExactlyOnce,
        Variant::Production,
        Variant::NoCriticalPath,
    ];

    /// What the report calls it: "decision log off".
    pub fn name(self) -> &'static str {
        match self {
            Variant::Default => "default",
            Variant::NoDecisionLog => "decision log off",
            Variant::ExactlyOnce => "exactly-once",
            Variant::Production => "production policy",
            Variant::NoCriticalPath => "critical path off",
        }
    }

    /// The label's suffix: ", decision log off" (none for the default).
    pub fn suffix(self) -> String {
        match self {
            Variant::Default => String::new(),
            v => format!(", {}", v.name()),
        }
    }

    /// Whether its output is the library's decisions under the bench's rules.
    pub fn bench_rules(self) -> bool {
        self != Variant::Production
    }
}

pub struct MemoryPoint {
    pub traces: usize,
    pub buffered_traces: f64,
    pub buffered_spans: f64,
    pub buffered_bytes: f64,
    pub span_bytes: u64,
    pub message_bytes: u64,
    pub rss: u64,
}

pub struct Memory {
    pub idle_rss: u64,
    pub peak_rss: u64,
    pub points: Vec<MemoryPoint>,
    /// RSS per byte of span encoding, least squares over the points.
    pub slope: f64,
    /// RSS at no buffered bytes, by the same fit.
    pub intercept: f64,
    /// RSS per message byte (the input as it came).
    pub slope_message: f64,
    /// RSS per buffered span.
    pub per_span: f64,
}

/// The copy and tailgate on one topic of the throughput and partitions phases.
pub struct Throughput {
    pub partitions: i32,
    /// The message time the topic spans, seconds.
    pub stamped_s: f64,
    /// The copy's runs (before tailgate's and after) as one.
    pub copy: Figures,
    pub copy_runs: Vec<Figures>,
    /// tailgate's runs on the topic, in the order they ran: with the stream
    /// clock, and as many with `decision.clock: wall` (`--clock-pairs`).
    pub runs: Vec<TailgateFigures>,
    /// On the 4-partition topic, after those: one run of each of
    /// [`Variant::FEATURES`] (`--only features` or the default phases).
    pub features: Vec<TailgateFigures>,
}

impl Throughput {
    /// The first run with the stream clock (with two or more pairs, right
    /// after the copy): the figure the other tables give.
    pub fn tailgate(&self) -> &TailgateFigures {
        self.of(ClockMode::Stream)
            .next()
            .expect("every topic has a stream-clock run")
    }

    pub fn of(&self, clock: ClockMode) -> impl Iterator<Item = &TailgateFigures> {
        self.runs.iter().filter(move |f| f.clock == clock)
    }

    /// The feature run of `variant`, if it ran.
    pub fn feature(&self, variant: Variant) -> Option<&TailgateFigures> {
        self.features.iter().find(|f| f.variant == variant)
    }

    /// Over every run with `clock`: the mean of `figure`.
    pub fn mean(&self, clock: ClockMode, figure: impl Fn(&TailgateFigures) -> f64) -> Option<f64> {
        let values: Vec<f64> = self.of(clock).map(figure).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }

    /// Spans per CPU-second over every run with `clock` (all their spans
    /// over all their CPU seconds).
    pub fn rate(&self, clock: ClockMode) -> Option<f64> {
        let spans = self.mean(clock, |f| f.run.spans as f64)?;
        Some(spans / self.mean(clock, |f| f.run.cpu_s)?.max(1e-9))
    }
}

pub fn clock_name(clock: ClockMode) -> &'static str {
    match clock {
        ClockMode::Stream => "stream",
        ClockMode::Wall => "wall",
    }
}

/// The results of one run, kept for the report.
#[derive(Default)]
pub struct Results {
    /// Per input partition count.
    pub throughput: Vec<Throughput>,
    /// N / 10 and N traces in the topic, all buffered: (traces, wait, figures).
    pub buffer: Vec<(usize, Duration, TailgateFigures)>,
    pub memory: Option<Memory>,
    /// `tailgate route` on the unkeyed batches: (batches, figures).
    pub route: Option<(usize, Figures)>,
    /// tailgate's CPU seconds from start until a second after its
    /// partitions of an empty topic are assigned.
    pub startup_cpu_s: Option<f64>,
}

/// Of a histogram's cumulative buckets (`Metrics::buckets`): the smallest
/// bucket bound below which at least `q` of the observations lie, and the
/// count.
fn quantile_bound(buckets: &[(f64, f64)], q: f64) -> Option<(f64, f64)> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(b, _)| (*b, total))
}

/// Fraction of observations at or below `bound` (a bucket bound).
fn fraction_within(buckets: &[(f64, f64)], bound: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    let at = buckets.iter().find(|(b, _)| (*b - bound).abs() < 1e-9)?.1;
    (total > 0.0).then(|| at / total)
}
