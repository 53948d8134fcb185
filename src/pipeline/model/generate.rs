//! The history generator: a case is the partition's input (traces, how
//! they are cut into messages, what is wrong with some) and a history of
//! steps to run it through.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// A trace: its spans' padding (bytes of attribute), which span errs, and
/// whether it has a root.
#[derive(Debug, Clone)]
pub(super) struct GenTrace {
    pub(super) pads: Vec<usize>,
    pub(super) error: Option<usize>,
    pub(super) root: bool,
}

/// How one message is made.
#[derive(Debug, Clone, Copy)]
pub(super) struct GenMessage {
    /// How many spans it carries (of the shuffled spans).
    pub(super) spans: usize,
    pub(super) json: bool,
    /// Also a span broken inside its intact frame.
    pub(super) broken_span: bool,
    /// A garbage message comes before it.
    pub(super) garbage_before: bool,
    /// Its resource carries a large attribute.
    pub(super) big_resource: bool,
    /// Milliseconds between the previous message's timestamp and its own
    /// (how its producer spaced them).
    pub(super) gap_ms: u64,
    /// Its timestamp is wrong: none, or far in the future.
    pub(super) stamp: Stamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stamp {
    Good,
    Missing,
    Ahead,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Outcome {
    Ok,
    Transient,
    Permanent(ProduceErrorKind),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Step {
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
pub(super) struct Case {
    pub(super) exactly_once: bool,
    /// The decision log is on: every decision's record pins its trace's offsets.
    pub(super) decision_log: bool,
    pub(super) dead_letter: bool,
    pub(super) max_bytes: usize,
    pub(super) max_message_bytes: usize,
    pub(super) max_in_flight: usize,
    /// `kafka.decision_log_timeout`: decision records not acknowledged
    /// within it are given up (`None`: never, within a history).
    pub(super) record_timeout: Option<Duration>,
    pub(super) traces: Vec<GenTrace>,
    pub(super) order: Vec<u32>,
    pub(super) messages: Vec<GenMessage>,
    pub(super) steps: Vec<Step>,
}

fn pad() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0usize..200, 2 => 300usize..1_200, 1 => 3_000usize..4_000]
}

pub(super) fn gen_trace() -> impl Strategy<Value = GenTrace> {
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

pub(super) fn gen_message(
    stamps: impl Strategy<Value = Stamp>,
) -> impl Strategy<Value = GenMessage> {
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

pub(super) fn case() -> impl Strategy<Value = Case> {
    (
        (
            any::<bool>(),
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
        prop_oneof![2 => Just(None), 1 => (5u64..40).prop_map(|s| Some(Duration::from_secs(s)))],
    )
        .prop_map(
            |(
                (
                    exactly_once,
                    decision_log,
                    dead_letter,
                    max_bytes,
                    max_message_bytes,
                    max_in_flight,
                ),
                traces,
                order,
                messages,
                steps,
                record_timeout,
            )| Case {
                exactly_once,
                decision_log,
                dead_letter,
                max_bytes,
                max_message_bytes,
                max_in_flight,
                record_timeout,
                traces,
                order,
                messages,
                steps,
            },
        )
}
