use std::time::{Duration, Instant};

use super::*;
use crate::clock::Time;
use crate::otlp::compact::{ALLOCATION, PARTS_OVERHEAD};
use crate::otlp::Part;
use crate::otlp::{test_spans, Encoding, TraceId};
use crate::workload::SpanSpec;

const S: Duration = Duration::from_secs(1);

fn config() -> BufferConfig {
    BufferConfig {
        wait: 30 * S,
        after_root: 5 * S,
        max_trace_age: 60 * S,
        max_bytes: 1 << 30,
    }
}

fn id(n: u8) -> TraceId {
    TraceId([n; 16])
}

/// A root span and a child of trace `n`.
fn root(n: u8) -> Vec<SpanRecord> {
    test_spans(id(n), &[SpanSpec::new("a", "root", None, 0, 10)])
}

fn child(n: u8) -> Vec<SpanRecord> {
    let mut s = test_spans(
        id(n),
        &[
            SpanSpec::new("a", "root", None, 0, 10),
            SpanSpec::new("b", "child", Some(0), 1, 5),
        ],
    );
    s.remove(0);
    s
}

fn due(b: &mut TraceBuffer, now: Instant) -> Vec<ReadyTrace> {
    let mut out = Vec::new();
    b.pop_due(now, &mut out);
    out
}

#[test]
fn without_root_a_trace_waits_for_decision_wait() {
    let t0 = Instant::now();
    let mut b = TraceBuffer::new(config());
    assert!(b
        .insert(id(1), child(1), 10, Encoding::OtlpProto, t0)
        .is_empty());
    assert_eq!(b.next_deadline(), Some(t0 + 30 * S));
    assert!(due(&mut b, t0 + 29 * S).is_empty());
    let d = due(&mut b, t0 + 30 * S);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].reason, Reason::Wait);
    assert_eq!(d[0].offsets, vec![10]);
    assert_eq!(b.occupancy(), Occupancy::default());
}

#[test]
fn root_starts_a_quiet_period_that_later_spans_extend() {
    let t0 = Instant::now();
    let mut b = TraceBuffer::new(config());
    b.insert(id(1), child(1), 1, Encoding::OtlpProto, t0);
    b.insert(id(1), root(1), 2, Encoding::OtlpProto, t0 + S);
    assert_eq!(b.next_deadline(), Some(t0 + 6 * S));
    // A late child resets the quiet period.
    b.insert(id(1), child(1), 3, Encoding::OtlpProto, t0 + 4 * S);
    assert!(due(&mut b, t0 + 6 * S).is_empty());
    let d = due(&mut b, t0 + 9 * S);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].reason, Reason::AfterRoot);
    assert_eq!(d[0].spans.len(), 3);
    assert_eq!(d[0].offsets, vec![1, 2, 3]);
}

#[test]
fn quiet_period_never_outlasts_decision_wait() {
    let t0 = Instant::now();
    let mut b = TraceBuffer::new(config());
    b.insert(id(1), root(1), 1, Encoding::OtlpProto, t0);
    for i in 1..40 {
        // A span every second keeps the trace from going quiet.
        b.insert(
            id(1),
            child(1),
            1 + i,
            Encoding::OtlpProto,
            t0 + i as u32 * S,
        );
        let d = due(&mut b, t0 + i as u32 * S);
        if !d.is_empty() {
            assert_eq!(d[0].reason, Reason::Wait);
            assert_eq!(i, 30);
            return;
        }
    }
    panic!("the trace was never decided");
}

#[test]
fn max_trace_age_caps_a_long_wait() {
    let t0 = Instant::now();
    let mut b = TraceBuffer::new(BufferConfig {
        wait: 120 * S,
        max_trace_age: 60 * S,
        ..config()
    });
    b.insert(id(1), child(1), 1, Encoding::OtlpProto, t0);
    let d = due(&mut b, t0 + 60 * S);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].reason, Reason::MaxAge);
}

#[test]
fn due_traces_come_out_earliest_first_and_others_stay() {
    let t0 = Instant::now();
    let mut b = TraceBuffer::new(config());
    for n in 1..=5u8 {
        b.insert(
            id(n),
            child(n),
            n as i64,
            Encoding::OtlpProto,
            t0 + u32::from(n) * S,
        );
    }
    let d = due(&mut b, t0 + 33 * S);
    let ids: Vec<TraceId> = d.iter().map(|t| t.trace_id).collect();
    assert_eq!(ids, vec![id(1), id(2), id(3)]);
    assert_eq!(b.occupancy().traces, 2);
}

/// What a trace of `spans` (under one scope) costs the budget, beside the
/// resource and scope the buffer counts once: its state, its buffer of
/// encodings, its records and its one reference to the shared scope, each
/// allocated exactly.
fn cost(spans: &[SpanRecord]) -> usize {
    TRACE_OVERHEAD
        + 3 * ALLOCATION
        + std::mem::size_of::<usize>()
        + spans
            .iter()
            .map(|s| SPAN_OVERHEAD + s.encoded().len())
            .sum::<usize>()
}

/// What one trace of one span (`child`) costs the budget.
fn one_trace() -> usize {
    cost(&child(1))
}

/// What the buffer counts once for the resource and scope of `spans` (one
/// scope), counted from the spans themselves.
fn counted_once(spans: Vec<SpanRecord>) -> usize {
    let scope = &spans[0].scope;
    Part::ALL
        .iter()
        .map(|p| scope.part(*p).len())
        .sum::<usize>()
        + PARTS_OVERHEAD
}

#[test]
fn over_budget_the_earliest_deadlines_are_decided_early() {
    let t0 = Instant::now();
    let one = one_trace();
    let shared = counted_once(child(1));
    assert!(shared > 0, "the resource and scope are counted");
    let mut b = TraceBuffer::new(BufferConfig {
        max_bytes: 3 * one + shared,
        ..config()
    });
    for n in 1..=3u8 {
        assert!(b
            .insert(
                id(n),
                child(n),
                n as i64,
                Encoding::OtlpProto,
                t0 + u32::from(n) * S
            )
            .is_empty());
    }
    assert_eq!(
        b.occupancy().bytes,
        3 * one + shared,
        "the scope counted once"
    );
    let evicted = b.insert(id(4), child(4), 4, Encoding::OtlpProto, t0 + 4 * S);
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].trace_id, id(1));
    assert_eq!(evicted[0].reason, Reason::Memory);
    assert!(b.occupancy().bytes <= 3 * one + shared);
    assert!(!b.contains(&id(1)));
}

/// A trace bigger than the whole budget by itself is decided alone: the
/// others stay buffered.
#[test]
fn a_trace_over_the_budget_by_itself_is_decided_alone() {
    let t0 = Instant::now();
    let shared = counted_once(child(1));
    let mut b = TraceBuffer::new(BufferConfig {
        max_bytes: 50 * one_trace() + shared,
        ..config()
    });
    for n in 1..=10u8 {
        b.insert(id(n), child(n), n as i64, Encoding::OtlpProto, t0);
    }
    let mut big = Vec::new();
    while big.iter().map(SpanRecord::size).sum::<usize>() <= 60 * one_trace() {
        big.extend(child(99));
    }
    let evicted = b.insert(id(99), big, 11, Encoding::OtlpProto, t0 + S);
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].trace_id, id(99));
    assert_eq!(evicted[0].reason, Reason::Memory);
    assert_eq!(b.occupancy().traces, 10, "the others stay");
    assert_eq!(b.occupancy().bytes, 10 * one_trace() + shared);
}

/// A buffered span keeps neither its message nor other traces' spans
/// alive: each trace counts its own spans' copies, the resources and scopes
/// are counted once, and all of it goes with the last trace.
#[test]
fn a_buffered_span_keeps_its_own_bytes_not_its_message() {
    use bytes::Bytes;
    use opentelemetry_proto::tonic::trace::v1::TracesData;

    let t0 = Instant::now();
    let mut b = TraceBuffer::new(config());
    // One message of two traces (one service's spans of each).
    let mut data = TracesData::default();
    for n in [1u8, 2] {
        let spans = [
            SpanSpec::new("a", "root", None, 0, 10),
            SpanSpec::new("a", "child", Some(0), 1, 5),
        ];
        for one in crate::workload::build_trace(id(n), &[[n; 8], [n + 10; 8]], 1_000, &spans) {
            data.resource_spans.extend(one.resource_spans);
        }
    }
    let message = Bytes::from(Encoding::OtlpProto.encode_data(&data));
    let decoded = crate::otlp::decode(message.clone()).expect("decodes");
    let groups: Vec<_> = crate::otlp::by_trace(decoded.spans).collect();
    assert_eq!(groups.len(), 2);
    let costs: Vec<usize> = groups.iter().map(|(_, g)| cost(g)).collect();
    for (trace, group) in groups {
        b.insert(trace, group, 7, Encoding::OtlpProto, t0);
    }
    assert!(
        message.is_unique(),
        "nothing buffered refers to the message"
    );
    let shared = b.occupancy().bytes - costs.iter().sum::<usize>();
    assert!(
        shared > 0 && shared < message.len(),
        "the resource once: {shared}"
    );
    // Both go quiet after their roots; the first decided takes its own bytes.
    let d = due(&mut b, t0 + 5 * S);
    assert_eq!(d.len(), 2);
    assert_eq!(b.occupancy(), Occupancy::default());
    for t in &d {
        let names: Vec<_> = t.spans.iter().map(|s| s.name().into_owned()).collect();
        assert_eq!(names, ["root", "child"], "each span reads its own bytes");
        assert_eq!(t.spans[0].service(), "a");
    }
}

/// Of traces due at the same instant (a burst read in one batch), memory
/// pressure decides the one that began first, not the one being read.
#[test]
fn at_equal_deadlines_the_trace_that_began_first_is_decided_for_memory() {
    let t0 = Instant::now();
    let mut b = TraceBuffer::new(BufferConfig {
        max_bytes: 2 * cost(&root(1)) + counted_once(root(1)) + SPAN_OVERHEAD,
        ..config()
    });
    // Higher ids first: an id order would pick the newest.
    b.insert(id(9), root(9), 1, Encoding::OtlpProto, t0);
    b.insert(id(5), root(5), 2, Encoding::OtlpProto, t0);
    let evicted = b.insert(id(1), root(1), 3, Encoding::OtlpProto, t0);
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].trace_id, id(9));
}

/// Shrinking for memory decides as many traces as it takes and no more:
/// the resource and scope a decided trace alone used go with it.
#[test]
fn shrinking_decides_no_more_traces_than_the_bytes_it_needs() {
    const SERVICES: [&str; 10] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"];
    let t0 = Instant::now();
    let mut b = TraceBuffer::new(config());
    let mut each = Vec::new();
    for (n, service) in SERVICES.iter().enumerate() {
        // A resource of each trace's own.
        let trace = id(n as u8 + 1);
        let spans = test_spans(trace, &[SpanSpec::new(service, "root", None, 0, 10)]);
        each.push(cost(&spans) + counted_once(spans.clone()));
        b.insert(
            id(n as u8),
            spans,
            n as i64,
            Encoding::OtlpProto,
            t0 + (n as u32) * S,
        );
    }
    assert_eq!(b.occupancy().bytes, each.iter().sum::<usize>());
    let mut out = Vec::new();
    b.shrink_to(each[5..].iter().sum(), &mut out);
    let decided: Vec<_> = out.iter().map(|t| t.trace_id).collect();
    assert_eq!(
        decided,
        (0..5).map(id).collect::<Vec<_>>(),
        "the five earliest, no more"
    );
    assert_eq!(b.occupancy().bytes, each[5..].iter().sum::<usize>());
}

/// A trace's buffer is addressed with 32-bit offsets: a trace that would
/// pass what it can hold is decided as it is, before more is added (its
/// later spans then follow its decision).
#[test]
fn a_trace_whose_buffer_cannot_take_more_is_decided_first() {
    let t0 = Instant::now();
    let mut b = TraceBuffer::new(config());
    let len = child(1)[0].encoded().len();
    b.max_trace_bytes = 2 * len;
    b.insert(id(1), child(1), 1, Encoding::OtlpProto, t0);
    assert!(b.take_if_full(&id(1), len).is_none(), "room for one more");
    b.insert(id(1), child(1), 2, Encoding::OtlpProto, t0);
    let full = b.take_if_full(&id(1), len).expect("decided");
    assert_eq!(full.reason, Reason::Memory);
    assert_eq!(full.spans.len(), 2);
    assert_eq!(full.offsets, vec![1, 2]);
    assert!(!b.contains(&id(1)));
    assert_eq!(b.occupancy(), Occupancy::default());
    assert!(
        b.take_if_full(&id(2), usize::MAX).is_none(),
        "no such trace"
    );
}

/// `wait` and `after_root` count on the stream clock, which may
/// stand while wall-clock time passes; `max_trace_age` counts on the wall.
#[test]
fn deadlines_count_on_the_stream_clock_and_the_age_on_the_wall() {
    let t0 = Instant::now();
    let at = |stream: Duration, wall: Duration| Time {
        stream: t0 + stream,
        wall: t0 + wall,
    };
    let mut b = TraceBuffer::new(config());
    b.insert(
        id(1),
        root(1),
        1,
        Encoding::OtlpProto,
        at(Duration::ZERO, Duration::ZERO),
    );
    b.insert(id(2), child(2), 2, Encoding::OtlpProto, at(S, 20 * S));
    // Reading paused for 40 s of wall time, the stream standing: nothing due.
    let mut out = Vec::new();
    b.pop_due(at(S, 40 * S), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(
        b.next_deadline(),
        Some(t0 + 5 * S),
        "the root's quiet period"
    );
    assert_eq!(b.next_age_limit(), Some(t0 + 60 * S), "trace 1, read first");
    // The stream moves on 5 s: the root's quiet period is over.
    b.pop_due(at(5 * S, 41 * S), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].trace_id, out[0].reason), (id(1), Reason::AfterRoot));
    // The stream stands again; 60 s of wall after trace 2's read, its age.
    out.clear();
    b.pop_due(at(5 * S, 79 * S), &mut out);
    assert!(out.is_empty());
    b.pop_due(at(5 * S, 80 * S), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].trace_id, out[0].reason), (id(2), Reason::MaxAge));
    assert_eq!(out[0].deadline, t0 + 80 * S, "due on the wall clock");
    assert_eq!(b.occupancy(), Occupancy::default());
    assert_eq!(b.next_age_limit(), None);
}

/// What the buffer must do, written the obvious way: every trace with its
/// times, due ones found by scanning all of them. The buffer's deadline
/// heap and age queue skip most of the work this does; a property test
/// holds the two to the same answers.
mod reference {
    use super::*;

    pub struct Trace {
        pub first_seen: Instant,
        pub last_seen: Instant,
        pub first_read: Instant,
        pub root_seen: bool,
        pub seq: u64,
        pub spans: usize,
        pub offsets: Vec<i64>,
    }

    #[derive(Default)]
    pub struct Naive {
        pub traces: HashMap<TraceId, Trace>,
        next_seq: u64,
    }

    impl Naive {
        pub fn insert(
            &mut self,
            id: TraceId,
            root: bool,
            offset: i64,
            stream: Instant,
            wall: Instant,
        ) {
            let t = self.traces.entry(id).or_insert_with(|| {
                self.next_seq += 1;
                Trace {
                    first_seen: stream,
                    last_seen: stream,
                    first_read: wall,
                    root_seen: false,
                    seq: self.next_seq,
                    spans: 0,
                    offsets: Vec::new(),
                }
            });
            t.root_seen |= root;
            t.last_seen = t.last_seen.max(stream);
            t.spans += 1;
            if t.offsets.last() != Some(&offset) {
                t.offsets.push(offset);
            }
        }

        fn deadline(c: &BufferConfig, t: &Trace) -> (Instant, Reason) {
            let wait = t.first_seen + c.wait;
            let quiet = t.last_seen + c.after_root;
            if t.root_seen && quiet < wait {
                (quiet, Reason::AfterRoot)
            } else {
                (wait, Reason::Wait)
            }
        }

        /// The earliest `(deadline, seq)`, and its trace.
        pub fn earliest(&self, c: &BufferConfig) -> Option<(Instant, u64, TraceId)> {
            self.traces
                .iter()
                .map(|(id, t)| (Self::deadline(c, t).0, t.seq, *id))
                .min()
        }

        fn remove(&mut self, id: TraceId, reason: Reason) -> (TraceId, Reason, usize, Vec<i64>) {
            let t = self.traces.remove(&id).expect("a buffered trace");
            (id, reason, t.spans, t.offsets)
        }

        pub fn pop_due(
            &mut self,
            c: &BufferConfig,
            stream: Instant,
            wall: Instant,
        ) -> Vec<(TraceId, Reason, usize, Vec<i64>)> {
            let mut out = Vec::new();
            while let Some((d, _, id)) = self.earliest(c).filter(|(d, _, _)| *d <= stream) {
                let reason = Self::deadline(c, &self.traces[&id]).1;
                debug_assert!(d <= stream);
                out.push(self.remove(id, reason));
            }
            let mut aged: Vec<(u64, TraceId)> = self
                .traces
                .iter()
                .filter(|(_, t)| t.first_read + c.max_trace_age <= wall)
                .map(|(id, t)| (t.seq, *id))
                .collect();
            aged.sort();
            for (_, id) in aged {
                out.push(self.remove(id, Reason::MaxAge));
            }
            out
        }

        /// Everything, earliest deadline first (a shrink to nothing).
        pub fn drain(&mut self, c: &BufferConfig) -> Vec<(TraceId, Reason, usize, Vec<i64>)> {
            let mut out = Vec::new();
            while let Some((_, _, id)) = self.earliest(c) {
                out.push(self.remove(id, Reason::Memory));
            }
            out
        }

        pub fn next_age_limit(&self, c: &BufferConfig) -> Option<Instant> {
            self.traces
                .values()
                .min_by_key(|t| t.seq)
                .map(|t| t.first_read + c.max_trace_age)
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A span of trace `trace` (a root or not), placed `ahead` seconds ahead
    /// of the stream clock (an outlier's own stamp), read after `wall` more
    /// seconds of wall time; `same_message` keeps the previous offset.
    Insert {
        trace: u8,
        root: bool,
        ahead: u64,
        wall: u64,
        same_message: bool,
    },
    /// The stream clock moves on `stream` s and the wall `wall` s; what is due comes out.
    Pop { stream: u64, wall: u64 },
    /// Everything is decided for memory.
    Shrink,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (1u8..9, any::<bool>(), prop_oneof![4 => Just(0u64), 1 => 1u64..8], 0u64..3, any::<bool>())
            .prop_map(|(trace, root, ahead, wall, same_message)| Op::Insert { trace, root, ahead, wall, same_message }),
        3 => (0u64..12, 0u64..25).prop_map(|(stream, wall)| Op::Pop { stream, wall }),
        1 => proptest::strategy::Just(Op::Shrink),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Deadlines moved later without touching the heap, earlier with a new
    /// entry, decided traces' entries left behind: the buffer still gives
    /// out exactly the traces a scan of all of them finds due, in the same
    /// order, with the same reasons, spans and offsets, and the same next
    /// deadline and age limit.
    #[test]
    fn due_traces_are_what_a_scan_of_every_trace_finds(ops in proptest::collection::vec(op(), 1..120)) {
        let c = config();
        let t0 = Instant::now();
        let mut b = TraceBuffer::new(c);
        let mut naive = reference::Naive::default();
        let (mut stream, mut wall) = (t0, t0);
        let mut offset = 0i64;
        let view = |t: &ReadyTrace| (t.trace_id, t.reason, t.spans.len(), t.offsets.clone());
        for op in ops {
            match op {
                Op::Insert { trace, root: is_root, ahead, wall: dw, same_message } => {
                    wall += S * dw as u32;
                    offset += i64::from(!same_message);
                    let own = stream + S * ahead as u32;
                    let spans = if is_root { root(trace) } else { child(trace) };
                    let evicted = b.insert(id(trace), spans, offset, Encoding::OtlpProto, Time { stream: own, wall });
                    proptest::prop_assert!(evicted.is_empty());
                    naive.insert(id(trace), is_root, offset, own, wall);
                }
                Op::Pop { stream: ds, wall: dw } => {
                    stream += S * ds as u32;
                    wall += S * dw as u32;
                    let mut out = Vec::new();
                    b.pop_due(Time { stream, wall }, &mut out);
                    let got: Vec<_> = out.iter().map(view).collect();
                    proptest::prop_assert_eq!(got, naive.pop_due(&c, stream, wall));
                }
                Op::Shrink => {
                    let mut out = Vec::new();
                    b.shrink_to(0, &mut out);
                    let got: Vec<_> = out.iter().map(view).collect();
                    proptest::prop_assert_eq!(got, naive.drain(&c));
                }
            }
            proptest::prop_assert_eq!(b.next_deadline(), naive.earliest(&c).map(|(d, _, _)| d));
            proptest::prop_assert_eq!(b.next_age_limit(), naive.next_age_limit(&c));
            proptest::prop_assert_eq!(b.occupancy().traces, naive.traces.len());
            // Between compactions: a new trace adds an entry to each, and
            // a root can add one more to the heap.
            let live = naive.traces.len();
            proptest::prop_assert!(b.deadlines.len() <= 3 * live + SLACK, "{} entries for {live} traces", b.deadlines.len());
            proptest::prop_assert!(b.ages.len() <= 2 * live + SLACK, "{} entries for {live} traces", b.ages.len());
        }
    }
}
