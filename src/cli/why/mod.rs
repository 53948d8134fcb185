//! `tailgate why <trace-id>`: why a trace is, or is not, in the backend.
//!
//! Finds the trace's latest record in the decision log
//! (`kafka.decision_topic`, read whole: it is bounded by retention), says what was decided, by which rule, for which reason, when
//! and where; then looks for the trace's spans in the input topic around
//! that time, on the partition it was read from, and explains them with the
//! live rules (as `tailgate explain` does), saying whether those would now
//! decide otherwise. `--json` prints the same as one object ([`Why`];
//! docs/output.md names its fields).

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use super::replay::progress_bar;
use super::{load, Failure, PolicyArgs};
use crate::config::Settings;
use crate::kafka::range::{self, End, Range, Record, Start};
use crate::otlp::{SpanRecord, TraceId};
use crate::pipeline::LoggedDecision;
use crate::replay::{explained, Explained, Verdict};
use crate::rules::RuleSet;

/// How far around a decision the input is searched, beyond
/// `decision.max_trace_age` before it: producers' clocks and batching.
const MARGIN_MS: i64 = 60_000;

/// `tailgate why`'s arguments.
#[derive(clap::Args)]
pub struct WhyArgs {
    /// The trace id: 32 hex characters.
    #[arg(value_name = "TRACE_ID")]
    pub trace: String,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Kafka bootstrap servers (overrides kafka.brokers).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Print one JSON object (fields in docs/output.md).
    #[arg(long)]
    pub json: bool,
    /// Only the decision: do not look for the trace's spans in the input topic.
    #[arg(long)]
    pub no_spans: bool,
}

pub(super) fn why(
    policy: &PolicyArgs,
    trace: &str,
    brokers: Option<&str>,
    json: bool,
    no_spans: bool,
) -> Result<(), Failure> {
    let id = parse_trace_id(trace)?;
    let loaded = load(policy)?;
    let settings = &loaded.settings;
    let Some(topic) = settings.kafka.decision_topic() else {
        return Err(Failure::usage(format!(
            "the decision log is off (kafka.decision_log is false in {}): nothing to look {id} up in",
            loaded.sources.describe()
        )));
    };
    let brokers = brokers.unwrap_or(&settings.kafka.brokers).to_string();
    let options: Vec<(String, String)> =
        crate::config::KafkaSettings::options(&settings.kafka.librdkafka_options)
            .map(|m| m.into_iter().collect())
            .map_err(|e| Failure::usage(format!("kafka.librdkafka_options: {e}")))?;

    let (seen, log_read) = search_log(&brokers, &topic, id, &options).map_err(|e| {
        Failure::failed(format!(
            "{e:#}\n(is kafka.decision_topic right, and the decision log on where tailgate runs?)"
        ))
    })?;
    let found = latest(seen);
    let mut why = Why {
        trace_id: id.to_hex(),
        decision_topic: topic.clone(),
        log_records_read: log_read,
        unreadable_records: found.unreadable,
        record: found.chosen.as_ref().map(Logged::out),
        other_records: found.others.iter().map(Logged::out).collect(),
        spans: None,
        explanation: None,
        live_decision: None,
        live_differs: None,
    };
    let Some(chosen) = found.chosen else {
        if json {
            print_json(&why)?;
        }
        return Err(Failure::failed(not_in_log(&why, &brokers, settings)));
    };
    if !no_spans {
        let (search, spans) = search_input(&brokers, settings, &chosen.decision, id, &options);
        why.spans = Some(search);
        if !spans.is_empty() {
            why.explain(&loaded.rules, id, &spans);
        }
    }
    if json {
        print_json(&why)
    } else {
        print!("{why}");
        Ok(())
    }
}

fn print_json(why: &Why) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(why).map_err(Failure::failed)?;
    println!("{text}");
    Ok(())
}

/// A trace id as the user gave it: 32 hex characters, either case.
fn parse_trace_id(text: &str) -> Result<TraceId, Failure> {
    let t = text.trim();
    match TraceId::from_hex(t) {
        Some(id) if id.0 != [0; 16] => Ok(id),
        Some(_) => Err(Failure::usage(
            "the all-zero trace id is not a trace id (OpenTelemetry calls it invalid)",
        )),
        None => Err(Failure::usage(format!(
            "{t:?} is not a trace id: want 32 hex characters, as the output topic's keys and \
             tracing backends show them (got {} characters{})",
            t.chars().count(),
            if t.chars().all(|c| c.is_ascii_hexdigit()) {
                ""
            } else {
                ", not all hex"
            }
        ))),
    }
}

/// One record of the log with the trace's key, as read.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Decision(Logged),
    /// A null value: compaction's delete marker for the key.
    Tombstone {
        partition: i32,
        offset: i64,
    },
    /// A value this tailgate cannot read (another version of the format).
    Unreadable,
}

/// A record of the log, and where it is.
#[derive(Debug, Clone, PartialEq)]
struct Logged {
    /// The log's partition and offset.
    partition: i32,
    offset: i64,
    decision: LoggedDecision,
}

impl Logged {
    fn out(&self) -> RecordOut {
        RecordOut {
            // Its stage said, also for a record written before stages.
            decision: LoggedDecision {
                stage: Some(self.decision.stage()),
                ..self.decision.clone()
            },
            decided_at: utc(self.decision.decided_at_ms),
            adjusted_count: adjusted_count(self.decision.stage()),
            log_partition: self.partition,
            log_offset: self.offset,
        }
    }
}

/// What the log says of a trace.
#[derive(Debug, Default, PartialEq)]
struct Found {
    /// The latest decision.
    chosen: Option<Logged>,
    /// The latest decision on each other log partition: a trace whose spans
    /// were read from several input partitions is decided in parts, one on
    /// each.
    others: Vec<Logged>,
    unreadable: u64,
}

/// Picks what the log says: in each log partition the latest record (of a
/// version 1 log, compaction keeps only it in the end; a tombstone there
/// means none); of those, the one decided last (then the highest offset).
fn latest(seen: Vec<Seen>) -> Found {
    let mut found = Found::default();
    // Per log partition: (offset, decision unless a tombstone).
    let mut last: Vec<(i32, i64, Option<Logged>)> = Vec::new();
    for s in seen {
        let (partition, offset, decision) = match s {
            Seen::Decision(l) => (l.partition, l.offset, Some(l)),
            Seen::Tombstone { partition, offset } => (partition, offset, None),
            Seen::Unreadable => {
                found.unreadable += 1;
                continue;
            }
        };
        match last.iter_mut().find(|(p, _, _)| *p == partition) {
            // A later record of a batch (at the same offset) is the later decision.
            Some(entry) if entry.1 <= offset => *entry = (partition, offset, decision),
            Some(_) => {}
            None => last.push((partition, offset, decision)),
        }
    }
    let mut decisions: Vec<Logged> = last.into_iter().filter_map(|(_, _, d)| d).collect();
    decisions.sort_by_key(|l| std::cmp::Reverse((l.decision.decided_at_ms, l.offset, l.partition)));
    let mut decisions = decisions.into_iter();
    found.chosen = decisions.next();
    found.others = decisions.collect();
    found
}

/// Reads the whole decision log for the records keyed by `id`; and how
/// many records it read.
fn search_log(
    brokers: &str,
    topic: &str,
    id: TraceId,
    options: &[(String, String)],
) -> anyhow::Result<(Vec<Seen>, u64)> {
    let key = id.to_hex();
    let bar = progress_bar(0, "reading the decision log");
    let mut seen = Vec::new();
    let scan = range::read(
        brokers,
        topic,
        &Range::from(Start::Beginning),
        options,
        |n| bar.set_length(n),
        |m: &Record<'_>| {
            bar.inc(1);
            // A record of version 1 is keyed by its trace; a batch (version
            // 2) is keyed by itself and holds the trace's id somewhere.
            let keyed = m.key == Some(key.as_bytes());
            let Some(value) = m.payload else {
                if keyed {
                    seen.push(Seen::Tombstone {
                        partition: m.partition,
                        offset: m.offset,
                    });
                }
                return;
            };
            if !keyed && !value.windows(16).any(|w| w == id.0) {
                return;
            }
            let mut found = false;
            let Some(decisions) = LoggedDecision::read(value) else {
                // Its key or its bytes name the trace, and this tailgate
                // cannot read it (another version of the format).
                seen.push(Seen::Unreadable);
                return;
            };
            for decision in decisions {
                if decision.trace() == Some(id) {
                    found = true;
                    seen.push(Seen::Decision(Logged {
                        partition: m.partition,
                        offset: m.offset,
                        decision,
                    }));
                }
            }
            if keyed && !found {
                seen.push(Seen::Unreadable);
            }
        },
    );
    bar.finish_and_clear();
    Ok((seen, scan?.read))
}

/// Reads the input partition the trace was decided on, around the
/// decision, for its spans.
fn search_input(
    brokers: &str,
    settings: &Settings,
    decision: &LoggedDecision,
    id: TraceId,
    options: &[(String, String)],
) -> (SpanSearch, Vec<SpanRecord>) {
    let topic = settings.kafka.input_topic.clone();
    let max_age = settings.decision.max_trace_age.as_millis() as i64;
    let (from_ms, to_ms) = window(decision.stream_ms(), max_age);
    let mut search = SpanSearch {
        topic,
        partition: decision.partition,
        from: utc(from_ms),
        to: utc(to_ms),
        from_offset: None,
        to_offset: None,
        messages_read: 0,
        found: 0,
        error: None,
    };
    let bar = progress_bar(0, "reading the input");
    let mut spans = Vec::new();
    let range = Range {
        start: Start::Time(from_ms),
        end: End::Time(to_ms),
        partitions: Some(vec![decision.partition]),
        max_messages: None,
    };
    let read = range::read(
        brokers,
        &search.topic,
        &range,
        options,
        |n| bar.set_length(n),
        |m| {
            bar.inc(1);
            let payload = m.payload.unwrap_or_default();
            if !may_hold(payload, id) {
                return;
            }
            if let Ok(d) = crate::otlp::decode(Bytes::copy_from_slice(payload)) {
                spans.extend(
                    d.spans
                        .into_iter()
                        .filter(|(t, _)| *t == id)
                        .map(|(_, s)| s),
                );
            }
        },
    );
    bar.finish_and_clear();
    match read {
        Ok(scan) => {
            search.messages_read = scan.read;
            if let Some(s) = scan.spans.first() {
                search.from_offset = Some(s.from);
                search.to_offset = Some(s.to);
            }
        }
        Err(e) => search.error = Some(format!("{e:#}")),
    }
    search.found = spans.len();
    (search, spans)
}

/// The stretch of the input a trace decided at `decided_at_ms` was read
/// in: from `max_age` (and a margin) before, to a margin after.
fn window(decided_at_ms: i64, max_age_ms: i64) -> (i64, i64) {
    let from = decided_at_ms
        .saturating_sub(max_age_ms)
        .saturating_sub(MARGIN_MS)
        .max(0);
    (from, decided_at_ms.saturating_add(MARGIN_MS))
}

/// Whether a message may hold spans of `id`: its 16 bytes (protobuf) or
/// its hex (OTLP JSON) occur in it. Most messages of a busy partition are
/// skipped without being decoded.
fn may_hold(payload: &[u8], id: TraceId) -> bool {
    let hex = id.to_hex();
    let upper = hex.to_ascii_uppercase();
    [&id.0[..], hex.as_bytes(), upper.as_bytes()]
        .iter()
        .any(|needle| payload.windows(needle.len()).any(|w| w == *needle))
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC.
fn utc(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        Err(_) => format!("{ms} ms since the Unix epoch"),
    }
}

/// What the rule's own sampling makes a kept span stand for: 1 / its
/// probability (`None` for `limit`, which is not a probability).
fn adjusted_count(stage: Stage) -> Option<f64> {
    stage.probability().filter(|p| *p > 0.0).map(|p| 1.0 / p)
}

use crate::otlp::tracestate::Stage;

mod report;
use report::{not_in_log, RecordOut, SpanSearch, Why};

#[cfg(test)]
mod tests;
