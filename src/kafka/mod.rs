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
use rdkafka::error::{KafkaError, KafkaResult};
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

/// Where every Kafka client's configuration starts: the brokers and the
/// user's options (`kafka.librdkafka_options` — TLS, SASL, ... — and the
/// client's own list), expanded once. The one place a client is
/// configured, so none misses the shared options; the user's options are
/// set over tailgate's own settings for the client.
pub struct ClientBase {
    brokers: String,
    options: Vec<(String, String)>,
}

impl ClientBase {
    /// `settings`' brokers and `librdkafka_options`, then `own` (the
    /// consumer's or the producer's options). An option whose `${env:…}`
    /// or `${file:…}` cannot be read now (it could at start) is an error
    /// naming it: a client must not go on without, say, its TLS settings.
    pub fn of(settings: &KafkaSettings, own: &[String]) -> KafkaResult<Self> {
        let mut options = Vec::new();
        for (name, list) in [
            ("kafka.librdkafka_options", &settings.librdkafka_options[..]),
            ("own options", own),
        ] {
            let map = KafkaSettings::options(list)
                .map_err(|e| KafkaError::ClientCreation(format!("{name}: {e}")))?;
            options.extend(map);
        }
        Ok(Self {
            brokers: settings.brokers.clone(),
            options,
        })
    }

    /// Options given already expanded (the command-line tools).
    pub fn given(brokers: &str, options: &[(String, String)]) -> Self {
        Self {
            brokers: brokers.to_string(),
            options: options.to_vec(),
        }
    }

    /// A client's configuration: `bootstrap.servers`, then what `ours`
    /// sets for this client, then the user's options over them.
    pub fn config(&self, ours: impl FnOnce(&mut ClientConfig)) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        ours(&mut config);
        for (k, v) in &self.options {
            config.set(k, v);
        }
        config
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

    #[test]
    fn every_client_gets_the_users_options_over_its_own_and_an_unreadable_secret_is_an_error() {
        let mut s = KafkaSettings {
            librdkafka_options: vec!["linger.ms=50".into()],
            ..KafkaSettings::default()
        };
        let c = ClientBase::of(&s, &["acks=1".into()])
            .expect("options")
            .config(|c| {
                c.set("linger.ms", "5")
                    .set("acks", "all")
                    .set("retries", "3");
            });
        assert_eq!(c.get("bootstrap.servers"), Some(s.brokers.as_str()));
        assert_eq!(c.get("linger.ms"), Some("50"), "the shared options win");
        assert_eq!(c.get("acks"), Some("1"), "the client's own options win");
        assert_eq!(c.get("retries"), Some("3"));
        // A secret file gone since start: no client without its TLS/SASL settings.
        s.librdkafka_options
            .push("sasl.password=${file:/nonexistent/tailgate-secret}".into());
        let e = ClientBase::of(&s, &[]).err().expect("an error");
        assert!(e.to_string().contains("sasl.password"), "{e}");
    }

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
