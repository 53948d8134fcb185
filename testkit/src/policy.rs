//! The settings and rules a test runs `tailgate run` with.

use crate::broker::bootstrap;

/// The rules most tests run: errors, slow traces, a tenth of the rest.
pub const RULES: &str = "[{name: errors, when: {trace: {error: true}}, sample: keep}, \
                         {name: slow, when: {trace: {duration: {gt: 1s}}}, sample: keep}, \
                         {name: baseline, sample: {rate: 0.1}}]";

/// A policy directory with `test.yaml` (`--env test`).
pub fn policy_dir(settings_yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("test.yaml"), settings_yaml).expect("write policy");
    dir
}

/// A settings file for `tailgate run` against the test broker: short decision
/// times, quick commits, a session timeout short enough that a killed member
/// is replaced within seconds.
pub fn settings(
    group: &str,
    input: &str,
    output: &str,
    rules: &str,
    wait: &str,
    dead_letter_topic: Option<&str>,
) -> String {
    let dead_letter = dead_letter_topic
        .map(|t| format!("\n  dead_letter_topic: {t}"))
        .unwrap_or_default();
    format!(
        "kafka:
  brokers: {broker}
  group_id: {group}
  input_topic: {input}
  output_topic: {output}{dead_letter}
  commit_interval: 500ms
  drain_timeout: 20s
  consumer_options: ['session.timeout.ms=6000', 'heartbeat.interval.ms=500']
decision:
  wait: {wait}
  after_root: 1s
  max_trace_age: 30s
rules: {rules}
",
        broker = bootstrap()
    )
}
