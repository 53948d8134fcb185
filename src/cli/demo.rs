//! `tailgate demo` (everything in one process, on an in-process Kafka) and
//! `tailgate gen` (the demo's synthetic workload, to a topic or a file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Failure;
use crate::otlp::Encoding;

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
    encoding: &str,
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
    let encoding = match encoding {
        "otlp_proto" => Encoding::OtlpProto,
        "otlp_json" => Encoding::OtlpJson,
        other => {
            return Err(Failure::usage(format!(
                "--encoding {other:?}: use otlp_proto or otlp_json"
            )))
        }
    };
    let brokers = brokers.ok_or_else(|| Failure::usage("give --brokers or --file"))?;
    let n = runtime
        .block_on(crate::demo::generate(
            &brokers, topic, traces, seed, encoding,
        ))
        .map_err(|e| Failure::failed(format!("{e:#}")))?;
    eprintln!("produced {traces} traces in {n} messages to {topic}");
    Ok(())
}
