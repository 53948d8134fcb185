//! The benchmark: its phases in order, tailgate's start-up, and waiting
//! for a program to drain a topic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tailgate::clock::ClockMode;
use tailgate_testkit::{unique, Process};

use crate::args::Args;
use crate::figures::{
    Check, Figures, Results, TailgateFigures, TailgateSettings, Throughput, Variant,
};
use crate::kafka::{partitions, Kafka, Topic};
use crate::runs::stop;
use crate::workload::Workload;
use crate::{THROUGHPUT_AFTER_ROOT, THROUGHPUT_WAIT, TICK};

pub struct Bench {
    pub args: Args,
    pub kafka: Kafka,
    pub dir: PathBuf,
    pub checks: Vec<Check>,
    pub results: Results,
    pub started: Instant,
}

impl Bench {
    pub fn new(args: Args, brokers: String) -> Self {
        let dir = args
            .report
            .parent()
            .unwrap_or(Path::new("."))
            .join("e2e")
            .join(unique("e2e-run"));
        Bench {
            kafka: Kafka::new(&brokers),
            args,
            dir,
            checks: Vec::new(),
            results: Results::default(),
            started: Instant::now(),
        }
    }

    pub fn cleanup(&mut self) {
        if !self.args.keep_topics {
            self.kafka.delete_topics();
        }
    }

    pub fn run(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        eprintln!(
            "e2e: generating {} traces (seed {}); logs in {}",
            self.args.traces,
            self.args.seed,
            self.dir.display()
        );
        let w = Workload::generate(self.args.traces, self.args.seed);
        let outcome = self.phases(&w);
        let report = self.report(&w, outcome.as_ref().err());
        println!("{report}");
        if let Some(parent) = self.args.report.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&self.args.report, &report)
            .map_err(|e| format!("cannot write {}: {e}", self.args.report.display()))?;
        outcome
    }

    fn phases(&mut self, w: &Workload) -> Result<(), String> {
        let mut partition_counts = Vec::new();
        if self.args.partitions {
            partition_counts.push(1);
        }
        // The feature runs compare with the default runs on 4 partitions.
        let main_topic = self.args.throughput || self.args.features;
        if main_topic || self.args.partitions || self.args.buffer {
            partition_counts.push(4);
        }
        if self.args.partitions {
            partition_counts.push(16);
        }
        let mut topics: HashMap<i32, Topic> = HashMap::new();
        for &p in &partition_counts {
            let mut topic = self.kafka.create_topic(&unique(&format!("e2e-in{p}")), p)?;
            self.kafka
                .fill(&mut topic, &w.messages, self.args.stamp_rate)?;
            topics.insert(p, topic);
        }
        if main_topic || self.args.partitions || self.args.buffer {
            self.results.startup_cpu_s = Some(self.startup()?);
        }
        if main_topic || self.args.partitions {
            for (n, &p) in partition_counts.iter().enumerate() {
                let topic = topics[&p].clone();
                let first_copy = self.run_copy(w, &topic, false)?;
                let after_root = self.args.after_root;
                let settings = |clock, variant| TailgateSettings {
                    clock,
                    wait: THROUGHPUT_WAIT,
                    after_root,
                    max_trace_age: Duration::from_secs(30),
                    max_bytes: 512 << 20,
                    variant,
                };
                let mut runs = Vec::new();
                for clock in self.clock_order(n) {
                    let again = runs.iter().any(|f: &TailgateFigures| f.clock == clock);
                    let label = format!(
                        "tailgate, {}{}{}",
                        partitions(p),
                        if clock == ClockMode::Wall {
                            ", wall clock"
                        } else {
                            ""
                        },
                        if again { ", again" } else { "" }
                    );
                    runs.push(self.run_tailgate(
                        w,
                        w.traces(),
                        &topic,
                        &label,
                        &settings(clock, Variant::Default),
                    )?);
                }
                // Each durable feature's cost, and the production policy:
                // on the main topic, right after the runs they compare with.
                let mut features = Vec::new();
                if self.args.features && p == 4 {
                    for variant in Variant::FEATURES {
                        let label = format!("tailgate, {}{}", partitions(p), variant.suffix());
                        features.push(self.run_tailgate(
                            w,
                            w.traces(),
                            &topic,
                            &label,
                            &settings(ClockMode::Stream, variant),
                        )?);
                    }
                }
                // The copy's CPU moves by ± 25 % from run to run here, far
                // more than tailgate's: it runs again after tailgate's runs
                // and the ratios use the mean of both.
                let copy_runs = vec![first_copy, self.run_copy(w, &topic, true)?];
                self.results.throughput.push(Throughput {
                    partitions: p,
                    stamped_s: topic.stamped_s(),
                    copy: Figures::mean(&copy_runs),
                    copy_runs,
                    runs,
                    features,
                });
            }
        }
        if self.args.buffer {
            let ingest = self
                .results
                .throughput
                .iter()
                .find(|t| t.partitions == 4)
                .and_then(|t| t.tailgate().ingest_s);
            self.buffer_phase(w, &topics[&4], ingest)?;
        }
        if self.args.memory {
            self.memory_phase(w)?;
        }
        if self.args.route {
            self.route_phase(w)?;
        }
        Ok(())
    }

    /// The clocks of tailgate's runs on the `n`th topic, in order: pairs of a
    /// stream-clock and a wall-clock run, the first pair stream first, the
    /// next wall first (so that neither clock always runs first: the second
    /// run on a topic tends to be the cheaper), and so on. With one pair,
    /// the order alternates from topic to topic instead.
    fn clock_order(&self, n: usize) -> Vec<ClockMode> {
        let pairs = self.args.clock_pairs;
        if pairs == 0 {
            return vec![ClockMode::Stream];
        }
        (0..pairs)
            .flat_map(|k| {
                if (k + if pairs == 1 { n } else { 0 }) % 2 == 0 {
                    [ClockMode::Stream, ClockMode::Wall]
                } else {
                    [ClockMode::Wall, ClockMode::Stream]
                }
            })
            .collect()
    }

    /// tailgate's start-up CPU: on an empty topic, from start until a second
    /// after it first answers `/readyz` (its partitions assigned).
    fn startup(&mut self) -> Result<f64, String> {
        let input = self.kafka.create_topic(&unique("e2e-empty"), 4)?;
        let output = self.kafka.create_topic(&unique("e2e-empty-out"), 4)?;
        let label = "tailgate, start-up on an empty topic";
        let s = TailgateSettings {
            clock: ClockMode::Stream,
            wait: THROUGHPUT_WAIT,
            after_root: THROUGHPUT_AFTER_ROOT,
            max_trace_age: Duration::from_secs(30),
            max_bytes: 512 << 20,
            variant: Variant::Default,
        };
        let (mut tailgate, _) = self.spawn_tailgate(label, &input, &output.name, &s)?;
        tailgate.ready(Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_secs(1));
        let cpu = tailgate.process().cpu_seconds()?;
        stop(tailgate.process_mut(), Duration::from_secs(30));
        eprintln!("e2e: {label}: {cpu:.2} CPU s");
        Ok(cpu)
    }

    /// Waits until the group's committed offsets are the end offsets of
    /// every partition; `tick` runs at every look. Returns seconds since start.
    pub fn wait_drained(
        &self,
        process: &mut Process,
        group: &str,
        topic: &Topic,
        within: Duration,
        mut tick: impl FnMut(&Process),
    ) -> Result<f64, String> {
        let offsets = self.kafka.offsets(group)?;
        let deadline = process.started() + within;
        let mut last_report = Instant::now();
        loop {
            process.check_alive()?;
            tick(process);
            let committed = offsets.committed(&topic.name, topic.partitions)?;
            if committed == topic.end {
                return Ok(process.started().elapsed().as_secs_f64());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: committed offsets {committed:?} did not reach the end {:?} within {within:?}; last lines of {}:\n{}",
                    process.label(),
                    topic.end,
                    process.log().display(),
                    process.log_tail(30)
                ));
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                let done: i64 = committed.iter().map(|c| (*c).max(0)).sum();
                eprintln!(
                    "e2e: {}: {done} of {} messages committed after {:.0} s",
                    process.label(),
                    topic.end.iter().sum::<i64>(),
                    process.started().elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
            std::thread::sleep(TICK);
        }
    }

    /// The longest a drain may take: generous, from the workload's size.
    pub fn drain_limit(&self, w: &Workload, extra: Duration) -> Duration {
        Duration::from_secs(120) + Duration::from_micros(w.total_spans() * 100) + extra
    }
}
