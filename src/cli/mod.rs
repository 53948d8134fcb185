//! The `tailgate` command line: `run`, `route`, `check`, `explain`, `replay`,
//! `why`, `demo` and `gen`, one module each. The binary (`src/main.rs`) only calls [`main`].

use std::path::PathBuf;
use std::process::ExitCode;

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
    Run(run::RunArgs),
    /// Key unkeyed input: read route.from_topic (batches of many traces, as
    /// the Collector's Kafka exporter writes without partition_traces_by_id),
    /// split every message by trace and produce each keyed by trace id to
    /// kafka.input_topic, for `run` to read whole.
    Route(run::RouteArgs),
    /// Validate settings and rule files; non-zero exit on any mistake. With
    /// --sample, read the latest messages of the input topic instead and
    /// report their encoding, compression, keying, spans and traces.
    Check(check::CheckArgs),
    /// Show which rule decides each trace in an OTLP file, and why, with the
    /// trace's critical path.
    Explain(explain::ExplainArgs),
    /// Run the rules over captured traffic (OTLP files or a range of a Kafka
    /// topic) and report per rule what would be kept; nothing is produced.
    Replay(replay::ReplayArgs),
    /// Why a trace is, or is not, in the backend: its decision in the
    /// decision log (kafka.decision_topic) and, from its spans in the input
    /// topic, each live rule tried on it.
    Why(why::WhyArgs),
    /// A self-contained demo: in-process Kafka, a synthetic shop workload, tailgate on policies/demo.yaml.
    Demo(demo::DemoArgs),
    /// Produce a synthetic shop workload to a Kafka topic, or write it to a file.
    Gen(demo::GenArgs),
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
        Command::Run(a) => run::run(&runtime, &a.policy, a.brokers),
        Command::Route(a) => run::route(&runtime, &a.policy, a.brokers, a.from),
        Command::Check(a) => match a.sample {
            None => check::check(&a.policies, &a.env),
            Some(n) => check::sample(&a.policies, &a.env, n, a.brokers, a.topic),
        },
        Command::Explain(a) => explain::explain(&a.policy, a.trace.as_deref(), &a.files),
        Command::Replay(a) => replay::replay(
            &a.policy,
            &a.files,
            a.brokers.as_deref().zip(a.topic.as_deref()),
            a.from_offset,
            a.max_messages,
            a.json,
        ),
        Command::Why(a) => why::why(
            &a.policy,
            &a.trace,
            a.brokers.as_deref(),
            a.json,
            a.no_spans,
        ),
        Command::Demo(a) => demo::demo(&runtime, a.duration, a.rate, a.listen, &a.policies),
        Command::Gen(a) => demo::generate(
            &runtime, a.brokers, a.file, &a.topic, a.traces, a.seed, a.encoding,
        ),
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
