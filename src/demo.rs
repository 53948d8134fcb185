//! `tailgate demo` and `tailgate gen`: the synthetic shop workload on an
//! in-process Kafka (librdkafka's mock cluster) or on a real broker.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::config::{Settings, Sources};
use crate::otlp::Encoding;
use crate::workload::{encode, ShopWorkload};

/// The demo's rules, used when `policies/demo.yaml` is not at hand.
pub const DEMO_POLICY: &str = include_str!("../policies/demo.yaml");

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()
        .context("cannot create the workload producer")
}

/// Produces `traces` shop traces to `topic`, one message per resource and
/// trace keyed by trace id. Returns the number of messages.
/// Writes `traces` shop traces to a file as the capture `tailgate replay`
/// and `tailgate explain` read: OTLP JSON, one message per line (the
/// Collector's file exporter format). Returns the number of messages.
pub fn generate_file(path: &std::path::Path, traces: u64, seed: u64) -> anyhow::Result<u64> {
    use std::io::Write as _;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut workload = ShopWorkload::new(seed);
    let start = unix_nanos();
    let mut messages = 0;
    for i in 0..traces {
        let t = workload.next_trace(start + i * 1_000_000);
        for m in &t.messages {
            out.write_all(&encode(m, Encoding::OtlpJson))?;
            out.write_all(b"\n")?;
            messages += 1;
        }
    }
    out.flush()?;
    Ok(messages)
}

pub async fn generate(
    brokers: &str,
    topic: &str,
    traces: u64,
    seed: u64,
    encoding: Encoding,
) -> anyhow::Result<u64> {
    let producer = producer(brokers)?;
    let mut workload = ShopWorkload::new(seed);
    let mut pending = FuturesUnordered::new();
    let mut messages = 0u64;
    let start = unix_nanos();
    for i in 0..traces {
        let t = workload.next_trace(start + i * 1_000_000);
        let key = t.truth.trace_id.to_hex();
        for m in &t.messages {
            let payload = encode(m, encoding);
            let producer = producer.clone();
            let key = key.clone();
            let topic = topic.to_string();
            pending.push(async move {
                producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(&payload),
                        rdkafka::util::Timeout::Never,
                    )
                    .await
                    .map_err(|(e, _)| e)
            });
            messages += 1;
            if pending.len() >= 10_000 {
                if let Some(r) = pending.next().await {
                    r.context("produce failed")?;
                }
            }
        }
    }
    while let Some(r) = pending.next().await {
        r.context("produce failed")?;
    }
    Ok(messages)
}

/// Per-rule totals read back from the Prometheus text.
#[derive(Default, Debug)]
struct RuleRow {
    kept_traces: f64,
    dropped_traces: f64,
    kept_spans: f64,
    dropped_spans: f64,
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let end = labels[start..].find('"')? + start;
    Some(&labels[start..end])
}

/// Sums `tailgate_traces_decided_total` and `tailgate_spans_decided_total` by rule.
fn table(metrics_text: &str) -> BTreeMap<String, RuleRow> {
    let mut rows: BTreeMap<String, RuleRow> = BTreeMap::new();
    for line in metrics_text.lines() {
        let traces = line.starts_with("tailgate_traces_decided_total{");
        let spans = line.starts_with("tailgate_spans_decided_total{");
        if !traces && !spans {
            continue;
        }
        let (Some(open), Some(close)) = (line.find('{'), line.rfind('}')) else {
            continue;
        };
        let labels = &line[open + 1..close];
        let value: f64 = line[close + 1..].trim().parse().unwrap_or(0.0);
        let (Some(rule), Some(decision)) = (label(labels, "rule"), label(labels, "decision"))
        else {
            continue;
        };
        let row = rows.entry(rule.to_string()).or_default();
        match (traces, decision) {
            (true, "keep") => row.kept_traces += value,
            (true, _) => row.dropped_traces += value,
            (false, "keep") => row.kept_spans += value,
            (false, _) => row.dropped_spans += value,
        }
    }
    rows
}

/// What the demo's backend has read from the output topic.
#[derive(Debug, Clone, Default, PartialEq)]
struct Seen {
    messages: u64,
    spans: u64,
    /// Kept traces whose critical path is over [`SLOW_MS`], by the service
    /// written on them as dominating it: how many, and their shares summed.
    slow: BTreeMap<String, (u64, f64)>,
}

/// A critical path this long makes a trace slow, for the demo's table.
const SLOW_MS: f64 = 1000.0;

impl Seen {
    /// Counts one output message: its spans, and the critical-path summary
    /// a kept trace's root carries.
    fn add(&mut self, d: &crate::otlp::Decoded) {
        use crate::otlp::annotate::{DURATION_ATTRIBUTE, SERVICE_ATTRIBUTE, SHARE_ATTRIBUTE};
        use crate::otlp::AttrValue;
        self.messages += 1;
        self.spans += d.spans.len() as u64;
        for (_, s) in &d.spans {
            let (Some(AttrValue::Str(service)), Some(AttrValue::Double(ms))) = (
                s.attribute(SERVICE_ATTRIBUTE),
                s.attribute(DURATION_ATTRIBUTE),
            ) else {
                continue;
            };
            if ms > SLOW_MS {
                let share = match s.attribute(SHARE_ATTRIBUTE) {
                    Some(AttrValue::Double(share)) => share,
                    _ => 0.0,
                };
                let e = self.slow.entry(service.to_string()).or_default();
                e.0 += 1;
                e.1 += share;
            }
        }
    }

    /// "fraud-detection 14 (93 % of the path on average), gateway 1 (…)".
    fn slow_line(&self) -> Option<String> {
        let mut by: Vec<(&String, &(u64, f64))> = self.slow.iter().collect();
        by.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then_with(|| a.0.cmp(b.0)));
        let cells: Vec<String> = by
            .iter()
            .map(|(service, (n, shares))| {
                format!(
                    "{service} {n} ({:.0} % of the path on average)",
                    100.0 * shares / *n as f64
                )
            })
            .collect();
        (!cells.is_empty()).then(|| cells.join(", "))
    }
}

fn print_table(
    order: &[String],
    text: &str,
    produced: (u64, u64),
    output: &Seen,
    elapsed: Duration,
) {
    let rows = table(text);
    println!();
    println!(
        "── after {:>3}s ─────────────────────────────────────────────────────────",
        elapsed.as_secs()
    );
    println!(
        "{:<22} {:>12} {:>14} {:>12} {:>14}",
        "rule", "kept traces", "dropped traces", "kept spans", "dropped spans"
    );
    let (mut kt, mut dt, mut ks, mut ds) = (0.0, 0.0, 0.0, 0.0);
    for name in order {
        let r = rows.get(name.as_str());
        let g = |f: fn(&RuleRow) -> f64| r.map(f).unwrap_or(0.0);
        let (a, b, c, d) = (
            g(|r| r.kept_traces),
            g(|r| r.dropped_traces),
            g(|r| r.kept_spans),
            g(|r| r.dropped_spans),
        );
        kt += a;
        dt += b;
        ks += c;
        ds += d;
        println!("{name:<22} {a:>12} {b:>14} {c:>12} {d:>14}");
    }
    println!("{:<22} {kt:>12} {dt:>14} {ks:>12} {ds:>14}", "total");
    let reduction = if ks + ds > 0.0 {
        100.0 * ds / (ks + ds)
    } else {
        0.0
    };
    println!(
        "input: {} traces, {} spans · output topic: {} messages, {} spans · spans dropped: {reduction:.1}%",
        produced.0, produced.1, output.messages, output.spans
    );
    println!(
        "slow traces kept (critical path over 1 s), by the service that dominates it: {}",
        output.slow_line().unwrap_or_else(|| "none yet".into())
    );
}

/// Runs the demo for `duration`.
pub async fn run(
    duration: Duration,
    rate: u32,
    listen: SocketAddr,
    policies: &Path,
) -> anyhow::Result<()> {
    // Fail at once, not after the run, if the metrics address is taken.
    drop(std::net::TcpListener::bind(listen).with_context(|| {
        format!("cannot listen on {listen} for /metrics; pick another address with --listen")
    })?);
    let cluster = MockCluster::new(1).context("cannot start librdkafka's mock cluster")?;
    let brokers = cluster.bootstrap_servers();
    cluster
        .create_topic("otlp_spans", 4, 1)
        .context("create otlp_spans")?;
    cluster
        .create_topic("otlp_spans_sampled", 1, 1)
        .context("create otlp_spans_sampled")?;
    // The mock cluster does not take admin requests: the decision log's
    // topic is made here, as tailgate would make it on a real broker.
    cluster
        .create_topic("tailgate_decisions", 4, 1)
        .context("create tailgate_decisions")?;

    let file = policies.join("demo.yaml");
    let (_tmp, file) = if file.exists() {
        (None, file)
    } else {
        let dir = std::env::temp_dir().join(format!("tailgate-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let f = dir.join("demo.yaml");
        std::fs::write(&f, DEMO_POLICY)?;
        (Some(dir), f)
    };
    let mut loaded = Settings::load(&Sources {
        files: vec![file.clone()],
        environment: false,
        overrides: Vec::new(),
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    loaded.settings.kafka.brokers = brokers.clone();
    loaded.settings.metrics.listen = listen;
    let order: Vec<String> = loaded.rules.names().iter().map(|n| n.to_string()).collect();
    println!(
        "tailgate demo: in-process Kafka at {brokers}, rules from {}",
        file.display()
    );
    println!("a small shop: gateway → profile-service → fraud-detection → third-party API (sometimes slow),");
    println!(
        "orders published to Kafka for search-indexer and notifier; some errors; health checks."
    );
    println!(
        "metrics: http://{listen}/metrics · {rate} traces/s for {}",
        humantime::format_duration(duration)
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut app_stop = stop_rx.clone();
    let app = tokio::spawn(crate::app::run(
        loaded,
        async move {
            let _ = app_stop.wait_for(|s| *s).await;
        },
        Default::default(),
    ));

    // The workload: `rate` traces per second, in ticks of 100 ms.
    let producer = producer(&brokers)?;
    let produced = std::sync::Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let gen_count = produced.clone();
    let (gen_stop_tx, mut gen_stop) = tokio::sync::watch::channel(false);
    let generator = tokio::spawn(async move {
        let mut workload = ShopWorkload::new(42);
        workload.health_rate = 0.1;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let per_tick = (rate / 10).max(1);
        loop {
            tokio::select! {
                _ = gen_stop.wait_for(|s| *s) => break,
                _ = tick.tick() => {}
            }
            let mut sends = FuturesUnordered::new();
            for _ in 0..per_tick {
                let t = workload.next_trace(unix_nanos());
                let key = t.truth.trace_id.to_hex();
                for m in &t.messages {
                    let payload = encode(m, Encoding::OtlpProto);
                    let producer = producer.clone();
                    let key = key.clone();
                    sends.push(async move {
                        producer
                            .send(
                                FutureRecord::to("otlp_spans").key(&key).payload(&payload),
                                rdkafka::util::Timeout::Never,
                            )
                            .await
                    });
                }
                if let Ok(mut c) = gen_count.lock() {
                    c.0 += 1;
                    c.1 += t.truth.spans as u64;
                }
            }
            while let Some(r) = sends.next().await {
                if let Err((e, _)) = r {
                    tracing::warn!("demo workload produce failed: {e}");
                }
            }
        }
    });

    // Read the output topic back, as the tracing backend would.
    // Assigned, not subscribed: no group to leave, so it closes at once.
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "demo-backend")
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create the demo's output reader")?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("otlp_spans_sampled", 0, rdkafka::Offset::Beginning)?;
    reader.assign(&tpl)?;
    let output = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let out_count = output.clone();
    let reader_task = tokio::spawn(async move {
        loop {
            if let Ok(m) = reader.recv().await {
                let decoded = m
                    .payload()
                    .and_then(|p| crate::otlp::decode(bytes::Bytes::copy_from_slice(p)).ok());
                if let (Some(d), Ok(mut seen)) = (decoded, out_count.lock()) {
                    seen.add(&d);
                }
            }
        }
    });

    let handle = crate::app::http::install();
    let started = tokio::time::Instant::now();
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.tick().await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(started + duration) => break,
            _ = every.tick() => {
                let p = *produced.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                let o = output.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
                print_table(&order, &handle.render(), p, &o, started.elapsed());
            }
            r = tokio::signal::ctrl_c() => { r?; break; }
        }
    }
    // Stop the workload, then tailgate (which drains its produces), then give
    // the reader a moment to see the last kept traces.
    let _ = gen_stop_tx.send(true);
    generator.await?;
    let _ = stop_tx.send(true);
    app.await??;
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader_task.abort();
    // The reader's consumer must be closed while the in-process broker still runs.
    let _ = reader_task.await;
    let p = *produced.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let o = output
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    print_table(&order, &handle.render(), p, &o, started.elapsed());
    println!("(traces still within their decision wait at the end are not counted; a real deployment decides them after restart)");
    drop(cluster);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sums_reasons_per_rule() {
        let text = r#"
tailgate_traces_decided_total{rule="errors",decision="keep",reason="wait"} 3
tailgate_traces_decided_total{rule="errors",decision="keep",reason="after_root"} 2
tailgate_traces_decided_total{rule="baseline",decision="drop",reason="wait"} 7
tailgate_spans_decided_total{rule="errors",decision="keep"} 35
"#;
        let t = table(text);
        assert_eq!(t["errors"].kept_traces, 5.0);
        assert_eq!(t["errors"].kept_spans, 35.0);
        assert_eq!(t["baseline"].dropped_traces, 7.0);
    }

    /// The demo's backend reads the summary off the kept traces' roots: a
    /// slow shop trace counts for fraud-detection with its share, a fast
    /// one not at all.
    #[test]
    fn slow_kept_traces_are_counted_by_their_dominant_service() {
        use crate::otlp::{annotate::append_to_spans, decode, encode_trace, Annotation};
        use crate::rules::{CriticalPath, PathSummary};
        let mut seen = Seen::default();
        let mut shares = Vec::new();
        for (seed, slow) in [(1, true), (2, false), (3, true)] {
            let mut shop = ShopWorkload::new(seed);
            shop.slow_rate = if slow { 1.0 } else { 0.0 };
            shop.error_rate = 0.0;
            let t = shop.next_trace(1_700_000_000_000_000_000);
            let mut spans: Vec<_> = t
                .messages
                .iter()
                .flat_map(|m| {
                    decode(bytes::Bytes::from(encode(m, Encoding::OtlpProto)))
                        .expect("valid")
                        .spans
                })
                .map(|(_, s)| s)
                .collect();
            let p = PathSummary::of(&CriticalPath::of(&spans), &spans).expect("spans");
            if slow {
                shares.push(p.share());
            }
            let attributes = p.attributes(&spans);
            append_to_spans(&mut spans, &attributes);
            let (payload, _) =
                encode_trace(&spans, &Annotation::new("r", 1.0), Encoding::OtlpProto);
            seen.add(&decode(bytes::Bytes::from(payload)).expect("output decodes"));
        }
        assert_eq!(seen.messages, 3);
        assert_eq!(seen.slow.len(), 1, "{:?}", seen.slow);
        let (n, sum) = seen.slow["fraud-detection"];
        assert_eq!(n, 2);
        assert!((sum - shares.iter().sum::<f64>()).abs() < 1e-12);
        assert!(seen
            .slow_line()
            .is_some_and(|l| l.starts_with("fraud-detection 2 (")));
    }
}
