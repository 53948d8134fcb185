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
        if settings.exactly_once {
            config.set("transactional.id", settings.transactional_id());
        }
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

    /// The topic for `destination`, if one is configured.
    pub fn topic(&self, destination: Destination) -> Option<Arc<str>> {
        match destination {
            Destination::Sampled => Some(self.topic.clone()),
            Destination::DeadLetter => self.dead_letter_topic.clone(),
        }
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }
}

/// The record for `message` to `topic`: payload, key and headers.
pub fn record<'a>(topic: &'a str, message: &'a Outgoing) -> FutureRecord<'a, [u8], [u8]> {
    let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
    for (key, value) in &message.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    let mut record = FutureRecord::<[u8], [u8]>::to(topic)
        .payload(message.payload.as_ref())
        .headers(headers);
    if let Some(key) = message.key.as_deref() {
        record = record.key(key);
    }
    record
}

/// The error for a dead letter without a dead-letter topic.
pub const NO_DEAD_LETTER_TOPIC: &str = "no kafka.dead_letter_topic is configured";

impl Output for KafkaOutput {
    fn send(&self, message: Outgoing) -> BoxFuture<'static, Result<(), ProduceError>> {
        let producer = self.producer.clone();
        let topic = self.topic(message.destination);
        async move {
            let Some(topic) = topic else {
                return Err(NO_DEAD_LETTER_TOPIC.to_string());
            };
            // A full local queue is waited out (Timeout::Never), not failed.
            producer
                .send(record(&topic, &message), rdkafka::util::Timeout::Never)
                .await
                .map(|_| ())
                .map_err(|(e, _)| e.to_string())
        }
        .boxed()
    }
}
