//! `tailgate demo` (everything in one process, on an in-process Kafka) and
//! `tailgate gen` (the demo's synthetic workload, to a topic or a file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Failure;
use crate::otlp::Encoding;

/// `tailgate demo`'s arguments.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// How long to run.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Traces generated per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Address for /metrics during the demo.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
    /// Directory holding demo.yaml (the built-in copy is used if it is absent).
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
}

/// `tailgate gen`'s arguments.
#[derive(clap::Args)]
pub struct GenArgs {
    /// Kafka bootstrap servers to produce to.
    #[arg(long, required_unless_present = "file")]
    pub brokers: Option<String>,
    /// Write OTLP JSON lines to this file instead (for replay and explain).
    #[arg(long, conflicts_with = "brokers")]
    pub file: Option<PathBuf>,
    #[arg(long, default_value = "otlp_spans")]
    pub topic: String,
    /// Number of traces.
    #[arg(long, default_value_t = 10_000)]
    pub traces: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How the messages are encoded, as the Collector's `encoding` names it.
    #[arg(long, default_value = "otlp_proto", value_parser = encoding())]
    pub encoding: Encoding,
}

/// `--encoding`: one of the encodings tailgate reads, by name.
fn encoding() -> impl clap::builder::TypedValueParser<Value = Encoding> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Encoding::ALL.map(Encoding::as_str))
        .map(|name| Encoding::from_name(&name).unwrap_or_default())
}

pub(super) fn demo(
    runtime: &tokio::runtime::Runtime,
    duration: Duration,
    rate: u32,
    listen: SocketAddr,
    policies: &Path,
) -> Result<(), Failure> {
    runtime
        .block_on(crate::demo::run(duration, rate, listen, policies))
        .map_err(|e| Failure::failed(format!("{e:#}")))
}

pub(super) fn generate(
    runtime: &tokio::runtime::Runtime,
    brokers: Option<String>,
    file: Option<PathBuf>,
    topic: &str,
    traces: u64,
    seed: u64,
    encoding: Encoding,
) -> Result<(), Failure> {
    if let Some(file) = file {
        let n = crate::demo::generate_file(&file, traces, seed)
            .map_err(|e| Failure::failed(format!("{e:#}")))?;
        eprintln!(
            "wrote {traces} traces in {n} messages to {}",
            file.display()
        );
        return Ok(());
    }
    let brokers = brokers.ok_or_else(|| Failure::usage("give --brokers or --file"))?;
    let n = runtime
        .block_on(crate::demo::generate(
            &brokers, topic, traces, seed, encoding,
        ))
        .map_err(|e| Failure::failed(format!("{e:#}")))?;
    eprintln!("produced {traces} traces in {n} messages to {topic}");
    Ok(())
}
