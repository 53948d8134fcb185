//! The output producer: kept spans to the output topic, keyed by trace id.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::{ClientBase, ClientEvents};
use crate::config::KafkaSettings;
use crate::pipeline::{Destination, Outgoing, Output, ProduceError, ProduceErrorKind};

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// What a record may add to its payload within the size limits: the key
/// (a trace id's 32 characters), librdkafka's record overhead (at most 36
/// bytes), a record batch's header (61), with room to spare for the headers
/// of a dead letter.
const RECORD_OVERHEAD: usize = 512;
/// Below this, most kept spans fit no output message: worth a warning.
const SMALL_PAYLOAD: usize = 16 * 1024;

/// The output's producer; its errors and librdkafka's log are reported one
/// line per event.
pub type OutputProducer = FutureProducer<ClientEvents>;

/// Produces to the output topic; one producer shared by all partition workers.
#[derive(Clone)]
pub struct KafkaOutput {
    producer: OutputProducer,
    topic: Arc<str>,
    /// `kafka.dead_letter_topic`, if configured.
    dead_letter_topic: Option<Arc<str>>,
    /// `kafka.decision_topic`, if configured.
    decision_topic: Option<Arc<str>>,
    /// The producer's `message.max.bytes`.
    max_message_bytes: usize,
}

impl KafkaOutput {
    pub fn new(settings: &KafkaSettings) -> Result<Self, rdkafka::error::KafkaError> {
        let config = ClientBase::of(settings, &settings.producer_options)?.config(|config| {
            config
                .set("compression.type", settings.compression.as_str())
                .set("linger.ms", "5")
                // Idempotence: retries inside librdkafka never duplicate or reorder.
                .set("enable.idempotence", "true")
                .set("acks", "all");
            if settings.exactly_once {
                config.set("transactional.id", settings.transactional_id());
            }
        });
        let max_message_bytes = config
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
        Ok(Self {
            producer: config.create_with_context(ClientEvents::new("producer"))?,
            topic: Arc::from(settings.output_topic.as_str()),
            dead_letter_topic: settings.dead_letter_topic.as_deref().map(Arc::from),
            decision_topic: settings.decision_topic().as_deref().map(Arc::from),
            max_message_bytes,
        })
    }

    /// [`KafkaOutput::payload_limit`] from the producer's limit alone, before
    /// the broker has said what the topic's is.
    pub fn producer_payload_limit(&self) -> usize {
        payload_within(self.max_message_bytes)
    }

    /// The largest payload a message to `topic` may have: the producer's
    /// `message.max.bytes`, or the topic's `max.message.bytes` if that is
    /// lower (asked of the broker; if it cannot be read, the producer's limit
    /// alone), less what a record adds. Kept traces are split to fit it, so
    /// no output message is refused for its size.
    pub async fn payload_limit(&self, settings: &KafkaSettings, topic: &str) -> usize {
        let limit = match topic_message_limit(settings, topic).await {
            Ok(Some(t)) => self.max_message_bytes.min(t),
            Ok(None) => self.max_message_bytes,
            Err(e) => {
                tracing::warn!(
                    topic,
                    "cannot read the topic's max.message.bytes ({e}); keeping messages under the producer's message.max.bytes ({})",
                    self.max_message_bytes
                );
                self.max_message_bytes
            }
        };
        let payload = payload_within(limit);
        if payload < SMALL_PAYLOAD {
            tracing::warn!(
                topic,
                "messages are limited to {payload} bytes (message.max.bytes / max.message.bytes); kept spans that do not fit are dead-lettered or released"
            );
        }
        tracing::info!(
            topic,
            producer = self.max_message_bytes,
            payload,
            "messages to {topic} are limited to {payload} bytes of payload; larger kept traces are split"
        );
        payload
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
            Destination::DeadLetter(_) => self.dead_letter_topic.clone(),
            Destination::Decisions(_) => self.decision_topic.clone(),
        }
    }

    pub fn producer(&self) -> &OutputProducer {
        &self.producer
    }
}

fn payload_within(limit: usize) -> usize {
    limit.saturating_sub(RECORD_OVERHEAD).max(1)
}

/// The output topic's `max.message.bytes`, if the broker says.
async fn topic_message_limit(
    settings: &KafkaSettings,
    topic: &str,
) -> Result<Option<usize>, KafkaError> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let config = ClientBase::of(settings, &[])?.config(|_| {});
    let admin: AdminClient<ClientEvents> =
        config.create_with_context(ClientEvents::new("admin"))?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let topic = ResourceSpecifier::Topic(topic);
    let results = tokio::time::timeout(
        Duration::from_secs(15),
        admin.describe_configs([&topic], &options),
    )
    .await
    .map_err(|_| KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut))??;
    let resource = results
        .into_iter()
        .next()
        .ok_or_else(|| KafkaError::AdminOpCreation("no result".into()))?
        .map_err(KafkaError::AdminOp)?;
    Ok(resource
        .get("max.message.bytes")
        .and_then(|e| e.value.as_deref()?.parse().ok()))
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
    if let Destination::Decisions(partition) = message.destination {
        // The input partition's number: its next owner reads it back there.
        record = record.partition(partition);
    }
    record
}

/// The error for a dead letter without a dead-letter topic.
pub fn no_dead_letter_topic() -> ProduceError {
    ProduceError::new(
        ProduceErrorKind::NoDeadLetterTopic,
        "no kafka.dead_letter_topic is configured",
    )
}

/// Sorts a produce failure into what a retry can fix and what it cannot.
pub fn classify(e: &KafkaError) -> ProduceError {
    use RDKafkaErrorCode as C;
    let kind = match e.rdkafka_error_code() {
        Some(C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize) => {
            ProduceErrorKind::MessageTooLarge
        }
        Some(
            C::UnknownTopic | C::UnknownTopicOrPartition | C::UnknownPartition | C::InvalidTopic,
        ) => ProduceErrorKind::UnknownTopic,
        Some(
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed,
        ) => ProduceErrorKind::Authorization,
        Some(
            C::InvalidRecord | C::PolicyViolation | C::InvalidTimestamp | C::InvalidRequiredAcks,
        ) => ProduceErrorKind::InvalidRecord,
        // librdkafka's fatal state, and what puts an idempotent or
        // transactional producer there: no retry delivers anything again.
        Some(
            C::Fatal
            | C::ProducerFenced
            | C::InvalidProducerEpoch
            | C::OutOfOrderSequenceNumber
            | C::UnknownProducerId
            | C::InvalidProducerIdMapping,
        ) => ProduceErrorKind::Fatal,
        _ => ProduceErrorKind::Transient,
    };
    ProduceError::new(kind, e.to_string())
}

/// [`classify`], unless the producer is in librdkafka's fatal state: then
/// whatever the message's own error says, it is [`ProduceErrorKind::Fatal`].
pub fn classify_for(producer: &OutputProducer, e: &KafkaError) -> ProduceError {
    use rdkafka::producer::Producer;
    match producer.client().fatal_error() {
        Some((code, reason)) => ProduceError::new(
            ProduceErrorKind::Fatal,
            format!("{e} (the producer is in a fatal state: {code:?}: {reason})"),
        ),
        None => classify(e),
    }
}

impl Output for KafkaOutput {
    fn send(&self, message: Outgoing) -> BoxFuture<'static, Result<(), ProduceError>> {
        let producer = self.producer.clone();
        let topic = self.topic(message.destination);
        async move {
            let Some(topic) = topic else {
                return Err(no_dead_letter_topic());
            };
            // A full local queue is waited out (Timeout::Never), not failed.
            producer
                .send(record(&topic, &message), rdkafka::util::Timeout::Never)
                .await
                .map(|_| ())
                .map_err(|(e, _)| classify_for(&producer, &e))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// librdkafka's fatal state, and the broker errors that put an
    /// idempotent or transactional producer there, are neither transient
    /// (retried forever) nor permanent (given up, offsets released).
    #[test]
    fn fatal_producer_errors_are_classified_fatal() {
        for code in [
            RDKafkaErrorCode::Fatal,
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::InvalidProducerEpoch,
            RDKafkaErrorCode::OutOfOrderSequenceNumber,
        ] {
            let kind = classify(&KafkaError::MessageProduction(code)).kind;
            assert_eq!(kind, ProduceErrorKind::Fatal, "{code:?}");
            assert!(!kind.permanent(), "{code:?}: not given up");
        }
        let away = classify(&KafkaError::MessageProduction(
            RDKafkaErrorCode::BrokerTransportFailure,
        ));
        assert_eq!(away.kind, ProduceErrorKind::Transient);
    }
}
