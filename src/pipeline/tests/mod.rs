//! The partition's worker on a paused tokio clock, against in-memory
//! stand-ins for its ports. Shared here: the output and offset-store
//! stand-ins (the transaction's is in `exactly_once`), the harness that
//! starts a worker, and the traces the tests send it.

mod bad_input;
mod counting;
mod deciding;
mod decision_log;
mod delivering;
mod exactly_once;
mod late_in_stream;
mod stopping;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use futures::future::BoxFuture;
use futures::FutureExt;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message as _;
use tokio::sync::{mpsc, watch};

use super::*;

use crate::workload::{build_trace, SpanSpec};

/// Records what was produced (key, payload); fails the first `fail_first` sends.
#[derive(Default)]
struct MemoryOutput {
    sent: Mutex<Vec<(String, Bytes)>>,
    dead_letters: Mutex<Vec<Outgoing>>,
    decisions: Mutex<Vec<Outgoing>>,
    attempts: AtomicUsize,
    fail_first: usize,
    /// Every output message (not dead letters) fails so, for good.
    refuse: Option<ProduceErrorKind>,
}

impl Output for MemoryOutput {
    fn send(&self, message: Outgoing) -> BoxFuture<'static, Result<(), ProduceError>> {
        let n = self.attempts.fetch_add(1, Ordering::SeqCst);
        let result = if n < self.fail_first {
            Err(ProduceError::transient("broker unavailable"))
        } else if let (Some(kind), Destination::Sampled) = (self.refuse, message.destination) {
            Err(ProduceError::new(kind, "refused"))
        } else {
            match message.destination {
                Destination::Sampled => {
                    let key = String::from_utf8(message.key.unwrap_or_default().to_vec()).unwrap();
                    self.sent.lock().unwrap().push((key, message.payload));
                }
                Destination::DeadLetter(_) => self.dead_letters.lock().unwrap().push(message),
                Destination::Decisions(_) => self.decisions.lock().unwrap().push(message),
            }
            Ok(())
        };
        async move { result }.boxed()
    }
}

#[derive(Default)]
struct MemoryOffsets {
    stored: Mutex<Vec<i64>>,
}

impl OffsetStore for MemoryOffsets {
    fn store(&self, _partition: i32, next_offset: i64) -> bool {
        self.stored.lock().unwrap().push(next_offset);
        true
    }
}

impl MemoryOffsets {
    fn last(&self) -> Option<i64> {
        self.stored.lock().unwrap().last().copied()
    }
}

const RULES: &str =
    "[{name: errors, when: {trace: {error: true}}, sample: keep}, {name: rest, sample: drop}]";

struct Harness {
    tx: mpsc::Sender<Input>,
    task: tokio::task::JoinHandle<Stopped>,
    output: Arc<MemoryOutput>,
    offsets: Arc<MemoryOffsets>,
    rules: watch::Sender<Arc<RuleSet>>,
}

fn start(fail_first: usize) -> Harness {
    start_with(fail_first, false)
}

fn start_with(fail_first: usize, dead_letter: bool) -> Harness {
    start_full(fail_first, dead_letter, None)
}

fn start_full(
    fail_first: usize,
    dead_letter: bool,
    transaction: Option<Arc<dyn Transaction>>,
) -> Harness {
    start_opts(Opts {
        fail_first,
        dead_letter,
        transaction,
        ..Opts::default()
    })
}

struct Opts {
    fail_first: usize,
    dead_letter: bool,
    transaction: Option<Arc<dyn Transaction>>,
    max_message_bytes: usize,
    /// The dead-letter topic's limit (the output's if `None`).
    dead_letter_bytes: Option<usize>,
    refuse: Option<ProduceErrorKind>,
    limits: Option<Arc<MessageLimits>>,
    path: PathOutput,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            fail_first: 0,
            dead_letter: false,
            transaction: None,
            max_message_bytes: 1_000_000,
            dead_letter_bytes: None,
            refuse: None,
            limits: None,
            path: PathOutput::default(),
        }
    }
}

fn start_opts(o: Opts) -> Harness {
    let Opts {
        fail_first,
        dead_letter,
        transaction,
        max_message_bytes,
        dead_letter_bytes,
        refuse,
        limits,
        path,
    } = o;
    let limits = limits.unwrap_or_else(|| {
        let l = MessageLimits::new(max_message_bytes);
        if let Some(d) = dead_letter_bytes {
            l.dead_letter.store(d, Ordering::SeqCst);
        }
        l
    });
    let (rules_tx, rules) = rules();
    let output = Arc::new(MemoryOutput {
        fail_first,
        refuse,
        ..Default::default()
    });
    let offsets = Arc::new(MemoryOffsets::default());
    let config = WorkerConfig {
        dead_letter,
        limits,
        path,
        ..config()
    };
    let edges = match transaction {
        Some(t) => Edges::ExactlyOnce(t),
        None => Edges::AtLeastOnce {
            output: output.clone(),
            offsets: offsets.clone(),
        },
    };
    let worker = PartitionWorker::new(0, config, rules, edges);
    let (tx, rx) = mpsc::channel(16);
    Harness {
        tx,
        task: tokio::spawn(worker.run(rx, watch::channel(false).1)),
        rules: rules_tx,
        output,
        offsets,
    }
}

/// The rules of these tests, and the sender a reload goes through.
fn rules() -> (watch::Sender<Arc<RuleSet>>, Rules) {
    let specs: Vec<crate::rules::RuleSpec> = serde_yaml::from_str(RULES).unwrap();
    watch::channel(Arc::new(RuleSet::compile(&specs).unwrap()))
}

/// One worker's settings in these tests: 10 s wait, 2 s after the root, no
/// memory pressure, 100 produces in flight.
fn config() -> WorkerConfig {
    WorkerConfig {
        buffer: BufferConfig {
            wait: Duration::from_secs(10),
            after_root: Duration::from_secs(2),
            max_trace_age: Duration::from_secs(60),
            max_bytes: 1 << 30,
        },
        clock: ClockConfig::default(),
        epoch: Epoch::now(),
        paused_share: 0.45,
        decided_ttl: Duration::from_secs(600),
        remembered_bytes: 1 << 26,
        decision_log_timeout: Duration::from_secs(30),
        decision_log: false,
        max_in_flight: 100,
        dead_letter: false,
        limits: MessageLimits::new(1_000_000),
        usage: Default::default(),
        path: Default::default(),
        sample_rate_attribute: None,
    }
}

fn payload(data: &TracesData) -> Bytes {
    Bytes::from(data.encode_to_vec())
}

/// A trace of two services: root in `gateway`, child in `backend` (erring if `error`).
fn two_part_trace(n: u8, error: bool) -> (TraceId, Vec<TracesData>) {
    let id = TraceId([n; 16]);
    let mut child = SpanSpec::new("backend", "work", Some(0), 1, 5);
    child.error = error;
    (
        id,
        build_trace(
            id,
            &[[1; 8], [2; 8]],
            1_000,
            &[SpanSpec::new("gateway", "GET /", None, 0, 10), child],
        ),
    )
}

async fn send(h: &Harness, offset: i64, data: Bytes) {
    h.tx.send(
        InputMessage {
            offset,
            timestamp: None,
            key: Some(Bytes::from_static(b"k")),
            payload: data,
        }
        .into(),
    )
    .await
    .unwrap();
    // Let the worker take it.
    tokio::time::sleep(Duration::from_millis(1)).await;
}
