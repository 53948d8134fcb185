//! The decision log's records: what each decided trace was decided as,
//! written to `kafka.decision_topic` on the partition number of the input
//! partition the trace was read from. `stream_ms` (the partition's stream
//! time of the decision) lets a reader take only those within
//! `decision.decided_ttl` of where it resumes.
//!
//! A partition writes its decisions in batches — one message per worker
//! wake-up, holding every trace decided in it — in a compact binary form
//! (version 2, [`RecordBatch`]), keyed uniquely (`<partition>-<run>-<n>`).
//! Version 1, one JSON record per trace keyed by the trace id, is what
//! tailgate wrote before; it is still read (`kcat` shows it as it is):
//!
//! ```json
//! {"v":1,"trace_id":"5b8efff798038103d269b633813fc60c","keep":true,
//!  "rule":"errors","reason":"after_root","probability":1.0,
//!  "decided_at_ms":1796188685942,"stream_ms":1796188685120,
//!  "partition":3,"spans":7}
//! ```
//!
//! Version 2, every number little-endian:
//!
//! | bytes | what |
//! |---|---|
//! | 4 | `TGD2` |
//! | 4 | the input partition (i32) |
//! | 8 | when the batch's first decision was made, by the wall: ms since the Unix epoch (i64) |
//! | 2 | rule names (u16), then each: its length in bytes (u16) and its UTF-8 |
//! | 4 | records (u32), then each, 39 bytes: |
//! | 16 | — the trace id |
//! | 1 | — bit 0 kept; bits 1–2 the reason (`wait`, `after_root`, `max_age`, `memory`) |
//! | 2 | — the rule, an index into the names (u16) |
//! | 8 | — the probability (f64), which also says the rule's sampling stage: 1 `unchanged` (`keep`, `drop`), under 1 the threshold of that probability (exact for every threshold a rule writes), the next double above 1 a threshold of 0 (`th:0`), 0 `unknown` (`limit`); a tailgate from before stages reads it as the probability it is |
//! | 8 | — the stream time, ms since the Unix epoch (i64) |
//! | 4 | — spans decided (u32) |

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::buffer::Reason;
use crate::otlp::tracestate::{Stage, Threshold};
use crate::otlp::TraceId;

/// The version of the records tailgate writes ([`RecordBatch`]).
pub const RECORD_VERSION: u32 = 2;

/// The version of the single JSON record per trace written before batches.
pub const JSON_RECORD_VERSION: u32 = 1;

/// What a batch's value starts with.
const BATCH_MAGIC: &[u8; 4] = b"TGD2";

/// Bytes of one record in a batch.
const RECORD_BYTES: usize = 16 + 1 + 2 + 8 + 8 + 4;

/// One decision, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedDecision {
    /// The format's version it was read from ([`RECORD_VERSION`], or
    /// [`JSON_RECORD_VERSION`]).
    pub v: u32,
    /// 32 hex digits.
    pub trace_id: String,
    pub keep: bool,
    /// The rule that decided (`unmatched` when none matched).
    pub rule: String,
    /// Why then: `wait`, `after_root`, `max_age` or `memory`.
    pub reason: String,
    /// The probability with which the rule keeps a trace like this (its
    /// stage's own; 1 for `keep`, `drop` and `limit`).
    pub probability: f64,
    /// What the rule does to a kept span's threshold: `unchanged` (`keep`),
    /// `th:<hex>` (`rate`, `dynamic`) or `unknown` (`limit`). Absent from
    /// records written before it existed: see [`LoggedDecision::stage`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// When it was decided: milliseconds since the Unix epoch, by the wall
    /// (in a batch, when its first decision was made).
    pub decided_at_ms: i64,
    /// When it was decided in the stream: the partition's clock (message
    /// timestamps), milliseconds since the Unix epoch. What `decided_ttl`
    /// counts from, and where the trace's spans are in the input. Absent
    /// from records written before it existed: `decided_at_ms` stands in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_ms: Option<i64>,
    /// The input partition the trace was read from.
    pub partition: i32,
    /// Spans decided with the trace (its late spans not counted).
    pub spans: u64,
}

impl Default for LoggedDecision {
    /// A record of this version, its fields to be named.
    fn default() -> Self {
        Self {
            v: RECORD_VERSION,
            trace_id: String::new(),
            keep: false,
            rule: String::new(),
            reason: String::new(),
            probability: 1.0,
            stage: None,
            decided_at_ms: 0,
            stream_ms: None,
            partition: 0,
            spans: 0,
        }
    }
}

impl LoggedDecision {
    /// What the rule does to a kept span's threshold; for a record written
    /// before stages, what its probability says (1: `unchanged`).
    pub fn stage(&self) -> Stage {
        self.stage.unwrap_or_else(|| stage_of(self.probability))
    }

    /// The stream time it was made at (`decided_at_ms` for an older record).
    pub fn stream_ms(&self) -> i64 {
        self.stream_ms.unwrap_or(self.decided_at_ms)
    }

    /// The record as version 1 wrote it: one JSON value (what a log written
    /// by an earlier tailgate holds).
    pub fn encode_json(&self) -> Vec<u8> {
        let v1 = Self {
            v: JSON_RECORD_VERSION,
            ..self.clone()
        };
        // A struct of plain fields always serializes.
        serde_json::to_vec(&v1).unwrap_or_default()
    }

    /// Reads a version 1 record; `None` if it is not one.
    pub fn decode_json(value: &[u8]) -> Option<Self> {
        let d: Self = serde_json::from_slice(value).ok()?;
        (d.v == JSON_RECORD_VERSION && TraceId::from_hex(&d.trace_id).is_some()).then_some(d)
    }

    /// Reads a message's value, in either version: its decisions in the
    /// order they were made; `None` if it is neither.
    pub fn read(value: &[u8]) -> Option<Vec<Self>> {
        if value.starts_with(BATCH_MAGIC) {
            read_batch(value)
        } else {
            Self::decode_json(value).map(|d| vec![d])
        }
    }

    /// The trace it is about.
    pub fn trace(&self) -> Option<TraceId> {
        TraceId::from_hex(&self.trace_id)
    }

    /// What a late span needs of it, compact (a million of them are read
    /// back in one go); `rules` interns the rule names.
    pub fn recalled(&self, rules: &mut HashMap<String, Arc<str>>) -> Option<Recalled> {
        let rule = match rules.get(&self.rule) {
            Some(r) => r.clone(),
            None => {
                let r: Arc<str> = Arc::from(self.rule.as_str());
                rules.insert(self.rule.clone(), r.clone());
                r
            }
        };
        Some(Recalled {
            trace: self.trace()?,
            keep: self.keep,
            rule,
            stage: self.stage().to_bits(),
            stream_ms: self.stream_ms(),
        })
    }
}

/// A partition's decisions gathered for one message of the log (version 2).
#[derive(Debug, Default)]
pub struct RecordBatch {
    /// The rule names its records index.
    rules: Vec<Arc<str>>,
    /// The records, encoded.
    records: Vec<u8>,
    count: u32,
}

impl RecordBatch {
    /// Adds one decision.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        trace: TraceId,
        keep: bool,
        rule: &Arc<str>,
        reason: Reason,
        stage: Stage,
        stream_ms: i64,
        spans: usize,
    ) {
        let probability = probability_of(stage);
        let index = match self
            .rules
            .iter()
            .position(|r| Arc::ptr_eq(r, rule) || r == rule)
        {
            Some(i) => i,
            None => {
                self.rules.push(rule.clone());
                self.rules.len() - 1
            }
        };
        let reason = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0) as u8;
        let r = &mut self.records;
        r.extend_from_slice(&trace.0);
        r.push(u8::from(keep) | (reason << 1));
        r.extend_from_slice(&(index.min(u16::MAX as usize) as u16).to_le_bytes());
        r.extend_from_slice(&probability.to_le_bytes());
        r.extend_from_slice(&stream_ms.to_le_bytes());
        r.extend_from_slice(&(spans.min(u32::MAX as usize) as u32).to_le_bytes());
        self.count += 1;
    }

    /// Decisions in it.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// About the bytes its message will have.
    pub fn bytes(&self) -> usize {
        self.records.len() + self.rules.iter().map(|r| r.len() + 2).sum::<usize>() + 22
    }

    /// The message's value, for `partition`, its first decision made at
    /// `decided_at_ms`; the batch is empty after.
    pub fn finish(&mut self, partition: i32, decided_at_ms: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes());
        out.extend_from_slice(BATCH_MAGIC);
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&decided_at_ms.to_le_bytes());
        out.extend_from_slice(&(self.rules.len() as u16).to_le_bytes());
        for rule in &self.rules {
            // Rule names are short; one longer than a u16 counts is cut.
            let name = &rule.as_bytes()[..rule.len().min(u16::MAX as usize)];
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name);
        }
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.records);
        self.rules.clear();
        self.records.clear();
        self.count = 0;
        out
    }
}

impl RecordBatch {
    /// A batch of readable decisions, as one value: the partition and wall
    /// time of the first stand for all. `None` if one has a trace id or
    /// reason that is not one.
    pub fn of(decisions: &[LoggedDecision]) -> Option<Vec<u8>> {
        let mut batch = Self::default();
        let mut rules: HashMap<&str, Arc<str>> = HashMap::new();
        for d in decisions {
            let rule = rules
                .entry(d.rule.as_str())
                .or_insert_with(|| Arc::from(d.rule.as_str()));
            let reason = *Reason::ALL.iter().find(|r| r.as_str() == d.reason)?;
            let spans = usize::try_from(d.spans).unwrap_or(usize::MAX);
            batch.push(
                d.trace()?,
                d.keep,
                rule,
                reason,
                d.stage(),
                d.stream_ms(),
                spans,
            );
        }
        let (partition, at) = decisions
            .first()
            .map_or((0, 0), |d| (d.partition, d.decided_at_ms));
        Some(batch.finish(partition, at))
    }
}

/// Reads a version 2 value; `None` if it is cut short or malformed.
fn read_batch(value: &[u8]) -> Option<Vec<LoggedDecision>> {
    let mut r = Reader(value.get(BATCH_MAGIC.len()..)?);
    let partition = i32::from_le_bytes(r.take()?);
    let decided_at_ms = i64::from_le_bytes(r.take()?);
    let names = u16::from_le_bytes(r.take()?);
    let mut rules = Vec::with_capacity(names as usize);
    for _ in 0..names {
        let len = u16::from_le_bytes(r.take()?) as usize;
        rules.push(std::str::from_utf8(r.bytes(len)?).ok()?.to_string());
    }
    let count = u32::from_le_bytes(r.take()?) as usize;
    if r.0.len() != count.checked_mul(RECORD_BYTES)? {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let trace = TraceId(r.take()?);
        let [flags] = r.take()?;
        let rule = rules.get(u16::from_le_bytes(r.take()?) as usize)?;
        let reason = Reason::ALL.get(usize::from(flags >> 1))?;
        let probability = f64::from_le_bytes(r.take()?);
        let stage = stage_of(probability);
        out.push(LoggedDecision {
            v: RECORD_VERSION,
            trace_id: trace.to_hex(),
            keep: flags & 1 == 1,
            rule: rule.clone(),
            reason: reason.as_str().to_string(),
            probability,
            stage: Some(stage),
            decided_at_ms,
            stream_ms: Some(i64::from_le_bytes(r.take()?)),
            partition,
            spans: u64::from(u32::from_le_bytes(r.take()?)),
        });
    }
    Some(out)
}

/// The next double above 1: a record's `th:0`.
const ABOVE_ONE: f64 = f64::from_bits(1.0f64.to_bits() + 1);

/// The probability a record carries for `stage` ([`stage_of`] reads it).
/// What a tailgate from before stages reads as the rule's probability.
fn probability_of(stage: Stage) -> f64 {
    match stage {
        Stage::Unchanged => 1.0,
        Stage::Sampled(t) if t == Threshold::ALWAYS => ABOVE_ONE,
        Stage::Sampled(t) => t.probability(),
        Stage::Unknown => 0.0,
    }
}

/// The stage a record's probability says: 1 `unchanged`; under 1 the
/// threshold of that probability; above 1 a threshold of 0; 0 (or less, or
/// not a number) `unknown`. A record written before stages reads the same
/// way (`limit`'s estimate under 1 as a rate: such a record's late spans
/// leave with a threshold it did not apply).
fn stage_of(probability: f64) -> Stage {
    if probability == 1.0 {
        Stage::Unchanged
    } else {
        Threshold::from_probability(probability).map_or(Stage::Unknown, Stage::Sampled)
    }
}

/// Reads fixed-size fields off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }
}

/// The latest records read back, at most as many as a partition's share of
/// `decision.remembered_bytes` remembers: reading back never holds more
/// than the store it fills (about 56 bytes a record), however long the
/// window.
#[derive(Debug)]
pub struct LatestRecords {
    at_most: usize,
    records: std::collections::VecDeque<Recalled>,
    /// Older records let go for lack of room.
    pub dropped: u64,
}

impl LatestRecords {
    pub fn new(at_most: usize) -> Self {
        Self {
            at_most: at_most.max(1),
            records: std::collections::VecDeque::new(),
            dropped: 0,
        }
    }

    pub fn push(&mut self, r: Recalled) {
        if self.records.len() == self.at_most {
            self.records.pop_front();
            self.dropped += 1;
        }
        self.records.push_back(r);
    }

    pub fn into_vec(self) -> Vec<Recalled> {
        self.records.into()
    }
}

/// A decision read back from the log: what a late span of its trace needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Recalled {
    pub trace: TraceId,
    pub keep: bool,
    pub rule: Arc<str>,
    /// Its [`Stage`], as [`Stage::to_bits`] gives it (to keep it small).
    stage: u64,
    /// When it was made in the stream: milliseconds since the Unix epoch.
    pub stream_ms: i64,
}

impl Recalled {
    /// What its rule did to the threshold of the spans it kept.
    pub fn stage(&self) -> Stage {
        Stage::from_bits(self.stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Reason;

    #[test]
    fn reading_back_keeps_only_the_latest_records_that_fit() {
        let rule: Arc<str> = Arc::from("r");
        let mut latest = LatestRecords::new(3);
        for n in 0..10u8 {
            latest.push(Recalled {
                trace: TraceId([n; 16]),
                keep: true,
                rule: rule.clone(),
                stage: Stage::Unchanged.to_bits(),
                stream_ms: i64::from(n),
            });
        }
        assert_eq!(latest.dropped, 7);
        let kept: Vec<i64> = latest.into_vec().iter().map(|r| r.stream_ms).collect();
        assert_eq!(kept, vec![7, 8, 9], "the latest, in order");
        assert!(std::mem::size_of::<Recalled>() <= 56);
    }

    #[test]
    fn a_version_1_record_reads_back_and_other_versions_are_skipped() {
        let id = TraceId([7; 16]);
        let d = LoggedDecision {
            v: JSON_RECORD_VERSION,
            trace_id: id.to_hex(),
            keep: true,
            rule: "errors".into(),
            reason: Reason::AfterRoot.as_str().to_string(),
            probability: 0.25,
            decided_at_ms: 1_700_000_000_123,
            partition: 3,
            spans: 7,
            ..LoggedDecision::default()
        };
        let bytes = d.encode_json();
        assert_eq!(LoggedDecision::read(&bytes), Some(vec![d.clone()]));
        assert_eq!(d.trace(), Some(id));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"reason\":\"after_root\""), "{text}");
        let v3 = text.replace("\"v\":1", "\"v\":3");
        assert_eq!(LoggedDecision::read(v3.as_bytes()), None);
        assert_eq!(LoggedDecision::read(b"not json"), None);
    }

    fn arc(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn a_batch_reads_back_as_its_decisions_in_order() {
        let (errors, baseline) = (arc("errors"), arc("baseline"));
        let mut batch = RecordBatch::default();
        assert!(batch.is_empty());
        let rate = |p| Stage::Sampled(Threshold::from_probability(p).expect("a probability"));
        let pushed = [
            (
                1u8,
                true,
                &errors,
                Reason::AfterRoot,
                Stage::Unchanged,
                1_796_000_000_000i64,
                7usize,
            ),
            (
                2,
                false,
                &baseline,
                Reason::Wait,
                rate(0.1),
                1_796_000_000_010,
                3,
            ),
            (3, true, &baseline, Reason::Memory, Stage::Unknown, -5, 1),
            (
                1,
                false,
                &arc("errors"),
                Reason::MaxAge,
                rate(1.0 / 3.0),
                1_796_000_000_020,
                2,
            ),
        ];
        for (n, keep, rule, reason, p, stream, spans) in pushed {
            batch.push(TraceId([n; 16]), keep, rule, reason, p, stream, spans);
        }
        assert_eq!(batch.len(), 4);
        let bytes = batch.finish(5, 1_796_000_000_123);
        assert!(batch.is_empty(), "finishing empties the batch");
        assert_eq!(
            bytes.len(),
            4 + 4 + 8 + 2 + (2 + 6) + (2 + 8) + 4 + 4 * RECORD_BYTES,
            "each rule named once"
        );
        let read = LoggedDecision::read(&bytes).expect("a batch");
        let want: Vec<LoggedDecision> = pushed
            .iter()
            .map(|(n, keep, rule, reason, p, stream, spans)| LoggedDecision {
                v: RECORD_VERSION,
                trace_id: TraceId([*n; 16]).to_hex(),
                keep: *keep,
                rule: rule.to_string(),
                reason: reason.as_str().to_string(),
                probability: probability_of(*p),
                stage: Some(*p),
                decided_at_ms: 1_796_000_000_123,
                stream_ms: Some(*stream),
                partition: 5,
                spans: *spans as u64,
            })
            .collect();
        assert_eq!(read, want);
        // The batch is reusable: the next one names only its own rules.
        batch.push(
            TraceId([9; 16]),
            true,
            &baseline,
            Reason::Wait,
            rate(0.1),
            0,
            1,
        );
        let next = LoggedDecision::read(&batch.finish(5, 0)).expect("a batch");
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].rule, "baseline");
    }

    #[test]
    fn a_batch_cut_short_or_with_a_bad_index_is_not_read() {
        let mut batch = RecordBatch::default();
        for n in 1..=3u8 {
            batch.push(
                TraceId([n; 16]),
                true,
                &arc("r"),
                Reason::Wait,
                Stage::Unchanged,
                0,
                1,
            );
        }
        let bytes = batch.finish(0, 0);
        for cut in 0..bytes.len() {
            assert_eq!(LoggedDecision::read(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(LoggedDecision::read(&longer), None, "a byte too many");
        // The first record's rule index (after magic, partition, time, one
        // name of one byte, the count and the trace id and flags).
        let at = 4 + 4 + 8 + 2 + 3 + 4 + 16 + 1;
        let mut bad = bytes.clone();
        bad[at] = 7;
        assert_eq!(LoggedDecision::read(&bad), None, "a rule that is not named");
        let mut flags = bytes;
        flags[at - 1] = 0b10_0000;
        assert_eq!(
            LoggedDecision::read(&flags),
            None,
            "a flag that does not exist"
        );
    }

    /// A batch is laid out as the release before stages wrote it: the
    /// flags byte has no bit it did not know (it refuses the batch if so),
    /// and the probability it reads is the rule's own; the stage reads back
    /// exactly, `th:0` and `limit`'s `unknown` included.
    #[test]
    fn the_stage_travels_in_the_probability_and_the_release_before_reads_it() {
        let stages = [
            (Stage::Unchanged, 1.0),
            (
                Stage::Sampled(Threshold::from_probability(0.25).unwrap()),
                0.25,
            ),
            (
                Stage::Sampled(Threshold::from_probability(0.1).unwrap()),
                0.1,
            ),
            (
                Stage::Sampled(Threshold::new((1 << 56) - 1).unwrap()),
                1.0 / (1u64 << 56) as f64,
            ),
            (Stage::Sampled(Threshold::ALWAYS), ABOVE_ONE),
            (Stage::Unknown, 0.0),
        ];
        let mut batch = RecordBatch::default();
        for (n, (stage, _)) in stages.iter().enumerate() {
            batch.push(
                TraceId([n as u8; 16]),
                n % 2 == 0,
                &arc("r"),
                Reason::ALL[n % 4],
                *stage,
                7,
                1,
            );
        }
        let bytes = batch.finish(0, 0);
        let records = &bytes[4 + 4 + 8 + 2 + 3 + 4..];
        for (n, (stage, old)) in stages.iter().enumerate() {
            let record = &records[n * RECORD_BYTES..(n + 1) * RECORD_BYTES];
            assert!(
                record[16] < 8,
                "flags the release before knows: {:#b}",
                record[16]
            );
            let p = f64::from_le_bytes(record[19..27].try_into().unwrap());
            assert_eq!(p, *old, "{stage:?}");
        }
        let read = LoggedDecision::read(&bytes).expect("a batch");
        let got: Vec<Stage> = read.iter().map(LoggedDecision::stage).collect();
        let want: Vec<Stage> = stages.iter().map(|(s, _)| *s).collect();
        assert_eq!(got, want);
    }

    proptest::proptest! {
        /// Any bytes after the magic are read without a panic, and what
        /// reads back encodes to the same decisions (a probability read
        /// from noise is written as its stage's).
        #[test]
        fn any_value_reads_without_panicking(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut value = BATCH_MAGIC.to_vec();
            value.extend_from_slice(&tail);
            if let Some(read) = LoggedDecision::read(&value) {
                let bytes = RecordBatch::of(&read).expect("what was read encodes");
                let again = LoggedDecision::read(&bytes).expect("reads back");
                let canonical = |d: &LoggedDecision| LoggedDecision {
                    probability: probability_of(d.stage()),
                    ..d.clone()
                };
                let read: Vec<LoggedDecision> = read.iter().map(canonical).collect();
                proptest::prop_assert_eq!(again, read);
            }
        }
    }
}
