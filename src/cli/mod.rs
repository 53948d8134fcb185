//! The `tailgate` command line: `run`, `route`, `check`, `explain`, `replay`,
//! `why`, `demo` and `gen`, one module each. The binary (`src/main.rs`) only calls [`main`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Loaded, Settings, Sources};

mod check;
mod demo;
mod explain;
mod replay;
mod run;
mod why;

#[derive(Parser)]
#[command(
    name = "tailgate",
    version,
    about = "Tail-sampling stream processor for distributed traces on Kafka"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Clone)]
pub struct PolicyArgs {
    /// Directory holding `default.yaml` and `<env>.yaml`.
    #[arg(long, default_value = "policies", env = "TAILGATE_POLICIES")]
    pub policies: PathBuf,
    /// Environment: reads `<policies>/<env>.yaml` over `<policies>/default.yaml`.
    #[arg(long, default_value = "default", env = "TAILGATE_ENV")]
    pub env: String,
    /// An extra settings file layered over the policy files.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Consume spans, decide traces, produce the kept ones.
    Run {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Kafka bootstrap servers (overrides kafka.brokers).
        #[arg(long)]
        brokers: Option<String>,
    },
    /// Key unkeyed input: read route.from_topic (batches of many traces, as
    /// the Collector's Kafka exporter writes without partition_traces_by_id),
    /// split every message by trace and produce each keyed by trace id to
    /// kafka.input_topic, for `run` to read whole.
    Route {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Kafka bootstrap servers (overrides kafka.brokers).
        #[arg(long)]
        brokers: Option<String>,
        /// The unkeyed topic to read (overrides route.from_topic).
        #[arg(long)]
        from: Option<String>,
    },
    /// Validate settings and rule files; non-zero exit on any mistake. With
    /// --sample, read the latest messages of the input topic instead and
    /// report their encoding, compression, keying, spans and traces.
    Check {
        /// Directory of policy files; every `*.yaml` in it is checked over `default.yaml`.
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        /// Check only these environments (default: all files in the directory;
        /// with --sample, the first, or `default`).
        #[arg(long)]
        env: Vec<String>,
        /// Read this many of the input topic's latest messages and report
        /// what they are; exit 1 if they are not keyed by trace id.
        #[arg(long, value_name = "N")]
        sample: Option<u64>,
        /// Kafka bootstrap servers (overrides kafka.brokers), with --sample.
        #[arg(long, requires = "sample")]
        brokers: Option<String>,
        /// The topic to sample (default: kafka.input_topic), with --sample.
        #[arg(long, requires = "sample")]
        topic: Option<String>,
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
    /// Why a trace is, or is not, in the backend: its decision in the
    /// decision log (kafka.decision_topic) and, from its spans in the input
    /// topic, each live rule tried on it.
    Why {
        /// The trace id: 32 hex characters.
        #[arg(value_name = "TRACE_ID")]
        trace: String,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Kafka bootstrap servers (overrides kafka.brokers).
        #[arg(long)]
        brokers: Option<String>,
        /// Print one JSON object (fields in docs/output.md).
        #[arg(long)]
        json: bool,
        /// Only the decision: do not look for the trace's spans in the input topic.
        #[arg(long)]
        no_spans: bool,
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

/// How a command failed: what is printed after `error: `, and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// 2: the command line, settings or rule files are wrong; 1: the work failed.
    code: u8,
    message: String,
}

impl Failure {
    /// The command line, the settings or the rule files are wrong (exit 2).
    fn usage(message: impl std::fmt::Display) -> Self {
        Self {
            code: 2,
            message: message.to_string(),
        }
    }

    /// The work itself failed (exit 1).
    fn failed(message: impl std::fmt::Display) -> Self {
        Self {
            code: 1,
            message: message.to_string(),
        }
    }
}

/// How long the runtime waits, once a command is done, for blocking calls
/// still running; then the process exits without them.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(2);

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
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
    let result = match cli.command {
        Command::Run { policy, brokers } => run::run(&runtime, &policy, brokers),
        Command::Route {
            policy,
            brokers,
            from,
        } => run::route(&runtime, &policy, brokers, from),
        Command::Check {
            policies,
            env,
            sample: None,
            ..
        } => check::check(&policies, &env),
        Command::Check {
            policies,
            env,
            sample: Some(n),
            brokers,
            topic,
        } => check::sample(&policies, &env, n, brokers, topic),
        Command::Explain {
            policy,
            trace,
            files,
        } => explain::explain(&policy, trace.as_deref(), &files),
        Command::Replay {
            policy,
            files,
            brokers,
            topic,
            from_offset,
            max_messages,
            json,
        } => replay::replay(
            &policy,
            &files,
            brokers.as_deref().zip(topic.as_deref()),
            from_offset,
            max_messages,
            json,
        ),
        Command::Why {
            trace,
            policy,
            brokers,
            json,
            no_spans,
        } => why::why(&policy, &trace, brokers.as_deref(), json, no_spans),
        Command::Demo {
            duration,
            rate,
            listen,
            policies,
        } => demo::demo(&runtime, duration, rate, listen, &policies),
        Command::Gen {
            brokers,
            file,
            topic,
            traces,
            seed,
            encoding,
        } => demo::generate(&runtime, brokers, file, &topic, traces, seed, &encoding),
    };
    // A blocking call left behind by a stage of the shutdown abandoned at
    // its bound (a librdkafka call that does not keep its timeout) must not
    // hold the process: dropping the runtime would wait for it without end.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, message }) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
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

/// Loads the settings and rules as `run` would, or says why not.
fn load(policy: &PolicyArgs) -> Result<Loaded, Failure> {
    let sources = Sources::for_env(&policy.policies, &policy.env, policy.config.as_deref());
    Settings::load(&sources).map_err(Failure::usage)
}
