//! The `route` section: `tailgate route`, the stage that keys unkeyed input
//! by trace id before `tailgate run` reads it.

use serde::{Deserialize, Serialize};

/// Where `tailgate route` reads from; it writes to `kafka.input_topic`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RouteSettings {
    /// The unkeyed topic the Collector's exporter writes to (without
    /// `partition_traces_by_id`). Required by `tailgate route`.
    pub from_topic: Option<String>,
    /// Consumer group of the route instances (not `kafka.group_id`: route
    /// and run read different topics and scale apart).
    pub group_id: String,
}

impl Default for RouteSettings {
    fn default() -> Self {
        Self {
            from_topic: None,
            group_id: "tailgate-route".into(),
        }
    }
}

impl RouteSettings {
    pub(super) fn validate(&self, kafka: &super::KafkaSettings) -> Result<(), String> {
        if let Some(from) = &self.from_topic {
            if from.is_empty() {
                return Err("route.from_topic: must not be empty".into());
            }
            for (name, topic) in [
                ("kafka.input_topic", Some(&kafka.input_topic)),
                ("kafka.output_topic", Some(&kafka.output_topic)),
                ("kafka.dead_letter_topic", kafka.dead_letter_topic.as_ref()),
            ] {
                if topic == Some(from) {
                    return Err(format!(
                        "route.from_topic: must differ from {name} ({from}): route reads the unkeyed topic and writes kafka.input_topic"
                    ));
                }
            }
        }
        if self.group_id.is_empty() {
            return Err("route.group_id: must not be empty".into());
        }
        if self.group_id == kafka.group_id {
            return Err(format!(
                "route.group_id: must differ from kafka.group_id ({}): route and run are different consumers",
                kafka.group_id
            ));
        }
        Ok(())
    }
}
