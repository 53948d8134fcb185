//! Kafka at the edges: the consumer and its rebalance events, the producer,
//! and the per-partition offset watermark.

pub mod consumer;
pub mod producer;
pub mod range;
pub mod watermark;

use rdkafka::ClientConfig;

use crate::config::KafkaSettings;

/// Applies `name=value` options (validated when settings load).
fn apply(config: &mut ClientConfig, options: &[String]) {
    if let Ok(map) = KafkaSettings::options(options) {
        for (k, v) in map {
            config.set(k, v);
        }
    }
}
