//! The model-based test of one partition's pipeline.
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

mod generate; // the cases: input traces and messages, and the history of steps
mod input; // the messages a case makes, and what the model knows of each span
mod sim; // the real partition beside the reference model, and the checks
mod stream_clock; // same input, same decisions, whatever the read speed

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::otlp::{self, Encoding, SpanRecord, TraceId};
use crate::rules::{RuleSet, RuleSpec, TraceSummary};
use generate::case;
use sim::run;

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
