//! Reads a range of a topic, for `tailgate replay` (every partition from its
//! start, or an offset, to its end) and `tailgate why` (the decision log
//! whole; one input partition between two times). Each partition is read up
//! to its end as it was when reading began, or to a time. No consumer group
//! offset is committed; the topic is left as it was. Transactional messages
//! are read committed only: an aborted transaction's messages never happened.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::ClientBase;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// Where in each partition to start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Start {
    Beginning,
    /// The same offset in every partition (clamped to what the log holds).
    Offset(i64),
    /// The first message stamped at or after this time (milliseconds since
    /// the Unix epoch; librdkafka's `offsets_for_times`).
    Time(i64),
}

/// Where in each partition to stop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    /// The end the partition had when reading began.
    Now,
    /// Before the first message stamped at or after this time (or at the
    /// end, if there is none).
    Time(i64),
}

/// What to read of a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    pub start: Start,
    pub end: End,
    /// Only these partitions (all when `None`).
    pub partitions: Option<Vec<i32>>,
    /// At most this many messages in all.
    pub max_messages: Option<u64>,
}

impl Range {
    /// Every partition, from `start` to its end now.
    pub fn from(start: Start) -> Self {
        Self {
            start,
            end: End::Now,
            partitions: None,
            max_messages: None,
        }
    }
}

/// One message, as [`read`] hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch, if it has a timestamp.
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    /// `None` for a tombstone.
    pub payload: Option<&'a [u8]>,
}

/// The offsets one partition was read between: `from` up to, not
/// including, `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

/// What a read covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Messages handed over.
    pub read: u64,
    /// The offsets read in each partition asked for, empty ones included.
    pub spans: Vec<Span>,
}

/// Reads `range` of `topic`, handing each message to `each`. `total` is
/// told the number of messages to expect once it is known. `options` are
/// librdkafka options (security, ...), applied over the reader's own.
pub fn read(
    brokers: &str,
    topic: &str,
    range: &Range,
    options: &[(String, String)],
    total: impl FnOnce(u64),
    mut each: impl FnMut(&Record<'_>),
) -> anyhow::Result<Scan> {
    let mut config = ClientBase::given(brokers, options).config(|config| {
        config
            .set("group.id", "tailgate-replay")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
    });
    config.set("isolation.level", "read_committed");
    let consumer: BaseConsumer = config.create()?;
    let timeout = Duration::from_secs(15);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| anyhow::anyhow!("cannot read the metadata of {topic} from {brokers}: {e}"))?;
    let present: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if present.is_empty() {
        anyhow::bail!("topic {topic} does not exist on {brokers} (or has no partitions)");
    }
    let partitions = match &range.partitions {
        None => present,
        Some(wanted) => {
            if let Some(p) = wanted.iter().find(|p| !present.contains(p)) {
                anyhow::bail!(
                    "topic {topic} has no partition {p} (it has {})",
                    present.len()
                );
            }
            wanted.clone()
        }
    };
    let watermarks = partitions
        .iter()
        .map(|&p| {
            consumer
                .fetch_watermarks(topic, p, timeout)
                .map(|(low, high)| (p, low, high))
                .map_err(|e| anyhow::anyhow!("cannot read the offsets of {topic}/{p}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let at_time = |ms: Option<i64>| -> anyhow::Result<Vec<Option<i64>>> {
        match ms {
            None => Ok(vec![None; partitions.len()]),
            Some(ms) => offsets_for_time(&consumer, topic, &partitions, ms, timeout),
        }
    };
    let starts = at_time(match range.start {
        Start::Time(ms) => Some(ms),
        _ => None,
    })?;
    let stops = at_time(match range.end {
        End::Time(ms) => Some(ms),
        End::Now => None,
    })?;
    let mut scan = Scan::default();
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    let mut expected = 0u64;
    for (i, &(p, low, high)) in watermarks.iter().enumerate() {
        let from = match range.start {
            Start::Beginning => low,
            Start::Offset(o) => o.clamp(low, high),
            Start::Time(_) => starts[i].unwrap_or(high).clamp(low, high),
        };
        let to = stops[i].unwrap_or(high).clamp(from, high);
        scan.spans.push(Span {
            partition: p,
            from,
            to,
        });
        if from < to {
            tpl.add_partition_offset(topic, p, Offset::Offset(from))?;
            ends.push((p, to));
            expected += (to - from) as u64;
        }
    }
    let expected = range.max_messages.map_or(expected, |m| m.min(expected));
    total(expected);
    if expected == 0 {
        return Ok(scan);
    }
    consumer.assign(&tpl)?;
    let mut last_progress = Instant::now();
    while scan.read < expected && !ends.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let (p, o) = (m.partition(), m.offset());
                let Some(i) = ends.iter().position(|(q, _)| *q == p) else {
                    continue;
                };
                if o >= ends[i].1 {
                    continue;
                }
                each(&Record {
                    partition: p,
                    offset: o,
                    timestamp: m.timestamp().to_millis(),
                    key: m.key(),
                    payload: m.payload(),
                });
                scan.read += 1;
                if o + 1 >= ends[i].1 {
                    ends.swap_remove(i);
                    // Stop fetching it: its next messages are past the range.
                    let _ = consumer.pause(&partition_list(topic, p));
                }
            }
            Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
            None if last_progress.elapsed() > Duration::from_secs(1)
                && done(&consumer, topic, &mut ends) => {}
            None if last_progress.elapsed() > timeout => anyhow::bail!(
                "reading {topic} stalled for {} s with {} of {expected} messages read",
                timeout.as_secs(),
                scan.read
            ),
            None => {}
        }
    }
    Ok(scan)
}

fn partition_list(topic: &str, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    tpl
}

/// The offset of the first message stamped at or after `ms` in each of
/// `partitions`; `None` where there is none.
fn offsets_for_time(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    ms: i64,
    timeout: Duration,
) -> anyhow::Result<Vec<Option<i64>>> {
    let mut query = TopicPartitionList::new();
    for &p in partitions {
        query.add_partition_offset(topic, p, Offset::Offset(ms))?;
    }
    let found = consumer
        .offsets_for_times(query, timeout)
        .map_err(|e| anyhow::anyhow!("cannot look up the offsets of {topic} at {ms} ms: {e}"))?;
    partitions
        .iter()
        .map(|&p| {
            let Some(e) = found.find_partition(topic, p) else {
                return Ok(None);
            };
            e.error()
                .map_err(|e| anyhow::anyhow!("cannot look up {topic}/{p} at {ms} ms: {e}"))?;
            match e.offset() {
                Offset::Offset(o) => Ok(Some(o)),
                Offset::End => Ok(None),
                other => anyhow::bail!("unexpected offset {other:?} for {topic}/{p} at {ms} ms"),
            }
        })
        .collect()
}

/// Drops the partitions whose position has reached their end (the last
/// offsets before the end may be transaction markers, never delivered);
/// true if none is left.
fn done(consumer: &BaseConsumer, topic: &str, ends: &mut Vec<(i32, i64)>) -> bool {
    if let Ok(positions) = consumer.position() {
        ends.retain(|(p, high)| {
            !matches!(
                positions.find_partition(topic, *p).map(|e| e.offset()),
                Some(Offset::Offset(o)) if o >= *high
            )
        });
    }
    ends.is_empty()
}
