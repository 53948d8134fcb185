//! The chaos test: a known workload produced into a real broker over the
//! whole run, three tailgate processes in one consumer group killed
//! (SIGKILL) and stopped (SIGTERM) and restarted at random, the broker
//! stopped and restarted once; then the whole output topic is compared with
//! the kept traces the rules compute from the same input.
//!
//! It runs its own broker (a separate `KAFKA_STATE_DIR`), so stopping it does
//! not disturb the tests that share the broker `scripts/test` started.
//!
//! Length and seed come from the environment (`scripts/chaos` sets them for a
//! full-length run; the defaults are the short schedule CI runs):
//!
//! - `TAILGATE_CHAOS_SECONDS`: how long the random schedule runs (default 45)
//! - `TAILGATE_CHAOS_TRACES`: traces produced over it (default 100 per second)
//! - `TAILGATE_CHAOS_SEED`: seeds the workload and the schedule (default 1)
#![cfg(feature = "kafka-tests")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use tailgate::otlp::{Encoding, TraceId};
use tailgate_testkit::*;

const INPUT_PARTITIONS: i32 = 6;
const OUTPUT_PARTITIONS: i32 = 3;
const PROCESSES: [&str; 3] = ["a", "b", "c"];
/// How often the producer sends the next batch of the workload.
const BATCH_INTERVAL: Duration = Duration::from_millis(500);

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The lines of a process's log worth showing when the test fails: the last
/// 40 of tailgate's own (assignments, revocations, hand-overs, shutdown,
/// produce failures), without the connection errors librdkafka repeats while
/// the broker is down, which are only counted.
fn digest(text: &str) -> String {
    let noise = |l: &&str| {
        !l.contains(" tailgate")
            || l.contains("consumer error:")
            || l.contains("Global error")
            || l.contains("offset commit failed")
    };
    let (noisy, lines): (Vec<&str>, Vec<&str>) = text.lines().partition(noise);
    let tail = &lines[lines.len().saturating_sub(40)..];
    format!(
        "  ({} connection-error lines left out)\n    {}",
        noisy.len(),
        tail.join("\n    ")
    )
}

/// Digests of every log of every process started so far.
fn all_logs(slots: &[Slot]) -> String {
    slots
        .iter()
        .flat_map(|s| &s.logs)
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            format!("---- {}\n{}", p.display(), digest(&text))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Offset commits a process's log reports as failed: (at shutdown, in the
/// revoke callback, periodic). "No offset stored" is routine and not counted.
/// A failed commit leaves the partition's next reader to deliver again what
/// was delivered since the last commit that succeeded.
fn commit_failures(log: &Path) -> [u64; 3] {
    let mut n = [0; 3];
    for l in std::fs::read_to_string(log).unwrap_or_default().lines() {
        if l.contains("NoOffset") {
            continue;
        }
        if l.contains("final commit failed") {
            n[0] += 1;
        } else if l.contains("commit on revoke failed") {
            n[1] += 1;
        } else if l.contains("offset commit failed") {
            n[2] += 1;
        }
    }
    n
}

/// One of the three places a tailgate process runs in, across its restarts.
struct Slot {
    name: &'static str,
    process: Option<Tailgate>,
    started: usize,
    /// The highest VmHWM seen of any of its processes, in KiB.
    peak_kib: u64,
    logs: Vec<PathBuf>,
    /// `tailgate_handover_redelivered_spans_total` scraped before each SIGTERM.
    redelivered_scraped: f64,
}

impl Slot {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            process: None,
            started: 0,
            peak_kib: 0,
            logs: Vec::new(),
            redelivered_scraped: 0.0,
        }
    }

    fn start(&mut self, policies: &Path) {
        assert!(self.process.is_none(), "{} is already running", self.name);
        self.started += 1;
        let log = format!("{}-{}.log", self.name, self.started);
        let t = Tailgate::start(tailgate_bin!(), policies, free_port(), &log);
        self.logs.push(t.log().to_path_buf());
        self.process = Some(t);
    }

    fn sample(&mut self) {
        if let Some(Ok(bytes)) = self.process.as_ref().map(|t| t.process().peak_rss()) {
            self.peak_kib = self.peak_kib.max(bytes / 1024);
        }
    }

    /// Panics if the process exited without being told to.
    fn check_alive(&mut self) {
        if let Some(t) = &mut self.process {
            if let Some(status) = t.exited() {
                panic!(
                    "tailgate {} ({}) exited by itself with {status}:\n{}",
                    self.name,
                    t.log().display(),
                    digest(&t.log_text())
                );
            }
        }
    }

    fn kill9(&mut self) {
        self.check_alive();
        self.sample();
        let mut t = self.process.take().expect("a running process to kill");
        t.kill9();
    }

    /// SIGTERM: scrapes the redelivery counter first, then expects a clean exit.
    fn terminate(&mut self) {
        self.check_alive();
        self.sample();
        let mut t = self.process.take().expect("a running process to stop");
        if let Some(metrics) = t.metrics() {
            self.redelivered_scraped +=
                metrics.sum("tailgate_handover_redelivered_spans_total", &[]);
        }
        let status = t.terminate(Duration::from_secs(60));
        assert!(
            status.success(),
            "tailgate {} ({}) exited with {status} after SIGTERM:\n{}",
            self.name,
            t.log().display(),
            digest(&t.log_text())
        );
    }
}

/// Sleeps for `d`, sampling every running process's memory and checking that
/// none exited by itself.
async fn idle(slots: &mut [Slot], d: Duration) {
    let until = Instant::now() + d;
    loop {
        for s in slots.iter_mut() {
            s.check_alive();
            s.sample();
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(Duration::from_millis(250))).await;
    }
}

/// Where the first `limit` of `ids` are in the input topic: id → (partition, offset) of each message.
fn locate(topic: &str, ids: &[TraceId], within: Duration) -> HashMap<String, Vec<(i32, i64)>> {
    let wanted: Vec<String> = ids.iter().map(TraceId::to_hex).collect();
    let ends = committed_and_end(&unique("locate-ends"), topic, INPUT_PARTITIONS);
    let total: i64 = ends.iter().map(|(_, e)| e).sum();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("locate"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("locating consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut found: HashMap<String, Vec<(i32, i64)>> = HashMap::new();
    let (mut read, deadline) = (0i64, Instant::now() + within);
    while read < total && Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        read += 1;
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        if wanted.contains(&key) {
            found
                .entry(key)
                .or_default()
                .push((m.partition(), m.offset()));
        }
    }
    found
}

#[derive(Default)]
struct Done {
    kills: usize,
    terms: usize,
    outages: usize,
    outage: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_killed_at_random_and_a_broker_restart_lose_no_kept_trace() {
    let began = Instant::now();
    let seconds: u64 = env_or("TAILGATE_CHAOS_SECONDS", 45);
    let traces: usize = env_or("TAILGATE_CHAOS_TRACES", 100 * seconds as usize);
    let seed: u64 = env_or("TAILGATE_CHAOS_SEED", 1);
    assert!(
        seconds >= 10 && traces >= 100,
        "TAILGATE_CHAOS_SECONDS must be at least 10 and TAILGATE_CHAOS_TRACES at least 100"
    );
    let schedule = Duration::from_secs(seconds);
    let outage_length = Duration::from_secs((seconds / 20).clamp(5, 30));
    eprintln!(
        "chaos: seed {seed}, schedule {seconds} s, {traces} traces, broker outage {} s",
        outage_length.as_secs()
    );

    let broker = Broker::start();
    // The test kit's helpers read the broker address from here; this test
    // binary holds only this test, so pointing it at the private broker is safe.
    std::env::set_var("TAILGATE_TEST_BOOTSTRAP", &broker.address);
    let (input, output, group) = (unique("in"), unique("out"), unique("tailgate"));
    create_topic(&input, INPUT_PARTITIONS).await;
    create_topic(&output, OUTPUT_PARTITIONS).await;

    // The workload and what the rules keep of it. The rules decide each trace
    // by its own content (errors, duration, a rate read from the trace id), so
    // the kept set does not depend on which process decides it, or when.
    let w = Workload::shop(seed, traces);
    let expected = w.expected_kept(RULES);
    let spans_produced: usize = w.traces.iter().map(|t| t.truth.spans).sum();
    assert!(!expected.is_empty(), "the rules keep something");

    let dir = policy_dir(&settings(&group, &input, &output, RULES, "2s", None));
    let mut slots = Vec::from(PROCESSES.map(Slot::new));
    for s in &mut slots {
        s.start(dir.path());
    }
    for s in &mut slots {
        s.process
            .as_mut()
            .expect("started")
            .wait_ready(Duration::from_secs(60));
    }

    // The producer: the workload in batches spread over most of the schedule
    // (every fifth trace in OTLP JSON). Each batch is produced whole while it
    // holds `producing`, and the broker is stopped only between batches: a
    // trace cut in two by the outage would be decided on its first half when
    // its decision wait ran out, which is the rules seeing an incomplete
    // trace, not a delivery fault, and no expected set could account for it.
    let producing = Arc::new(tokio::sync::Mutex::new(()));
    let batches = ((schedule.as_secs_f64() * 0.85) / BATCH_INTERVAL.as_secs_f64()).max(1.0);
    let batch = traces.div_ceil(batches as usize).max(1);
    let producer = {
        let (topic, lock, all) = (input.clone(), producing.clone(), w.traces);
        let start = tokio::time::Instant::now();
        tokio::spawn(async move {
            for (i, chunk) in all.chunks(batch).enumerate() {
                tokio::time::sleep_until(start + BATCH_INTERVAL * i as u32).await;
                let _batch = lock.lock().await;
                let first = i * batch;
                produce_traces(&topic, chunk, |j| {
                    if (first + j) % 5 == 0 {
                        Encoding::OtlpJson
                    } else {
                        Encoding::OtlpProto
                    }
                })
                .await;
            }
            // When the last batch was acknowledged.
            began.elapsed()
        })
    };

    // The schedule: every 1.5-6 s a random process is killed (sometimes two),
    // or now and then stopped with SIGTERM, and restarted after 0.5-5 s; once,
    // between 30% and 60% of the way, the broker is stopped and restarted.
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x00c4_a05c_4a05);
    let outage_at = schedule.mul_f64(rng.random_range(0.3..0.6));
    let mut done = Done::default();
    let chaos_began = Instant::now();
    loop {
        let gap = Duration::from_millis(rng.random_range(1_500..6_000));
        idle(&mut slots, gap).await;
        let at = chaos_began.elapsed();
        // Past the schedule, only what it has not done yet: the outage, a SIGKILL.
        let over = at >= schedule;
        if done.outages == 0 && (at >= outage_at || over) {
            let _between_batches = producing.lock().await;
            eprintln!("chaos: {at:.1?} stopping the broker");
            let stopped = Instant::now();
            broker.run("pause");
            idle(&mut slots, outage_length).await;
            let back = broker.run("resume");
            assert_eq!(back, broker.address, "the broker is back on its address");
            done.outages += 1;
            done.outage = stopped.elapsed();
            eprintln!("chaos: broker back after {:.1?}", done.outage);
            continue;
        }
        if over && done.kills > 0 {
            break;
        }
        let first = rng.random_range(0..slots.len());
        let mut victims = vec![first];
        if rng.random_bool(0.15) {
            victims.push((first + rng.random_range(1..slots.len())) % slots.len());
        }
        let sigterm = !over && rng.random_bool(0.25);
        for &v in &victims {
            if sigterm {
                eprintln!("chaos: {at:.1?} SIGTERM {}", slots[v].name);
                slots[v].terminate();
                done.terms += 1;
            } else {
                eprintln!("chaos: {at:.1?} SIGKILL {}", slots[v].name);
                slots[v].kill9();
                done.kills += 1;
            }
        }
        let pause = Duration::from_millis(rng.random_range(500..5_000));
        idle(&mut slots, pause).await;
        for &v in &victims {
            slots[v].start(dir.path());
        }
    }
    let produced_at = producer
        .await
        .expect("the producer task failed (its panic is above)");

    // Everything consumed: the group's committed offsets reach the end of
    // every input partition, which tailgate commits only behind decided and
    // delivered traces.
    let drain_limit = Duration::from_secs(120.max(seconds / 4));
    let draining = Instant::now();
    let mut offsets = committed_and_end(&group, &input, INPUT_PARTITIONS);
    while offsets.iter().any(|(c, e)| c < e) {
        assert!(
            draining.elapsed() < drain_limit,
            "committed offsets did not reach the end within {drain_limit:?} after the schedule: \
             (committed, end) per partition {offsets:?}\n{}",
            all_logs(&slots)
        );
        idle(&mut slots, Duration::from_secs(1)).await;
        offsets = committed_and_end(&group, &input, INPUT_PARTITIONS);
    }
    let drained_in = draining.elapsed();
    for s in &mut slots {
        s.terminate();
    }

    // The whole output topic.
    let total: i64 = committed_and_end(&unique("ends"), &output, OUTPUT_PARTITIONS)
        .iter()
        .map(|(_, e)| e)
        .sum();
    let mut reader = OutputReader::new(&output);
    let read_all = reader.until(Duration::from_secs(120), |o| o.messages as i64 >= total);
    let out = &reader.output;
    let lost = missing(&expected, out);
    let unexpected: Vec<TraceId> = out
        .spans
        .keys()
        .filter(|id| !expected.contains_key(id))
        .copied()
        .collect();
    let scraped: f64 = slots.iter().map(|s| s.redelivered_scraped).sum();
    let logged: u64 = slots
        .iter()
        .flat_map(|s| &s.logs)
        .map(|l| redelivery_logged(&std::fs::read_to_string(l).unwrap_or_default()))
        .sum();
    let failed_commits = slots
        .iter()
        .flat_map(|s| &s.logs)
        .map(|l| commit_failures(l))
        .fold([0; 3], |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2]]);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let rss = slots
        .iter()
        .map(|s| {
            format!(
                "{} {:.1} MiB ({} processes)",
                s.name,
                mib(s.peak_kib),
                s.started
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "\n== chaos summary (seed {seed}, schedule {seconds} s, {INPUT_PARTITIONS} input partitions)\n\
         traces produced       {traces} ({spans_produced} spans)\n\
         expected kept         {}\n\
         kept found complete   {}\n\
         missing               {}\n\
         duplicated spans      {}\n\
         unexpected traces     {}\n\
         output read           {} of {total} messages\n\
         redelivery reported   {scraped} spans scraped before SIGTERMs, {logged} logged at all stops (a SIGKILL reports nothing)\n\
         failed commits        {} at shutdown, {} on revoke, {} periodic (logged)\n\
         kills / terms         {} SIGKILL, {} SIGTERM (plus {} at the end)\n\
         broker outages        {} ({:.1} s from stop to ready)\n\
         max RSS per process   {rss}\n\
         drained in            {:.1} s after the schedule\n\
         wall time             {:.1} s (production done at {:.1} s)\n",
        expected.len(),
        expected.len() - lost.len(),
        lost.len(),
        out.duplicate_spans,
        unexpected.len(),
        out.messages,
        failed_commits[0],
        failed_commits[1],
        failed_commits[2],
        done.kills,
        done.terms,
        slots.len(),
        done.outages,
        done.outage.as_secs_f64(),
        drained_in.as_secs_f64(),
        began.elapsed().as_secs_f64(),
        produced_at.as_secs_f64(),
    );

    if !lost.is_empty() {
        let some: Vec<TraceId> = lost.iter().take(5).copied().collect();
        let details: Vec<String> = some
            .iter()
            .map(|id| {
                format!(
                    "{} ({} of {} spans found)",
                    id.to_hex(),
                    out.spans.get(id).map_or(0, |s| s.len()),
                    expected[id]
                )
            })
            .collect();
        panic!(
            "{} of {} kept traces missing or incomplete (seed {seed}), e.g. {}\n\
             where they are in the input (partition, offset): {:?}\n{}",
            lost.len(),
            expected.len(),
            details.join(", "),
            locate(&input, &some, Duration::from_secs(60)),
            all_logs(&slots)
        );
    }
    assert!(
        read_all,
        "read {} of the output topic's {total} messages",
        out.messages
    );
    assert!(
        unexpected.is_empty(),
        "{} traces the rules drop were produced, e.g. {:?}",
        unexpected.len(),
        unexpected
            .iter()
            .take(5)
            .map(TraceId::to_hex)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        out.bad_keys, 0,
        "output messages keyed other than by their trace id"
    );
    assert_eq!(out.unannotated, 0, "kept spans without tailgate.rule");
    drop(broker);
}
