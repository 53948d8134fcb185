//! The `tailgate` command line: run, check, demo, gen.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tailgate::config::{Settings, Sources};

#[derive(Parser)]
#[command(
    name = "tailgate",
    version,
    about = "Tail-sampling stream processor for distributed traces on Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct PolicyArgs {
    /// Directory holding `default.yaml` and `<env>.yaml`.
    #[arg(long, default_value = "policies", env = "TAILGATE_POLICIES")]
    policies: PathBuf,
    /// Environment: reads `<policies>/<env>.yaml` over `<policies>/default.yaml`.
    #[arg(long, default_value = "default", env = "TAILGATE_ENV")]
    env: String,
    /// An extra settings file layered over the policy files.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume spans, decide traces, produce the kept ones.
    Run {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Kafka bootstrap servers (overrides kafka.brokers).
        #[arg(long)]
        brokers: Option<String>,
    },
    /// Validate settings and rule files; non-zero exit on any mistake.
    Check {
        /// Directory of policy files; every `*.yaml` in it is checked over `default.yaml`.
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        /// Check only these environments (default: all files in the directory).
        #[arg(long)]
        env: Vec<String>,
    },
    /// A self-contained demo: in-process Kafka, a synthetic shop workload, tailgate on policies/demo.yaml.
    Demo {
        /// How long to run.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Traces generated per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Address for /metrics during the demo.
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: std::net::SocketAddr,
        /// Directory holding demo.yaml (the built-in copy is used if it is absent).
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
    },
    /// Produce a synthetic shop workload to a Kafka topic.
    Gen {
        #[arg(long)]
        brokers: String,
        #[arg(long, default_value = "otlp_spans")]
        topic: String,
        /// Number of traces.
        #[arg(long, default_value_t = 10_000)]
        traces: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// otlp_proto or otlp_json.
        #[arg(long, default_value = "otlp_proto")]
        encoding: String,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Run { policy, brokers } => {
            let sources = Sources::for_env(&policy.policies, &policy.env, policy.config.as_deref());
            let mut loaded = match Settings::load(&sources) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(b) = brokers {
                loaded.settings.kafka.brokers = b;
            }
            match runtime.block_on(tailgate::app::run(
                loaded,
                shutdown_signal(),
                Default::default(),
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { policies, env } => check(&policies, &env),
        Command::Demo {
            duration,
            rate,
            listen,
            policies,
        } => match runtime.block_on(tailgate::demo::run(duration, rate, listen, &policies)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Gen {
            brokers,
            topic,
            traces,
            seed,
            encoding,
        } => {
            let encoding = match encoding.as_str() {
                "otlp_proto" => tailgate::otlp::Encoding::OtlpProto,
                "otlp_json" => tailgate::otlp::Encoding::OtlpJson,
                other => {
                    eprintln!("error: --encoding {other:?}: use otlp_proto or otlp_json");
                    return ExitCode::from(2);
                }
            };
            match runtime.block_on(tailgate::demo::generate(
                &brokers, &topic, traces, seed, encoding,
            )) {
                Ok(n) => {
                    eprintln!("produced {traces} traces in {n} messages to {topic}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Checks every environment file in `dir` (or those named), each layered over
/// `default.yaml` as `run` would read it.
fn check(dir: &std::path::Path, envs: &[String]) -> ExitCode {
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
                eprintln!(
                    "error: {}: cannot read the policy directory: {e}",
                    dir.display()
                );
                return ExitCode::from(2);
            }
        }
        names.sort();
    }
    if names.is_empty() {
        eprintln!("error: {}: no *.yaml policy files", dir.display());
        return ExitCode::from(2);
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
        eprintln!("{failed} of {} policy files have mistakes", names.len());
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
