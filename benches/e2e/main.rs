//! End-to-end benchmark on a real Kafka broker: tailgate against a
//! raw rdkafka copy, each measured as a whole process.
//!
//! One run fills input topics with a seeded, Collector-shaped workload (the
//! shop of `tailgate::workload` in its lean shape: 7 spans per trace, one
//! message per resource and trace keyed by the trace id in hex, about 163
//! message bytes per span, ~3 % errors, ~5 % slow traces), then measures:
//!
//! - **throughput**: the raw copy (consume everything, forward the messages
//!   of every tenth trace unchanged, store offsets, auto-commit; no decoding)
//!   and tailgate (errors + slow traces + 10 % of the rest) on the same
//!   4-partition topic, after tailgate's start-up CPU on an empty topic: CPU seconds (user + sys, /proc), spans per CPU-second,
//!   wall time from process start until the group's committed offsets reach
//!   the end of every partition, peak RSS (VmHWM); tailgate's p99 decision
//!   lateness from its histogram;
//! - **features**: on the 4-partition topic, tailgate with the decision log
//!   off, in exactly-once mode, and with the production policy's rules: each
//!   durable feature's cost as a ratio against the default run, and the
//!   policy as it ships;
//! - **partitions**: the same on 1 and 16 input partitions;
//! - **clock**: in the throughput and partitions phases, tailgate runs on
//!   each topic with the default stream clock (`decision.clock: stream`,
//!   deadlines on message timestamps) and with `decision.clock: wall` (the
//!   old behaviour, deadlines from when each span is read); the report gives
//!   spans per CPU-second of both and their ratio. `--clock-pairs N` runs
//!   each N times, taking turns going first (default 2, with `--quick` 1;
//!   0 skips the wall-clock runs);
//! - **buffer**: tailgate with a decision wait longer than the read, on a
//!   topic of a tenth of the traces and on the full one, so that the buffer
//!   peaks at N / 10 and at N traces;
//! - **memory**: tailgate with a decision wait of an hour, the topic filled in
//!   steps; RSS against buffered span bytes, slope and intercept.
//!
//! Each tailgate output is checked (every error and slow trace complete, the
//! rest kept at the rule's 10 %, exactly the library's decisions); the copy's
//! output count is checked too. Each tailgate output is also counted per
//! kept trace: output messages, and *split traces*, kept traces that came in
//! more than one message although one would have held them (a trace decided
//! in parts: spans arriving after its decision). With the stream clock, on
//! these pre-filled topics, none may be split and no span may come after its
//! trace's decision; that is a correctness check. The wall-clock runs' splits,
//! and the incomplete error and slow traces they can cause, are reported, not
//! checked. Timings are reported, never asserted.
//!
//! The input's message timestamps: one per trace, traces `1 / --stamp-rate`
//! seconds apart (default 20 000 traces a second, about a wall-clock
//! tailgate's read speed on 4 partitions), from an idempotent producer; see
//! `Kafka::fill`.
//!
//! `scripts/bench [--quick] [--traces N] [--only throughput,features,partitions,buffer,memory,route]`
//! starts the broker and runs `cargo bench --bench e2e -- ARGS`. The report is
//! printed and written to `target/e2e-report.md`. See docs/benchmarks.md.
//!
//! The copy is this executable run again with `TAILGATE_E2E_ROLE=copy`, so
//! that it is measured as a process of its own.
//!
//! The harness: [`args`] (the command line), [`workload`] (the traces and
//! what tailgate must keep of them), [`kafka`] (topics, filling them,
//! reading the output back), [`copy`] (the copy's own `main`), [`bench`]
//! (the phases in order), [`runs`] (one run of the copy or of tailgate,
//! measured), [`check`] (tailgate's output against the library's
//! decisions), [`buffering`] (the buffer and memory phases), [`figures`]
//! (what a run measured) and [`report`]. Broker offsets, processes, ports
//! and tailgate's metrics come from the test kit (`tailgate_testkit`), as
//! in the integration tests.

mod args;
mod bench;
mod buffering;
mod check;
mod copy;
mod figures;
mod kafka;
mod report;
mod route;
mod runs;
mod workload;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use args::{Args, USAGE};
use bench::Bench;

/// tailgate's rules: every error, every slow trace (the shop's slow traces
/// last at least 1.5 s), a tenth of the rest.
const RULES: &str = "[{name: errors, when: {trace: {error: true}}, sample: keep}, \
                     {name: slow, when: {trace: {duration: {gte: 1s}}}, sample: keep}, \
                     {name: baseline, sample: {rate: 0.1}}]";
/// The copy forwards the traces whose key hash is 0 modulo this.
const COPY_ONE_IN: u64 = 10;
/// Both programs' commit interval.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);
/// tailgate's decision timing in the throughput runs: a trace is decided
/// `after_root` after its last span (the root comes first), at the latest
/// `wait` after its first. `--after-root-ms` changes `after_root` (a short
/// one makes a wall-clock tailgate split traces; the stream clock must not).
const THROUGHPUT_AFTER_ROOT: Duration = Duration::from_secs(1);
const THROUGHPUT_WAIT: Duration = Duration::from_secs(5);
/// tailgate's default producer `message.max.bytes` is 1 000 000; a kept
/// trace whose output messages hold fewer payload bytes than this together
/// would have fitted in one message (the record overhead is far smaller than
/// the margin), so more than one message for it is a split, not the size
/// limit. The workload's traces are about 1 KiB.
const ONE_MESSAGE_BYTES: usize = 900_000;
/// The input's message time, in traces a second (`--stamp-rate`): about the
/// rate a wall-clock tailgate reads the 4-partition topic at on the
/// reference machine (150 000–170 000 spans a second), so that the stream
/// clock buffers about as many traces as the wall clock and their ratio is
/// the clock's own cost, not a different buffer. The 200 000 traces span
/// 10 s of message time. Stamped as produced instead, the whole topic is
/// about a second of message time, read in 10 s or more: with
/// `after_root` 1 s the stream clock then buffers all of it before deciding
/// anything (as it should: that backlog was written in a second).
const STAMP_RATE: f64 = 20_000.0;
/// The memory phase's decision wait: nothing is decided while it runs.
const MEMORY_WAIT: Duration = Duration::from_secs(3600);
/// Fill levels of the memory phase.
const MEMORY_STEPS: usize = 4;
/// How often a running process is looked at.
const TICK: Duration = Duration::from_millis(100);
/// How often tailgate's /metrics is scraped (peaks of the buffer gauges).
const SCRAPE_EVERY: Duration = Duration::from_millis(250);
const ROLE_ENV: &str = "TAILGATE_E2E_ROLE";
const BOOTSTRAP_ENV: &str = "TAILGATE_BENCH_BOOTSTRAP";
const MIB: f64 = 1024.0 * 1024.0;

fn main() -> ExitCode {
    if std::env::var(ROLE_ENV).as_deref() == Ok("copy") {
        return copy::main();
    }
    let raw: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` runs bench
    // targets without it, and this harness needs a broker and minutes.
    if !raw.iter().any(|a| a == "--bench") {
        println!(
            "e2e: not run under `cargo test`; run `scripts/bench` (or `cargo bench --bench e2e`)"
        );
        return ExitCode::SUCCESS;
    }
    let args = match Args::parse(&raw) {
        Ok(a) => a,
        Err(e) if e == "help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("e2e: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(brokers) = args.brokers.clone() else {
        println!(
            "e2e: skipped: no broker. Run `scripts/bench`, which starts one, or set {BOOTSTRAP_ENV} / pass --brokers"
        );
        return ExitCode::SUCCESS;
    };
    let started = Instant::now();
    let mut bench = Bench::new(args, brokers);
    let outcome = bench.run();
    bench.cleanup();
    match outcome {
        Ok(()) => {
            eprintln!(
                "e2e: done in {:.0} s; report in {}",
                started.elapsed().as_secs_f64(),
                bench.args.report.display()
            );
            if bench.checks.iter().all(|c| c.ok || !c.asserted) {
                ExitCode::SUCCESS
            } else {
                eprintln!("e2e: CORRECTNESS CHECKS FAILED (see the report)");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("e2e: error: {e}");
            ExitCode::FAILURE
        }
    }
}
