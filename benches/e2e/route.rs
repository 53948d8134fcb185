//! The route phase: `tailgate route` on the workload as the Collector's
//! exporter writes it without `partition_traces_by_id` — unkeyed batches of
//! 12 messages (a protobuf `TracesData` is its `resource_spans` repeated, so
//! the batch is the messages' bytes one after the other), round-robin over
//! 4 partitions — measured as a whole process like the copy, and its output
//! checked: every span once, every message one trace's, keyed by it.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use tailgate::otlp;
use tailgate_testkit::{free_port, tailgate_bin, unique, Tailgate};

use crate::bench::Bench;
use crate::figures::{Check, Figures};
use crate::kafka::Topic;
use crate::runs::stop;
use crate::workload::Workload;
use crate::{COMMIT_INTERVAL, MIB};

/// Messages per unkeyed batch.
pub const BATCH: usize = 12;

impl Bench {
    pub fn route_phase(&mut self, w: &Workload) -> Result<(), String> {
        let mut unkeyed = self.kafka.create_topic(&unique("e2e-unkeyed"), 4)?;
        let batches: Vec<Vec<u8>> = w
            .messages
            .chunks(BATCH)
            .map(|c| c.iter().flat_map(|(_, p)| p.iter().copied()).collect())
            .collect();
        self.fill_unkeyed(&mut unkeyed, &batches)?;
        let spans_topic = self.kafka.create_topic(&unique("e2e-routed"), 4)?;
        let label = "tailgate route, 4 partitions".to_string();
        let group = unique("e2e-route");
        let port = free_port();
        let dir = self.dir.join(unique("e2e-route"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let yaml = format!(
            "kafka:
  brokers: {brokers}
  input_topic: {to}
  output_topic: {to}-unused
  compression: lz4
  commit_interval: {commit}ms
  drain_timeout: 10s
route:
  from_topic: {from}
  group_id: {group}
metrics:
  listen: 127.0.0.1:{port}
# Route decides nothing; the settings file is the one `run` reads, rules and all.
rules: [{{name: all, sample: keep}}]
",
            brokers = self.kafka.brokers,
            to = spans_topic.name,
            from = unkeyed.name,
            commit = COMMIT_INTERVAL.as_millis(),
        );
        std::fs::write(dir.join("bench.yaml"), yaml)
            .map_err(|e| format!("cannot write the route settings: {e}"))?;
        let mut cmd = Command::new(tailgate_bin!());
        cmd.args(["route", "--env", "bench", "--policies"])
            .arg(&dir)
            .env_remove("RUST_LOG");
        let process = crate::runs::spawn(cmd, dir.join("route.log"), &label)?;
        eprintln!("e2e: running {label} (pid {})...", process.pid());
        let mut route = Tailgate::attach(process, port);
        let drain_s = self.wait_drained(
            route.process_mut(),
            &group,
            &unkeyed,
            self.drain_limit(w, Duration::ZERO),
            |_| {},
        )?;
        let figures = Figures {
            cpu_s: route.process().cpu_seconds()?,
            drain_s,
            peak_rss: route.process().peak_rss()?,
            spans: w.total_spans(),
        };
        stop(route.process_mut(), Duration::from_secs(20));
        eprintln!(
            "e2e: {label}: {:.2} CPU s, {:.0} spans/CPU-s, drained in {:.1} s, peak RSS {:.1} MiB",
            figures.cpu_s,
            figures.spans_per_cpu_s(),
            figures.drain_s,
            figures.peak_rss as f64 / MIB
        );
        // Every span once, each message of one trace and keyed by it: as
        // many messages as (batch, trace) pairs.
        let expected_messages: usize = w
            .messages
            .chunks(BATCH)
            .map(|c| c.iter().map(|(k, _)| k).collect::<HashSet<_>>().len())
            .sum();
        let out = self
            .kafka
            .read_all(&spans_topic.name, spans_topic.partitions)?;
        let (mut spans, mut misfiled) = (0u64, 0usize);
        for (key, payload) in &out {
            match otlp::decode(Bytes::from(payload.clone())) {
                Ok(d) => {
                    spans += d.spans.len() as u64;
                    let keyed = otlp::keying::unkeyed(Some(key), d.spans.iter().map(|(id, _)| id));
                    misfiled += usize::from(keyed.is_some());
                }
                Err(_) => misfiled += 1,
            }
        }
        self.checks.push(Check {
            asserted: true,
            run: label.clone(),
            what: "splits every batch into whole traces keyed by trace id, every span once".into(),
            ok: out.len() == expected_messages && spans == w.total_spans() && misfiled == 0,
            detail: format!(
                "{} messages ({expected_messages} expected: one per trace and batch), {spans} spans \
                 ({} in), {misfiled} not keyed by their one trace",
                out.len(),
                w.total_spans()
            ),
        });
        self.results.route = Some((batches.len(), figures));
        Ok(())
    }

    /// Produces `batches` without a key, round-robin over the partitions,
    /// stamped as produced.
    fn fill_unkeyed(&self, topic: &mut Topic, batches: &[Vec<u8>]) -> Result<(), String> {
        let producer: ThreadedProducer<_> = ClientConfig::new()
            .set("bootstrap.servers", &self.kafka.brokers)
            .set("compression.type", "none")
            .set("linger.ms", "20")
            .set("queue.buffering.max.kbytes", "1048576")
            .create()
            .map_err(|e| format!("create the unkeyed fill producer: {e}"))?;
        let started = Instant::now();
        for (i, b) in batches.iter().enumerate() {
            let mut record = BaseRecord::<(), [u8]>::to(&topic.name)
                .payload(b.as_slice())
                .partition(i as i32 % topic.partitions);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) if started.elapsed() < Duration::from_secs(600) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err((e, _)) => return Err(format!("filling {}: {e}", topic.name)),
                }
            }
        }
        producer
            .flush(Duration::from_secs(300))
            .map_err(|e| format!("filling {}: flush: {e}", topic.name))?;
        let marks = self.kafka.watermarks(&topic.name, topic.partitions)?;
        topic.end = marks.iter().map(|(_, h)| *h).collect();
        let filled: i64 = topic.end.iter().sum();
        if filled as usize != batches.len() {
            return Err(format!(
                "filling {}: {filled} of {} batches delivered",
                topic.name,
                batches.len()
            ));
        }
        eprintln!(
            "e2e: filled {} with {} unkeyed batches in {:.1} s",
            topic.name,
            batches.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
