//! `tailgate replay` and `tailgate explain`: the rules run over captured
//! traffic, producing nothing.
//!
//! A capture is a sequence of Kafka messages (from OTLP files, or a range of
//! a topic read by [`crate::kafka::range`]). `replay` hands each partition's
//! messages, in order, to the production pipeline itself — a
//! [`Partition`], the code `tailgate run` runs — through in-memory ports
//! that acknowledge every produce at once, and reads its decisions off the
//! commands it gives. So replay decides as production does by
//! construction: the same stream clock (with its clamping of timestamps
//! that cannot be trusted), the same buffer deadlines, the same late spans
//! following remembered decisions, the same samplers on stream time.
//!
//! What it models is a running tailgate reading the capture as a backlog at
//! the moment it was captured (a topic range: when it was read; files: the
//! latest stamp), then catching up: the wall clock stands while the
//! messages are read, and runs on at the end until everything is decided.
//! A file's lines have no Kafka timestamps, so each is stamped with the
//! latest end of its spans, as the Collector's exporter would stamp it soon
//! after. Partitions are merged by timestamp. What replay leaves out: the
//! memory budget (nothing is decided early for memory), `max_trace_age` (a
//! wall-clock bound), and the decision log and dead letters (nothing is
//! produced).
//!
//! `explain` looks at whole traces: every span of the capture with the
//! trace's id, whatever its arrival, beside what replay decided of it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::otlp::tracestate::Threshold;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::buffer::{BufferConfig, Reason};
use crate::clock::{ClockConfig, Epoch};
use crate::otlp::TraceId;
use crate::pipeline::{
    Command, Commit, Destination, InputMessage, MessageLimits, OffsetStore, Partition, PathOutput,
    WorkerConfig,
};
use crate::rules::path_summary::PathDigest;
use crate::rules::RuleSet;

mod capture;
mod explain;
mod report;

use capture::Captured;
pub use capture::{Capture, Traces};
pub use explain::{
    as_decided, explain, explained, CheckPart, Explained, PathParts, PathStep, RuleTried, SpanName,
    Verdict,
};
pub use report::{Report, RuleStats, TraceRow};

/// The settings of `tailgate run` that decide what replay decides.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// `decision.wait` and `decision.after_root` (the byte budget and
    /// `max_trace_age` are left out).
    pub buffer: BufferConfig,
    /// `decision.clock`, `clock_ahead`, `clock_behind`.
    pub clock: ClockConfig,
    pub decided_ttl: Duration,
    /// `decision.remembered_bytes`, shared by the capture's partitions as
    /// by an instance's.
    pub remembered_bytes: usize,
    /// The largest output message (kept traces are split to fit), for the
    /// bytes the output would take.
    pub max_message_bytes: usize,
    /// `output.critical_path`: kept traces carry their summary, in the
    /// bytes the output would take too.
    pub critical_path: bool,
    /// `output.sample_rate_attribute`, in the bytes the output would take.
    pub sample_rate_attribute: Option<String>,
}

impl ReplayConfig {
    /// `buffer` with the other settings at their defaults.
    pub fn new(buffer: BufferConfig) -> Self {
        Self {
            buffer,
            clock: ClockConfig::default(),
            decided_ttl: Duration::from_secs(600),
            remembered_bytes: 64 << 20,
            max_message_bytes: 1 << 20,
            critical_path: true,
            sample_rate_attribute: None,
        }
    }
}

/// One decision replay saw the pipeline make: over a trace's spans when
/// its deadline came, or over late spans that followed an earlier one.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub trace_id: TraceId,
    pub partition: i32,
    pub keep: bool,
    pub rule: Arc<str>,
    pub spans: usize,
    /// Why the trace was decided then; `None` for late spans that
    /// followed its earlier decision.
    pub reason: Option<Reason>,
    /// The critical path of the spans decided then (`None` for late spans).
    pub critical_path: Option<Box<PathDigest>>,
}

/// The watermark goes nowhere: replay commits nothing.
struct Nowhere;

impl OffsetStore for Nowhere {
    fn store(&self, _partition: i32, _next_offset: i64) -> bool {
        true
    }
}

/// One partition of the capture: the production pipeline, its messages
/// still to read, and its own wall clock.
struct Lane {
    partition: Partition,
    queue: VecDeque<Captured>,
    next_offset: i64,
    wall: Instant,
}

/// What replay makes of the pipeline's commands.
struct Tally<F> {
    report: Report,
    /// The report's row of each rule name.
    rows: HashMap<Arc<str>, usize>,
    traces: HashSet<TraceId>,
    split: HashSet<TraceId>,
    observe: F,
}

impl<F: FnMut(Outcome)> Tally<F> {
    fn row(&mut self, rule: &Arc<str>) -> usize {
        if let Some(&r) = self.rows.get(rule) {
            return r;
        }
        // A rule the report does not list (none: the rules do not change).
        self.report.rules.push(RuleStats {
            rule: rule.to_string(),
            ..RuleStats::default()
        });
        let r = self.report.rules.len() - 1;
        self.rows.insert(rule.clone(), r);
        r
    }

    /// Carries out the lane's commands: every produce succeeds at once.
    fn carry_out(&mut self, lane: &mut Lane) {
        // The rule of the decision the next output messages carry.
        let mut current = None;
        loop {
            let commands = lane.partition.commands();
            if commands.is_empty() {
                break;
            }
            for c in commands {
                match c {
                    Command::Decided(d) => {
                        let row = self.row(&d.rule);
                        let stats = &mut self.report.rules[row];
                        if d.keep {
                            stats.traces_kept += 1;
                            stats.spans_kept += d.spans as u64;
                        } else {
                            stats.traces_dropped += 1;
                            stats.spans_dropped += d.spans as u64;
                        }
                        current = Some(row);
                        self.traces.insert(d.trace_id);
                        let counted = d.counted.as_deref();
                        let th = |t: Option<Threshold>| t.map(Threshold::encode);
                        self.report.decided.push(TraceRow {
                            trace_id: d.trace_id.to_hex(),
                            keep: d.keep,
                            rule: d.rule.to_string(),
                            reason: d.reason.as_str(),
                            spans: d.spans,
                            critical_path: d.critical_path.as_deref().cloned(),
                            incoming_threshold: th(counted.and_then(|c| c.incoming)),
                            outgoing_threshold: th(counted.and_then(|c| c.outgoing)),
                            adjusted_count: counted.and_then(|c| c.adjusted_count),
                        });
                        (self.observe)(Outcome {
                            trace_id: d.trace_id,
                            partition: lane.partition.partition(),
                            keep: d.keep,
                            rule: d.rule,
                            spans: d.spans,
                            reason: Some(d.reason),
                            critical_path: d.critical_path,
                        });
                    }
                    Command::Followed {
                        trace_id,
                        keep,
                        rule,
                        spans,
                    } => {
                        let row = self.row(&rule);
                        let stats = &mut self.report.rules[row];
                        if keep {
                            stats.spans_kept += spans as u64;
                        } else {
                            stats.spans_dropped += spans as u64;
                        }
                        self.report.late_spans += spans as u64;
                        if self.split.insert(trace_id) {
                            self.report.split_traces += 1;
                        }
                        current = Some(row);
                        (self.observe)(Outcome {
                            trace_id,
                            partition: lane.partition.partition(),
                            keep,
                            rule,
                            spans,
                            reason: None,
                            critical_path: None,
                        });
                    }
                    Command::Send { id, message, .. } => {
                        if message.destination == Destination::Sampled {
                            if let Some(row) = current {
                                self.report.rules[row].bytes_out += message.payload.len() as u64;
                            }
                        }
                        lane.partition.delivered(id, Ok(()), lane.wall);
                    }
                    // At-least-once: nothing is written into a transaction.
                    Command::Write { .. } => {}
                }
            }
        }
        lane.partition.advance();
    }
}

/// Decides the messages of `capture` as `tailgate run` would with
/// `config`; `progress` is told after each message.
pub fn replay(
    rules: Arc<RuleSet>,
    config: ReplayConfig,
    capture: Capture,
    progress: impl FnMut(u64),
) -> Report {
    replay_observed(rules, config, capture, progress, |_| {})
}

/// [`replay`], telling `observe` of each decision as it is made.
pub fn replay_observed(
    rules: Arc<RuleSet>,
    config: ReplayConfig,
    capture: Capture,
    mut progress: impl FnMut(u64),
    observe: impl FnMut(Outcome),
) -> Report {
    // The pipeline's own logs (bad input, unkeyed messages) are for a
    // running instance; the report counts what they say.
    let quiet = tracing::subscriber::NoSubscriber::default();
    let _quiet = tracing::subscriber::set_default(quiet);
    // The capture's first and last timestamps.
    let stamps = || {
        capture
            .captured
            .iter()
            .filter_map(|m| m.timestamp.filter(|t| *t > 0))
    };
    let (first, last) = (stamps().min(), stamps().max());
    let read_at = capture.read_at.unwrap_or_else(|| match last {
        Some(ms) => Duration::from_millis(ms as u64),
        None => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    });
    let origin = Instant::now();
    let epoch = Epoch {
        instant: origin,
        since_unix: read_at,
    };
    let (_rules_tx, rules_rx) = watch::channel(rules.clone());
    let mut by_partition: HashMap<i32, VecDeque<Captured>> = HashMap::new();
    for m in capture.captured {
        by_partition.entry(m.partition).or_default().push_back(m);
    }
    let partitions = by_partition.len().max(1);
    let worker = WorkerConfig {
        buffer: BufferConfig {
            // Nothing is decided for memory or age: the capture's own
            // times decide.
            max_bytes: usize::MAX / 2,
            max_trace_age: Duration::from_secs(10 * 365 * 24 * 3600),
            ..config.buffer
        },
        clock: config.clock,
        epoch,
        // Never paused.
        paused_share: 1.0,
        decided_ttl: config.decided_ttl,
        remembered_bytes: config.remembered_bytes / partitions,
        max_in_flight: usize::MAX,
        dead_letter: false,
        decision_log: false,
        decision_log_timeout: Duration::from_secs(30),
        limits: MessageLimits::new(config.max_message_bytes),
        usage: Arc::default(),
        // Each decision's summary for the report; written onto kept traces
        // as `run` would, for the bytes out. No metrics are served.
        path: PathOutput {
            annotate: config.critical_path,
            metrics: None,
            report: true,
        },
        sample_rate_attribute: config.sample_rate_attribute.as_deref().map(Arc::from),
    };
    let mut numbers: Vec<i32> = by_partition.keys().copied().collect();
    numbers.sort_unstable();
    let mut lanes: Vec<Lane> = numbers
        .into_iter()
        .map(|p| Lane {
            partition: Partition::new(
                p,
                worker.clone(),
                rules_rx.clone(),
                Commit::Offsets(Arc::new(Nowhere)),
            ),
            queue: by_partition.remove(&p).unwrap_or_default(),
            next_offset: 0,
            wall: origin,
        })
        .collect();
    let mut tally = Tally {
        report: Report {
            messages: capture.messages,
            bytes_in: capture.bytes_in,
            rules: rules
                .names()
                .iter()
                .map(|n| RuleStats {
                    rule: n.to_string(),
                    ..RuleStats::default()
                })
                .collect(),
            ..Report::default()
        },
        rows: rules
            .names()
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect(),
        traces: HashSet::new(),
        split: HashSet::new(),
        observe,
    };
    // Read: each partition in its own order, partitions merged by timestamp.
    let mut done = 0u64;
    loop {
        let next = lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                l.queue
                    .front()
                    .map(|m| (m.timestamp.unwrap_or(i64::MIN), i))
            })
            .min();
        let Some((_, i)) = next else { break };
        let lane = &mut lanes[i];
        if let Some(m) = lane.queue.pop_front() {
            let message = InputMessage {
                offset: lane.next_offset,
                timestamp: m.timestamp,
                key: m.key,
                payload: m.payload,
            };
            lane.next_offset += 1;
            lane.partition.handle(message, lane.wall);
            lane.partition.decide_due(lane.wall);
            tally.carry_out(lane);
        }
        done += 1;
        progress(done);
    }
    // Caught up: each partition's clock runs on with the wall until all
    // its traces are decided.
    for lane in &mut lanes {
        lane.partition.caught_up(lane.wall);
        while let Some(due) = lane.partition.next_deadline(lane.wall) {
            lane.wall = if due > lane.wall {
                due
            } else {
                lane.wall + Duration::from_millis(1)
            };
            lane.partition.decide_due(lane.wall);
            tally.carry_out(lane);
        }
    }
    let mut report = tally.report;
    for lane in &lanes {
        let read = lane.partition.read_counts();
        report.spans += read.spans;
        report.rejected += read.rejected;
    }
    report.traces = tally.traces.len() as u64;
    for s in &report.rules {
        report.traces_kept += s.traces_kept;
        report.spans_kept += s.spans_kept;
        report.bytes_out += s.bytes_out;
    }
    if report.bytes_in > 0 {
        report.reduction = 1.0 - report.bytes_out as f64 / report.bytes_in as f64;
    }
    if let (Some(first), Some(last)) = (first, last) {
        report.captured_seconds = last.saturating_sub(first) as f64 / 1e3;
    }
    if report.captured_seconds > 0.0 {
        report.bytes_out_per_second = report.bytes_out as f64 / report.captured_seconds;
    }
    report
}

/// What replay decided of each trace of `capture`, in the order decided.
pub fn decisions(
    rules: Arc<RuleSet>,
    config: ReplayConfig,
    capture: Capture,
) -> HashMap<TraceId, Vec<Outcome>> {
    let mut out: HashMap<TraceId, Vec<Outcome>> = HashMap::new();
    replay_observed(
        rules,
        config,
        capture,
        |_| {},
        |o| out.entry(o.trace_id).or_default().push(o),
    );
    out
}

#[cfg(test)]
mod tests;
