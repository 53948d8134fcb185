//! What `tailgate why` found, as a person reads it and as `--json` prints it.

use std::fmt::{self, Write as _};

use serde::Serialize;

use super::*;

/// Everything `tailgate why` found, as `--json` prints it.
#[derive(Debug, Serialize)]
pub(super) struct Why {
    pub(super) trace_id: String,
    pub(super) decision_topic: String,
    /// Records of the decision log read (all of it).
    pub(super) log_records_read: u64,
    /// Records with the trace's key in a format this tailgate cannot read.
    pub(super) unreadable_records: u64,
    /// The latest decision, or `null` when the log has none.
    pub(super) record: Option<RecordOut>,
    /// The latest decisions on other log partitions (the trace read from
    /// more than one input partition, each part decided on its own).
    pub(super) other_records: Vec<RecordOut>,
    /// The search of the input for the trace's spans (`null` with
    /// `--no-spans` or without a record).
    pub(super) spans: Option<SpanSearch>,
    /// The live rules on the spans found (`null` when none were found).
    pub(super) explanation: Option<Explained>,
    /// What the live rules decide (the explanation's decision).
    pub(super) live_decision: Option<Verdict>,
    /// Whether that differs from the record (keep or rule).
    pub(super) live_differs: Option<bool>,
}

/// A record of the log, with where it is and what it implies.
#[derive(Debug, Serialize)]
pub(super) struct RecordOut {
    #[serde(flatten)]
    pub(super) decision: LoggedDecision,
    /// `decided_at_ms` in RFC 3339, UTC.
    pub(super) decided_at: String,
    /// What the rule's own sampling makes a kept span stand for, 1 / its
    /// probability (`null` for `limit`); a span's `tailgate.adjusted_count`
    /// includes its head sampling too.
    pub(super) adjusted_count: Option<f64>,
    pub(super) log_partition: i32,
    pub(super) log_offset: i64,
}

/// Where the input was searched for the trace's spans, and what was found.
#[derive(Debug, Serialize)]
pub(super) struct SpanSearch {
    pub(super) topic: String,
    pub(super) partition: i32,
    /// The time window searched, RFC 3339, UTC.
    pub(super) from: String,
    pub(super) to: String,
    /// The offsets it maps to: from, up to (not including) to.
    pub(super) from_offset: Option<i64>,
    pub(super) to_offset: Option<i64>,
    pub(super) messages_read: u64,
    /// Spans of the trace found.
    pub(super) found: usize,
    /// Why the input could not be read, if it could not.
    pub(super) error: Option<String>,
}

impl Why {
    pub(super) fn explain(&mut self, rules: &RuleSet, id: TraceId, spans: &[SpanRecord]) {
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
pub(super) fn reason_text(reason: &str) -> &'static str {
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

pub(super) fn verdict(keep: bool) -> &'static str {
    if keep {
        "KEPT"
    } else {
        "DROPPED"
    }
}

/// `text` in lines of at most `width` characters (a longer word alone),
/// the first after `first`, the others after `rest`.
pub(super) fn wrap(text: &str, first: &str, rest: &str, width: usize) -> String {
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

pub(super) fn number(x: f64) -> String {
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
        let stage = d.stage();
        writeln!(
            f,
            "  sampling     {} ({})",
            stage.name(),
            match r.adjusted_count {
                Some(n) => format!(
                    "probability {}: adjusted count {} times any head sampling's",
                    number(d.probability),
                    number(n)
                ),
                None => "not a probability: no adjusted count".into(),
            }
        )?;
        writeln!(f, "  spans        {} decided", d.spans)?;
        writeln!(
            f,
            "  log record   {} partition {}, offset {}",
            self.decision_topic, r.log_partition, r.log_offset
        )?;
        if d.keep {
            let count = match r.adjusted_count {
                Some(n) => format!(
                    "tailgate.adjusted_count={} times any head sampling's (their \
                     tracestate's ot=th says the whole)",
                    number(n)
                ),
                None => "no tailgate.adjusted_count and no ot=th".into(),
            };
            let note = format!(
                "Its spans went to the output topic with tailgate.rule={} and {count}; \
                 if the backend lacks them, look downstream: the output topic, the \
                 Collector's Kafka receiver, the backend's own sampling.",
                d.rule
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
pub(super) fn not_in_log(why: &Why, brokers: &str, settings: &Settings) -> String {
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
