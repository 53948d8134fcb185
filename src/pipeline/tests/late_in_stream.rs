//! A late span follows its trace's decision when it is
//! late *in the stream* — by the partition's message timestamps — however
//! long reading was interrupted: a restart after an outage longer than
//! `decision.decided_ttl`, or an outage of the output that held the worker
//! at `max_in_flight`. The mirror as much: a dropped trace's late ERROR
//! span is not kept alone.

use super::*;
use crate::buffer::Reason;

/// 2026-01-01 in milliseconds since the Unix epoch: the input's time. The
/// wall is an hour later at the start (a backlog).
const JAN: i64 = 1_767_225_600_000;
const TTL: Duration = Duration::from_secs(20);
const S: Duration = Duration::from_secs(1);

fn settings(t0: Instant, max_in_flight: usize) -> WorkerConfig {
    WorkerConfig {
        decided_ttl: TTL,
        decision_log: true,
        max_in_flight,
        epoch: Epoch {
            instant: t0,
            since_unix: Duration::from_millis(JAN as u64) + 3600 * S,
        },
        ..config()
    }
}

fn partition(t0: Instant, max_in_flight: usize) -> Partition {
    let (_tx, rules) = rules();
    Partition::new(
        0,
        settings(t0, max_in_flight),
        rules,
        Commit::Offsets(Arc::new(MemoryOffsets::default())),
    )
}

/// A trace of three services: the gateway's root, a backend child (erring
/// if `error`), and a mailer's child that will come late — an ERROR, so
/// that decided anew it would be kept.
fn three_part_trace(n: u8, error: bool) -> (TraceId, Vec<TracesData>) {
    let id = TraceId([n; 16]);
    let mut child = SpanSpec::new("backend", "work", Some(0), 1, 5);
    child.error = error;
    let mut late = SpanSpec::new("mailer", "send", Some(0), 2, 3);
    late.error = true;
    let parts = build_trace(
        id,
        &[[1; 8], [2; 8], [3; 8]],
        1_000,
        &[SpanSpec::new("gateway", "GET /", None, 0, 10), child, late],
    );
    assert_eq!(parts.len(), 3);
    (id, parts)
}

fn stamped(offset: i64, at_ms: i64, data: &TracesData) -> InputMessage {
    InputMessage {
        offset,
        timestamp: Some(at_ms),
        key: None,
        payload: payload(data),
    }
}

/// What the partition sends: (delivery, message); none acknowledged.
fn sends(p: &mut Partition) -> Vec<(DeliveryId, Outgoing)> {
    p.commands()
        .into_iter()
        .filter_map(|c| match c {
            Command::Send { id, message, .. } => Some((id, message)),
            _ => None,
        })
        .collect()
}

/// What the partition decided since it was last asked.
fn decisions(p: &mut Partition) -> Vec<DecisionRecord> {
    p.commands()
        .into_iter()
        .filter_map(|c| match c {
            Command::Decided(d) => Some(d),
            _ => None,
        })
        .collect()
}

/// Spans in the kept output among `sent`.
fn kept_spans(sent: &[(DeliveryId, Outgoing)]) -> usize {
    sent.iter()
        .filter(|(_, m)| m.destination == Destination::Sampled)
        .map(|(_, m)| crate::otlp::decode(m.payload.clone()).unwrap().spans.len())
        .sum()
}

/// A kept trace K and a dropped trace D, both without their late third
/// span, are read at `t0` and decided once the partition is caught up;
/// returns their ids and parts, and what was sent (decision records
/// included), unacknowledged.
/// A trace's id and its three parts.
type Trace = (TraceId, Vec<TracesData>);

fn decide_two(p: &mut Partition, t0: Instant) -> (Trace, Trace, Vec<(DeliveryId, Outgoing)>) {
    let kept = three_part_trace(1, true);
    let dropped = three_part_trace(2, false);
    p.handle(stamped(0, JAN, &kept.1[0]), t0);
    p.handle(stamped(1, JAN + 100, &kept.1[1]), t0);
    p.handle(stamped(2, JAN + 200, &dropped.1[0]), t0);
    p.handle(stamped(3, JAN + 300, &dropped.1[1]), t0);
    p.caught_up(t0);
    p.decide_due(t0 + 3 * S);
    p.advance();
    let sent = sends(p);
    assert_eq!(p.status().1.traces, 0, "both decided");
    assert_eq!(kept_spans(&sent), 2, "K kept with its two spans");
    (kept, dropped, sent)
}

#[test]
fn a_late_span_follows_its_decision_after_a_restart_longer_than_decided_ttl() {
    let t0 = Instant::now();
    let mut first = partition(t0, 100);
    let (kept, dropped, sent) = decide_two(&mut first, t0);
    let mut names = std::collections::HashMap::new();
    let records: Vec<Recalled> = sent
        .iter()
        .filter(|(_, m)| m.destination == Destination::Decisions(0))
        .flat_map(|(_, m)| LoggedDecision::read(&m.payload).unwrap_or_default())
        .filter_map(|d| d.recalled(&mut names))
        .collect();
    assert_eq!(records.len(), 2, "one record per decision");

    // tailgate was down for an hour — 180 times decided_ttl. The late
    // spans were written a second (of message time) after their traces.
    let later = t0 + 3600 * S;
    let mut second = partition(t0, 100);
    let resume = second.resume_at(Some(JAN + 1_300), later);
    assert_eq!(resume, Duration::from_millis(JAN as u64 + 1_300));
    let since = second.remembered_since(resume);
    assert!(
        since <= JAN,
        "the read-back window reaches back to the decisions: {since}"
    );
    assert_eq!(second.remember(records, resume, later), 2);
    second.handle(stamped(4, JAN + 1_300, &kept.1[2]), later);
    second.handle(stamped(5, JAN + 1_400, &dropped.1[2]), later);
    let sent = sends(&mut second);
    assert_eq!(kept_spans(&sent), 1, "K's late span follows K: {sent:?}");
    assert_eq!(
        second.status().1.traces,
        0,
        "D's late ERROR span is not kept alone, nor buffered as a trace"
    );

    // Late by more than decided_ttl in the stream, it is decided anew —
    // once the stream is there: one stamp alone does not take the clock.
    let filler = three_part_trace(9, false);
    for i in 0..crate::clock::CONFIRM {
        let at = JAN + 30_000 + 10 * i64::from(i);
        second.handle(stamped(6 + i64::from(i), at, &filler.1[0]), later);
    }
    assert_eq!(second.status().1.traces, 1, "the filler");
    second.handle(stamped(20, JAN + 30_100, &kept.1[2]), later);
    assert_eq!(second.status().1.traces, 2, "and K's span, a trace anew");
}

#[test]
fn a_late_span_follows_its_decision_after_an_outage_of_the_output() {
    let t0 = Instant::now();
    // Two produces in flight at most: K's output and the two records fill it.
    let mut p = partition(t0, 2);
    let (kept, dropped, sent) = decide_two(&mut p, t0);
    assert!(!p.can_read(), "the worker is held at max_in_flight");
    // The output is away for an hour, 180 times decided_ttl; the worker
    // cannot take input meanwhile, though the consumer was at the end.
    let back = t0 + 3600 * S;
    p.decide_due(back);
    for (id, _) in sent {
        p.delivered(id, Ok(()), back);
    }
    p.decide_due(back);
    p.advance();
    assert!(p.can_read());
    p.handle(stamped(4, JAN + 1_300, &kept.1[2]), back);
    p.handle(stamped(5, JAN + 1_400, &dropped.1[2]), back);
    let sent = sends(&mut p);
    assert_eq!(kept_spans(&sent), 1, "K's late span follows K: {sent:?}");
    assert_eq!(p.status().1.traces, 0, "D's late ERROR span is not kept");
}

#[test]
fn a_message_stamped_far_ahead_decides_no_other_trace() {
    // The case: an ERROR trace whose root is buffered and whose
    // error child comes 0.4 s later; between them a message stamped ten
    // minutes ahead (a producer with a wrong clock).
    let t0 = Instant::now();
    let mut p = partition(t0, 100);
    let kept = three_part_trace(1, true);
    let other = three_part_trace(2, false);
    p.handle(stamped(0, JAN, &kept.1[0]), t0);
    p.handle(stamped(1, JAN + 200 + 600_000, &other.1[0]), t0);
    p.handle(stamped(2, JAN + 400, &kept.1[1]), t0);
    p.handle(stamped(3, JAN + 800, &kept.1[2]), t0);
    p.decide_due(t0);
    p.advance();
    let decided = decisions(&mut p);
    assert!(decided.is_empty(), "nothing due yet: {decided:?}");
    // The stream goes on: K is decided whole, after its quiet period.
    let more = three_part_trace(3, false);
    for (i, at) in (1_200..=3_200).step_by(400).enumerate() {
        p.handle(stamped(4 + i as i64, JAN + at, &more.1[i % 3]), t0);
    }
    p.decide_due(t0);
    p.advance();
    let decided = decisions(&mut p);
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(
        (decided[0].trace_id, decided[0].keep, decided[0].spans),
        (kept.0, true, 3),
        "K whole; the outlier's trace waits from its own time"
    );
    assert_eq!(p.status().1.traces, 2, "the outlier's trace and the last");
}

/// Reads five whole traces and the first part (its root) of `X`, an ERROR
/// trace whose error comes in its second part; returns X's parts.
fn read_five_and_half_of_x(p: &mut Partition, t0: Instant) -> Vec<TracesData> {
    for n in 1..=5u8 {
        let (_, parts) = three_part_trace(n, false);
        for (i, part) in parts.iter().enumerate() {
            let offset = i64::from(n) * 3 + i as i64;
            p.handle(stamped(offset, JAN + offset * 10, part), t0);
        }
    }
    let (_, x) = three_part_trace(9, true);
    p.handle(stamped(100, JAN + 1_000, &x[0]), t0);
    x
}

#[test]
fn a_pause_for_memory_decides_the_oldest_traces_and_not_the_one_it_cut_in_half() {
    let t0 = Instant::now();
    // How many bytes the reads buffer: the budget is set from it, so that
    // the reads fit and the paused share (0.45 of it) does not hold them all.
    let mut probe = partition(t0, 100);
    read_five_and_half_of_x(&mut probe, t0);
    let buffered = probe.status().1.bytes;
    let (_tx, rules) = rules();
    let mut config = settings(t0, 100);
    config.buffer.max_bytes = buffered * 3 / 2;
    let mut p = Partition::new(
        0,
        config,
        rules,
        Commit::Offsets(Arc::new(MemoryOffsets::default())),
    );
    let x = read_five_and_half_of_x(&mut p, t0);
    let x_id = TraceId([9; 16]);
    assert!(decisions(&mut p).is_empty(), "nothing due yet");

    // Paused for memory: the oldest whole traces are decided, for memory,
    // down to the paused share; X, read last, is not.
    p.input_paused(true, t0 + S);
    let early = decisions(&mut p);
    assert!(!early.is_empty(), "some decided for memory");
    assert!(
        early
            .iter()
            .all(|d| d.reason == Reason::Memory && d.spans == 3),
        "whole traces, for memory: {early:?}"
    );
    assert!(early.iter().all(|d| d.trace_id != x_id), "{early:?}");
    assert!(p.status().1.bytes <= buffered * 3 / 2 * 45 / 100);
    // The pause outlasts after_root (2 s) many times, within
    // max_trace_age (60 s): X still waits for the rest of its spans, which
    // are still in Kafka.
    p.decide_due(t0 + 30 * S);
    assert!(
        decisions(&mut p).iter().all(|d| d.trace_id != x_id),
        "X decided during the pause on half its spans"
    );

    // Resumed: the rest of X comes, and X is decided whole, and kept.
    p.input_paused(false, t0 + 31 * S);
    p.handle(stamped(101, JAN + 1_100, &x[1]), t0 + 31 * S);
    p.handle(stamped(102, JAN + 1_200, &x[2]), t0 + 31 * S);
    p.caught_up(t0 + 31 * S);
    p.decide_due(t0 + 40 * S);
    let late = decisions(&mut p);
    let xd = late
        .iter()
        .find(|d| d.trace_id == x_id)
        .unwrap_or_else(|| panic!("X decided: {late:?}"));
    assert_eq!((xd.keep, xd.spans), (true, 3), "{xd:?}");
}
