//! Kafka at the edges: the consumer and its rebalance events, the producer
//! and the transactions; they implement the pipeline's ports.

pub mod consumer;
pub mod decision_log;
pub mod producer;
pub mod range;
pub mod sample;
pub mod transaction;

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode as Code;
use rdkafka::{ClientConfig, ClientContext};

use crate::config::KafkaSettings;
use crate::metrics as m;
use crate::pipeline::RateLimited;

/// How often one kind of client error is logged at most.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What a Kafka client (the consumer, the producer) reports, as one line per
/// event: librdkafka reports a broker that cannot be reached both as a log
/// line and as an error, and the consumer returns it from its poll too. The
/// error is the line: counted by kind, logged at most once per 10 s per kind
/// (with how many were held back); librdkafka's own log lines go to `debug`.
pub struct ClientEvents {
    /// Which client, in the log line.
    client: &'static str,
    log: Mutex<RateLimited<&'static str>>,
}

impl ClientEvents {
    pub fn new(client: &'static str) -> Self {
        Self {
            client,
            log: Mutex::new(RateLimited::new(ERROR_LOG_INTERVAL)),
        }
    }

    /// The bounded `kind` label of an error.
    pub fn kind(error: &KafkaError) -> &'static str {
        match error.rdkafka_error_code() {
            Some(Code::AllBrokersDown) => "all_brokers_down",
            Some(Code::BrokerTransportFailure) => "broker_transport_failure",
            Some(Code::Resolve) => "resolve",
            Some(Code::Authentication) => "authentication",
            // A TLS handshake that failed: an untrusted broker certificate,
            // a wrong CA file, a protocol mismatch.
            Some(Code::SSL) => "tls",
            _ => "other",
        }
    }

    /// An error of the client as a whole: counted, and logged unless a line
    /// of its kind was logged within the interval.
    pub fn report_error(&self, error: KafkaError, reason: &str) {
        let kind = Self::kind(&error);
        metrics::counter!(m::KAFKA_ERRORS, "kind" => kind).increment(1);
        let allowed = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(kind, Instant::now());
        if let Some(suppressed) = allowed {
            tracing::warn!(
                client = self.client,
                kind,
                suppressed,
                "kafka: {error}: {reason}"
            );
        }
    }

    /// A line of librdkafka's own log: the detail behind the errors, at
    /// `debug` (`RUST_LOG=librdkafka=debug` shows it); only what librdkafka
    /// calls critical or worse stays an error.
    pub fn report_log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(target: "librdkafka", client = self.client, facility, "{message}")
            }
            _ => tracing::debug!(target: "librdkafka", client = self.client, facility, "{message}"),
        }
    }
}

/// Applies `name=value` options (validated when settings load).
fn apply(config: &mut ClientConfig, options: &[String]) {
    if let Ok(map) = KafkaSettings::options(options) {
        for (k, v) in map {
            config.set(k, v);
        }
    }
}

/// As the context of a client of its own (the producer, the admin client).
impl ClientContext for ClientEvents {
    fn error(&self, error: KafkaError, reason: &str) {
        self.report_error(error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.report_log(level, facility, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::BaseConsumer;

    #[test]
    fn client_errors_have_bounded_kinds() {
        let down = KafkaError::Global(Code::AllBrokersDown);
        assert_eq!(ClientEvents::kind(&down), "all_brokers_down");
        let odd = KafkaError::Global(Code::InvalidSessionTimeout);
        assert_eq!(ClientEvents::kind(&odd), "other");
        for e in [down, odd] {
            assert!(m::KAFKA_ERROR_KINDS.contains(&ClientEvents::kind(&e)));
        }
    }

    use rdkafka::ClientConfig;

    /// librdkafka is built with TLS, so the SASL/TLS settings the Helm chart
    /// passes through (SCRAM over SASL_SSL) are accepted. No broker is
    /// contacted: creating the client is where an unsupported mechanism fails.
    #[test]
    fn tls_and_scram_are_built_in() {
        for (protocol, mechanism) in [("SASL_SSL", "SCRAM-SHA-512"), ("SSL", "")] {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", "127.0.0.1:1")
                .set("group.id", "t")
                .set("security.protocol", protocol);
            if !mechanism.is_empty() {
                c.set("sasl.mechanism", mechanism)
                    .set("sasl.username", "u")
                    .set("sasl.password", "p");
            }
            let created = c.create::<BaseConsumer>();
            assert!(
                created.is_ok(),
                "{protocol} {mechanism}: {:?}",
                created.err()
            );
        }
    }
}
