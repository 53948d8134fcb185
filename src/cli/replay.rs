//! `tailgate replay`: the rules over captured traffic, from OTLP files or a
//! range of a Kafka topic; a report per rule of what would be kept.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::{load, Failure, PolicyArgs};
use crate::kafka::range::{Range, Start};
use crate::replay::ReplayConfig;

/// `tailgate replay`'s arguments.
#[derive(clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// OTLP files: JSON (one object, or one per line) or protobuf `TracesData`.
    pub files: Vec<PathBuf>,
    /// Read the capture from this Kafka cluster instead of files.
    #[arg(long, requires = "topic")]
    pub brokers: Option<String>,
    /// The topic to read, every partition from the start (or --from-offset) to its current end.
    #[arg(long, requires = "brokers")]
    pub topic: Option<String>,
    /// Start every partition at this offset instead of the beginning.
    #[arg(long)]
    pub from_offset: Option<i64>,
    /// Read at most this many messages.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} ({{per_sec}}, {{eta}} left)"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// What `tailgate run` would decide with, for replay.
pub(super) fn replay_config(settings: &crate::config::Settings) -> ReplayConfig {
    ReplayConfig {
        buffer: settings.buffer_config(1),
        clock: settings.clock_config(),
        decided_ttl: settings.decision.decided_ttl,
        remembered_bytes: settings.decision.remembered_bytes as usize,
        critical_path: settings.output.critical_path,
        sample_rate_attribute: settings.output.sample_rate_attribute.clone(),
        ..ReplayConfig::new(settings.buffer_config(1))
    }
}

pub(super) fn replay(
    policy: &PolicyArgs,
    files: &[PathBuf],
    kafka: Option<(&str, &str)>,
    from_offset: Option<i64>,
    max_messages: Option<u64>,
    json: bool,
) -> Result<(), Failure> {
    let loaded = load(policy)?;
    let mut capture = crate::replay::Capture::default();
    match kafka {
        Some((brokers, topic)) => {
            if !files.is_empty() {
                return Err(Failure::usage("give files or --brokers/--topic, not both"));
            }
            let options: Vec<(String, String)> =
                crate::config::KafkaSettings::options(&loaded.settings.kafka.librdkafka_options)
                    .map(|m| m.into_iter().collect())
                    .map_err(|e| Failure::usage(format!("kafka.librdkafka_options: {e}")))?;
            let bar = progress_bar(0, "reading");
            let mut range = Range::from(match from_offset {
                Some(o) => Start::Offset(o),
                None => Start::Beginning,
            });
            range.max_messages = max_messages;
            let read = crate::kafka::range::read(
                brokers,
                topic,
                &range,
                &options,
                |n| bar.set_length(n),
                |m| {
                    capture.add(
                        m.partition,
                        m.timestamp,
                        m.key.map(Bytes::copy_from_slice),
                        Bytes::copy_from_slice(m.payload.unwrap_or_default()),
                    );
                    bar.inc(1);
                },
            );
            bar.finish_and_clear();
            read.map_err(|e| Failure::failed(format!("{e:#}")))?;
            capture.read_now();
        }
        None => {
            if files.is_empty() {
                return Err(Failure::usage(
                    "give OTLP files, or --brokers and --topic to read a topic",
                ));
            }
            let bar = progress_bar(files.len() as u64, "reading files");
            for f in files {
                if let Err(e) = capture.add_file(f) {
                    bar.finish_and_clear();
                    return Err(Failure::usage(format!("{e:#}")));
                }
                bar.inc(1);
            }
            bar.finish_and_clear();
        }
    }
    let bar = progress_bar(capture.messages, "deciding");
    let config = replay_config(&loaded.settings);
    let report = crate::replay::replay(Arc::new(loaded.rules), config, capture, |n| {
        if n % 1024 == 0 {
            bar.set_position(n)
        }
    });
    bar.finish_and_clear();
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(Failure::failed)?;
        println!("{text}");
    } else {
        print!("{report}");
    }
    Ok(())
}
