//! A running `tailgate run`: started from a policy directory, stopped,
//! asked over its metrics endpoint, its log read.

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::http::http_get;
use crate::process::Process;
use crate::prometheus_text::Metrics;

/// A running tailgate and the port of its metrics endpoint; killed when dropped.
pub struct Tailgate {
    process: Process,
    /// Where `/metrics`, `/healthz` and `/readyz` answer.
    metrics_port: u16,
}

impl Tailgate {
    /// `bin run --env test --policies <policies>`, debug logs to
    /// `<policies>/<log_name>`, metrics on `metrics_port`. `bin` is
    /// [`tailgate_bin!()`](crate::tailgate_bin).
    pub fn start(bin: &Path, policies: &Path, metrics_port: u16, log_name: &str) -> Self {
        Self::start_with_env(bin, policies, metrics_port, log_name, &[])
    }

    /// [`Tailgate::start`] with more environment variables.
    pub fn start_with_env(
        bin: &Path,
        policies: &Path,
        metrics_port: u16,
        log_name: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_command(bin, "run", policies, metrics_port, log_name, env)
    }

    /// `bin route --env test --policies <policies>`: the stage that keys
    /// unkeyed input (its settings' `route.from_topic`), otherwise as
    /// [`Tailgate::start`].
    pub fn start_route(bin: &Path, policies: &Path, metrics_port: u16, log_name: &str) -> Self {
        Self::start_command(bin, "route", policies, metrics_port, log_name, &[])
    }

    /// `bin <command> --env test --policies <policies>` with more
    /// environment variables, otherwise as [`Tailgate::start`].
    pub fn start_command(
        bin: &Path,
        command: &str,
        policies: &Path,
        metrics_port: u16,
        log_name: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args([command, "--env", "test", "--policies"])
            .arg(policies)
            .env("RUST_LOG", "info,tailgate=debug")
            .env(
                "TAILGATE__METRICS__LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .envs(env.iter().copied());
        let label = format!("tailgate {command} ({log_name})");
        let process =
            Process::spawn(cmd, policies.join(log_name), &label).unwrap_or_else(|e| panic!("{e}"));
        Self::attach(process, metrics_port)
    }

    /// A tailgate started otherwise (the benchmark's), its metrics on `metrics_port`.
    pub fn attach(process: Process, metrics_port: u16) -> Self {
        Self {
            process,
            metrics_port,
        }
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    pub fn process_mut(&mut self) -> &mut Process {
        &mut self.process
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn log(&self) -> &Path {
        self.process.log()
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.exited()
    }

    /// SIGKILL: no shutdown, no final commit.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// SIGTERM, then wait (bounded) for a clean exit; panics if it does not exit.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        match self.process.terminate(within) {
            Some(status) => status,
            None => panic!(
                "tailgate did not stop within {within:?}:\n{}",
                self.log_text()
            ),
        }
    }

    /// GET a path on the metrics endpoint: (status code, body).
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_port, path, Duration::from_secs(5))
    }

    /// `/metrics`, parsed; `None` if it did not answer 200.
    pub fn metrics(&self) -> Option<Metrics> {
        Metrics::scrape(self.metrics_port)
    }

    /// Waits until `/readyz` answers 200 (its partitions are assigned): an
    /// error if it exits first or `within` passes.
    pub fn ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((200, _)) = self.http_get("/readyz") {
                return Ok(());
            }
            self.process.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: not ready within {within:?}; last lines of {}:\n{}",
                    self.process.label(),
                    self.log().display(),
                    self.process.log_tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`Tailgate::ready`], panicking.
    pub fn wait_ready(&mut self, within: Duration) {
        if let Err(e) = self.ready(within) {
            panic!("{e}");
        }
    }
}

/// Kept spans a tailgate log reports as delivered past the committed offset
/// when it let partitions go (SIGTERM or rebalance; a SIGKILL reports nothing).
pub fn redelivery_logged(log_text: &str) -> u64 {
    log_text
        .lines()
        .filter(|l| l.contains("letting the partition go"))
        .filter_map(|l| {
            l.split("spans=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// `tailgate replay --json` of `topic` on the test broker, with the policy
/// directory `policies` and environment `env`: its report, or a panic with
/// what it printed if it failed.
pub fn replay_topic(bin: &Path, policies: &Path, env: &str, topic: &str) -> serde_json::Value {
    let out = Command::new(bin)
        .args(["replay", "--json", "--env", env, "--policies"])
        .arg(policies)
        .args(["--brokers", &crate::broker::bootstrap(), "--topic", topic])
        .output()
        .expect("run replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a json report")
}
