use std::time::{Duration, Instant};

use super::*;
use crate::clock::Time;
use crate::otlp::{test_spans, Encoding, TraceId};
use crate::workload::SpanSpec;

const S: Duration = Duration::from_secs(1);
/// The bytes each test message keeps alive.
const MESSAGE: usize = 100;

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
        .insert(id(1), child(1), 10, MESSAGE, Encoding::OtlpProto, t0)
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
    b.insert(id(1), child(1), 1, MESSAGE, Encoding::OtlpProto, t0);
    b.insert(id(1), root(1), 2, MESSAGE, Encoding::OtlpProto, t0 + S);
    assert_eq!(b.next_deadline(), Some(t0 + 6 * S));
    // A late child resets the quiet period.
    b.insert(id(1), child(1), 3, MESSAGE, Encoding::OtlpProto, t0 + 4 * S);
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
    b.insert(id(1), root(1), 1, MESSAGE, Encoding::OtlpProto, t0);
    for i in 1..40 {
        // A span every second keeps the trace from going quiet.
        b.insert(
            id(1),
            child(1),
            1 + i,
            MESSAGE,
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
    b.insert(id(1), child(1), 1, MESSAGE, Encoding::OtlpProto, t0);
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
            MESSAGE,
            Encoding::OtlpProto,
            t0 + u32::from(n) * S,
        );
    }
    let d = due(&mut b, t0 + 33 * S);
    let ids: Vec<TraceId> = d.iter().map(|t| t.trace_id).collect();
    assert_eq!(ids, vec![id(1), id(2), id(3)]);
    assert_eq!(b.occupancy().traces, 2);
}

/// What one trace of one span from a message of its own costs the budget.
fn one_trace() -> usize {
    TRACE_OVERHEAD + SPAN_OVERHEAD + MESSAGE + MESSAGE_OVERHEAD
}

#[test]
fn over_budget_the_earliest_deadlines_are_decided_early() {
    let t0 = Instant::now();
    let one = one_trace();
    let mut b = TraceBuffer::new(BufferConfig {
        max_bytes: 3 * one,
        ..config()
    });
    for n in 1..=3u8 {
        assert!(b
            .insert(
                id(n),
                child(n),
                n as i64,
                MESSAGE,
                Encoding::OtlpProto,
                t0 + u32::from(n) * S
            )
            .is_empty());
    }
    assert_eq!(b.occupancy().bytes, 3 * one);
    let evicted = b.insert(id(4), child(4), 4, MESSAGE, Encoding::OtlpProto, t0 + 4 * S);
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].trace_id, id(1));
    assert_eq!(evicted[0].reason, Reason::Memory);
    assert!(b.occupancy().bytes <= 3 * one);
    assert!(!b.contains(&id(1)));
}

/// A trace bigger than the whole budget by itself is decided alone: the
/// others stay buffered.
#[test]
fn a_trace_over_the_budget_by_itself_is_decided_alone() {
    let t0 = Instant::now();
    let mut b = TraceBuffer::new(BufferConfig {
        max_bytes: 50 * one_trace(),
        ..config()
    });
    for n in 1..=10u8 {
        b.insert(id(n), child(n), n as i64, MESSAGE, Encoding::OtlpProto, t0);
    }
    let mut big = Vec::new();
    while big.iter().map(SpanRecord::size).sum::<usize>() <= 50 * one_trace() {
        big.extend(child(99));
    }
    let evicted = b.insert(
        id(99),
        big,
        11,
        60 * one_trace(),
        Encoding::OtlpProto,
        t0 + S,
    );
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].trace_id, id(99));
    assert_eq!(evicted[0].reason, Reason::Memory);
    assert_eq!(b.occupancy().traces, 10, "the others stay");
    assert_eq!(b.occupancy().bytes, 10 * one_trace());
}

/// A message holding several traces is counted once, for as long as any of
/// its traces is buffered.
#[test]
fn a_message_is_counted_once_while_any_of_its_spans_is_buffered() {
    let t0 = Instant::now();
    let mut b = TraceBuffer::new(config());
    let big = 10_000;
    b.insert(id(1), child(1), 7, big, Encoding::OtlpProto, t0);
    b.insert(id(2), root(2), 7, big, Encoding::OtlpProto, t0);
    let o = b.occupancy();
    assert_eq!((o.traces, o.spans), (2, 2));
    assert_eq!(
        o.bytes,
        2 * (TRACE_OVERHEAD + SPAN_OVERHEAD) + big + MESSAGE_OVERHEAD
    );
    // The root's trace goes quiet first; the message stays counted for the other.
    let d = due(&mut b, t0 + 5 * S);
    assert_eq!(d.len(), 1);
    assert_eq!(
        b.occupancy().bytes,
        TRACE_OVERHEAD + SPAN_OVERHEAD + big + MESSAGE_OVERHEAD
    );
    let d = due(&mut b, t0 + 60 * S);
    assert_eq!(d.len(), 1);
    assert_eq!(b.occupancy(), Occupancy::default());
}

/// Of traces due at the same instant (a burst read in one batch), memory
/// pressure decides the one that began first, not the one being read.
#[test]
fn at_equal_deadlines_the_trace_that_began_first_is_decided_for_memory() {
    let t0 = Instant::now();
    let mut b = TraceBuffer::new(BufferConfig {
        max_bytes: 2 * one_trace() + SPAN_OVERHEAD,
        ..config()
    });
    // Higher ids first: an id order would pick the newest.
    b.insert(id(9), root(9), 1, MESSAGE, Encoding::OtlpProto, t0);
    b.insert(id(5), root(5), 2, MESSAGE, Encoding::OtlpProto, t0);
    let evicted = b.insert(id(1), root(1), 3, MESSAGE, Encoding::OtlpProto, t0);
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].trace_id, id(9));
}

/// A message bigger than the budget by itself, holding many small traces:
/// its traces are decided as they come, not every older trace first.
#[test]
fn a_message_over_the_budget_decides_its_own_traces_not_the_older_ones() {
    let t0 = Instant::now();
    let mut b = TraceBuffer::new(BufferConfig {
        max_bytes: 20 * one_trace(),
        ..config()
    });
    for n in 1..=10u8 {
        b.insert(id(n), child(n), n as i64, MESSAGE, Encoding::OtlpProto, t0);
    }
    let huge = 30 * one_trace();
    let mut decided = Vec::new();
    for n in 100..110u8 {
        decided.extend(b.insert(id(n), child(n), 50, huge, Encoding::OtlpProto, t0 + S));
    }
    assert!(
        decided.iter().all(|t| t.trace_id.0[0] >= 100),
        "only the huge message's traces"
    );
    assert_eq!(decided.len(), 10);
    assert_eq!(b.occupancy().traces, 10, "the older ones stay");
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
        MESSAGE,
        Encoding::OtlpProto,
        at(Duration::ZERO, Duration::ZERO),
    );
    b.insert(
        id(2),
        child(2),
        2,
        MESSAGE,
        Encoding::OtlpProto,
        at(S, 20 * S),
    );
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
