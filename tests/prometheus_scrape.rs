//! A real scrape: Debian's Prometheus (`/usr/bin/prometheus`, installed by
//! `scripts/setup`) scrapes a running tailgate every second while it samples
//! traffic on the real broker, with the alert rules of
//! `deploy/prometheus/tailgate-alerts.yaml` loaded. Then the queries an
//! operator relies on run against Prometheus's HTTP API: keep and drop rates
//! per rule, the buffer against its budget, decision latency, and every query
//! of the Grafana dashboard (`deploy/grafana/tailgate.json`) — each must
//! return data, so a renamed metric or a broken expression fails here rather
//! than on a blank panel in production.
#![cfg(feature = "kafka-tests")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tailgate::otlp::Encoding;
use tailgate_testkit::*;

/// The repository's alert rules and dashboard.
fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// One sample of an instant query: its labels and value.
#[derive(Debug, Clone)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A Prometheus server on a loopback port of its own, with its own config and
/// storage in a temporary directory; killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `127.0.0.1:<target_port>` every second, with
    /// the alert rules loaded, and waits until it is ready.
    fn start(target_port: u16) -> Self {
        let binary = std::env::var("TAILGATE_TEST_PROMETHEUS")
            .unwrap_or_else(|_| "/usr/bin/prometheus".to_string());
        assert!(
            Path::new(&binary).exists(),
            "{binary} not found: run scripts/setup (Debian package prometheus), \
             or point TAILGATE_TEST_PROMETHEUS at a prometheus binary"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: tailgate
    static_configs:
      - targets: ['127.0.0.1:{target_port}']
",
                rules = repo_file("deploy/prometheus/tailgate-alerts.yaml").display()
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let prometheus = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = prometheus.get("/-/ready") {
                return prometheus;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 30s:\n{}",
                prometheus.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET a path: (status, body).
    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path, Duration::from_secs(10))
    }

    /// GET an API path and return its `data`, or why not.
    fn api(&self, path: &str) -> Result<Value, String> {
        let (code, body) = self
            .get(path)
            .ok_or_else(|| format!("no answer from prometheus for {path}"))?;
        let json: Value = serde_json::from_str(&body)
            .map_err(|e| format!("{path}: HTTP {code}, not JSON ({e}): {body}"))?;
        if json["status"] != "success" {
            return Err(format!("{path}: HTTP {code}: {body}"));
        }
        Ok(json["data"].clone())
    }

    /// An instant query at the current time.
    fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(promql)))?;
        if data["resultType"] == "scalar" {
            return Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: number(&data["result"][1])?,
            }]);
        }
        let result = data["result"]
            .as_array()
            .ok_or_else(|| format!("{promql}: result is not a vector: {data}"))?;
        result
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Sample {
                    labels,
                    value: number(&r["value"][1])?,
                })
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus sends sample values as strings ("1.5", "NaN", "+Inf").
fn number(v: &Value) -> Result<f64, String> {
    v.as_str()
        .ok_or_else(|| format!("sample value {v} is not a string"))?
        .parse()
        .map_err(|e| format!("sample value {v}: {e}"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every `expr` of the dashboard's panels, with Grafana's variables replaced
/// as Grafana would for a one-minute range: `$__rate_interval` by `1m` and
/// each template variable by `.*` (its "All" value).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo_file("deploy/grafana/tailgate.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut variables: Vec<String> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| v["name"].as_str().expect("variable name").to_string())
        .collect();
    // Longest first, so that `$jobs` would not be cut by `$job`.
    variables.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let substitute = |expr: &str| {
        let mut e = expr
            .replace("${__rate_interval}", "1m")
            .replace("$__rate_interval", "1m");
        for v in &variables {
            e = e
                .replace(&format!("${{{v}}}"), ".*")
                .replace(&format!("${v}"), ".*");
        }
        assert!(!e.contains('$'), "a variable left in {e}");
        e
    };
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            queries.push((
                format!(
                    "{} [{}]",
                    panel["title"].as_str().unwrap_or("?"),
                    target["refId"].as_str().unwrap_or("?")
                ),
                substitute(expr),
            ));
        }
    }
    queries
}

/// Sum of a query's values, or why there are none.
fn sum_of(p: &Prometheus, promql: &str) -> Result<f64, String> {
    let samples = p.query(promql)?;
    if samples.is_empty() {
        return Err(format!("no data for {promql}"));
    }
    Ok(samples.iter().map(|s| s.value).sum())
}

/// The value of `rule` in a `sum by (rule)` query, or 0.
fn by_rule(samples: &[Sample], rule: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.labels.get("rule").map(String::as_str) == Some(rule))
        .map(|s| s.value)
        .sum()
}

/// Everything the test expects of Prometheus's view, as a list of failures
/// (empty when all hold).
fn check(p: &Prometheus, dashboard: &[(String, String)], budget: u64) -> Vec<String> {
    let mut failures = Vec::new();
    let mut fail = |what: String| failures.push(what);

    // The target is up and every alert rule evaluates without an error.
    match p.query(r#"up{job="tailgate"}"#) {
        Ok(s) if s.len() == 1 && s[0].value == 1.0 => {}
        other => fail(format!("tailgate target not up: {other:?}")),
    }
    match p.api("/api/v1/rules") {
        Ok(data) => {
            let rules: Vec<&Value> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            let file = std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/prometheus/tailgate-alerts.yaml"
            ))
            .expect("alert rules file");
            let expected = file
                .lines()
                .filter(|l| l.trim_start().starts_with("- alert:"))
                .count();
            if rules.len() != expected {
                fail(format!(
                    "{} alert rules loaded, expected the file's {expected}",
                    rules.len()
                ));
            }
            for r in rules {
                if r["health"] != "ok" {
                    fail(format!(
                        "alert {} health {} ({})",
                        r["name"], r["health"], r["lastError"]
                    ));
                }
            }
        }
        Err(e) => fail(e),
    }

    // Keep and drop rates per rule. RULES keeps every error, every slow trace
    // and a tenth of the rest, which it drops nine times in ten.
    match p.query(r#"sum by (rule, decision) (rate(tailgate_traces_decided_total[1m]))"#) {
        Ok(s) => {
            let keep: Vec<Sample> = s
                .iter()
                .filter(|x| x.labels["decision"] == "keep")
                .cloned()
                .collect();
            let drop: Vec<Sample> = s
                .iter()
                .filter(|x| x.labels["decision"] == "drop")
                .cloned()
                .collect();
            for rule in ["errors", "baseline"] {
                if by_rule(&keep, rule) <= 0.0 {
                    fail(format!("no keep rate for rule {rule}: {s:?}"));
                }
            }
            if by_rule(&drop, "baseline") <= by_rule(&keep, "baseline") {
                fail(format!(
                    "baseline drops {} traces/s, not more than it keeps ({})",
                    by_rule(&drop, "baseline"),
                    by_rule(&keep, "baseline")
                ));
            }
            if by_rule(&drop, "errors") != 0.0 {
                fail(format!("rule errors dropped traces: {s:?}"));
            }
        }
        Err(e) => fail(e),
    }

    // Buffer bytes against the budget.
    match sum_of(p, "sum(tailgate_buffer_budget_bytes)") {
        Ok(b) if b == budget as f64 => {}
        other => fail(format!("budget {other:?}, expected {budget}")),
    }
    match sum_of(
        p,
        "max_over_time(sum(tailgate_buffered_bytes)[1m:1s]) / sum(tailgate_buffer_budget_bytes)",
    ) {
        Ok(share) if share > 0.0 && share < 1.0 => {}
        other => fail(format!(
            "buffered bytes over the last minute / budget: {other:?}, expected within (0, 1)"
        )),
    }

    // Decision latency: a finite p50 and p99, p50 <= p99.
    let quantile = |q: f64| {
        sum_of(
            p,
            &format!(
                "histogram_quantile({q}, sum by (le) (rate(tailgate_decision_lateness_seconds_bucket[1m])))"
            ),
        )
    };
    match (quantile(0.5), quantile(0.99)) {
        (Ok(p50), Ok(p99)) if p50.is_finite() && p99.is_finite() && 0.0 <= p50 && p50 <= p99 => {}
        other => fail(format!("decision latency p50, p99: {other:?}")),
    }

    // Output reduction: some spans go out, fewer than come in.
    match sum_of(
        p,
        "sum(rate(tailgate_spans_produced_total[1m])) / sum(rate(tailgate_spans_received_total[1m]))",
    ) {
        Ok(r) if r > 0.0 && r < 1.0 => {}
        other => fail(format!("spans produced / received: {other:?}")),
    }

    // Latency attribution, on every decided trace: the shop's slow traces
    // wait on fraud-detection's third-party call (1.5-3 s, one trace in
    // twenty), so it dominates some traces and its p99 time on the path is
    // over a second; every trace's root is the gateway's; five services fit
    // metrics.max_services, so none is folded.
    match p.query("sum by (service) (rate(tailgate_critical_path_dominant_total[1m]))") {
        Ok(s)
            if s.iter().any(|x| {
                x.labels.get("service").map(String::as_str) == Some("fraud-detection")
                    && x.value > 0.0
            }) => {}
        other => fail(format!("no traces dominated by fraud-detection: {other:?}")),
    }
    match sum_of(
        p,
        r#"histogram_quantile(0.99, sum by (le) (rate(tailgate_critical_path_seconds_bucket{service="fraud-detection"}[1m])))"#,
    ) {
        Ok(p99) if p99.is_finite() && p99 > 1.0 => {}
        other => fail(format!(
            "fraud-detection's p99 time on the critical path: {other:?}, expected over 1 s"
        )),
    }
    match p.query("sum by (root_service) (rate(tailgate_trace_duration_seconds_count[1m]))") {
        Ok(s)
            if s.len() == 1
                && s[0].labels.get("root_service").map(String::as_str) == Some("gateway")
                && s[0].value > 0.0 => {}
        other => fail(format!("trace durations by root service: {other:?}")),
    }
    match sum_of(p, "sum(tailgate_critical_path_services_folded_total)") {
        Ok(0.0) => {}
        other => fail(format!("services folded: {other:?}, expected 0")),
    }

    // Every dashboard query returns data.
    for (panel, expr) in dashboard {
        match p.query(expr) {
            Ok(s) if !s.is_empty() => {}
            Ok(_) => fail(format!("dashboard panel {panel}: no data for {expr}")),
            Err(e) => fail(format!("dashboard panel {panel}: {e}")),
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_tailgate_and_every_dashboard_query_and_alert_works() {
    let started = Instant::now();
    let dashboard = dashboard_queries();
    assert!(
        dashboard.len() >= 10,
        "only {} dashboard queries",
        dashboard.len()
    );

    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, 4).await;
    create_topic(&output, 1).await;
    let dir = policy_dir(&settings(&group, &input, &output, RULES, "2s", None));
    let mut tailgate = Tailgate::start(tailgate_bin!(), dir.path(), free_port(), "tailgate.log");
    tailgate.wait_ready(Duration::from_secs(30));
    let prometheus = Prometheus::start(tailgate.metrics_port());

    // Traffic for as long as the checks need it (at most 120 batches): 60
    // traces a second, in one-second batches, plus a malformed message now
    // and then so that decode errors are counted too.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (stop, input) = (stop.clone(), input.clone());
        tokio::spawn(async move {
            let w = Workload::shop(42, 120 * 60);
            for (i, batch) in w.traces.chunks(60).enumerate() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                produce_traces(&input, batch, |_| Encoding::OtlpProto).await;
                if i % 10 == 0 {
                    produce_raw(&input, "bad", b"not OTLP at all").await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    // Rates need two scrapes of decided traffic, and a trace is decided two
    // seconds after its first span at the earliest: retry the checks until
    // they all hold, within a deadline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let failures = loop {
        let failures = check(&prometheus, &dashboard, 512 * 1024 * 1024);
        if failures.is_empty() || Instant::now() > deadline {
            break failures;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    stop.store(true, Ordering::Relaxed);
    producer.await.expect("producer task");
    assert!(
        failures.is_empty(),
        "after {:?}:\n  {}\n---- tailgate log (tail) ----\n{}\n---- prometheus log (tail) ----\n{}",
        started.elapsed(),
        failures.join("\n  "),
        tail(&tailgate.log_text(), 30),
        tail(&prometheus.log_text(), 30),
    );
    eprintln!(
        "{} dashboard queries and the operator's queries returned data after {:?}",
        dashboard.len(),
        started.elapsed()
    );
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
