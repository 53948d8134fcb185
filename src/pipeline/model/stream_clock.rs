//! Same input, same decisions (issue 15): on the stream clock, how fast
//! and in what batches a worker reads does not change what it decides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tokio::sync::watch;

use super::generate::{gen_message, gen_trace, Case, GenMessage, GenTrace, Stamp};
use super::input::{input, InputFact};
use super::sim::Stored;
use super::*;
use crate::buffer::BufferConfig;
use crate::clock::ClockMode;

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
        remembered_bytes: 1 << 26,
        decision_log: false,
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
                decision_log: false,
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
        decision_log: false,
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
