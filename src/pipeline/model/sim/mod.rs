//! The harness: the real [`Partition`] and, beside it, the reference model
//! of what it must do. `steps` runs a history's steps, `outputs` follows
//! what the partition sends and writes and how each produce ends, `checks`
//! holds the invariants checked after every step and at the end.

mod checks;
mod outputs;
mod steps;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use super::generate::Case;
use super::input::{input, InputFact, SpanFact};
use super::*;
use crate::buffer::BufferConfig;
use crate::otlp::counting::Counted;
use crate::otlp::tracestate::Stage;

/// The deciding rule and its stage: what a kept span is annotated with.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Counting {
    pub stage: Stage,
    pub rule: Arc<str>,
}

/// The consumer's stored offsets; it refuses stores while `refuse` is set,
/// as the consumer does for a partition it is not assigned at that moment.
#[derive(Default)]
pub(super) struct Stored {
    values: Mutex<Vec<i64>>,
    refuse: std::sync::atomic::AtomicBool,
}

impl OffsetStore for Stored {
    fn store(&self, _partition: i32, next_offset: i64) -> bool {
        if self.refuse.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        self.values.lock().expect("lock").push(next_offset);
        true
    }
}

/// What the current incarnation of the worker decided, and what it holds.
#[derive(Default)]
struct Incarnation {
    /// Spans read and not yet decided, per trace, in order.
    open: HashMap<TraceId, Vec<Key>>,
    /// Decisions remembered for late spans: kept or not, and how the kept
    /// spans are counted.
    remembered: HashMap<TraceId, (bool, Counting)>,
    /// Per span, its latest decision.
    decided: HashMap<Key, bool>,
    /// Kept spans that can never be delivered: too large, or a produce that failed for good.
    undeliverable: HashSet<Key>,
    /// Garbage messages (offsets) done with: released, or their dead letter delivered.
    garbage_done: HashSet<i64>,
    /// The spans of the message being read, per trace that was open: the
    /// budget may decide such a trace while the message is read, before its
    /// spans of this message are added, and those then follow the decision.
    reading: HashMap<TraceId, Vec<Key>>,
    /// Exactly-once: spans written into the open transaction.
    written: Vec<Key>,
    /// Exactly-once: the offset written with the open transaction's last write.
    written_offset: Option<i64>,
    /// The offset this worker last stored (exactly-once: wrote with the
    /// transaction, committed since or not).
    stored: Option<i64>,
    /// Kept spans whose output failed for good, waiting for their dead-letter copy.
    awaiting_copy: HashSet<Key>,
    /// Traces whose decision record is in the decision log (acknowledged,
    /// or written into the transaction), or was given up on for good.
    logged: HashSet<TraceId>,
    /// At-least-once: batches of decision records not yet acknowledged, by
    /// payload, with their traces and when the first of them was decided:
    /// given up `record_timeout` after that.
    records_pending: HashMap<Bytes, (Vec<TraceId>, Instant)>,
    /// When records were last given up: for a while after, decisions go
    /// on unlogged.
    last_give_up: Option<Instant>,
    /// Decided in this pass, no record seen for them yet.
    unrecorded: HashSet<TraceId>,
}

struct Sim {
    case: Case,
    input: Vec<InputFact>,
    spans: HashMap<Key, SpanFact>,
    rules_tx: watch::Sender<Arc<RuleSet>>,
    rules: [Arc<RuleSet>; 2],
    in_force: usize,
    stored: Arc<Stored>,
    /// Stored values already checked.
    seen_stored: usize,
    core: Option<Partition>,
    /// The next offset the worker reads.
    position: i64,
    /// Where the current worker started reading: what is below was checked
    /// when an earlier one stored (or wrote) an offset past it.
    from: i64,
    now: Instant,
    /// The wall clock's calendar reading at the start.
    epoch: Epoch,
    /// The input is paused for memory.
    paused: bool,
    in_flight: Vec<(DeliveryId, Outgoing)>,
    /// At-least-once: the committed offset; exactly-once: the last committed transaction's.
    committed: i64,
    /// Exactly-once: the open transaction's messages.
    open_transaction: Vec<Outgoing>,
    /// Exactly-once: the partition's offset in the open transaction, as an
    /// earlier worker wrote it (the current one's is `now_.written_offset`).
    open_offset: Option<i64>,
    /// Where the current worker began, if it replaced one that died.
    replacement_from: Option<i64>,
    /// The limits the workers split at (lowered when a broker refuses).
    limits: Arc<MessageLimits>,
    /// Delivered spans: acknowledged (at-least-once) or committed (exactly-once), with how often.
    delivered: HashMap<Key, usize>,
    /// Every span some decision kept.
    kept_ever: HashSet<Key>,
    now_: Incarnation,
    usage: Arc<std::sync::atomic::AtomicUsize>,
    /// What happened, for the report of a failure.
    log: Vec<String>,
    /// Payloads refused for good: refused again, whenever they are sent.
    refused: HashMap<Bytes, ProduceErrorKind>,
}

impl Sim {
    fn new(case: Case) -> Self {
        let case_limit = case.max_message_bytes;
        let (input, spans) = input(&case);
        let rules = [rules(0), rules(1)];
        let (rules_tx, _) = watch::channel(rules[0].clone());
        let now = Instant::now();
        let mut sim = Self {
            case,
            input,
            spans,
            rules_tx,
            rules,
            in_force: 0,
            stored: Arc::default(),
            seen_stored: 0,
            core: None,
            position: 0,
            from: 0,
            now,
            epoch: Epoch {
                instant: now,
                since_unix: WALL_START,
            },
            paused: false,
            in_flight: Vec::new(),
            committed: 0,
            open_transaction: Vec::new(),
            open_offset: None,
            replacement_from: None,
            limits: MessageLimits::new(case_limit),
            delivered: HashMap::new(),
            kept_ever: HashSet::new(),
            now_: Incarnation::default(),
            usage: Arc::default(),
            log: Vec::new(),
            refused: HashMap::new(),
        };
        sim.start(0).expect("nothing to leave behind yet");
        sim
    }

    fn config(&self) -> WorkerConfig {
        WorkerConfig {
            buffer: BufferConfig {
                wait: 10 * S,
                after_root: 2 * S,
                max_trace_age: 60 * S,
                max_bytes: self.case.max_bytes,
            },
            clock: ClockConfig::default(),
            epoch: self.epoch,
            paused_share: 0.45,
            decided_ttl: Duration::from_secs(3600),
            remembered_bytes: 1 << 26,
            decision_log_timeout: self
                .case
                .record_timeout
                .unwrap_or(Duration::from_secs(365 * 24 * 3600)),
            decision_log: self.case.decision_log,
            max_in_flight: self.case.max_in_flight,
            dead_letter: self.case.dead_letter,
            limits: self.limits.clone(),
            usage: self.usage.clone(),
            // The model predicts each output's bytes from the spans as
            // read; the critical path's attributes are tested apart.
            path: Default::default(),
            sample_rate_attribute: None,
        }
    }

    /// A new worker reading from `from`; what the old one decided of
    /// messages from there on no longer counts, since they are read again.
    fn start(&mut self, from: i64) -> Result<(), String> {
        self.core = None;
        let left = self.usage.load(std::sync::atomic::Ordering::Relaxed);
        if left != 0 {
            return Err(format!(
                "a worker gone leaves {left} bytes of memory usage behind"
            ));
        }
        self.in_flight.clear();
        self.position = from;
        self.from = from;
        self.now_ = Incarnation::default();
        self.open_transaction.clear();
        let core = Partition::new(
            0,
            self.config(),
            self.rules_tx.subscribe(),
            if self.case.exactly_once {
                Commit::Transaction
            } else {
                Commit::Offsets(self.stored.clone())
            },
        );
        self.core = Some(core);
        // A new worker starts from what the pause watch says.
        if self.paused {
            let now = self.now;
            self.core().input_paused(true, now);
        }
        Ok(())
    }

    fn core(&mut self) -> &mut Partition {
        self.core.as_mut().expect("a worker runs")
    }

    fn last_stored(&self) -> Option<i64> {
        self.stored.values.lock().expect("lock").last().copied()
    }
}

pub(super) fn run(case: Case) -> Result<(), String> {
    let steps = case.steps.clone();
    let mut sim = Sim::new(case);
    let layout: Vec<String> = sim
        .input
        .iter()
        .map(|f| {
            let spans: Vec<String> = f
                .spans
                .iter()
                .map(|(t, s)| format!("{}/{}", &t.to_hex()[28..], s[2]))
                .collect();
            format!(
                "{}: {}",
                f.message.offset,
                if f.garbage {
                    "garbage".into()
                } else {
                    spans.join(" ")
                }
            )
        })
        .collect();
    let report = |sim: &Sim, e: String| {
        format!(
            "{e}\ninput:\n  {}\nhistory (last 60):\n  {}",
            layout.join("\n  "),
            sim.log[sim.log.len().saturating_sub(60)..].join("\n  ")
        )
    };
    for (i, step) in steps.into_iter().enumerate() {
        if let Err(e) = sim.step(step) {
            return Err(report(&sim, format!("step {i} ({step:?}): {e}")));
        }
    }
    sim.log.push("finish".into());
    sim.finish()
        .map_err(|e| report(&sim, format!("finishing: {e}")))
}
