//! `tailgate check`: validates every environment's settings and rules; with
//! `--sample N`, reads the input topic's latest messages and reports what
//! they are.

use std::path::{Path, PathBuf};

use super::Failure;
use crate::config::{KafkaSettings, Settings, Sources};

/// `tailgate check`'s arguments.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Directory of policy files; every `*.yaml` in it is checked over `default.yaml`.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// Check only these environments (default: all files in the directory;
    /// with --sample, the first, or `default`).
    #[arg(long)]
    pub env: Vec<String>,
    /// Read this many of the input topic's latest messages and report
    /// what they are; exit 1 if they are not keyed by trace id.
    #[arg(long, value_name = "N")]
    pub sample: Option<u64>,
    /// Kafka bootstrap servers (overrides kafka.brokers), with --sample.
    #[arg(long, requires = "sample")]
    pub brokers: Option<String>,
    /// The topic to sample (default: kafka.input_topic), with --sample.
    #[arg(long, requires = "sample")]
    pub topic: Option<String>,
}

/// Checks every environment file in `dir` (or those named), each layered over
/// `default.yaml` as `run` would read it.
pub(super) fn check(dir: &Path, envs: &[String]) -> Result<(), Failure> {
    let mut names: Vec<String> = envs.to_vec();
    if names.is_empty() {
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                        if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                            names.push(stem.to_string());
                        }
                    }
                }
            }
            Err(e) => {
                return Err(Failure::usage(format!(
                    "{}: cannot read the policy directory: {e}",
                    dir.display()
                )));
            }
        }
        names.sort();
    }
    if names.is_empty() {
        return Err(Failure::usage(format!(
            "{}: no *.yaml policy files",
            dir.display()
        )));
    }
    let mut failed = 0;
    for env in &names {
        let mut sources = Sources::for_env(dir, env, None);
        sources.environment = false;
        match Settings::load(&sources) {
            Ok(l) => println!(
                "ok    {}  ({} rules)",
                dir.join(format!("{env}.yaml")).display(),
                l.rules.names().len() - 1
            ),
            Err(e) => {
                failed += 1;
                println!("error {e}");
            }
        }
    }
    if failed > 0 {
        return Err(Failure::failed(format!(
            "{failed} of {} policy files have mistakes",
            names.len()
        )));
    }
    Ok(())
}

/// Samples the latest `n` messages of the input topic (of `--env`'s
/// settings, or `--topic`) and prints what they are. Exit 1 when they are
/// not keyed by trace id: tailgate would decide fragments of their traces.
pub(super) fn sample(
    dir: &Path,
    envs: &[String],
    n: u64,
    brokers: Option<String>,
    topic: Option<String>,
) -> Result<(), Failure> {
    let env = envs.first().map_or("default", String::as_str);
    let mut sources = Sources::for_env(dir, env, None);
    if let Some(b) = &brokers {
        sources.overrides.push(("kafka.brokers".into(), b.clone()));
    }
    // The settings give the topic and the client options (TLS, SASL); a
    // command line that names brokers and topic needs no policy files.
    let kafka = match Settings::load(&sources) {
        Ok(l) => l.settings.kafka,
        Err(e) if brokers.is_some() && topic.is_some() => {
            tracing::debug!("no settings for {env} ({e}); sampling with a plain client");
            KafkaSettings::default()
        }
        Err(e) => return Err(Failure::usage(e)),
    };
    let brokers = brokers.unwrap_or(kafka.brokers.clone());
    let topic = topic.unwrap_or(kafka.input_topic.clone());
    let options: Vec<(String, String)> = KafkaSettings::options(&kafka.librdkafka_options)
        .map_err(Failure::usage)?
        .into_iter()
        .chain(KafkaSettings::options(&kafka.consumer_options).map_err(Failure::usage)?)
        .collect();
    eprintln!("reading the latest {n} messages of {topic} from {brokers}...");
    let s = crate::kafka::sample::sample(&brokers, &topic, n, &options)
        .map_err(|e| Failure::failed(format!("{e:#}")))?;
    print!("{}", s.report());
    if s.unkeyed() > 0 {
        return Err(Failure::failed(format!(
            "{} of {} sampled messages are not keyed by trace id",
            s.unkeyed(),
            s.messages
        )));
    }
    Ok(())
}
