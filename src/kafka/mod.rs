//! Kafka at the edges: the consumer and its rebalance events, the producer
//! and the transactions; they implement the pipeline's ports.

pub mod consumer;
pub mod producer;
pub mod range;
pub mod transaction;

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

#[cfg(test)]
mod tests {
    use rdkafka::consumer::BaseConsumer;
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
