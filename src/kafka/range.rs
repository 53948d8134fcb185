//! Reads a range of a topic for `tailgate replay`: every partition from its
//! start (or the given offset) up to its end as it was when reading began.
//! No consumer group offset is committed; the topic is left as it was.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Where in each partition to start.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    Beginning,
    /// The same offset in every partition (clamped to what the log holds).
    Offset(i64),
}

/// Reads `topic` from `start` to the end each partition had when the read
/// began, at most `max_messages` in all, handing each message's partition,
/// timestamp (milliseconds since the Unix epoch, if it has one) and payload
/// to `each`.
/// `total` is told the number of messages to expect once it is known.
/// Returns the number of messages read.
pub fn read(
    brokers: &str,
    topic: &str,
    start: Start,
    max_messages: Option<u64>,
    options: &[(String, String)],
    total: impl FnOnce(u64),
    mut each: impl FnMut(i32, Option<i64>, Bytes),
) -> anyhow::Result<u64> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "tailgate-replay")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    for (k, v) in options {
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create()?;
    let timeout = Duration::from_secs(15);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| anyhow::anyhow!("cannot read the metadata of {topic} from {brokers}: {e}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        anyhow::bail!("topic {topic} does not exist on {brokers} (or has no partitions)");
    }
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    let mut expected = 0u64;
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| anyhow::anyhow!("cannot read the offsets of {topic}/{p}: {e}"))?;
        let from = match start {
            Start::Beginning => low,
            Start::Offset(o) => o.clamp(low, high),
        };
        if from < high {
            tpl.add_partition_offset(topic, p, Offset::Offset(from))?;
            ends.push((p, high));
            expected += (high - from) as u64;
        }
    }
    let expected = max_messages.map_or(expected, |m| m.min(expected));
    total(expected);
    if expected == 0 {
        return Ok(0);
    }
    consumer.assign(&tpl)?;
    let mut read = 0u64;
    let mut last_progress = Instant::now();
    while read < expected && !ends.is_empty() {
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
                each(
                    p,
                    m.timestamp().to_millis(),
                    Bytes::copy_from_slice(m.payload().unwrap_or_default()),
                );
                read += 1;
                if o + 1 >= ends[i].1 {
                    ends.swap_remove(i);
                }
            }
            Some(Err(e)) => anyhow::bail!("reading {topic}: {e}"),
            None if last_progress.elapsed() > Duration::from_secs(1)
                && done(&consumer, topic, &mut ends) => {}
            None if last_progress.elapsed() > timeout => anyhow::bail!(
                "reading {topic} stalled for {} s with {} of {expected} messages read",
                timeout.as_secs(),
                read
            ),
            None => {}
        }
    }
    Ok(read)
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
