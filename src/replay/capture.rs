//! A capture: Kafka messages as they were read, from OTLP files or a range
//! of a topic, and the whole traces in them (for `explain`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;
use bytes::Bytes;

use crate::otlp::{self, Encoding, SpanRecord, TraceId};

/// One captured message.
#[derive(Debug, Clone)]
pub(super) struct Captured {
    pub partition: i32,
    /// Milliseconds since the Unix epoch, if it has a timestamp.
    pub timestamp: Option<i64>,
    pub key: Option<Bytes>,
    pub payload: Bytes,
}

/// Whole traces, each with its spans and encoding.
pub type Traces = Vec<(TraceId, Vec<SpanRecord>, Encoding)>;

/// Captured messages, in the order they were read.
#[derive(Default, Clone)]
pub struct Capture {
    pub(super) captured: Vec<Captured>,
    pub messages: u64,
    pub bytes_in: u64,
    /// When it was read (since the Unix epoch), if it was read from a
    /// topic: where replay's wall clock stands.
    pub(super) read_at: Option<std::time::Duration>,
}

impl Capture {
    /// Adds one message of `partition` with its key, stamped `timestamp`
    /// (milliseconds since the Unix epoch) if it has one. One without is
    /// stamped with the latest end of its spans, as the Collector's
    /// exporter would stamp it soon after.
    pub fn add(
        &mut self,
        partition: i32,
        timestamp: Option<i64>,
        key: Option<Bytes>,
        payload: Bytes,
    ) {
        self.messages += 1;
        self.bytes_in += payload.len() as u64;
        let timestamp = timestamp.filter(|t| *t > 0).or_else(|| {
            let decoded = otlp::decode(payload.clone()).ok()?;
            decoded
                .spans
                .iter()
                .map(|(_, s)| (s.end_ns / 1_000_000) as i64)
                .max()
        });
        self.captured.push(Captured {
            partition,
            timestamp,
            key,
            payload,
        });
    }

    /// The capture was read from a topic now: replay reads it as a
    /// running tailgate would read it as a backlog at this moment.
    pub fn read_now(&mut self) {
        self.read_at = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .ok();
    }

    /// Reads an OTLP file: OTLP JSON (one `TracesData` object, or one per
    /// line as the Collector's file exporter writes), or one protobuf
    /// `TracesData`. Its messages have no timestamps.
    pub fn add_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let first = data.iter().find(|b| !b.is_ascii_whitespace()).copied();
        if first != Some(b'{') {
            self.add(0, None, None, Bytes::from(data));
            return Ok(());
        }
        // One JSON document (skimmed, not built), or one per line.
        let mut values =
            serde_json::Deserializer::from_slice(&data).into_iter::<serde::de::IgnoredAny>();
        let one = matches!(values.next(), Some(Ok(_)))
            && data[values.byte_offset()..]
                .iter()
                .all(u8::is_ascii_whitespace);
        if one {
            self.add(0, None, None, Bytes::from(data));
            return Ok(());
        }
        for line in data.split(|b| *b == b'\n') {
            if line.iter().any(|b| !b.is_ascii_whitespace()) {
                self.add(0, None, None, Bytes::copy_from_slice(line));
            }
        }
        Ok(())
    }

    /// Whole traces: every span of the capture grouped by trace id, in the
    /// order the traces ended (ties by trace id); and what was rejected, by
    /// reason.
    pub fn into_traces(self) -> (Traces, HashMap<&'static str, u64>) {
        let mut traces: HashMap<TraceId, (Vec<SpanRecord>, Encoding)> = HashMap::new();
        let mut rejected = HashMap::new();
        for m in self.captured {
            match otlp::decode(m.payload) {
                Ok(d) => {
                    for e in &d.rejected {
                        *rejected.entry(e.kind.as_str()).or_default() += 1;
                    }
                    for (id, span) in d.spans {
                        traces
                            .entry(id)
                            .or_insert_with(|| (Vec::new(), d.encoding))
                            .0
                            .push(span);
                    }
                }
                Err(e) => *rejected.entry(e.kind.as_str()).or_default() += 1,
            }
        }
        let mut out: Vec<_> = traces
            .into_iter()
            .map(|(id, (spans, enc))| (id, spans, enc))
            .collect();
        out.sort_by_key(|(id, spans, _)| (spans.iter().map(|s| s.end_ns).max(), *id));
        (out, rejected)
    }
}
