use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use futures::future::BoxFuture;
use futures::FutureExt;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message as _;
use tokio::sync::{mpsc, watch};

use super::*;
use crate::workload::{build_trace, ShopWorkload, SpanSpec};

/// Records what was produced (key, payload); fails the first `fail_first` sends.
#[derive(Default)]
struct MemoryOutput {
    sent: Mutex<Vec<(String, Bytes)>>,
    dead_letters: Mutex<Vec<Outgoing>>,
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
                Destination::DeadLetter => self.dead_letters.lock().unwrap().push(message),
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
    } = o;
    let limits = limits.unwrap_or_else(|| {
        let l = MessageLimits::new(max_message_bytes);
        if let Some(d) = dead_letter_bytes {
            l.dead_letter.store(d, Ordering::SeqCst);
        }
        l
    });
    let specs: Vec<crate::rules::RuleSpec> = serde_yaml::from_str(RULES).unwrap();
    let (rules_tx, rules) = watch::channel(Arc::new(RuleSet::compile(&specs).unwrap()));
    let output = Arc::new(MemoryOutput {
        fail_first,
        refuse,
        ..Default::default()
    });
    let offsets = Arc::new(MemoryOffsets::default());
    let config = WorkerConfig {
        buffer: BufferConfig {
            wait: Duration::from_secs(10),
            after_root: Duration::from_secs(2),
            max_trace_age: Duration::from_secs(60),
            max_bytes: 1 << 30,
        },
        clock: ClockConfig::default(),
        epoch: Epoch::now(),
        decided_ttl: Duration::from_secs(600),
        decided_capacity: 10_000,
        max_in_flight: 100,
        dead_letter,
        limits,
        exactly_once: transaction.is_some(),
        usage: Default::default(),
    };
    let worker = PartitionWorker::new(
        0,
        config,
        rules,
        output.clone(),
        offsets.clone(),
        transaction,
    );
    let (tx, rx) = mpsc::channel(16);
    Harness {
        tx,
        task: tokio::spawn(worker.run(rx, watch::channel(false).1)),
        rules: rules_tx,
        output,
        offsets,
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

#[tokio::test(start_paused = true)]
async fn a_kept_trace_is_produced_whole_and_then_committed() {
    let h = start(0);
    let (id, parts) = two_part_trace(1, true);
    send(&h, 100, payload(&parts[1])).await; // child first
    assert_eq!(h.offsets.last(), Some(100), "pinned by the undecided trace");
    send(&h, 101, payload(&parts[0])).await; // then the root
    assert!(h.output.sent.lock().unwrap().is_empty(), "not decided yet");
    tokio::time::sleep(Duration::from_secs(3)).await; // past after_root
    let sent = h.output.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, id.to_hex());
    let out = TracesData::decode(sent[0].1.clone()).unwrap();
    let spans: usize = out
        .resource_spans
        .iter()
        .map(|r| r.scope_spans[0].spans.len())
        .sum();
    assert_eq!(spans, 2);
    assert_eq!(
        h.offsets.last(),
        Some(102),
        "committed past both messages once delivered"
    );
    drop(h.tx);
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_dropped_trace_releases_its_offsets_without_producing() {
    let h = start(0);
    let (_, parts) = two_part_trace(2, false);
    send(&h, 5, payload(&parts[0])).await;
    send(&h, 6, payload(&parts[1])).await;
    assert_eq!(h.offsets.last(), Some(5));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(h.output.sent.lock().unwrap().is_empty());
    assert_eq!(h.offsets.last(), Some(7));
}

#[tokio::test(start_paused = true)]
async fn failed_produces_are_retried_and_hold_the_watermark() {
    let h = start(3);
    let (_, parts) = two_part_trace(3, true);
    send(&h, 0, payload(&parts[0])).await;
    send(&h, 1, payload(&parts[1])).await;
    tokio::time::sleep(Duration::from_secs(2) + Duration::from_millis(10)).await;
    assert_eq!(h.output.attempts.load(Ordering::SeqCst), 1);
    assert_eq!(
        h.offsets.last(),
        Some(0),
        "undelivered: nothing committed past it"
    );
    tokio::time::sleep(Duration::from_secs(5)).await; // backoff 200 ms, 400 ms, 800 ms
    assert_eq!(h.output.attempts.load(Ordering::SeqCst), 4);
    assert_eq!(h.output.sent.lock().unwrap().len(), 1);
    assert_eq!(h.offsets.last(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn bad_input_is_skipped_and_its_offset_released() {
    let h = start(0);
    let (_, parts) = two_part_trace(4, true);
    send(&h, 10, Bytes::from_static(b"not otlp")).await;
    assert_eq!(h.offsets.last(), Some(11));
    send(&h, 11, Bytes::new()).await;
    let good = payload(&parts[0]);
    send(&h, 12, good.slice(..good.len() - 3)).await;
    assert_eq!(
        h.offsets.last(),
        Some(13),
        "empty and truncated messages released too"
    );
    send(&h, 13, good).await;
    assert_eq!(h.offsets.last(), Some(13), "a good message is pinned");
}

#[tokio::test(start_paused = true)]
async fn late_spans_follow_the_decision() {
    let h = start(0);
    let (kept, kparts) = two_part_trace(5, true);
    let (_, dparts) = two_part_trace(6, false);
    send(&h, 0, payload(&kparts[1])).await; // the erring child
    send(&h, 1, payload(&dparts[0])).await;
    tokio::time::sleep(Duration::from_secs(11)).await; // both decided by wait
    assert_eq!(h.output.sent.lock().unwrap().len(), 1);
    // The roots arrive late.
    send(&h, 2, payload(&kparts[0])).await;
    send(&h, 3, payload(&dparts[1])).await;
    let sent = h.output.sent.lock().unwrap().clone();
    assert_eq!(
        sent.len(),
        2,
        "the kept trace's late root is produced at once"
    );
    assert_eq!(sent[1].0, kept.to_hex());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(h.offsets.last(), Some(4));
}

#[tokio::test(start_paused = true)]
async fn stopping_never_commits_past_undecided_traces() {
    let h = start(0);
    let mut w = ShopWorkload::new(9);
    let t = w.next_trace(0);
    send(&h, 0, Bytes::from_static(b"junk")).await;
    for (i, m) in t.messages.iter().enumerate() {
        send(&h, 1 + i as i64, payload(m)).await;
    }
    drop(h.tx);
    h.task.await.unwrap();
    assert_eq!(
        h.offsets.last(),
        Some(1),
        "the trace at offset 1 was never decided"
    );
    assert!(h.output.sent.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn several_traces_in_one_message_are_decided_separately() {
    let h = start(0);
    let (a, ap) = two_part_trace(7, true);
    let (_, bp) = two_part_trace(8, false);
    let mut batch = TracesData::default();
    for m in ap.iter().chain(&bp) {
        batch.resource_spans.extend(m.resource_spans.clone());
    }
    send(&h, 0, payload(&batch)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = h.output.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, a.to_hex());
    assert_eq!(h.offsets.last(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn malformed_messages_go_to_the_dead_letter_topic_unchanged() {
    let h = start_with(1, true);
    send(&h, 20, Bytes::from_static(b"not otlp")).await;
    // The first attempt fails: the offset stays pinned until the retry lands.
    assert_eq!(h.offsets.last(), Some(20));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.offsets.last(), Some(21));
    let dl = h.output.dead_letters.lock().unwrap().clone();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].payload, Bytes::from_static(b"not otlp"));
    assert_eq!(dl[0].key.as_deref(), Some(b"k".as_slice()));
    let header = |name: &str| {
        dl[0]
            .headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header(DLQ_REASON_HEADER).as_deref(), Some("not_otlp"));
    assert_eq!(header(DLQ_OFFSET_HEADER).as_deref(), Some("20"));
    assert_eq!(header(DLQ_PARTITION_HEADER).as_deref(), Some("0"));
    assert!(header(DLQ_DETAIL_HEADER).is_some_and(|d| !d.is_empty()));
}

#[tokio::test(start_paused = true)]
async fn without_a_dead_letter_topic_nothing_is_copied() {
    let h = start(0);
    send(&h, 0, Bytes::from_static(b"not otlp")).await;
    assert!(h.output.dead_letters.lock().unwrap().is_empty());
    assert_eq!(h.offsets.last(), Some(1));
}

/// A rule reload while traces are buffered: they stay buffered and are decided
/// by the new rules; the kept spans name the new rule.
#[tokio::test(start_paused = true)]
async fn reloaded_rules_decide_the_traces_already_buffered() {
    let h = start(0);
    let (id, parts) = two_part_trace(8, false);
    send(&h, 0, payload(&parts[0])).await;
    send(&h, 1, payload(&parts[1])).await;
    // Under the old rules this trace (no error) would be dropped.
    let specs: Vec<crate::rules::RuleSpec> =
        serde_yaml::from_str("[{name: everything, sample: keep}]").unwrap();
    h.rules
        .send(Arc::new(RuleSet::compile(&specs).unwrap()))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = h.output.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "kept by the new rule");
    assert_eq!(sent[0].0, id.to_hex());
    let out = TracesData::decode(sent[0].1.clone()).unwrap();
    let span = &out.resource_spans[0].scope_spans[0].spans[0];
    let rule = span
        .attributes
        .iter()
        .find(|kv| kv.key == "tailgate.rule")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone());
    assert_eq!(
        rule,
        Some(
            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                "everything".into()
            )
        )
    );
    assert_eq!(h.offsets.last(), Some(2));
}

/// Letting a partition go while a kept trace was delivered past the commit
/// (an older trace still pins it) reports those spans as redelivered: the
/// partition's next reader will deliver them again.
#[tokio::test(start_paused = true)]
async fn spans_delivered_past_the_commit_are_reported_when_the_partition_is_let_go() {
    let h = start(0);
    let (_, undecided) = two_part_trace(9, false);
    let (_, kept) = two_part_trace(10, true);
    send(&h, 0, payload(&undecided[1])).await; // no root: waits 10 s
    send(&h, 1, payload(&kept[0])).await;
    send(&h, 2, payload(&kept[1])).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // kept trace decided and delivered
    assert_eq!(h.output.sent.lock().unwrap().len(), 1);
    assert_eq!(
        h.offsets.last(),
        Some(0),
        "still pinned by the undecided trace"
    );
    drop(h.tx);
    let stopped = h.task.await.unwrap();
    assert_eq!(
        stopped,
        Stopped {
            undecided_traces: 1,
            redelivered_spans: 2
        }
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_is_redelivered_when_everything_delivered_is_committed() {
    let h = start(0);
    let (_, kept) = two_part_trace(11, true);
    send(&h, 0, payload(&kept[0])).await;
    send(&h, 1, payload(&kept[1])).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.offsets.last(), Some(2));
    drop(h.tx);
    assert_eq!(
        h.task.await.unwrap(),
        Stopped {
            undecided_traces: 0,
            redelivered_spans: 0
        }
    );
}

/// Records what an exactly-once worker writes into the transaction.
#[derive(Default)]
struct MemoryTransaction {
    /// Per write: the keys of its messages and the offset recorded with them.
    writes: Mutex<Vec<(Vec<String>, Option<i64>)>>,
}

impl Transaction for MemoryTransaction {
    fn write(
        self: Arc<Self>,
        _partition: i32,
        messages: Vec<Outgoing>,
        next_offset: Option<i64>,
    ) -> BoxFuture<'static, Result<(), ProduceError>> {
        let keys = messages
            .iter()
            .map(|m| String::from_utf8_lossy(m.key.as_deref().unwrap_or_default()).to_string())
            .collect();
        self.writes.lock().unwrap().push((keys, next_offset));
        async { Ok(()) }.boxed()
    }
}

/// Exactly-once mode: a kept trace enters the transaction only once nothing
/// before its last offset is pending, and with the offset just past it; the
/// offsets stored meanwhile never pass it.
#[tokio::test(start_paused = true)]
async fn exactly_once_writes_a_kept_trace_with_its_offsets_once_nothing_before_is_pending() {
    let txn = Arc::new(MemoryTransaction::default());
    let h = start_full(0, false, Some(txn.clone()));
    let (a, a_parts) = two_part_trace(21, true);
    let (b, b_parts) = two_part_trace(22, true);
    send(&h, 10, payload(&a_parts[0])).await; // A's root
    send(&h, 11, payload(&b_parts[0])).await; // B, whole
    send(&h, 12, payload(&b_parts[1])).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(&h, 13, payload(&a_parts[1])).await; // A's child, later: A decides last
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // B is decided and kept, but A still pins offset 10, below B's messages.
    assert!(
        h.output.sent.lock().unwrap().is_empty(),
        "nothing bypasses the transaction"
    );
    let writes = txn.writes.lock().unwrap().clone();
    assert!(
        writes.iter().all(|(keys, _)| keys.is_empty()),
        "B waits for A: {writes:?}"
    );
    assert!(
        writes.iter().all(|(_, next)| next.is_some_and(|n| n <= 10)),
        "no offset past A's first message: {writes:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // A decided
    let writes = txn.writes.lock().unwrap().clone();
    let with_messages: Vec<_> = writes.iter().filter(|(k, _)| !k.is_empty()).collect();
    assert_eq!(
        with_messages,
        vec![&(vec![b.to_hex(), a.to_hex()], Some(14))],
        "both, in offset order, with the offset past both"
    );
    assert_eq!(
        h.offsets.last(),
        None,
        "the offsets went with the writes, not around them"
    );
    drop(h.tx);
    h.task.await.unwrap();
}

/// An ERROR trace of `spans` spans (about 200 bytes each), in `messages`
/// input messages, protobuf.
fn big_trace(n: u8, spans: usize, messages: usize) -> (TraceId, Vec<Bytes>) {
    let id = TraceId([n; 16]);
    let ids: Vec<[u8; 8]> = (0..spans)
        .map(|i| {
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&(i as u32 + 1).to_be_bytes());
            b[7] = n;
            b
        })
        .collect();
    let mut specs: Vec<SpanSpec> = (0..spans)
        .map(|i| {
            let mut s = SpanSpec::new(
                "backend",
                &format!("query {i} {}", "x".repeat(120)),
                (i > 0).then_some(0),
                i as u64 / 10,
                1,
            );
            s.error = i == spans / 2;
            s
        })
        .collect();
    specs[0].service = "gateway";
    let mut data = TracesData::default();
    for m in build_trace(id, &ids, 1_000, &specs) {
        data.resource_spans.extend(m.resource_spans);
    }
    // All spans under one resource and scope per service, then cut into messages.
    let all: Vec<_> = data
        .resource_spans
        .iter()
        .flat_map(|rs| {
            rs.scope_spans[0].spans.iter().map(move |s| {
                let mut one = rs.clone();
                one.scope_spans[0].spans = vec![s.clone()];
                one
            })
        })
        .collect();
    let per = all.len().div_ceil(messages);
    let payloads = all
        .chunks(per)
        .map(|chunk| {
            let mut m = TracesData::default();
            for rs in chunk {
                match m
                    .resource_spans
                    .iter_mut()
                    .find(|r| r.resource == rs.resource)
                {
                    Some(r) => r.scope_spans[0]
                        .spans
                        .extend(rs.scope_spans[0].spans.clone()),
                    None => m.resource_spans.push(rs.clone()),
                }
            }
            payload(&m)
        })
        .collect();
    (id, payloads)
}

/// The span ids in a batch of output messages, checking each is a valid
/// `TracesData` within `limit`, keyed by `id`, every span annotated.
fn output_spans(
    sent: &[(String, Bytes)],
    id: TraceId,
    limit: usize,
) -> std::collections::HashSet<[u8; 8]> {
    let mut spans = std::collections::HashSet::new();
    for (key, payload) in sent {
        assert!(
            payload.len() <= limit,
            "{} bytes over {limit}",
            payload.len()
        );
        assert_eq!(key, &id.to_hex());
        let data = TracesData::decode(payload.clone()).expect("a valid TracesData");
        for rs in &data.resource_spans {
            assert!(rs.resource.is_some(), "each message carries its resource");
            for ss in &rs.scope_spans {
                assert!(ss.scope.is_some(), "and its scope");
                for s in &ss.spans {
                    assert!(s.attributes.iter().any(|kv| kv.key == "tailgate.rule"));
                    assert!(spans.insert(<[u8; 8]>::try_from(s.span_id.as_slice()).unwrap()));
                }
            }
        }
    }
    spans
}

/// Issue 11, scenario 2: a kept trace too big for one output message — 4 000
/// spans in one input message, 8 000 over 80 — is split into messages under
/// the limit, all of it delivered, and the watermark moves past it.
#[tokio::test(start_paused = true)]
async fn a_kept_trace_bigger_than_a_message_is_split_and_delivered_whole() {
    for (spans, messages) in [(4_000, 1), (8_000, 80)] {
        let limit = 100_000;
        let h = start_opts(Opts {
            max_message_bytes: limit,
            ..Opts::default()
        });
        let (id, payloads) = big_trace(7, spans, messages);
        assert_eq!(payloads.len(), messages);
        let total: usize = payloads.iter().map(Bytes::len).sum();
        for (o, p) in payloads.into_iter().enumerate() {
            send(&h, o as i64, p).await;
        }
        tokio::time::sleep(Duration::from_secs(11)).await;
        let sent = h.output.sent.lock().unwrap().clone();
        assert_eq!(
            output_spans(&sent, id, limit).len(),
            spans,
            "every span, once"
        );
        assert!(
            sent.len() >= total / limit,
            "{} messages for {total} bytes",
            sent.len()
        );
        assert!(
            sent.len() <= 2 * total.div_ceil(limit) + 1,
            "as many messages as it needs: {} for {total} bytes",
            sent.len()
        );
        eprintln!(
            "{spans} spans in {messages} input messages ({total} bytes): {} output messages under {limit} bytes",
            sent.len()
        );
        assert_eq!(h.offsets.last(), Some(messages as i64), "committed past it");
    }
}

/// A span that fits no message even alone is counted, copied to the
/// dead-letter topic, and released: the rest of its trace goes out, the
/// partition goes on.
#[tokio::test(start_paused = true)]
async fn a_span_too_large_for_any_message_is_dead_lettered_and_released() {
    let limit = 2_000;
    let h = start_opts(Opts {
        max_message_bytes: limit,
        dead_letter_bytes: Some(1_000_000),
        dead_letter: true,
        ..Opts::default()
    });
    let id = TraceId([9; 16]);
    let mut root = SpanSpec::new("gateway", "GET /", None, 0, 10);
    root.error = true;
    let huge = SpanSpec::new("backend", &"n".repeat(5_000), Some(0), 1, 5);
    let parts = build_trace(id, &[[1; 8], [2; 8]], 1_000, &[root, huge]);
    send(&h, 0, payload(&parts[0])).await;
    send(&h, 1, payload(&parts[1])).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = h.output.sent.lock().unwrap().clone();
    let spans = output_spans(&sent, id, limit);
    assert_eq!(
        spans.into_iter().collect::<Vec<_>>(),
        vec![[1; 8]],
        "the root goes out"
    );
    let dl = h.output.dead_letters.lock().unwrap().clone();
    assert_eq!(dl.len(), 1);
    let header = |name: &str| {
        dl[0]
            .headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header(DLQ_REASON_HEADER).as_deref(), Some(SPAN_TOO_LARGE));
    assert_eq!(header(DLQ_TRACE_HEADER), Some(id.to_hex()));
    assert_eq!(h.offsets.last(), Some(2), "released");
}

/// Issue 11, scenario 2: produce errors no retry can fix are not retried:
/// the kept spans are copied to the dead-letter topic (or, without one,
/// released), and the watermark moves on.
#[tokio::test(start_paused = true)]
async fn a_permanent_produce_error_is_dead_lettered_and_released_not_retried() {
    for dead_letter in [true, false] {
        for kind in [
            ProduceErrorKind::UnknownTopic,
            ProduceErrorKind::Authorization,
            ProduceErrorKind::InvalidRecord,
        ] {
            let h = start_opts(Opts {
                dead_letter,
                refuse: Some(kind),
                ..Opts::default()
            });
            let (id, parts) = two_part_trace(12, true);
            send(&h, 0, payload(&parts[0])).await;
            send(&h, 1, payload(&parts[1])).await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            assert!(h.output.sent.lock().unwrap().is_empty());
            let attempts = h.output.attempts.load(Ordering::SeqCst);
            assert_eq!(
                attempts,
                1 + usize::from(dead_letter),
                "{kind:?}: never retried"
            );
            let dl = h.output.dead_letters.lock().unwrap().clone();
            assert_eq!(dl.len(), usize::from(dead_letter));
            if dead_letter {
                let header = |name: &str| {
                    dl[0]
                        .headers
                        .iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| v.clone())
                };
                assert_eq!(header(DLQ_REASON_HEADER).as_deref(), Some(kind.as_str()));
                assert_eq!(header(DLQ_TRACE_HEADER), Some(id.to_hex()));
                assert_eq!(header(DLQ_OFFSET_HEADER).as_deref(), Some("0"));
            }
            assert_eq!(h.offsets.last(), Some(2), "{kind:?}: released");
        }
    }
}

/// Issue 11, scenario 4, in the pipeline: T's child at offset 0, an
/// undecided U at 1, T's ERROR root at 2. T decided must not let the offset
/// pass 0 until T is in the transaction; and a kept trace over three
/// messages with two undecided traces between them likewise.
#[tokio::test(start_paused = true)]
async fn exactly_once_never_writes_an_offset_past_a_kept_trace_held_in_memory() {
    let txn = Arc::new(MemoryTransaction::default());
    let h = start_full(0, false, Some(txn.clone()));
    let (t, t_parts) = two_part_trace(31, true);
    let (_, u_parts) = two_part_trace(32, false);
    send(&h, 0, payload(&t_parts[1])).await; // T's child
    send(&h, 1, payload(&u_parts[1])).await; // U: no root, waits 10 s
    send(&h, 2, payload(&t_parts[0])).await; // T's root
    tokio::time::sleep(Duration::from_secs(3)).await; // T decided (after_root)
    let writes = txn.writes.lock().unwrap().clone();
    assert!(
        writes
            .iter()
            .all(|(keys, next)| keys.is_empty() && next.is_none_or(|n| n <= 0)),
        "nothing written past T's first message while T waits: {writes:?}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await; // U decided (dropped)
    let writes = txn.writes.lock().unwrap().clone();
    let with_t: Vec<_> = writes.iter().filter(|(k, _)| !k.is_empty()).collect();
    assert_eq!(with_t, vec![&(vec![t.to_hex()], Some(3))]);
    drop(h.tx);
    h.task.await.unwrap();

    // A kept trace over three messages, two undecided traces between them.
    let txn = Arc::new(MemoryTransaction::default());
    let h = start_full(0, false, Some(txn.clone()));
    let id = TraceId([33; 16]);
    let mut err = SpanSpec::new("c", "c", Some(0), 2, 3);
    err.error = true;
    let k = build_trace(
        id,
        &[[1; 8], [2; 8], [3; 8]],
        1_000,
        &[
            SpanSpec::new("a", "root", None, 0, 10),
            SpanSpec::new("b", "b", Some(0), 1, 5),
            err,
        ],
    );
    let (_, v) = two_part_trace(34, false);
    let (_, w) = two_part_trace(35, false);
    send(&h, 0, payload(&k[1])).await;
    send(&h, 1, payload(&v[1])).await;
    send(&h, 2, payload(&k[2])).await;
    send(&h, 3, payload(&w[1])).await;
    send(&h, 4, payload(&k[0])).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // K decided
    let writes = txn.writes.lock().unwrap().clone();
    assert!(
        writes
            .iter()
            .all(|(keys, next)| keys.is_empty() && next.is_none_or(|n| n <= 0)),
        "{writes:?}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes = txn.writes.lock().unwrap().clone();
    let with_k: Vec<_> = writes.iter().filter(|(k, _)| !k.is_empty()).collect();
    assert_eq!(with_k, vec![&(vec![id.to_hex()], Some(5))]);
}

/// A worker that panics takes its share of the memory usage with it.
#[tokio::test(start_paused = true)]
async fn a_worker_that_ends_releases_its_memory_usage() {
    let usage = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let specs: Vec<crate::rules::RuleSpec> = serde_yaml::from_str(RULES).unwrap();
    let (_rules_tx, rules) = watch::channel(Arc::new(RuleSet::compile(&specs).unwrap()));
    let config = WorkerConfig {
        buffer: BufferConfig {
            wait: Duration::from_secs(10),
            after_root: Duration::from_secs(2),
            max_trace_age: Duration::from_secs(60),
            max_bytes: 1 << 30,
        },
        clock: ClockConfig::default(),
        epoch: Epoch::now(),
        decided_ttl: Duration::from_secs(600),
        decided_capacity: 1_000,
        max_in_flight: 100,
        dead_letter: false,
        limits: MessageLimits::new(1_000_000),
        exactly_once: false,
        usage: usage.clone(),
    };
    let mut p = Partition::new(0, config, rules, Arc::new(MemoryOffsets::default()));
    let (_, parts) = two_part_trace(40, false);
    p.handle(
        InputMessage {
            offset: 0,
            timestamp: None,
            key: None,
            payload: payload(&parts[0]),
        },
        Instant::now(),
    );
    p.advance();
    assert!(usage.load(Ordering::SeqCst) > 0);
    let task = tokio::spawn(async move {
        let _p = p;
        panic!("a bug");
    });
    assert!(task.await.is_err());
    assert_eq!(usage.load(Ordering::SeqCst), 0);
}

/// A broker refusing an output message as too large (its limit is below
/// what tailgate read, or was lowered since): the limit is lowered for
/// every worker and the message split again; what still does not fit is
/// dead-lettered and released.
#[tokio::test(start_paused = true)]
async fn an_output_message_refused_as_too_large_is_split_again() {
    let limits = MessageLimits::new(1_000_000);
    let h = start_opts(Opts {
        dead_letter: true,
        refuse: Some(ProduceErrorKind::MessageTooLarge),
        limits: Some(limits.clone()),
        ..Opts::default()
    });
    let (id, parts) = two_part_trace(13, true);
    send(&h, 0, payload(&parts[0])).await;
    send(&h, 1, payload(&parts[1])).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let output = limits.of(Destination::Sampled);
    assert!(
        output < 1_000,
        "lowered below the refused message: {output}"
    );
    // 1 refused; then the halves that fit the lowered limit, refused (a span
    // over it alone goes straight to the dead letters); 2 dead letters.
    let attempts = h.output.attempts.load(Ordering::SeqCst);
    assert!((4..=5).contains(&attempts), "{attempts} attempts");
    let dl = h.output.dead_letters.lock().unwrap().clone();
    assert_eq!(dl.len(), 2, "each span alone, dead-lettered");
    for d in &dl {
        assert!(d.from_output());
        assert_eq!(d.key.as_deref(), Some(id.to_hex().as_bytes()));
    }
    assert_eq!(h.offsets.last(), Some(2), "released");
}
