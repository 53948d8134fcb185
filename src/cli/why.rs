//! `tailgate why <trace-id>`: why a trace is, or is not, in the backend.
//!
//! Finds the trace's latest record in the decision log
//! (`kafka.decision_topic`, read whole: it is compacted and bounded by
//! retention), says what was decided, by which rule, for which reason, when
//! and where; then looks for the trace's spans in the input topic around
//! that time, on the partition it was read from, and explains them with the
//! live rules (as `tailgate explain` does), saying whether those would now
//! decide otherwise. `--json` prints the same as one object ([`Why`];
//! docs/output.md names its fields).

use std::fmt::{self, Write as _};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

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
            .unwrap_or_default();

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
            decision: self.decision.clone(),
            decided_at: utc(self.decision.decided_at_ms),
            adjusted_count: adjusted_count(self.decision.probability),
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

/// Picks what the log says: in each log partition the record with the
/// highest offset (compaction keeps only it in the end; a tombstone there
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
            Some(entry) if entry.1 < offset => *entry = (partition, offset, decision),
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
            if m.key != Some(key.as_bytes()) {
                return;
            }
            seen.push(match m.payload {
                None => Seen::Tombstone {
                    partition: m.partition,
                    offset: m.offset,
                },
                Some(value) => match LoggedDecision::decode(value) {
                    Some(decision) if decision.trace() == Some(id) => Seen::Decision(Logged {
                        partition: m.partition,
                        offset: m.offset,
                        decision,
                    }),
                    _ => Seen::Unreadable,
                },
            });
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
    let (from_ms, to_ms) = window(decision.decided_at_ms, max_age);
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

fn adjusted_count(probability: f64) -> Option<f64> {
    (probability > 0.0).then(|| 1.0 / probability)
}

/// Everything `tailgate why` found, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Why {
    trace_id: String,
    decision_topic: String,
    /// Records of the decision log read (all of it).
    log_records_read: u64,
    /// Records with the trace's key in a format this tailgate cannot read.
    unreadable_records: u64,
    /// The latest decision, or `null` when the log has none.
    record: Option<RecordOut>,
    /// The latest decisions on other log partitions (the trace read from
    /// more than one input partition, each part decided on its own).
    other_records: Vec<RecordOut>,
    /// The search of the input for the trace's spans (`null` with
    /// `--no-spans` or without a record).
    spans: Option<SpanSearch>,
    /// The live rules on the spans found (`null` when none were found).
    explanation: Option<Explained>,
    /// What the live rules decide (the explanation's decision).
    live_decision: Option<Verdict>,
    /// Whether that differs from the record (keep or rule).
    live_differs: Option<bool>,
}

/// A record of the log, with where it is and what it implies.
#[derive(Debug, Serialize)]
struct RecordOut {
    #[serde(flatten)]
    decision: LoggedDecision,
    /// `decided_at_ms` in RFC 3339, UTC.
    decided_at: String,
    /// 1 / probability (`null` when it is 0).
    adjusted_count: Option<f64>,
    log_partition: i32,
    log_offset: i64,
}

/// Where the input was searched for the trace's spans, and what was found.
#[derive(Debug, Serialize)]
struct SpanSearch {
    topic: String,
    partition: i32,
    /// The time window searched, RFC 3339, UTC.
    from: String,
    to: String,
    /// The offsets it maps to: from, up to (not including) to.
    from_offset: Option<i64>,
    to_offset: Option<i64>,
    messages_read: u64,
    /// Spans of the trace found.
    found: usize,
    /// Why the input could not be read, if it could not.
    error: Option<String>,
}

impl Why {
    fn explain(&mut self, rules: &RuleSet, id: TraceId, spans: &[SpanRecord]) {
        let e = explained(rules, id, spans);
        let live = e.decision.clone();
        self.live_differs = self
            .record
            .as_ref()
            .map(|r| r.decision.keep != live.keep || r.decision.rule != live.rule);
        self.live_decision = Some(live);
        self.explanation = Some(e);
    }
}

/// What a decision's reason means.
fn reason_text(reason: &str) -> &'static str {
    match reason {
        "wait" => "decision.wait passed after its first span",
        "after_root" => "quiet for decision.after_root after its root span arrived",
        "max_age" => "it reached decision.max_trace_age; spans after that followed the decision",
        "memory" => {
            "decided early: the buffer reached its memory budget (buffer.max_bytes); \
             spans that came later followed the decision unseen by the rules"
        }
        _ => "a reason this tailgate does not know",
    }
}

fn verdict(keep: bool) -> &'static str {
    if keep {
        "KEPT"
    } else {
        "DROPPED"
    }
}

/// `text` in lines of at most `width` characters (a longer word alone),
/// the first after `first`, the others after `rest`.
fn wrap(text: &str, first: &str, rest: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > width {
            let _ = writeln!(out, "{line}");
            line = rest.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    if !empty {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The width notes are wrapped to.
const WIDTH: usize = 78;

fn number(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(r) = &self.record else {
            return writeln!(
                f,
                "trace {} is not in the decision log {}",
                self.trace_id, self.decision_topic
            );
        };
        let d = &r.decision;
        writeln!(
            f,
            "trace {} was {} by rule {:?}",
            self.trace_id,
            verdict(d.keep),
            d.rule
        )?;
        writeln!(f, "  reason       {}: {}", d.reason, reason_text(&d.reason))?;
        writeln!(f, "  decided at   {}", r.decided_at)?;
        writeln!(f, "  input        partition {}", d.partition)?;
        writeln!(
            f,
            "  probability  {} (adjusted count {})",
            number(d.probability),
            r.adjusted_count.map_or("-".into(), number)
        )?;
        writeln!(f, "  spans        {} decided", d.spans)?;
        writeln!(
            f,
            "  log record   {} partition {}, offset {}",
            self.decision_topic, r.log_partition, r.log_offset
        )?;
        if d.keep {
            let note = format!(
                "Its spans went to the output topic with tailgate.rule={} and \
                 tailgate.adjusted_count={}; if the backend lacks them, look downstream: \
                 the output topic, the Collector's Kafka receiver, the backend's own sampling.",
                d.rule,
                r.adjusted_count.map_or("-".into(), number)
            );
            write!(f, "{}", wrap(&note, "  ", "  ", WIDTH))?;
        }
        for o in &self.other_records {
            let note = format!(
                "Also decided on input partition {} at {}: {} by rule {:?} ({}, {} spans; \
                 log partition {}, offset {}). The trace's spans were read from more than \
                 one partition, and each part was decided on its own.",
                o.decision.partition,
                o.decided_at,
                verdict(o.decision.keep),
                o.decision.rule,
                o.decision.reason,
                o.decision.spans,
                o.log_partition,
                o.log_offset
            );
            write!(f, "{}", wrap(&note, "  ", "  ", WIDTH))?;
        }
        if self.unreadable_records > 0 {
            writeln!(
                f,
                "  ({} more records for this trace are in a format this tailgate cannot read)",
                self.unreadable_records
            )?;
        }
        let Some(s) = &self.spans else {
            return Ok(());
        };
        writeln!(f)?;
        writeln!(
            f,
            "spans searched  {} partition {}, {} to {}{}",
            s.topic,
            s.partition,
            s.from,
            s.to,
            match (s.from_offset, s.to_offset) {
                (Some(a), Some(b)) => format!(" (offsets {a}..{b}, {} messages)", s.messages_read),
                _ => String::new(),
            }
        )?;
        let found = if let Some(e) = &s.error {
            format!("none: the input could not be read: {e}")
        } else if s.found == 0 {
            "none. Retention may have removed them, or they were on another \
             partition or outside that time; without them the live rules cannot be checked."
                .to_string()
        } else if (s.found as u64) < d.spans {
            format!(
                "{}, fewer than the {} decided: the others are gone with \
                 retention, on another partition or outside that time.",
                s.found, d.spans
            )
        } else if (s.found as u64) > d.spans {
            format!(
                "{}, more than the {} decided: the others came after the \
                 decision, and followed it.",
                s.found, d.spans
            )
        } else {
            s.found.to_string()
        };
        write!(
            f,
            "{}",
            wrap(&found, "spans found     ", "                ", WIDTH)
        )?;
        if let Some(e) = &self.explanation {
            writeln!(f, "with the live rules:")?;
            write!(f, "{e}")?;
        }
        if let Some(live) = &self.live_decision {
            let said = format!("{} by rule {:?}", verdict(d.keep), d.rule);
            let now = format!("{} by rule {:?}", verdict(live.keep), live.rule);
            if self.live_differs == Some(true) {
                let cause = if (s.found as u64) < d.spans {
                    "only part of its spans were found, so the rules saw a different trace"
                } else if (s.found as u64) > d.spans
                    || d.reason == "memory"
                    || d.reason == "max_age"
                {
                    "the rules saw fewer spans when it was decided than are found now"
                } else if d.rule == live.rule {
                    "the same rule, sampled otherwise: its sampler changed, or depends on the traffic"
                } else {
                    "the rules changed since it was decided"
                };
                let note = format!(
                    "the live rules would now decide differently: {now} (the log: {said}); {cause}"
                );
                write!(f, "{}", wrap(&note, "", "", WIDTH))?;
            } else {
                writeln!(f, "the live rules decide the same: {now}")?;
            }
        }
        Ok(())
    }
}

/// The message for a trace the log does not hold.
fn not_in_log(why: &Why, brokers: &str, settings: &Settings) -> String {
    let mut m = format!(
        "trace {} is not in the decision log {} on {brokers} ({} records read): no tailgate \
         writing to this topic decided it within the topic's retention (or the log was off \
         when it was decided).",
        why.trace_id, why.decision_topic, why.log_records_read
    );
    if why.unreadable_records > 0 {
        let _ = write!(
            m,
            " {} records for it are in a format this tailgate cannot read: a newer tailgate wrote them.",
            why.unreadable_records
        );
    }
    let _ = write!(
        m,
        "\nhints:\n  - is the trace id right? Copy it from the backend or the service's logs \
         (32 hex characters).\n  - was it decided longer ago than the topic's retention \
         (retention.ms)? tailgate itself reads back only decision.decided_ttl ({}) of it.\n  \
         - is it still being assembled? A trace is logged once decided (decision.wait {}, \
         at most decision.max_trace_age {}).\n  - does the running tailgate write to this \
         topic (kafka.decision_topic in its --env, and these --policies/--env here)?",
        humantime::format_duration(settings.decision.decided_ttl),
        humantime::format_duration(settings.decision.wait),
        humantime::format_duration(settings.decision.max_trace_age),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Reason;

    const ID: TraceId = TraceId([0xab; 16]);

    fn logged(partition: i32, offset: i64, at: i64, keep: bool, rule: &str) -> Logged {
        Logged {
            partition,
            offset,
            decision: LoggedDecision::new(ID, keep, rule, Reason::Wait, 0.1, at, partition, 4),
        }
    }

    #[test]
    fn the_highest_offset_wins_in_a_partition_and_a_tombstone_deletes() {
        let older = logged(1, 10, 2_000, false, "baseline");
        let newer = logged(1, 30, 1_000, true, "errors");
        let found = latest(vec![
            Seen::Decision(newer.clone()),
            Seen::Decision(older.clone()),
            Seen::Unreadable,
        ]);
        assert_eq!(found.chosen, Some(newer.clone()), "by offset, not time");
        assert!(found.others.is_empty());
        assert_eq!(found.unreadable, 1);

        let deleted = latest(vec![
            Seen::Decision(older.clone()),
            Seen::Tombstone {
                partition: 1,
                offset: 11,
            },
        ]);
        assert_eq!(deleted.chosen, None);
        let revived = latest(vec![
            Seen::Tombstone {
                partition: 1,
                offset: 11,
            },
            Seen::Decision(newer.clone()),
        ]);
        assert_eq!(revived.chosen, Some(newer));
        assert_eq!(latest(Vec::new()), Found::default());
    }

    #[test]
    fn across_partitions_the_last_decided_is_chosen_and_the_others_kept() {
        let a = logged(0, 500, 1_000, false, "baseline");
        let b = logged(2, 3, 5_000, true, "errors");
        let found = latest(vec![Seen::Decision(a.clone()), Seen::Decision(b.clone())]);
        assert_eq!(found.chosen, Some(b));
        assert_eq!(found.others, vec![a]);
    }

    #[test]
    fn trace_ids_are_checked_and_either_case_is_taken() {
        assert_eq!(
            parse_trace_id(" ABABABABABABABABABABABABABABABAB\n").ok(),
            Some(ID)
        );
        for bad in ["abc", "zz".repeat(16).as_str(), &"0".repeat(32), ""] {
            let e = parse_trace_id(bad).expect_err(bad);
            assert_eq!(e.code, 2, "{bad}: {}", e.message);
        }
        let e = parse_trace_id("abc").unwrap_err();
        assert!(e.message.contains("32 hex characters") && e.message.contains("got 3"));
    }

    #[test]
    fn the_window_reaches_back_past_the_oldest_trace_and_a_minute_on() {
        assert_eq!(window(1_000_000, 300_000), (640_000, 1_060_000));
        assert_eq!(window(10, 300_000), (0, 60_010));
    }

    #[test]
    fn a_message_is_decoded_only_if_the_id_occurs_in_it() {
        let mut proto = b"\x0a\x10".to_vec();
        proto.extend_from_slice(&ID.0);
        assert!(may_hold(&proto, ID));
        assert!(may_hold(format!("{{\"traceId\":\"{ID}\"}}").as_bytes(), ID));
        assert!(may_hold(ID.to_hex().to_uppercase().as_bytes(), ID));
        assert!(!may_hold(&ID.0[..15], ID));
        assert!(!may_hold(b"", ID));
        assert!(!may_hold(TraceId([0xac; 16]).to_hex().as_bytes(), ID));
    }

    #[test]
    fn notes_wrap_at_words() {
        assert_eq!(
            wrap("a bb ccc dddd", "- ", "  ", 6),
            "- a bb\n  ccc\n  dddd\n"
        );
        assert_eq!(wrap("averylongword x", "", "", 4), "averylongword\nx\n");
        assert_eq!(wrap("", "  ", "  ", 10), "");
    }

    #[test]
    fn times_are_rfc3339_utc_and_numbers_plain() {
        assert_eq!(utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc(-5), "-5 ms since the Unix epoch");
        assert_eq!(number(0.1), "0.1");
        assert_eq!(number(1.0), "1");
        assert_eq!(number(1.0 / 0.3), "3.333333");
        assert_eq!(adjusted_count(0.0), None);
        assert_eq!(adjusted_count(0.25), Some(4.0));
    }

    fn why_of(l: &Logged) -> Why {
        Why {
            trace_id: ID.to_hex(),
            decision_topic: "tailgate_decisions".into(),
            log_records_read: 40,
            unreadable_records: 0,
            record: Some(l.out()),
            other_records: Vec::new(),
            spans: None,
            explanation: None,
            live_decision: None,
            live_differs: None,
        }
    }

    #[test]
    fn the_text_says_what_when_where_and_why() {
        let mut l = logged(3, 41, 1_700_000_000_123, false, "baseline");
        l.decision.reason = "memory".into();
        let text = why_of(&l).to_string();
        for want in [
            &format!("trace {ID} was DROPPED by rule \"baseline\""),
            "reason       memory: decided early",
            "decided at   2023-11-14T22:13:20.123Z",
            "input        partition 3",
            "probability  0.1 (adjusted count 10)",
            "spans        4 decided",
            "log record   tailgate_decisions partition 3, offset 41",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }
        assert!(
            !text.contains("spans searched"),
            "no search, no spans line:\n{text}"
        );

        let mut kept = why_of(&logged(0, 1, 1_700_000_000_123, true, "errors"));
        kept.other_records
            .push(logged(2, 7, 1_600_000_000_000, false, "baseline").out());
        kept.spans = Some(SpanSearch {
            topic: "otlp_spans".into(),
            partition: 0,
            from: utc(1),
            to: utc(2),
            from_offset: Some(5),
            to_offset: Some(9),
            messages_read: 4,
            found: 0,
            error: None,
        });
        let text = kept.to_string();
        for want in [
            "was KEPT by rule \"errors\"",
            "tailgate.rule=errors",
            "Also decided on input partition 2",
            "spans searched  otlp_spans partition 0, 1970-01-01T00:00:00.001Z to \
             1970-01-01T00:00:00.002Z (offsets 5..9, 4 messages)",
            "spans found     none. Retention",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }
    }

    #[test]
    fn the_json_names_are_stable() {
        let why = why_of(&logged(3, 41, 1_700_000_000_123, true, "errors"));
        let v: serde_json::Value = serde_json::to_value(&why).unwrap();
        for field in [
            "trace_id",
            "decision_topic",
            "log_records_read",
            "unreadable_records",
            "record",
            "other_records",
            "spans",
            "explanation",
            "live_decision",
            "live_differs",
        ] {
            assert!(v.get(field).is_some(), "{field} in {v}");
        }
        let r = &v["record"];
        for field in [
            "v",
            "trace_id",
            "keep",
            "rule",
            "reason",
            "probability",
            "decided_at_ms",
            "decided_at",
            "partition",
            "spans",
            "adjusted_count",
            "log_partition",
            "log_offset",
        ] {
            assert!(r.get(field).is_some(), "record.{field} in {r}");
        }
        assert_eq!(r["decided_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(r["log_offset"], 41);
    }
}
