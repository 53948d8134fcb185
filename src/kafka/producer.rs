//! The output producer: kept spans to the output topic, keyed by trace id.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::config::KafkaSettings;
use crate::pipeline::{Output, ProduceError};

/// Produces to the output topic; one producer shared by all partition workers.
#[derive(Clone)]
pub struct KafkaOutput {
    producer: FutureProducer,
    topic: Arc<str>,
}

impl KafkaOutput {
    pub fn new(settings: &KafkaSettings) -> Result<Self, rdkafka::error::KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.brokers)
            .set("compression.type", &settings.compression)
            .set("linger.ms", "5")
            // Idempotence: retries inside librdkafka never duplicate or reorder.
            .set("enable.idempotence", "true")
            .set("acks", "all");
        super::apply(&mut config, &settings.librdkafka_options);
        super::apply(&mut config, &settings.producer_options);
        Ok(Self {
            producer: config.create()?,
            topic: Arc::from(settings.output_topic.as_str()),
        })
    }

    /// Waits for everything queued to be delivered, at most `timeout`.
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!("producer flush: {e}");
        }
    }
}

impl Output for KafkaOutput {
    fn send(&self, key: String, payload: Bytes) -> BoxFuture<'static, Result<(), ProduceError>> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        async move {
            let record = FutureRecord::to(&topic).key(&key).payload(payload.as_ref());
            // A full local queue is waited out (Timeout::Never), not failed.
            producer
                .send(record, rdkafka::util::Timeout::Never)
                .await
                .map(|_| ())
                .map_err(|(e, _)| e.to_string())
        }
        .boxed()
    }
}
