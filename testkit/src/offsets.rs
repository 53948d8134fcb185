//! How far a consumer group has committed, against a topic's end.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::broker::bootstrap;

/// A client of one group that reads its committed offsets and topics'
/// watermarks; it joins nothing and commits nothing.
pub struct OffsetReader {
    consumer: BaseConsumer,
}

impl OffsetReader {
    pub fn new(brokers: &str, group: &str) -> Result<Self, String> {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| format!("create a consumer for offsets: {e}"))?;
        Ok(Self { consumer })
    }

    /// The group's committed offset of each of `partitions` (-1: none).
    pub fn committed(&self, topic: &str, partitions: i32) -> Result<Vec<i64>, String> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|e| format!("committed offsets on {topic}: {e}"))?;
        Ok((0..partitions)
            .map(
                |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => -1,
                },
            )
            .collect())
    }

    /// (low, high) watermarks of each of `partitions`.
    pub fn watermarks(&self, topic: &str, partitions: i32) -> Result<Vec<(i64, i64)>, String> {
        (0..partitions)
            .map(|p| {
                self.consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))
            })
            .collect()
    }
}

/// The group's committed offsets and the topic's end offsets on the test
/// broker, per partition: (committed, end), committed -1 for none.
pub fn committed_and_end(group: &str, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    let reader = OffsetReader::new(&bootstrap(), group).unwrap_or_else(|e| panic!("{e}"));
    let committed = reader
        .committed(topic, partitions)
        .unwrap_or_else(|e| panic!("{e}"));
    let marks = reader
        .watermarks(topic, partitions)
        .unwrap_or_else(|e| panic!("{e}"));
    committed
        .into_iter()
        .zip(marks)
        .map(|(c, (_, end))| (c, end))
        .collect()
}

/// Waits, at most `within`, until `group` has committed the end of every
/// partition of `topic`; fails showing `log()` otherwise.
pub fn wait_committed_to_end(
    group: &str,
    topic: &str,
    partitions: i32,
    within: Duration,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    loop {
        let offsets = committed_and_end(group, topic, partitions);
        if offsets.iter().all(|(c, e)| c == e) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not committed to the end within {within:?}: (committed, end) {offsets:?}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
