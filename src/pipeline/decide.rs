//! Decide: the rules over each whole trace when its deadline comes (or the
//! memory budget calls it early); a kept trace goes to delivery, a dropped
//! one releases its offsets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::decisions::Decided;
use super::delivery::InFlight;
use super::events::Event;
use super::record::RecordBatch;
use super::{
    Command, DecisionRecord, Destination, Outgoing, Partition, Recalled, SpanCount, Written,
    RECORD_BATCH_BYTES,
};
use crate::buffer::{ReadyTrace, Reason};
use crate::clock::Time;
use crate::otlp;
use crate::otlp::counting::Counted;
use crate::otlp::tracestate::{Erased, Sampling, Stage};
use crate::rules::{PathSummary, TraceSummary};

/// Which worker of the process a partition is, for its batches' keys.
static WORKERS: AtomicU64 = AtomicU64::new(0);

/// Decisions gathered for the decision log's next message.
pub(super) struct PendingRecords {
    batch: RecordBatch,
    /// The input offsets of their traces, pinned until the batch is
    /// acknowledged.
    offsets: Vec<i64>,
    /// When the first was added; `None` while there is none.
    since: Option<Instant>,
    /// Batches sent by this worker.
    sent: u64,
    worker: u64,
}

impl Default for PendingRecords {
    fn default() -> Self {
        Self {
            batch: RecordBatch::default(),
            offsets: Vec::new(),
            since: None,
            sent: 0,
            worker: WORKERS.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Partition {
    /// Decides every trace whose deadline has passed.
    pub fn decide_due(&mut self, now: Instant) {
        self.now = Some(now);
        self.give_up_overdue_records(now);
        self.sync_blocked(now);
        self.decide_due_at(self.clock.time(now));
        self.shrink_for_memory(now);
        // The decisions of this wake-up go to the log in one message.
        self.flush_records();
        // Deciding may have filled the produces in flight.
        self.sync_blocked(now);
    }

    /// While the worker cannot take input (its produces are stuck), the
    /// partition's clock stands: what waits to be read is not known, and an
    /// outage of the output is no time passing in the stream.
    pub(super) fn sync_blocked(&mut self, now: Instant) {
        let blocked = !self.can_read();
        self.clock.blocked(blocked, now);
    }

    pub(super) fn decide_due_at(&mut self, now: Time) {
        let mut ready = std::mem::take(&mut self.ready);
        self.buffer.pop_due(now, &mut ready);
        for t in ready.drain(..) {
            self.decide(t, now);
        }
        self.ready = ready;
    }

    /// Picks up reloaded rules, if any.
    fn refresh_rules(&mut self) {
        if self.rules_updates.has_changed().unwrap_or(false) {
            self.rules = self.rules_updates.borrow_and_update().clone();
            self.telemetry.set_rules(&self.rules);
        }
    }

    /// Decide: the rules over one whole trace; kept, it is delivered, else
    /// its offsets are released.
    pub(super) fn decide(&mut self, mut t: ReadyTrace, now: Time) {
        self.refresh_rules();
        // The samplers (`limit`, `dynamic`, per instance) count rates in
        // stream time, calendar seconds comparable across partitions: the
        // same input gives the same decisions however fast it is read.
        let summary = TraceSummary::of(t.trace_id, &t.spans);
        let decision = self.rules.decide(&summary, self.clock.unix(now.stream));
        // The critical path, measured on every trace and written onto the
        // kept ones (the rules may have computed it already).
        let path = self
            .config
            .path
            .wanted(decision.keep)
            .then(|| PathSummary::of(summary.critical_path(), &t.spans))
            .flatten();
        if let (Some(path), Some(attribution)) = (&path, &mut self.attribution) {
            attribution.record(path, &t.spans, summary.duration.as_secs_f64());
        }
        let incoming = summary.sampling;
        drop(summary);
        let digest = path
            .as_ref()
            .filter(|_| self.config.path.report)
            .map(|p| Box::new(p.digest(&t.spans)));
        let rule = self.rules.names()[decision.rule].clone();
        let mut attributes = Vec::new();
        if let Some(path) = path.filter(|_| decision.keep && self.config.path.annotate) {
            attributes = path.attributes(&t.spans);
            // A span the attributes would make too large for any output
            // message goes without them, as it came: they never turn a
            // span that can be delivered into one that cannot.
            let limit = self.config.limits.of(Destination::Sampled);
            attributes.retain(|(i, a)| {
                t.spans
                    .get(*i)
                    .is_some_and(|s| alone(s) + a.as_bytes().len() <= limit)
            });
        }
        let counted = decision.keep.then(|| {
            let (id, stage) = (t.trace_id, decision.stage);
            self.count(&mut t.spans, id, &incoming, stage, &rule, &attributes)
        });
        let span_count = counted
            .as_ref()
            .filter(|_| self.config.path.report)
            .map(|c| {
                let out = c.of_root(&t.spans);
                Box::new(SpanCount {
                    incoming: incoming.threshold,
                    outgoing: out.and_then(|o| o.threshold),
                    adjusted_count: out.and_then(|o| o.adjusted_count),
                })
            });
        let annotation = counted.map(|c| c.annotation);
        self.commands.push(Command::Decided(DecisionRecord {
            trace_id: t.trace_id,
            keep: decision.keep,
            rule: rule.clone(),
            reason: t.reason,
            spans: t.spans.len(),
            critical_path: digest,
            counted: span_count,
        }));
        let decided = Decided {
            keep: decision.keep,
            rule,
            stage: decision.stage,
            from_log: false,
        };
        // Remembered from the stream time it was made at.
        let at = self.clock.unix(now.stream);
        let forgotten = self
            .decisions
            .insert(t.trace_id, &decided, at, at)
            .forgotten;
        if forgotten > 0 {
            self.forgot(forgotten, now.wall);
        }
        if self.config.decision_log {
            self.log_decision(&t, &decided, now.wall, at);
        }
        self.telemetry.decided[&(decision.rule, decision.keep, t.reason)].increment(1);
        self.telemetry.spans_decided[&(decision.rule, decision.keep)]
            .increment(t.spans.len() as u64);
        // On the clock the deadline counts on (max_trace_age: the wall's).
        let clock = match t.reason {
            Reason::MaxAge => now.wall,
            _ => now.stream,
        };
        self.telemetry
            .lateness
            .record(clock.saturating_duration_since(t.deadline).as_secs_f64());
        match annotation {
            Some(annotation) => {
                self.deliver_kept(t.trace_id, &t.spans, &annotation, t.encoding, t.offsets)
            }
            None => {
                for o in t.offsets {
                    self.release(o);
                }
            }
        }
    }

    /// Counts: what the kept `spans` of trace `id` (whose sampling upstream
    /// says `trace`) leave with — the
    /// threshold in their `tracestate` and their adjusted count — made on
    /// them (with `extra` attributes appended to the spans they name); its
    /// annotation is what all of them carry. Thresholds erased as malformed
    /// or inconsistent are counted.
    pub(super) fn count(
        &mut self,
        spans: &mut [otlp::SpanRecord],
        id: otlp::TraceId,
        trace: &Sampling,
        stage: Stage,
        rule: &str,
        extra: &[(usize, otlp::Attributes)],
    ) -> Counted {
        let sample_rate = self.config.sample_rate_attribute.as_deref();
        let counted = Counted::of(spans, &id, trace, stage, rule, sample_rate);
        counted.apply(spans, extra);
        for (why, n) in Erased::ALL.into_iter().zip(counted.erased) {
            if n > 0 {
                self.telemetry.erased(why).increment(n);
            }
        }
        counted
    }

    /// Adds the decision's record to the partition's batch for the
    /// decision log ([`Partition::flush_records`] sends it); it pins the
    /// trace's offsets until the batch is acknowledged (exactly-once, the
    /// batch goes into the transaction before any offset its traces free),
    /// so no offset is committed past a decision the log does not hold.
    fn log_decision(&mut self, t: &ReadyTrace, decided: &Decided, now: Instant, stream: Duration) {
        if self.log_paused_until.is_some_and(|until| now < until) {
            // The log could not be written a moment ago: this decision goes
            // on without its record rather than hold the input for it.
            metrics::counter!(crate::metrics::DECISIONS_UNLOGGED).increment(1);
            self.unlogged += 1;
            return;
        }
        self.log_paused_until = None;
        if !self.exactly_once() {
            for o in &t.offsets {
                self.watermark.pin(*o, 1);
            }
            self.records.offsets.extend_from_slice(&t.offsets);
        }
        let pending = &mut self.records;
        pending.since.get_or_insert(now);
        pending.batch.push(
            t.trace_id,
            decided.keep,
            &decided.rule,
            t.reason,
            decided.stage,
            stream.as_millis() as i64,
            t.spans.len(),
        );
        // Sent early when full, well within what the producer takes (a
        // record, or a rule name, more cannot pass it).
        let limit = self
            .config
            .limits
            .of(Destination::Decisions(self.partition));
        let full = RECORD_BATCH_BYTES.min(limit.saturating_sub(1024));
        if pending.batch.bytes() >= full {
            self.flush_records();
        }
    }

    /// Sends the decisions gathered for the decision log as one message
    /// (at the end of every wake-up: [`Partition::decide_due`] and
    /// [`Partition::advance`] do). At-least-once, it is given up
    /// `kafka.decision_log_timeout` after its first decision if not
    /// acknowledged by then. True if there were any.
    pub(super) fn flush_records(&mut self) -> bool {
        let Some(since) = self.records.since.take() else {
            return false;
        };
        let decisions = self.records.batch.len();
        let at = self.config.epoch.at(since).as_millis() as i64;
        let payload = self.records.batch.finish(self.partition, at);
        self.records.sent += 1;
        // Unique, so that a compacted topic keeps every batch: the
        // partition, the process (its start, in ns), the worker, the batch.
        let key = format!(
            "{}-{}-{}-{}",
            self.partition,
            self.config.epoch.since_unix.as_nanos(),
            self.records.worker,
            self.records.sent
        );
        let message = Outgoing {
            destination: Destination::Decisions(self.partition),
            key: Some(Bytes::from(key)),
            payload: Bytes::from(payload),
            headers: Vec::new(),
        };
        if self.exactly_once() {
            // Into the open transaction at once, ahead of any offset its
            // traces let the partition commit (those are written after it,
            // in this transaction or a later one): held for its turn, a
            // batch pinning many traces' offsets would wait for every trace
            // begun before its last one — under steady traffic, for ever.
            self.commands.push(Command::Write {
                messages: vec![message],
                next_offset: None,
                receipt: Written {
                    decisions: decisions as u64,
                    ..Written::default()
                },
            });
            return true;
        }
        let give_up_at = Some(since + self.config.decision_log_timeout);
        // Its offsets were pinned as each decision was added.
        let offsets = std::mem::take(&mut self.records.offsets);
        self.send(InFlight {
            message,
            offsets,
            spans: 0,
            decisions,
            trace: None,
            attempt: 0,
            give_up_at,
        });
        true
    }

    /// Remembered decisions were forgotten before their TTL: counted, and
    /// said at most once per 10 s.
    fn forgot(&mut self, n: u64, now: Instant) {
        let event = Event::Forgotten {
            n,
            remembered: self.decisions.len(),
            max_bytes: self.decisions.max_bytes(),
        };
        self.events.emit(&self.telemetry, event, Some(now));
    }

    /// Decisions read back from the decision log, made by the partition's
    /// earlier workers (before a restart, or on another instance): their
    /// traces' late spans follow them until `decided_ttl` after they were
    /// made, in stream time. `resume` is the stream time the partition
    /// resumes at ([`Partition::resume_at`]): what expired before it is not
    /// kept. Returns how many are remembered.
    pub fn remember(&mut self, records: Vec<Recalled>, resume: Duration, now: Instant) -> usize {
        self.now = Some(now);
        let mut forgotten = 0;
        for r in records {
            let made = Duration::from_millis(r.stream_ms.max(0) as u64);
            let decided = Decided {
                keep: r.keep,
                stage: r.stage(),
                rule: r.rule,
                from_log: true,
            };
            forgotten += self
                .decisions
                .insert(r.trace, &decided, made, resume)
                .forgotten;
        }
        if forgotten > 0 {
            self.forgot(forgotten, now);
        }
        self.show();
        self.decisions.len()
    }

    /// How many decisions read back the partition can remember: reading
    /// back keeps no more.
    pub fn remember_capacity(&self) -> usize {
        self.decisions.capacity()
    }

    /// The stream time the partition resumes at, if its first message
    /// (read at `now`) is stamped `timestamp` (`None` when there is none, or
    /// nothing to read): where its clock will stand.
    pub fn resume_at(&self, timestamp: Option<i64>, now: Instant) -> Duration {
        self.clock.preview(timestamp, now)
    }

    /// The decision log's records worth reading back for a partition that
    /// resumes at stream time `resume` — those made within `decided_ttl`
    /// before it — as the earliest produce time (milliseconds since the Unix
    /// epoch) they can have: a decision is made, and its record produced, no
    /// earlier than `decision.clock_ahead` before the stream time it carries.
    pub fn remembered_since(&self, resume: Duration) -> i64 {
        resume
            .saturating_sub(self.config.decided_ttl)
            .saturating_sub(self.config.clock.ahead)
            .as_millis()
            .min(i64::MAX as u128) as i64
    }
}

/// An upper bound of the bytes of an output message holding `span` alone:
/// its encoding and its resource and scope, the rule's attributes and
/// the framing (generous: JSON is larger, and a span near the limit goes
/// without the critical path's attributes rather than past it).
fn alone(span: &crate::otlp::SpanRecord) -> usize {
    use crate::otlp::Part;
    let parts: usize = Part::ALL.iter().map(|p| span.scope.part(*p).len()).sum();
    2 * (span.encoded().len() + parts) + 1024
}
