//! The input consumer: one consumer-group member per process, offsets stored
//! from the partition workers' watermarks and committed periodically.

use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::mpsc;

use super::{ClientBase, ClientEvents};
use crate::config::KafkaSettings;
use crate::metrics as m;
use crate::pipeline::OffsetStore;

/// A change of this instance's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// What happens to partitions taken from this instance, inside the revoke
/// callback and so before librdkafka lets them go: their workers finish and
/// store their final watermarks, and those are committed.
pub trait Handover: Send + Sync + 'static {
    fn revoke(&self, consumer: &BaseConsumer<Context>, partitions: &[i32]);
    /// Partitions just assigned, before any of their messages is read.
    fn assigned(&self, _partitions: &[i32]) {}
}

/// Hands revoked partitions over and forwards rebalances to the app.
pub struct Context {
    topic: String,
    events: mpsc::UnboundedSender<RebalanceEvent>,
    /// What a revoke does. The handover holds the workers, which hold the
    /// consumer (to store offsets): a cycle, broken by
    /// [`Context::clear_handover`] at shutdown so the consumer is dropped —
    /// closed, leaving the group — before the process exits.
    handover: Mutex<Option<Arc<dyn Handover>>>,
    /// Errors and librdkafka's log, one line per event.
    client: ClientEvents,
}

impl Context {
    /// Sets what a revoke does; before the first poll, since rebalances are
    /// served by polls.
    pub fn set_handover(&self, handover: Arc<dyn Handover>) {
        let mut slot = self.handover.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            tracing::error!("the consumer's handover was set twice; keeping the first");
            return;
        }
        *slot = Some(handover);
    }

    /// Lets go of the handover (at shutdown, once the workers are stopped):
    /// revokes from then on hand nothing over.
    pub fn clear_handover(&self) {
        self.handover
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    fn handover(&self) -> Option<Arc<dyn Handover>> {
        self.handover
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ClientContext for Context {
    /// Errors of the client as a whole (brokers down, transport failures):
    /// one line per kind and interval, counted (see [`ClientEvents`]).
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode as Code;
        if error.rdkafka_error_code() == Some(Code::PartitionEOF) {
            // Not an error: the end of a partition, which `recv` returns too.
            return;
        }
        self.client.report_error(error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.client.report_log(level, fac, log_message);
    }

    /// librdkafka's periodic statistics: the consumer lag of each partition
    /// this instance fetches (`-1`, unknown, is not shown).
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        for p in topic.partitions.values() {
            if p.partition >= 0 && p.consumer_lag >= 0 {
                metrics::gauge!(m::CONSUMER_LAG, "partition" => p.partition.to_string())
                    .set(p.consumer_lag as f64);
            }
        }
    }
}

fn partitions(topic: &str, tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition())
        .collect()
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            metrics::counter!(m::REBALANCES, "kind" => "revoke").increment(1);
            let revoked = partitions(&self.topic, tpl);
            // Another instance reports these partitions' lag from now on.
            for p in &revoked {
                metrics::gauge!(m::CONSUMER_LAG, "partition" => p.to_string()).set(0.0);
            }
            if let Some(handover) = self.handover() {
                handover.revoke(consumer, &revoked);
            }
            let _ = self.events.send(RebalanceEvent::Revoked(revoked));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                metrics::counter!(m::REBALANCES, "kind" => "assign").increment(1);
                let assigned = partitions(&self.topic, tpl);
                if let Some(handover) = self.handover() {
                    handover.assigned(&assigned);
                }
                let _ = self.events.send(RebalanceEvent::Assigned(assigned));
            }
            Rebalance::Error(e) => tracing::warn!("rebalance error: {e}"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            if let Err(e) = routine(Err(e)) {
                tracing::warn!("offset commit failed: {e}");
            }
        }
    }
}

pub type InputConsumer = StreamConsumer<Context>;

/// A commit's result with "no offset stored" counted as success: it is
/// routine when nothing moved since the last commit.
pub fn routine(commit: KafkaResult<()>) -> KafkaResult<()> {
    match commit {
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => Ok(()),
        other => other,
    }
}

/// Creates the consumer and subscribes it to the input topic.
pub fn subscribe(
    settings: &KafkaSettings,
) -> KafkaResult<(Arc<InputConsumer>, mpsc::UnboundedReceiver<RebalanceEvent>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut config = ClientBase::of(settings, &settings.consumer_options)?.config(|config| {
        config
            .set("group.id", &settings.group_id)
            // In exactly-once mode offsets are committed by the transactions.
            .set("enable.auto.commit", (!settings.exactly_once).to_string())
            .set(
                "auto.commit.interval.ms",
                settings.commit_interval.as_millis().to_string(),
            )
            // Offsets are stored only from the workers' watermarks.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            // Prefetch at most 16 MiB (librdkafka's default is 64 MiB): the
            // workers' queues and the buffers hold the rest, and the prefetched
            // messages are resident memory outside `buffer.max_bytes`.
            .set("queued.max.messages.kbytes", "16384")
            // Statistics carry the consumer lag per partition (`tailgate_consumer_lag_messages`).
            .set("statistics.interval.ms", "5000")
            // Partitions added to the input topic (scaling out) are seen within
            // this, and the group rebalances to read them; librdkafka's default
            // (5 min) left them unread that long.
            .set("topic.metadata.refresh.interval.ms", "30000");
        if let Some(id) = &settings.group_instance_id {
            config.set("group.instance.id", id);
        }
    });
    // Each time the consumer reaches the end of a partition it says so: the
    // partition's stream clock then runs with wall-clock time. Without it a
    // quiet partition's traces would wait for `max_trace_age`, so no option
    // turns it off.
    config.set("enable.partition.eof", "true");
    let consumer: InputConsumer = config.create_with_context(Context {
        topic: settings.input_topic.clone(),
        events: tx,
        handover: Mutex::new(None),
        client: ClientEvents::new("consumer"),
    })?;
    consumer.subscribe(&[&settings.input_topic])?;
    Ok((Arc::new(consumer), rx))
}

/// Stores watermarks as the consumer's offsets, committed by auto-commit.
pub struct StoredOffsets {
    pub consumer: Arc<InputConsumer>,
    pub topic: String,
}

impl OffsetStore for StoredOffsets {
    fn store(&self, partition: i32, next_offset: i64) -> bool {
        // `store_offsets` stores exactly the offset given: the next one to read.
        // (`store_offset`, librdkafka's legacy `rd_kafka_offset_store`, stores
        // offset + 1 and would skip the message at the watermark.)
        let mut tpl = TopicPartitionList::with_capacity(1);
        if let Err(e) =
            tpl.add_partition_offset(&self.topic, partition, rdkafka::Offset::Offset(next_offset))
        {
            tracing::error!(partition, next_offset, "cannot build the offset list: {e}");
            return false;
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // The partition was revoked meanwhile; its new owner re-reads from
            // the last commit, so nothing is lost.
            tracing::debug!(partition, next_offset, "cannot store offset: {e}");
            return false;
        }
        true
    }
}
