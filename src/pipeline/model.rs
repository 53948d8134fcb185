//! The model-based test of one partition's pipeline (issue 11).
//!
//! A seeded generator makes a partition's input — traces spread over several
//! messages, several traces per message, spans of one trace in both
//! encodings, spans too large for a message, spans malformed inside an
//! intact frame, garbage messages — and a history of events in any order:
//! reads, pauses of any length, produce acknowledgements and failures
//! (transient and permanent, in any order), commits, a crash (restart from
//! the committed offset), a worker that dies (restart from its last stored
//! offset), a graceful stop, rule reloads; in at-least-once and in
//! exactly-once mode, with a small memory budget or none, a small message
//! limit or none.
//!
//! The real [`Partition`] runs the history; a small reference model follows
//! it and checks after every step:
//!
//! - **offsets**: the stored offset (at-least-once) or the offset written
//!   with a transaction (exactly-once) never passes a message holding a span
//!   that is undecided, or kept and not acknowledged (not in the transaction);
//! - **decisions**: each decision covers exactly the spans the model has
//!   open for that trace, and is what the rules in force decide for them; a
//!   late span follows its trace's decision;
//! - **output**: every output message fits the limit, decodes, is keyed by
//!   its trace id, and carries only spans some decision kept;
//! - **memory**: the bytes the buffer counts are at least the bytes of the
//!   messages its spans keep alive;
//! - and at the end, once everything is read, decided, acknowledged and
//!   committed: every span is resolved, every span whose latest decision was
//!   keep is delivered (or was too large for any message, or failed for
//!   good), the committed offset is the end, and exactly-once output has no
//!   duplicate.
//!
//! proptest shrinks a failure to a minimal history. `PROPTEST_CASES` sets how
//! many histories run (CI: the default below).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    status, ResourceSpans, ScopeSpans, Span, Status, TracesData,
};
use proptest::prelude::*;
use prost::Message as _;
use tokio::sync::watch;

use super::*;
use crate::buffer::BufferConfig;
use crate::clock::ClockMode;
use crate::otlp::wire::put_len;
use crate::otlp::{Annotation, Encoding, SpanRecord, TraceId};
use crate::rules::{RuleSet, RuleSpec, TraceSummary};

/// A span, by trace and span id.
type Key = (TraceId, [u8; 8]);

const S: Duration = Duration::from_secs(1);

/// The first message's timestamp (2026-01-01, ms since the Unix epoch); the
/// wall clock starts an hour later, so the input is a backlog.
const BASE_MS: i64 = 1_767_225_600_000;
const WALL_START: Duration = Duration::from_millis(BASE_MS as u64 + 3_600_000);

/// The two rule sets a history switches between.
const RULES: [&str; 2] = [
    "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: some, sample: {rate: 0.3}}]",
    "[{name: most, sample: {rate: 0.7}}]",
];

fn rules(i: usize) -> Arc<RuleSet> {
    let specs: Vec<RuleSpec> = serde_yaml::from_str(RULES[i]).expect("rules");
    Arc::new(RuleSet::compile(&specs).expect("rules compile"))
}

// ---------------------------------------------------------------- generation

/// A trace: its spans' padding (bytes of attribute), which span errs, and
/// whether it has a root.
#[derive(Debug, Clone)]
struct GenTrace {
    pads: Vec<usize>,
    error: Option<usize>,
    root: bool,
}

/// How one message is made.
#[derive(Debug, Clone, Copy)]
struct GenMessage {
    /// How many spans it carries (of the shuffled spans).
    spans: usize,
    json: bool,
    /// Also a span broken inside its intact frame.
    broken_span: bool,
    /// A garbage message comes before it.
    garbage_before: bool,
    /// Its resource carries a large attribute.
    big_resource: bool,
    /// Milliseconds between the previous message's timestamp and its own
    /// (how its producer spaced them).
    gap_ms: u64,
    /// Its timestamp is wrong: none, or far in the future.
    stamp: Stamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    Good,
    Missing,
    Ahead,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    Transient,
    Permanent(ProduceErrorKind),
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// The worker reads the next message (if it may).
    Read,
    /// Time passes (a pause in reading, unless caught up).
    Wait(Duration),
    /// The consumer says it reached the end of the partition (if the worker did).
    CaughtUp,
    /// The input is paused for memory, or resumed.
    MemoryPause(bool),
    /// A produce in flight (picked by index) ends so.
    Ack(usize, Outcome),
    /// The consumer commits what is stored (exactly-once: the transaction commits).
    Commit,
    /// The process dies: a new one reads from the committed offset.
    Crash,
    /// The worker dies: a new one reads from what it last stored.
    WorkerDies,
    /// A graceful stop (revoke, SIGTERM): drain, store, commit; then a restart.
    Stop,
    /// The other rule set is loaded.
    Reload,
    /// The consumer refuses stores from now on, or takes them again.
    RefuseStores(bool),
}

#[derive(Debug, Clone)]
struct Case {
    exactly_once: bool,
    dead_letter: bool,
    max_bytes: usize,
    max_message_bytes: usize,
    max_in_flight: usize,
    traces: Vec<GenTrace>,
    order: Vec<u32>,
    messages: Vec<GenMessage>,
    steps: Vec<Step>,
}

fn pad() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0usize..200, 2 => 300usize..1_200, 1 => 3_000usize..4_000]
}

fn gen_trace() -> impl Strategy<Value = GenTrace> {
    (
        proptest::collection::vec(pad(), 1..6),
        any::<Option<u8>>(),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(pads, error, root)| {
            let error = error
                .filter(|e| e % 3 == 0)
                .map(|e| usize::from(e) % pads.len());
            GenTrace { pads, error, root }
        })
}

fn gap_ms() -> impl Strategy<Value = u64> {
    prop_oneof![6 => 0u64..500, 3 => 500u64..3_000, 1 => 3_000u64..15_000]
}

fn gen_message(stamps: impl Strategy<Value = Stamp>) -> impl Strategy<Value = GenMessage> {
    (
        (
            1usize..4,
            prop::bool::weighted(0.25),
            prop::bool::weighted(0.08),
            prop::bool::weighted(0.05),
            prop::bool::weighted(0.1),
        ),
        gap_ms(),
        stamps,
    )
        .prop_map(
            |((spans, json, broken_span, garbage_before, big_resource), gap_ms, stamp)| {
                GenMessage {
                    spans,
                    json,
                    broken_span,
                    garbage_before,
                    big_resource,
                    gap_ms,
                    stamp,
                }
            },
        )
}

fn any_stamp() -> impl Strategy<Value = Stamp> {
    prop_oneof![30 => Just(Stamp::Good), 1 => Just(Stamp::Missing), 1 => Just(Stamp::Ahead)]
}

fn permanent() -> impl Strategy<Value = ProduceErrorKind> {
    prop_oneof![
        Just(ProduceErrorKind::MessageTooLarge),
        Just(ProduceErrorKind::UnknownTopic),
        Just(ProduceErrorKind::Authorization),
        Just(ProduceErrorKind::InvalidRecord),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => Just(Step::Read),
        5 => prop_oneof![
            4 => (0u64..600).prop_map(Duration::from_millis),
            2 => (1_000u64..4_000).prop_map(Duration::from_millis),
            1 => (9_000u64..70_000).prop_map(Duration::from_millis),
        ].prop_map(Step::Wait),
        6 => (any::<usize>(), prop_oneof![
            10 => Just(Outcome::Ok),
            3 => Just(Outcome::Transient),
            1 => permanent().prop_map(Outcome::Permanent),
        ]).prop_map(|(i, o)| Step::Ack(i, o)),
        2 => Just(Step::Commit),
        1 => Just(Step::Crash),
        1 => Just(Step::WorkerDies),
        1 => Just(Step::Stop),
        1 => Just(Step::Reload),
        1 => any::<bool>().prop_map(Step::RefuseStores),
        1 => Just(Step::CaughtUp),
        1 => any::<bool>().prop_map(Step::MemoryPause),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            any::<bool>(),
            any::<bool>(),
            prop_oneof![Just(1usize << 30), 3_000usize..30_000],
            prop_oneof![Just(1_000_000usize), 1_500usize..3_500],
            prop_oneof![Just(10_000usize), 1usize..4],
        ),
        proptest::collection::vec(gen_trace(), 1..8),
        proptest::collection::vec(any::<u32>(), 48),
        proptest::collection::vec(gen_message(any_stamp()), 48),
        proptest::collection::vec(step(), 1..100),
    )
        .prop_map(
            |(
                (exactly_once, dead_letter, max_bytes, max_message_bytes, max_in_flight),
                traces,
                order,
                messages,
                steps,
            )| Case {
                exactly_once,
                dead_letter,
                max_bytes,
                max_message_bytes,
                max_in_flight,
                traces,
                order,
                messages,
                steps,
            },
        )
}

// ------------------------------------------------------------- the input

/// What the model knows of one span of the input.
struct SpanFact {
    offset: i64,
    record: SpanRecord,
    encoding: Encoding,
}

/// One input message, as produced, and what the model knows of it.
struct InputFact {
    message: InputMessage,
    /// Valid spans it carries.
    spans: Vec<Key>,
    /// Rejected whole (garbage).
    garbage: bool,
}

fn trace_id(t: usize) -> TraceId {
    let mut id = [0u8; 16];
    id[0] = 0x5a;
    id[8..].copy_from_slice(&((t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes());
    TraceId(id)
}

fn span_id(t: usize, i: usize) -> [u8; 8] {
    [1, t as u8, i as u8, 0, 0, 0, 0, 1]
}

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

fn make_span(t: usize, i: usize, g: &GenTrace) -> Span {
    Span {
        trace_id: trace_id(t).0.to_vec(),
        span_id: span_id(t, i).to_vec(),
        parent_span_id: if i == 0 && g.root {
            Vec::new()
        } else {
            span_id(t, 0).to_vec()
        },
        name: format!("op-{t}-{i}"),
        kind: 2,
        start_time_unix_nano: 1_000_000 + i as u64,
        end_time_unix_nano: 2_000_000 + i as u64,
        attributes: vec![kv("pad", "p".repeat(g.pads[i]))],
        status: (g.error == Some(i)).then(|| Status {
            code: status::StatusCode::Error as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The input of a case: its messages, offsets 0, 1, 2...
fn input(case: &Case) -> (Vec<InputFact>, HashMap<Key, SpanFact>) {
    let mut all: Vec<(u32, usize, usize)> = Vec::new();
    for (t, g) in case.traces.iter().enumerate() {
        for i in 0..g.pads.len() {
            let k = all.len();
            all.push((case.order[k % case.order.len()], t, i));
        }
    }
    all.sort();
    let mut out: Vec<InputFact> = Vec::new();
    let mut facts = HashMap::new();
    let mut rest = all.as_slice();
    let mut m = 0;
    let mut ts = BASE_MS;
    while !rest.is_empty() {
        let gm = case.messages[m % case.messages.len()];
        m += 1;
        ts += gm.gap_ms as i64;
        let timestamp = match gm.stamp {
            Stamp::Good => Some(ts),
            Stamp::Missing => None,
            Stamp::Ahead => Some(WALL_START.as_millis() as i64 + 86_400_000),
        };
        if gm.garbage_before {
            let payload = Bytes::from(vec![0x0a, 0xff, 0xff, 0x01, 0x02]);
            out.push(InputFact {
                message: InputMessage {
                    offset: out.len() as i64,
                    timestamp,
                    key: None,
                    payload,
                },
                spans: Vec::new(),
                garbage: true,
            });
        }
        let (now, later) = rest.split_at(gm.spans.min(rest.len()));
        rest = later;
        let mut resource = Resource {
            attributes: vec![kv("service.name", format!("svc-{m}"))],
            ..Default::default()
        };
        if gm.big_resource {
            resource.attributes.push(kv("big", "r".repeat(2_000)));
        }
        let spans: Vec<Span> = now
            .iter()
            .map(|(_, t, i)| make_span(*t, *i, &case.traces[*t]))
            .collect();
        let data = TracesData {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "model".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let encoding = if gm.json {
            Encoding::OtlpJson
        } else {
            Encoding::OtlpProto
        };
        let payload = match (encoding, gm.broken_span) {
            (Encoding::OtlpProto, false) => data.encode_to_vec(),
            (Encoding::OtlpJson, false) => serde_json::to_vec(&data).expect("json"),
            (Encoding::OtlpProto, true) => {
                // One more span, of the first trace, whose attributes run past its end.
                let mut broken = make_span(
                    now[0].1,
                    99,
                    &GenTrace {
                        pads: vec![0; 100],
                        error: None,
                        root: false,
                    },
                )
                .encode_to_vec();
                broken.extend_from_slice(&[0x4a, 60, 0x0a, 0x00]);
                let rs = &data.resource_spans[0];
                let mut scope = Vec::new();
                put_len(
                    &mut scope,
                    1,
                    &rs.scope_spans[0]
                        .scope
                        .as_ref()
                        .expect("scope")
                        .encode_to_vec(),
                );
                for s in &rs.scope_spans[0].spans {
                    put_len(&mut scope, 2, &s.encode_to_vec());
                }
                put_len(&mut scope, 2, &broken);
                let mut resource_spans = Vec::new();
                put_len(
                    &mut resource_spans,
                    1,
                    &rs.resource.as_ref().expect("resource").encode_to_vec(),
                );
                put_len(&mut resource_spans, 2, &scope);
                let mut payload = Vec::new();
                put_len(&mut payload, 1, &resource_spans);
                payload
            }
            (Encoding::OtlpJson, true) => {
                // One more span with an odd-length hex trace id.
                let mut v = serde_json::to_value(&data).expect("json");
                let spans = v["resourceSpans"][0]["scopeSpans"][0]["spans"]
                    .as_array_mut()
                    .expect("spans");
                let mut bad = spans[0].clone();
                bad["traceId"] = serde_json::Value::String("abc".into());
                spans.push(bad);
                serde_json::to_vec(&v).expect("json")
            }
        };
        let payload = Bytes::from(payload);
        let offset = out.len() as i64;
        let decoded = otlp::decode(payload.clone()).expect("a generated message decodes");
        assert_eq!(decoded.rejected.len(), usize::from(gm.broken_span));
        let mut keys = Vec::new();
        for (id, record) in decoded.spans {
            let key = (id, record.span_id);
            keys.push(key);
            facts.insert(
                key,
                SpanFact {
                    offset,
                    record,
                    encoding,
                },
            );
        }
        out.push(InputFact {
            message: InputMessage {
                offset,
                timestamp,
                key: None,
                payload,
            },
            spans: keys,
            garbage: false,
        });
    }
    (out, facts)
}

// ------------------------------------------------------------ the harness

/// The consumer's stored offsets; it refuses stores while `refuse` is set,
/// as the consumer does for a partition it is not assigned at that moment.
#[derive(Default)]
struct Stored {
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
    /// Decisions remembered for late spans: kept or not, and the kept spans' annotation.
    remembered: HashMap<TraceId, (bool, Arc<Annotation>)>,
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
            decided_ttl: Duration::from_secs(3600),
            decided_capacity: 1 << 20,
            max_in_flight: self.case.max_in_flight,
            dead_letter: self.case.dead_letter,
            limits: self.limits.clone(),
            usage: self.usage.clone(),
            exactly_once: self.case.exactly_once,
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
            self.stored.clone(),
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

    // ------------------------------------------------------------- steps

    fn step(&mut self, step: Step) -> Result<(), String> {
        self.log
            .push(format!("{step:?} (position {})", self.position));
        match step {
            Step::Read => self.read(),
            Step::Wait(d) => self.now += d,
            Step::CaughtUp => {
                // The consumer says so only once the worker read everything.
                if self.position as usize >= self.input.len() {
                    let now = self.now;
                    self.core().caught_up(now);
                }
            }
            Step::MemoryPause(paused) => {
                self.paused = paused;
                let now = self.now;
                self.core().input_paused(paused, now);
            }
            Step::Ack(i, outcome) => {
                if !self.in_flight.is_empty() {
                    let (id, message) = self.in_flight.remove(i % self.in_flight.len());
                    self.ack(id, message, outcome)?;
                }
            }
            Step::Commit => self.commit(),
            Step::Crash => {
                // The process is gone: what it stored but did not commit is too.
                self.stored
                    .values
                    .lock()
                    .expect("lock")
                    .push(self.committed);
                self.seen_stored = self.stored.values.lock().expect("lock").len();
                let from = self.committed;
                self.start(from)?;
                self.replacement_from = None;
                self.open_offset = None;
            }
            Step::WorkerDies => {
                // The consumer stays: the replacement reads from what the dead
                // worker itself last stored (exactly-once: wrote with the
                // transaction), else from where the dead worker began if it
                // was a replacement too, else from the committed offset — as
                // `Partitions` and the app do.
                let from = self
                    .now_
                    .stored
                    .or(self.replacement_from)
                    .unwrap_or(self.committed);
                let written = std::mem::take(&mut self.open_transaction);
                let transaction_offset = self.now_.written_offset.or(self.open_offset);
                self.start(from)?;
                self.replacement_from = Some(from);
                // The open transaction stays open, with what the dead worker
                // wrote, and its offset for the partition.
                self.open_transaction = written;
                self.open_offset = transaction_offset;
            }
            Step::Stop => {
                self.drain()?;
                self.commit();
                let from = self.committed;
                self.start(from)?;
                self.replacement_from = None;
            }
            Step::RefuseStores(refuse) => self
                .stored
                .refuse
                .store(refuse, std::sync::atomic::Ordering::Relaxed),
            Step::Reload => {
                self.in_force = 1 - self.in_force;
                self.rules_tx
                    .send_replace(self.rules[self.in_force].clone());
            }
        }
        self.settle()
    }

    fn read(&mut self) {
        if !self.core().can_read() || self.position as usize >= self.input.len() {
            return;
        }
        let at = self.position as usize;
        self.position += 1;
        let message = self.input[at].message.clone();
        // The model first: where each span goes.
        let offset = message.offset;
        if self.input[at].garbage && !self.case.dead_letter {
            self.now_.garbage_done.insert(offset);
        }
        let mut groups: Vec<(TraceId, Vec<Key>)> = Vec::new();
        for key in self.input[at].spans.clone() {
            match groups.iter_mut().find(|(t, _)| *t == key.0) {
                Some((_, g)) => g.push(key),
                None => groups.push((key.0, vec![key])),
            }
        }
        let mut followed = Vec::new();
        for (t, keys) in groups {
            if let Some(open) = self.now_.open.get_mut(&t) {
                open.extend(keys.iter().copied());
                self.now_.reading.insert(t, keys);
            } else if let Some((keep, annotation)) = self.now_.remembered.get(&t) {
                followed.push((t, keys, *keep, annotation.clone()));
            } else {
                self.now_.open.insert(t, keys);
            }
        }
        let now = self.now;
        self.core().handle(message, now);
        for (_, keys, keep, annotation) in followed {
            self.follow(keys, keep, &annotation);
        }
    }

    /// Late spans follow their trace's decision.
    fn follow(&mut self, keys: Vec<Key>, keep: bool, annotation: &Annotation) {
        for key in keys {
            self.decided(key, keep);
            let encoding = self.spans[&key].encoding;
            if let Some(copy) = keep
                .then(|| self.too_large(&key, annotation, encoding))
                .flatten()
            {
                self.given_up(key, copy);
            }
        }
    }

    /// The model records `key`'s decision.
    fn decided(&mut self, key: Key, keep: bool) {
        self.now_.decided.insert(key, keep);
        if keep {
            self.kept_ever.insert(key);
        }
    }

    fn ack(&mut self, id: DeliveryId, message: Outgoing, outcome: Outcome) -> Result<(), String> {
        // What no retry can fix fails the same way every time.
        let outcome = match self.refused.get(&message.payload) {
            Some(kind) => Outcome::Permanent(*kind),
            None => outcome,
        };
        if let Outcome::Permanent(kind) = outcome {
            self.refused.insert(message.payload.clone(), kind);
        }
        let result = match outcome {
            Outcome::Ok => {
                match message.destination {
                    Destination::Sampled => {
                        for key in self.output_spans(&message)? {
                            *self.delivered.entry(key).or_default() += 1;
                        }
                    }
                    Destination::DeadLetter => self.dead_letter_done(&message),
                }
                Ok(())
            }
            Outcome::Transient => Err(ProduceError::transient("broker away")),
            Outcome::Permanent(kind) => {
                match message.destination {
                    Destination::Sampled => {
                        let keys = self.output_spans(&message)?;
                        if kind == ProduceErrorKind::MessageTooLarge && keys.len() > 1 {
                            // Split smaller and sent again.
                        } else {
                            for key in keys {
                                self.given_up(key, message.payload.len());
                            }
                        }
                    }
                    Destination::DeadLetter => self.dead_letter_done(&message),
                }
                Err(ProduceError::new(kind, "refused for good"))
            }
        };
        let now = self.now;
        self.core().delivered(id, result, now);
        // A message refused as too large is split again under the lowered
        // limit; one retried after the limit was lowered below it is split
        // at the limit (or, a single span, given up) before it is sent.
        let limit = self.limits.of(Destination::Sampled);
        let resplit = message.destination == Destination::Sampled
            && match outcome {
                Outcome::Permanent(ProduceErrorKind::MessageTooLarge) => true,
                Outcome::Transient => message.payload.len() > limit,
                _ => false,
            };
        if resplit {
            let decoded = otlp::decode(message.payload.clone()).map_err(|e| e.to_string())?;
            match decoded.spans.as_slice() {
                [(id, record)] => {
                    // Refused: given up above already; retried: over the limit now.
                    if matches!(outcome, Outcome::Transient) {
                        self.given_up((*id, record.span_id), message.payload.len());
                    }
                }
                spans => {
                    for (id, record) in spans {
                        let (alone, _) =
                            otlp::encode_trace([record], &Annotation::none(), decoded.encoding);
                        if alone.len() > limit {
                            self.given_up((*id, record.span_id), alone.len());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A kept span that can never reach the output: given up once its
    /// dead-letter copy (of `bytes`) is done, if there is one to be made.
    fn given_up(&mut self, key: Key, bytes: usize) {
        if self.case.dead_letter && bytes <= self.limits.of(Destination::DeadLetter) {
            self.now_.awaiting_copy.insert(key);
        } else {
            self.now_.undeliverable.insert(key);
        }
    }

    fn dead_letter_done(&mut self, message: &Outgoing) {
        if message.from_output() {
            let keys: Vec<Key> = otlp::decode(message.payload.clone())
                .map(|d| d.spans.iter().map(|(id, s)| (*id, s.span_id)).collect())
                .unwrap_or_default();
            for key in keys {
                if self.now_.awaiting_copy.remove(&key) {
                    self.now_.undeliverable.insert(key);
                }
            }
            return;
        }
        let offset = message
            .headers
            .iter()
            .find(|(k, _)| *k == DLQ_OFFSET_HEADER)
            .and_then(|(_, v)| v.parse().ok())
            .expect("a dead letter names its offset");
        self.now_.garbage_done.insert(offset);
    }

    /// The spans of an output message, checking its shape.
    fn output_spans(&self, message: &Outgoing) -> Result<Vec<Key>, String> {
        if message.payload.len() > self.case.max_message_bytes {
            return Err(format!(
                "an output message of {} bytes, over the limit of {}",
                message.payload.len(),
                self.case.max_message_bytes
            ));
        }
        let decoded = otlp::decode(message.payload.clone())
            .map_err(|e| format!("an output message does not decode: {e}"))?;
        let key = message.key.as_deref().unwrap_or_default();
        let mut out = Vec::new();
        for (id, s) in decoded.spans {
            if id.to_hex().as_bytes() != key {
                return Err(format!("a span of {id} in a message keyed {key:?}"));
            }
            let k = (id, s.span_id);
            if !self.kept_ever.contains(&k) {
                return Err(format!("span {k:?} produced, but no decision kept it"));
            }
            out.push(k);
        }
        Ok(out)
    }

    fn commit(&mut self) {
        if self.case.exactly_once {
            let messages = std::mem::take(&mut self.open_transaction);
            for m in &messages {
                if m.destination == Destination::Sampled {
                    for key in self.output_spans(m).unwrap_or_default() {
                        *self.delivered.entry(key).or_default() += 1;
                    }
                }
            }
            self.now_.written.clear();
            if let Some(o) = self.now_.written_offset.or(self.open_offset) {
                self.committed = o;
            }
            self.open_offset = None;
            self.now_.written_offset = None;
        } else if let Some(o) = self.last_stored() {
            self.committed = o;
        }
    }

    /// After every step, as the worker task does: decide what is due,
    /// advance; then the commands, and every check.
    fn settle(&mut self) -> Result<(), String> {
        let now = self.now;
        self.core().decide_due(now);
        self.core().advance();
        loop {
            let commands = self.core().commands();
            if commands.is_empty() {
                break;
            }
            for c in commands {
                self.command(c)?;
            }
            // A write's receipt may let more go.
            self.core().advance();
        }
        self.now_.reading.clear();
        self.check_stored()?;
        self.check_memory()
    }

    fn command(&mut self, c: Command) -> Result<(), String> {
        self.log.push(format!("  -> {}", describe(&c)));
        match c {
            Command::Send { id, message, .. } => {
                if self.case.exactly_once {
                    return Err("a produce outside the transaction in exactly-once mode".into());
                }
                if message.destination == Destination::Sampled {
                    self.output_spans(&message)?;
                }
                self.in_flight.push((id, message));
            }
            Command::Decided(d) => {
                let Some(mut part) = self.now_.open.remove(&d.trace_id) else {
                    return Err(format!(
                        "{} decided, but the model has none of it open",
                        d.trace_id
                    ));
                };
                let mut late = Vec::new();
                if let Some(reading) = self.now_.reading.remove(&d.trace_id) {
                    if part.len() == d.spans + reading.len() {
                        // Decided before this message's spans were added:
                        // due by the time the message brought, or for memory.
                        late = part.split_off(d.spans);
                    }
                }
                if part.len() != d.spans {
                    return Err(format!(
                        "{} decided over {} spans, the model has {} open",
                        d.trace_id,
                        d.spans,
                        part.len()
                    ));
                }
                let records: Vec<SpanRecord> =
                    part.iter().map(|k| self.spans[k].record.clone()).collect();
                let rules = &self.rules[self.in_force];
                let decision =
                    rules.decide(&TraceSummary::of(d.trace_id, &records), Duration::ZERO);
                let annotation = rules.annotation(&decision);
                let want = decision.keep;
                if want != d.keep {
                    return Err(format!(
                        "{} decided keep={} by {}; the rules in force say keep={want}",
                        d.trace_id, d.keep, d.rule
                    ));
                }
                self.now_
                    .remembered
                    .insert(d.trace_id, (d.keep, annotation.clone()));
                let encoding = self.spans[&part[0]].encoding;
                for key in part {
                    self.decided(key, d.keep);
                    if let Some(copy) = d
                        .keep
                        .then(|| self.too_large(&key, &annotation, encoding))
                        .flatten()
                    {
                        self.given_up(key, copy);
                    }
                }
                self.follow(late, d.keep, &annotation);
            }
            Command::Write {
                messages,
                next_offset,
                receipt,
            } => {
                if !self.case.exactly_once {
                    return Err("a transactional write in at-least-once mode".into());
                }
                for m in &messages {
                    match m.destination {
                        Destination::Sampled => {
                            let keys = self.output_spans(m)?;
                            self.now_.written.extend(keys);
                        }
                        Destination::DeadLetter => self.dead_letter_done(m),
                    }
                }
                self.open_transaction.extend(messages);
                if let Some(next) = next_offset {
                    self.check_below(next, "written with the transaction")?;
                    self.now_.written_offset = Some(next);
                    self.now_.stored = Some(next);
                }
                self.core().written(receipt);
            }
        }
        Ok(())
    }

    /// Too large for any output message, alone with its resource and scope:
    /// the size of that message, its dead-letter copy.
    fn too_large(&self, key: &Key, annotation: &Annotation, encoding: Encoding) -> Option<usize> {
        let record = &self.spans[key].record;
        let (payload, _) = otlp::encode_trace([record], annotation, encoding);
        (payload.len() > self.limits.of(Destination::Sampled)).then_some(payload.len())
    }

    fn check_stored(&mut self) -> Result<(), String> {
        let values: Vec<i64> =
            self.stored.values.lock().expect("lock")[self.seen_stored..].to_vec();
        self.seen_stored += values.len();
        if self.case.exactly_once && !values.is_empty() {
            return Err("offsets stored around the transaction in exactly-once mode".into());
        }
        for v in values {
            self.check_below(v, "stored")?;
            self.now_.stored = Some(v);
        }
        let anomalies = self.core().anomalies();
        if anomalies > 0 {
            return Err(format!(
                "{anomalies} watermark pins released that were not held"
            ));
        }
        Ok(())
    }

    /// Nothing below `next` may still need the worker.
    fn check_below(&self, next: i64, what: &str) -> Result<(), String> {
        let end = (next.max(0) as usize).min(self.input.len());
        for fact in &self.input[(self.from as usize).min(end)..end] {
            let offset = fact.message.offset;
            if fact.garbage && !self.now_.garbage_done.contains(&offset) {
                return Err(format!(
                    "offset {next} {what}, past garbage at {offset} whose dead letter is not delivered"
                ));
            }
            for key in &fact.spans {
                if let Some(why) = self.unresolved(key) {
                    return Err(format!(
                        "offset {next} {what}, past span {key:?} at offset {offset}: {why}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Why the worker is not done with `key`, if it is not.
    fn unresolved(&self, key: &Key) -> Option<&'static str> {
        let delivered = self.delivered.contains_key(key)
            || (self.case.exactly_once && self.now_.written.contains(key));
        match self.now_.decided.get(key) {
            _ if delivered => None,
            None => Some("undecided"),
            Some(false) => None,
            Some(true) if self.now_.undeliverable.contains(key) => None,
            Some(true) if self.now_.awaiting_copy.contains(key) => {
                Some("kept, failed for good, and its dead-letter copy not delivered")
            }
            Some(true) => Some("kept and not delivered"),
        }
    }

    /// The buffer counts at least the bytes its spans keep alive: a protobuf
    /// message whole (its spans are slices of it), for JSON at least the
    /// spans' own encodings.
    fn check_memory(&mut self) -> Result<(), String> {
        let mut messages = HashSet::new();
        for keys in self.now_.open.values() {
            for k in keys {
                messages.insert(self.spans[k].offset);
            }
        }
        let alive: usize = messages
            .iter()
            .map(|o| {
                let fact = &self.input[*o as usize];
                let first = fact.spans.first().map(|k| self.spans[k].encoding);
                match first {
                    Some(Encoding::OtlpJson) => fact
                        .spans
                        .iter()
                        .map(|k| self.spans[k].record.encoded.len())
                        .sum(),
                    _ => fact.message.payload.len(),
                }
            })
            .sum();
        let counted = self.core().status().1.bytes;
        if counted < alive {
            return Err(format!(
                "the buffer counts {counted} bytes; its spans keep {alive} alive"
            ));
        }
        Ok(())
    }

    /// Delivers everything in flight, retries included.
    fn drain(&mut self) -> Result<(), String> {
        for _ in 0..10_000 {
            if self.in_flight.is_empty() {
                return Ok(());
            }
            let (id, message) = self.in_flight.remove(0);
            self.ack(id, message, Outcome::Ok)?;
            self.settle()?;
        }
        Err("in-flight produces never end".into())
    }

    /// Reads, decides, delivers and commits everything left; then the final checks.
    fn finish(&mut self) -> Result<(), String> {
        // The partition is this worker's again.
        self.stored
            .refuse
            .store(false, std::sync::atomic::Ordering::Relaxed);
        // A worker whose store was refused tries again soon, idle or not.
        if self.core().store_refused() {
            self.now += S;
            self.settle()?;
        }
        for _ in 0..10_000 {
            let done = self.position as usize >= self.input.len()
                && self.in_flight.is_empty()
                && self.core().status().1.traces == 0
                && self.core().held() == 0;
            if done {
                break;
            }
            self.log
                .push(format!("finish: read, 61 s (position {})", self.position));
            self.read();
            if self.position as usize >= self.input.len() {
                let now = self.now;
                self.core().caught_up(now);
            }
            self.now += 61 * S;
            self.settle()?;
            self.drain()?;
        }
        self.commit();
        if self.committed != self.input.len() as i64 {
            return Err(format!(
                "everything done, but the committed offset is {} of {}",
                self.committed,
                self.input.len()
            ));
        }
        for (key, fact) in &self.spans {
            if self.case.exactly_once && self.delivered.get(key).copied().unwrap_or(0) > 1 {
                return Err(format!("exactly-once output holds span {key:?} twice"));
            }
            if fact.offset < self.from {
                continue; // checked when an earlier worker passed it
            }
            if let Some(why) = self.unresolved(key) {
                return Err(format!(
                    "at the end, span {key:?} at offset {}: {why}",
                    fact.offset
                ));
            }
        }
        let usage = self.usage.load(std::sync::atomic::Ordering::Relaxed);
        drop(self.core.take());
        let left = self.usage.load(std::sync::atomic::Ordering::Relaxed);
        if left != 0 {
            return Err(format!(
                "a finished worker leaves {left} bytes of usage (had {usage})"
            ));
        }
        Ok(())
    }
}

/// A command, short.
fn describe(c: &Command) -> String {
    let message = |m: &Outgoing| {
        let spans: Vec<String> = otlp::decode(m.payload.clone()).map_or(Vec::new(), |d| {
            d.spans
                .iter()
                .map(|(t, s)| format!("{}/{}", &t.to_hex()[28..], s.span_id[2]))
                .collect()
        });
        format!(
            "{:?} [{}] {} bytes",
            m.destination,
            spans.join(" "),
            m.payload.len()
        )
    };
    match c {
        Command::Send { id, message: m, .. } => format!("send #{id}: {}", message(m)),
        Command::Decided(d) => format!(
            "decided {} keep={} by {} ({}) over {} spans",
            d.trace_id,
            d.keep,
            d.rule,
            d.reason.as_str(),
            d.spans
        ),
        Command::Write {
            messages,
            next_offset,
            ..
        } => format!(
            "write [{}] with offset {next_offset:?}",
            messages.iter().map(message).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn run(case: Case) -> Result<(), String> {
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

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn the_pipeline_never_loses_or_commits_past_what_it_holds(case in case()) {
        if let Err(e) = run(case) {
            return Err(TestCaseError::fail(e));
        }
    }
}

// ------------------------------------------ same input, same decisions

/// How a worker reads one input (issue 15): messages taken `batch` at a
/// time, after `pause_ms` of wall-clock time without reading.
#[derive(Debug, Clone)]
struct Schedule {
    reads: Vec<(usize, u64)>,
}

fn schedule() -> impl Strategy<Value = Schedule> {
    proptest::collection::vec(
        (
            prop_oneof![3 => Just(1usize), 2 => 2usize..8, 1 => 8usize..64],
            prop_oneof![4 => Just(0u64), 3 => 1u64..3_000, 2 => 3_000u64..60_000],
        ),
        1..80,
    )
    .prop_map(|reads| Schedule { reads })
}

/// What one worker decided over the whole input, in order: trace, keep,
/// reason, spans; and the kept spans it sent.
type Decisions = (Vec<(TraceId, bool, &'static str, usize)>, Vec<Key>);

/// Reads `input` on `schedule` with the `mode` clock, then catches up and
/// lets wall-clock time run until everything is decided. Every produce
/// succeeds at once; no budget, no `max_trace_age` within reach.
fn decide_on(input: &[InputFact], schedule: &Schedule, mode: ClockMode) -> Decisions {
    let now0 = Instant::now();
    let (_tx, rules) = watch::channel(self::rules(0));
    let config = WorkerConfig {
        buffer: BufferConfig {
            wait: 10 * S,
            after_root: 2 * S,
            max_trace_age: 4 * 3600 * S,
            max_bytes: 1 << 30,
        },
        clock: ClockConfig {
            mode,
            ..ClockConfig::default()
        },
        epoch: Epoch {
            instant: now0,
            since_unix: WALL_START,
        },
        decided_ttl: Duration::from_secs(24 * 3600),
        decided_capacity: 1 << 20,
        max_in_flight: 1 << 20,
        dead_letter: false,
        limits: MessageLimits::new(1 << 20),
        usage: Arc::default(),
        exactly_once: false,
    };
    let mut core = Partition::new(0, config, rules, Arc::new(Stored::default()));
    let mut out: Decisions = (Vec::new(), Vec::new());
    let mut now = now0;
    let mut settle = |core: &mut Partition, now: Instant| {
        core.decide_due(now);
        core.advance();
        for c in core.commands() {
            match c {
                Command::Decided(d) => out.0.push((d.trace_id, d.keep, d.reason.as_str(), d.spans)),
                Command::Send { id, message, .. } => {
                    if message.destination == Destination::Sampled {
                        let d = otlp::decode(message.payload.clone()).expect("output decodes");
                        out.1.extend(d.spans.iter().map(|(t, s)| (*t, s.span_id)));
                    }
                    core.delivered(id, Ok(()), now);
                }
                Command::Write { .. } => unreachable!("at-least-once"),
            }
        }
    };
    let mut next = 0;
    for &(batch, pause_ms) in schedule.reads.iter().cycle() {
        if next >= input.len() {
            break;
        }
        now += Duration::from_millis(pause_ms);
        settle(&mut core, now);
        for fact in input.iter().skip(next).take(batch) {
            core.handle(fact.message.clone(), now);
        }
        next += batch;
        settle(&mut core, now);
    }
    core.caught_up(now);
    for _ in 0..100 {
        if core.status().1.traces == 0 {
            break;
        }
        now += 30 * S;
        settle(&mut core, now);
    }
    assert_eq!(core.status().1.traces, 0, "everything decided in the end");
    out.1.sort();
    out
}

fn good_input() -> impl Strategy<Value = Vec<InputFact>> {
    (
        proptest::collection::vec(gen_trace(), 1..12),
        proptest::collection::vec(any::<u32>(), 48),
        proptest::collection::vec(gen_message(Just(Stamp::Good)), 48),
    )
        .prop_map(|(traces, order, messages)| {
            let case = Case {
                exactly_once: false,
                dead_letter: false,
                max_bytes: 1 << 30,
                max_message_bytes: 1 << 20,
                max_in_flight: 1 << 20,
                traces,
                order,
                messages,
                steps: Vec::new(),
            };
            input(&case).0
        })
}

impl std::fmt::Debug for InputFact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "@{} t={:?} {}",
            self.message.offset,
            self.message.timestamp.map(|t| t - BASE_MS),
            self.spans
                .iter()
                .map(|(t, s)| format!("{}/{}", &t.to_hex()[28..], s[2]))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases() / 4, max_shrink_iters: 5_000, ..ProptestConfig::default() })]

    /// Issue 15: on the stream clock, how the input is read — at once or a
    /// message at a time, with pauses in reading longer than the quiet
    /// period and the decision wait — does not change a single decision,
    /// nor the spans kept.
    #[test]
    fn the_same_input_gives_the_same_decisions_whatever_the_read_speed(
        input in good_input(),
        slow in schedule(),
    ) {
        let fast = Schedule { reads: vec![(usize::MAX, 0)] };
        let at_once = decide_on(&input, &fast, ClockMode::Stream);
        let paused = decide_on(&input, &slow, ClockMode::Stream);
        prop_assert_eq!(&at_once.0, &paused.0, "decisions differ");
        prop_assert_eq!(&at_once.1, &paused.1, "kept spans differ");
    }
}

/// The control: on the wall clock (tailgate before issue 15), a pause in
/// reading longer than the quiet period splits a trace — the property above
/// fails without the stream clock.
#[test]
fn on_the_wall_clock_a_pause_in_reading_splits_a_trace() {
    let runner_case = Case {
        exactly_once: false,
        dead_letter: false,
        max_bytes: 1 << 30,
        max_message_bytes: 1 << 20,
        max_in_flight: 1 << 20,
        // One trace: root and two children, an error in the last.
        traces: vec![GenTrace {
            pads: vec![10, 10, 10],
            error: Some(2),
            root: true,
        }],
        order: vec![0, 1, 2],
        messages: vec![GenMessage {
            spans: 1,
            json: false,
            broken_span: false,
            garbage_before: false,
            big_resource: false,
            gap_ms: 100,
            stamp: Stamp::Good,
        }],
        steps: Vec::new(),
    };
    let (input, _) = input(&runner_case);
    assert_eq!(input.len(), 3);
    let paused = Schedule {
        reads: vec![(1, 0), (1, 0), (1, 5_000)],
    };
    let fast = Schedule {
        reads: vec![(usize::MAX, 0)],
    };
    let whole = decide_on(&input, &fast, ClockMode::Stream);
    assert_eq!(whole.0.len(), 1, "one decision: {:?}", whole.0);
    assert_eq!((whole.0[0].1, whole.0[0].3), (true, 3), "kept whole");
    assert_eq!(decide_on(&input, &paused, ClockMode::Stream), whole);
    let wall = decide_on(&input, &paused, ClockMode::Wall);
    assert_eq!(
        wall.0.iter().map(|d| d.3).sum::<usize>(),
        2,
        "on the wall clock the error span came after the decision: {:?}",
        wall.0
    );
    assert_ne!(wall.1.len(), 3, "and the trace is not kept whole");
}
