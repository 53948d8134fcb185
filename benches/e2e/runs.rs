//! One run of the copy or of tailgate on a topic, measured from start
//! until the topic is drained.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tailgate::clock::ClockMode;
use tailgate_testkit::{free_port, tailgate_bin, unique, Metrics, Process, Tailgate};

use crate::bench::Bench;
use crate::figures::{Check, Figures, TailgateFigures, TailgateSettings, Variant};
use crate::kafka::{partitions, Topic};
use crate::workload::Workload;
use crate::{COMMIT_INTERVAL, MIB, ROLE_ENV, RULES, SCRAPE_EVERY};

/// Starts `cmd` (its standard error in `log`) without what the harness was
/// started with: the programs get their settings from the harness alone.
pub fn spawn(mut cmd: Command, log: PathBuf, label: &str) -> Result<Process, String> {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TAILGATE__") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("RUST_LOG");
    Process::spawn(cmd, log, label)
}

/// The rules of `policies/production.yaml`, as one line of YAML (JSON).
fn production_rules() -> Result<String, String> {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/production.yaml");
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
    let policy: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let rules = policy
        .get("rules")
        .ok_or_else(|| format!("{file} has no rules"))?;
    serde_json::to_string(rules).map_err(|e| format!("{file}: rules: {e}"))
}

/// SIGTERM, then waits (bounded); SIGKILL if it does not stop.
pub fn stop(process: &mut Process, within: Duration) {
    if process.terminate(within).is_none() {
        eprintln!(
            "e2e: {} did not stop within {within:?} of SIGTERM; killing it",
            process.label()
        );
        process.kill9();
    }
}

impl Bench {
    /// The raw copy on `topic`; `again` for its second run there (after
    /// tailgate's).
    pub fn run_copy(
        &mut self,
        w: &Workload,
        topic: &Topic,
        again: bool,
    ) -> Result<Figures, String> {
        let label = format!(
            "raw copy, {}{}",
            partitions(topic.partitions),
            if again { ", again" } else { "" }
        );
        let output = self.kafka.create_topic(&unique("e2e-copy-out"), 4)?;
        let group = unique("e2e-copy");
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.env(ROLE_ENV, "copy")
            .env("E2E_BROKERS", &self.kafka.brokers)
            .env("E2E_INPUT", &topic.name)
            .env("E2E_OUTPUT", &output.name)
            .env("E2E_GROUP", &group)
            .env("E2E_MAX_SECONDS", "3600");
        let log = self
            .dir
            .join(format!("copy-{}-{}.log", topic.partitions, u8::from(again)));
        let mut process = spawn(cmd, log, &label)?;
        eprintln!("e2e: running {label} (pid {})...", process.pid());
        let drain_s = self.wait_drained(
            &mut process,
            &group,
            topic,
            self.drain_limit(w, Duration::ZERO),
            |_| {},
        )?;
        let figures = Figures {
            cpu_s: process.cpu_seconds()?,
            drain_s,
            peak_rss: process.peak_rss()?,
            spans: w.total_spans(),
        };
        stop(&mut process, Duration::from_secs(20));
        eprintln!(
            "e2e: {label}: {:.2} CPU s, {:.0} spans/CPU-s, drained in {:.1} s, peak RSS {:.1} MiB",
            figures.cpu_s,
            figures.spans_per_cpu_s(),
            figures.drain_s,
            figures.peak_rss as f64 / MIB
        );
        let forwarded: i64 = self
            .kafka
            .watermarks(&output.name, output.partitions)?
            .iter()
            .map(|(l, h)| h - l)
            .sum();
        let fraction = w.copy_traces as f64 / w.traces() as f64;
        self.checks.push(Check {
            asserted: true,
            run: label,
            what: "forwards the messages of every tenth trace (by key hash)".into(),
            ok: forwarded as usize == w.copy_messages && (fraction - 0.1).abs() < 0.02,
            detail: format!(
                "{forwarded} messages forwarded, {} expected: {} traces, {:.2} % of {}",
                w.copy_messages,
                w.copy_traces,
                fraction * 100.0,
                w.traces()
            ),
        });
        Ok(figures)
    }

    /// A policy directory with `bench.yaml` for one tailgate run.
    fn policy_dir(
        &self,
        group: &str,
        input: &str,
        output: &str,
        port: u16,
        s: &TailgateSettings,
    ) -> Result<PathBuf, String> {
        let dir = self.dir.join(unique("e2e-tailgate"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let yaml = format!(
            "kafka:
  brokers: {brokers}
  group_id: {group}
  input_topic: {input}
  output_topic: {output}
  compression: lz4
  commit_interval: {commit}
  drain_timeout: 10s
  decision_log: {decision_log}
  exactly_once: {exactly_once}
buffer:
  max_bytes: {max_bytes}
decision:
  clock: {clock}
  wait: {wait}
  after_root: {after_root}
  clock_ahead: {clock_ahead}
  max_trace_age: {max_age}
output:
  critical_path: {critical_path}
metrics:
  listen: 127.0.0.1:{port}
  critical_path: {critical_path}
rules: {rules}
",
            brokers = self.kafka.brokers,
            commit = ms(COMMIT_INTERVAL),
            max_bytes = s.max_bytes,
            clock = match s.clock {
                ClockMode::Stream => "stream",
                ClockMode::Wall => "wall",
            },
            wait = ms(s.wait),
            after_root = ms(s.after_root),
            // Shorter than the waits it protects, whatever `--after-root-ms`.
            clock_ahead = ms(s.after_root.min(s.wait) / 4),
            max_age = ms(s.max_trace_age),
            decision_log = s.variant != Variant::NoDecisionLog,
            exactly_once = s.variant == Variant::ExactlyOnce,
            critical_path = s.variant != Variant::NoCriticalPath,
            rules = match s.variant {
                Variant::Production => production_rules()?,
                _ => RULES.to_string(),
            },
        );
        let file = dir.join("bench.yaml");
        std::fs::write(&file, yaml).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        Ok(dir)
    }

    /// Starts `tailgate run` from `input` to `output`: (tailgate, group).
    pub fn spawn_tailgate(
        &self,
        label: &str,
        input: &Topic,
        output: &str,
        s: &TailgateSettings,
    ) -> Result<(Tailgate, String), String> {
        let group = unique("e2e-tailgate");
        let port = free_port();
        let dir = self.policy_dir(&group, &input.name, output, port, s)?;
        let mut cmd = Command::new(tailgate_bin!());
        cmd.args(["run", "--env", "bench", "--policies"]).arg(&dir);
        let process = spawn(cmd, dir.join("tailgate.log"), label)?;
        eprintln!("e2e: running {label} (pid {})...", process.pid());
        Ok((Tailgate::attach(process, port), group))
    }

    /// Runs tailgate on `topic`, which holds the first `n` traces of `w`,
    /// until it is drained; checks its output.
    pub fn run_tailgate(
        &mut self,
        w: &Workload,
        n: usize,
        topic: &Topic,
        label: &str,
        s: &TailgateSettings,
    ) -> Result<TailgateFigures, String> {
        // Created ahead, so that tailgate's first produce does not wait for auto-creation.
        let output = self.kafka.create_topic(&unique("e2e-tg-out"), 4)?;
        let (mut tailgate, group) = self.spawn_tailgate(label, topic, &output.name, s)?;
        let port = tailgate.metrics_port();
        let total = w.spans_of(n) as f64;
        let mut f = TailgateFigures {
            decision_wait: s.after_root.min(s.wait),
            startup_cpu_s: self.results.startup_cpu_s,
            clock: s.clock,
            variant: s.variant,
            ..Default::default()
        };
        let mut last_scrape: Option<Instant> = None;
        let mut previous: Option<(f64, f64)> = None;
        // What each scrape saw, for a closer look (the run's directory).
        let mut series = String::from(
            "seconds,cpu_seconds,spans_received,buffered_traces,traces_decided,spans_produced\n",
        );
        let drain_s = self.wait_drained(
            tailgate.process_mut(),
            &group,
            topic,
            self.drain_limit(w, s.wait),
            |p| {
                if last_scrape.is_some_and(|at| at.elapsed() < SCRAPE_EVERY) {
                    return;
                }
                last_scrape = Some(Instant::now());
                if let Some(m) = Metrics::scrape(port) {
                    let traces = m.sum("tailgate_buffered_traces", &[]);
                    let received = m.sum("tailgate_spans_received_total", &[]);
                    f.peak_traces = f.peak_traces.max(traces);
                    f.peak_spans = f.peak_spans.max(m.sum("tailgate_buffered_spans", &[]));
                    f.peak_bytes = f.peak_bytes.max(m.sum("tailgate_buffered_bytes", &[]));
                    let now = p.started().elapsed().as_secs_f64();
                    if f.ingest_s.is_none() && received >= total {
                        f.ingest_s = Some(now);
                    }
                    if let Some((t, r)) = previous {
                        if now > t {
                            f.peak_ingest = f.peak_ingest.max((received - r) / (now - t));
                        }
                    }
                    previous = Some((now, received));
                    let _ = writeln!(
                        series,
                        "{:.3},{:.2},{received},{traces},{},{}",
                        p.started().elapsed().as_secs_f64(),
                        p.cpu_seconds().unwrap_or(f64::NAN),
                        m.sum("tailgate_traces_decided_total", &[]),
                        m.sum("tailgate_spans_produced_total", &[]),
                    );
                }
            },
        )?;
        f.run = Figures {
            cpu_s: tailgate.process().cpu_seconds()?,
            drain_s,
            peak_rss: tailgate.process().peak_rss()?,
            spans: w.spans_of(n),
        };
        let m = tailgate.metrics().unwrap_or_default();
        let csv = tailgate.log().with_file_name("metrics.csv");
        if let Err(e) = std::fs::write(&csv, &series) {
            eprintln!("e2e: cannot write {}: {e}", csv.display());
        }
        f.lateness = m.buckets("tailgate_decision_lateness_seconds");
        f.decided_memory = m.sum("tailgate_traces_decided_total", &[("reason", "memory")]);
        f.parts.late_kept = m.sum("tailgate_late_spans_total", &[("decision", "keep")]);
        f.parts.late_dropped = m.sum("tailgate_late_spans_total", &[("decision", "drop")]);
        f.parts.decided = if m.text().is_empty() {
            f64::NAN
        } else {
            m.sum("tailgate_traces_decided_total", &[])
        };
        f.parts.traces = n;
        stop(tailgate.process_mut(), Duration::from_secs(30));
        eprintln!(
            "e2e: {label}: {:.2} CPU s, {:.0} spans/CPU-s, drained in {:.1} s (decision wait {:.1} s), \
             peak RSS {:.1} MiB, peak {:.0} traces buffered, p99 lateness {}",
            f.run.cpu_s,
            f.run.spans_per_cpu_s(),
            f.run.drain_s,
            f.decision_wait.as_secs_f64(),
            f.run.peak_rss as f64 / MIB,
            f.peak_traces,
            f.p99()
        );
        self.check_output(w, n, label, &output.name, &mut f)?;
        eprintln!("e2e: {label}: {}", f.parts.summary());
        Ok(f)
    }
}
