//! The `tailgate` command line: run, check, explain, replay, demo, gen.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tailgate::config::{Settings, Sources};

/// mimalloc: per-thread free lists instead of glibc's contended arenas, which
/// took a quarter of the end-to-end profile (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Show which rule decides each trace in an OTLP file, and why, with the
    /// trace's critical path.
    Explain {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Only this trace (32 hex characters).
        #[arg(long)]
        trace: Option<String>,
        /// OTLP files: JSON (one object, or one per line) or protobuf `TracesData`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the rules over captured traffic (OTLP files or a range of a Kafka
    /// topic) and report per rule what would be kept; nothing is produced.
    Replay {
        #[command(flatten)]
        policy: PolicyArgs,
        /// OTLP files: JSON (one object, or one per line) or protobuf `TracesData`.
        files: Vec<PathBuf>,
        /// Read the capture from this Kafka cluster instead of files.
        #[arg(long, requires = "topic")]
        brokers: Option<String>,
        /// The topic to read, every partition from the start (or --from-offset) to its current end.
        #[arg(long, requires = "brokers")]
        topic: Option<String>,
        /// Start every partition at this offset instead of the beginning.
        #[arg(long)]
        from_offset: Option<i64>,
        /// Read at most this many messages.
        #[arg(long)]
        max_messages: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
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
    /// Produce a synthetic shop workload to a Kafka topic, or write it to a file.
    Gen {
        /// Kafka bootstrap servers to produce to.
        #[arg(long, required_unless_present = "file")]
        brokers: Option<String>,
        /// Write OTLP JSON lines to this file instead (for replay and explain).
        #[arg(long, conflicts_with = "brokers")]
        file: Option<PathBuf>,
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
            let mut sources =
                Sources::for_env(&policy.policies, &policy.env, policy.config.as_deref());
            if let Some(b) = brokers {
                sources.overrides.push(("kafka.brokers".into(), b));
            }
            let loaded = match Settings::load(&sources) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
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
        Command::Explain {
            policy,
            trace,
            files,
        } => explain(&policy, trace.as_deref(), &files),
        Command::Replay {
            policy,
            files,
            brokers,
            topic,
            from_offset,
            max_messages,
            json,
        } => replay(
            &policy,
            &files,
            brokers.as_deref().zip(topic.as_deref()),
            from_offset,
            max_messages,
            json,
        ),
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
            file: Some(file),
            traces,
            seed,
            ..
        } => match tailgate::demo::generate_file(&file, traces, seed) {
            Ok(n) => {
                eprintln!(
                    "wrote {traces} traces in {n} messages to {}",
                    file.display()
                );
                ExitCode::SUCCESS
            }
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
            file: None,
        } => {
            let encoding = match encoding.as_str() {
                "otlp_proto" => tailgate::otlp::Encoding::OtlpProto,
                "otlp_json" => tailgate::otlp::Encoding::OtlpJson,
                other => {
                    eprintln!("error: --encoding {other:?}: use otlp_proto or otlp_json");
                    return ExitCode::from(2);
                }
            };
            let Some(brokers) = brokers else {
                eprintln!("error: give --brokers or --file");
                return ExitCode::from(2);
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

/// Loads the rules as `run` would, or says why not.
fn load_rules(policy: &PolicyArgs) -> Result<tailgate::config::Loaded, ExitCode> {
    let sources = Sources::for_env(&policy.policies, &policy.env, policy.config.as_deref());
    Settings::load(&sources).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn explain(policy: &PolicyArgs, trace: Option<&str>, files: &[PathBuf]) -> ExitCode {
    let loaded = match load_rules(policy) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let wanted = match trace.map(|t| tailgate::otlp::TraceId::from_hex(t.trim())) {
        Some(None) => {
            eprintln!("error: --trace wants 32 hex characters");
            return ExitCode::from(2);
        }
        Some(id) => id,
        None => None,
    };
    let mut capture = tailgate::replay::Capture::default();
    for f in files {
        if let Err(e) = capture.add_file(f) {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    }
    let (traces, rejected) = capture.into_traces();
    for (reason, n) in &rejected {
        eprintln!("warning: {n} messages or spans rejected: {reason}");
    }
    let mut shown = 0;
    for (id, spans, _) in traces {
        if wanted.is_some_and(|w| w != id) {
            continue;
        }
        if shown > 0 {
            println!();
        }
        print!("{}", tailgate::replay::explain(&loaded.rules, id, &spans));
        shown += 1;
    }
    if shown == 0 {
        eprintln!(
            "error: no trace found{}",
            if trace.is_some() { " with that id" } else { "" }
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
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

fn replay(
    policy: &PolicyArgs,
    files: &[PathBuf],
    kafka: Option<(&str, &str)>,
    from_offset: Option<i64>,
    max_messages: Option<u64>,
    json: bool,
) -> ExitCode {
    let loaded = match load_rules(policy) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut capture = tailgate::replay::Capture::default();
    match kafka {
        Some((brokers, topic)) => {
            if !files.is_empty() {
                eprintln!("error: give files or --brokers/--topic, not both");
                return ExitCode::from(2);
            }
            let options: Vec<(String, String)> =
                tailgate::config::KafkaSettings::options(&loaded.settings.kafka.librdkafka_options)
                    .map(|m| m.into_iter().collect())
                    .unwrap_or_default();
            let bar = progress_bar(0, "reading");
            let start = match from_offset {
                Some(o) => tailgate::kafka::range::Start::Offset(o),
                None => tailgate::kafka::range::Start::Beginning,
            };
            let read = tailgate::kafka::range::read(
                brokers,
                topic,
                start,
                max_messages,
                &options,
                |n| bar.set_length(n),
                |partition, timestamp, payload| {
                    capture.add(partition, timestamp, payload);
                    bar.inc(1);
                },
            );
            bar.finish_and_clear();
            if let Err(e) = read {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        }
        None => {
            if files.is_empty() {
                eprintln!("error: give OTLP files, or --brokers and --topic to read a topic");
                return ExitCode::from(2);
            }
            let bar = progress_bar(files.len() as u64, "reading files");
            for f in files {
                if let Err(e) = capture.add_file(f) {
                    bar.finish_and_clear();
                    eprintln!("error: {e:#}");
                    return ExitCode::from(2);
                }
                bar.inc(1);
            }
            bar.finish_and_clear();
        }
    }
    let bar = progress_bar(capture.messages, "deciding");
    let buffer = loaded.settings.buffer_config(1);
    let report = tailgate::replay::replay(&loaded.rules, buffer, capture, |n| {
        if n % 1024 == 0 {
            bar.set_position(n)
        }
    });
    bar.finish_and_clear();
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{report}");
    }
    ExitCode::SUCCESS
}
