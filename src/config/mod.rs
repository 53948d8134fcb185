//! Settings and rule files.
//!
//! One file per environment, `policies/<env>.yaml`, layered over
//! `policies/default.yaml`, then an optional extra file, then environment
//! variables `TAILGATE__<SECTION>__<KEY>` (e.g. `TAILGATE__KAFKA__BROKERS`).
//! Layering is done by the `config` crate. Each file is first read on its own,
//! so a mistake is reported with its file, line and column; then the merged
//! settings are validated, naming the rule and field at fault.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::buffer::BufferConfig;
use crate::clock::ClockConfig;
use crate::rules::{RuleError, RuleSet, RuleSpec};

mod buffer;
mod decision;
mod kafka;
mod metrics;
mod output;
mod route;
mod sources;

pub use buffer::BufferSettings;
pub use decision::DecisionSettings;
pub use kafka::{Compression, KafkaSettings};
pub use metrics::MetricsSettings;
pub use output::OutputSettings;
pub use route::RouteSettings;
pub use sources::Sources;
use sources::{check_file, rule_line};

/// Everything tailgate reads from its settings and rule files.
///
/// Each section's defaults are its `Default` (the one source of them; a
/// test checks `docs/configuration.md` against it).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Brokers, topics, consumer group, librdkafka options.
    #[serde(default)]
    pub kafka: KafkaSettings,
    /// Memory budget and queues.
    #[serde(default)]
    pub buffer: BufferSettings,
    /// When traces are decided.
    #[serde(default)]
    pub decision: DecisionSettings,
    /// The sampling rules, in order; the first that matches decides.
    #[serde(default, skip_serializing)]
    pub rules: Vec<RuleSpec>,
    /// What kept traces carry: the critical-path summary.
    #[serde(default)]
    pub output: OutputSettings,
    /// The HTTP endpoint for `/metrics`, `/healthz`, `/readyz`, and the
    /// latency attribution metrics.
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// `tailgate route`: where unkeyed input is read from.
    #[serde(default)]
    pub route: RouteSettings,
}

/// A mistake in a settings or rule file.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}{}: {message}", at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
    Syntax {
        file: PathBuf,
        /// Line and column, 1-based.
        at: Option<(usize, usize)>,
        message: String,
    },
    #[error("{}{}: {error}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Rule {
        file: PathBuf,
        line: Option<usize>,
        error: RuleError,
    },
    #[error("{sources}: {message}")]
    Invalid { sources: String, message: String },
}

/// Loaded, validated settings with compiled rules.
#[derive(Debug)]
pub struct Loaded {
    pub settings: Settings,
    pub rules: RuleSet,
    /// Where they came from, to reload the rules from.
    pub sources: Sources,
}

impl Settings {
    /// Loads and validates settings from `sources`.
    ///
    /// The rule list is taken whole from the last file that has one (lists
    /// are never merged), read as YAML so that attribute names keep their
    /// dots; everything else is layered by the `config` crate.
    pub fn load(sources: &Sources) -> Result<Loaded, ConfigError> {
        let mut layers = Vec::new();
        for f in &sources.files {
            layers.push(check_file(f)?);
        }
        let mut builder = config::Config::builder();
        for f in &sources.files {
            builder = builder
                .add_source(config::File::from(f.as_path()).format(config::FileFormat::Yaml));
        }
        if sources.environment {
            builder = builder.add_source(
                config::Environment::with_prefix("TAILGATE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(false),
            );
        }
        for (key, value) in &sources.overrides {
            builder = builder
                .set_override(key.as_str(), value.as_str())
                .map_err(|e| ConfigError::Invalid {
                    sources: sources.describe(),
                    message: format!("{key}: {e}"),
                })?;
        }
        let invalid = |message: String| ConfigError::Invalid {
            sources: sources.describe(),
            message,
        };
        let mut table: std::collections::HashMap<String, config::Value> = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| invalid(e.to_string()))?;
        table.remove("rules");
        let mut settings: Settings = config::Value::from(table)
            .try_deserialize()
            .map_err(|e| invalid(e.to_string()))?;
        let rules_layer = layers.iter().rev().find(|l| l.rules.is_some());
        settings.rules = rules_layer
            .and_then(|l| l.rules.clone())
            .unwrap_or_default();
        let rules = RuleSet::compile(&settings.rules).map_err(|error| {
            let layer = rules_layer.or(layers.last());
            ConfigError::Rule {
                line: layer.and_then(|l| rule_line(&l.text, &error.rule)),
                file: layer.map(|l| l.path.clone()).unwrap_or_default(),
                error,
            }
        })?;
        settings.validate().map_err(invalid)?;
        Ok(Loaded {
            settings,
            rules,
            sources: sources.clone(),
        })
    }

    /// Each section's checks, then those across sections.
    fn validate(&self) -> Result<(), String> {
        self.decision.validate()?;
        self.buffer.validate()?;
        self.kafka.validate()?;
        self.route.validate(&self.kafka)?;
        self.output.validate()?;
        Ok(())
    }

    /// How each partition's clock is kept.
    pub fn clock_config(&self) -> ClockConfig {
        self.decision.clock_config()
    }

    /// The buffer of one partition when `partitions` are assigned: its
    /// deadlines, and its even share of the memory budget.
    pub fn buffer_config(&self, partitions: usize) -> BufferConfig {
        let share = self.buffer.max_bytes / partitions.max(1) as u64;
        self.decision.buffer_config(share as usize)
    }
}

#[cfg(test)]
mod tests;
