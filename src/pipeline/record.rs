//! The decision log's record: one per decided trace, written to
//! `kafka.decision_topic` keyed by the trace id (hex, as the output is) on
//! the partition number of the input partition the trace was read from.
//! Compaction keeps the latest record per trace; `stream_ms` (the
//! partition's stream time of the decision) lets a reader take only those
//! within `decision.decided_ttl` of where it resumes.
//!
//! The value is JSON, so that `kcat` and a person can read the log:
//!
//! ```json
//! {"v":1,"trace_id":"5b8efff798038103d269b633813fc60c","keep":true,
//!  "rule":"errors","reason":"after_root","probability":1.0,
//!  "decided_at_ms":1796188685942,"stream_ms":1796188685120,
//!  "partition":3,"spans":7}
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::otlp::TraceId;

/// The format's version; a reader skips records of another.
pub const RECORD_VERSION: u32 = 1;

/// One decision, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedDecision {
    /// The format's version ([`RECORD_VERSION`]).
    pub v: u32,
    /// 32 hex digits.
    pub trace_id: String,
    pub keep: bool,
    /// The rule that decided (`unmatched` when none matched).
    pub rule: String,
    /// Why then: `wait`, `after_root`, `max_age` or `memory`.
    pub reason: String,
    /// The probability with which a trace like this is kept (its kept spans'
    /// adjusted count is the inverse); 1 for `keep` and `drop`.
    pub probability: f64,
    /// When it was decided: milliseconds since the Unix epoch, by the wall.
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
            decided_at_ms: 0,
            stream_ms: None,
            partition: 0,
            spans: 0,
        }
    }
}

impl LoggedDecision {
    /// The stream time it was made at (`decided_at_ms` for an older record).
    pub fn stream_ms(&self) -> i64 {
        self.stream_ms.unwrap_or(self.decided_at_ms)
    }

    /// The record's value.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of plain fields always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a record's value; `None` if it is not one of this version.
    pub fn decode(value: &[u8]) -> Option<Self> {
        let d: Self = serde_json::from_slice(value).ok()?;
        (d.v == RECORD_VERSION && TraceId::from_hex(&d.trace_id).is_some()).then_some(d)
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
            probability: self.probability,
            stream_ms: self.stream_ms(),
        })
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
    pub probability: f64,
    /// When it was made in the stream: milliseconds since the Unix epoch.
    pub stream_ms: i64,
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
                probability: 1.0,
                stream_ms: i64::from(n),
            });
        }
        assert_eq!(latest.dropped, 7);
        let kept: Vec<i64> = latest.into_vec().iter().map(|r| r.stream_ms).collect();
        assert_eq!(kept, vec![7, 8, 9], "the latest, in order");
        assert!(std::mem::size_of::<Recalled>() <= 56);
    }

    #[test]
    fn a_record_reads_back_as_written_and_other_versions_are_skipped() {
        let id = TraceId([7; 16]);
        let d = LoggedDecision {
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
        let bytes = d.encode();
        assert_eq!(LoggedDecision::decode(&bytes), Some(d.clone()));
        assert_eq!(d.trace(), Some(id));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"reason\":\"after_root\""), "{text}");
        let v2 = text.replace("\"v\":1", "\"v\":2");
        assert_eq!(LoggedDecision::decode(v2.as_bytes()), None);
        assert_eq!(LoggedDecision::decode(b"not json"), None);
    }
}
