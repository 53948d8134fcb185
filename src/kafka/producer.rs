//! The output producer: kept spans to the output topic, keyed by trace id.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::config::KafkaSettings;
use crate::pipeline::{Destination, Outgoing, Output, ProduceError};

/// Produces to the output topic; one producer shared by all partition workers.
#[derive(Clone)]
pub struct KafkaOutput {
    producer: FutureProducer,
    topic: Arc<str>,
    /// `kafka.dead_letter_topic`, if configured.
    dead_letter_topic: Option<Arc<str>>,
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
            dead_letter_topic: settings.dead_letter_topic.as_deref().map(Arc::from),
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
    fn send(&self, message: Outgoing) -> BoxFuture<'static, Result<(), ProduceError>> {
        let producer = self.producer.clone();
        let topic = match message.destination {
            Destination::Sampled => Some(self.topic.clone()),
            Destination::DeadLetter => self.dead_letter_topic.clone(),
        };
        async move {
            let Some(topic) = topic else {
                return Err("no kafka.dead_letter_topic is configured".to_string());
            };
            let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
            for (key, value) in &message.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                });
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(&topic)
                .payload(message.payload.as_ref())
                .headers(headers);
            if let Some(key) = message.key.as_deref() {
                record = record.key(key);
            }
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
