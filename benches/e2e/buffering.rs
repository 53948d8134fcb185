//! The buffer phase (spans per CPU-second as the buffer grows) and the
//! memory phase (resident memory per buffered span).

use std::time::{Duration, Instant};

use tailgate::clock::ClockMode;
use tailgate_testkit::unique;

use crate::bench::Bench;
use crate::figures::{fmt_secs, Check, Memory, MemoryPoint, TailgateSettings, Variant};
use crate::kafka::Topic;
use crate::runs::stop;
use crate::workload::Workload;
use crate::{MEMORY_STEPS, MEMORY_WAIT, MIB};

impl Bench {
    /// A wait longer than reading the topic takes, on topics of a tenth of
    /// the traces and of all of them: the buffer peaks at N / 10 and at N
    /// traces. The wait is in proportion to the topic, so that the idle time
    /// (an idle tailgate spends about 13 ms of CPU a second) is too.
    pub fn buffer_phase(
        &mut self,
        w: &Workload,
        topic: &Topic,
        ingest_s: Option<f64>,
    ) -> Result<(), String> {
        let n = w.traces();
        // The throughput run's average read rate, start-up included (so low).
        let rate = w.total_spans() as f64 / ingest_s.unwrap_or(n as f64 / 20_000.0);
        let mut tenth = self.kafka.create_topic(&unique("e2e-in4-tenth"), 4)?;
        self.kafka
            .fill(&mut tenth, w.messages_of(0, n / 10), self.args.stamp_rate)?;
        for (traces, topic) in [(n / 10, &tenth), (n, topic)] {
            let read = w.spans_of(traces) as f64 / rate;
            let wait = Duration::from_millis(((1.5 * read + 1.0).max(2.0) * 1000.0) as u64);
            let label = format!(
                "tailgate, {traces} traces, decision wait {}",
                fmt_secs(wait.as_secs_f64())
            );
            let f = self.run_tailgate(
                w,
                traces,
                topic,
                &label,
                &TailgateSettings {
                    clock: ClockMode::Stream,
                    wait,
                    after_root: wait,
                    max_trace_age: wait.max(Duration::from_secs(30)),
                    max_bytes: 8 << 30,
                    variant: Variant::Default,
                },
            )?;
            self.results.buffer.push((traces, wait, f));
        }
        Ok(())
    }

    pub fn memory_phase(&mut self, w: &Workload) -> Result<(), String> {
        let mut topic = self.kafka.create_topic(&unique("e2e-mem-in"), 4)?;
        let output = self.kafka.create_topic(&unique("e2e-mem-out"), 4)?;
        let label = "tailgate, memory (decision wait 1 h)";
        let s = TailgateSettings {
            clock: ClockMode::Stream,
            wait: MEMORY_WAIT,
            after_root: MEMORY_WAIT,
            max_trace_age: MEMORY_WAIT,
            max_bytes: 16 << 30,
            variant: Variant::Default,
        };
        let (mut tailgate, _group) = self.spawn_tailgate(label, &topic, &output.name, &s)?;
        // Ready: its partitions are assigned.
        tailgate.ready(Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_secs(2));
        let idle_rss = tailgate.process().rss()?;
        let mut points: Vec<MemoryPoint> = Vec::new();
        let n = w.traces();
        for step in 1..=MEMORY_STEPS {
            let (from, to) = ((step - 1) * n / MEMORY_STEPS, step * n / MEMORY_STEPS);
            self.kafka
                .fill(&mut topic, w.messages_of(from, to), self.args.stamp_rate)?;
            let spans = w.spans_of(to) as f64;
            let deadline = Instant::now() + self.drain_limit(w, Duration::ZERO);
            loop {
                tailgate.process_mut().check_alive()?;
                let m = tailgate.metrics().unwrap_or_default();
                let buffered = m.sum("tailgate_buffered_spans", &[]);
                if buffered >= spans {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{label}: {buffered} of {spans} spans buffered by the deadline:\n{}",
                        tailgate.process().log_tail(30)
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            // Let the consumer's fetch queues and the allocator settle.
            std::thread::sleep(Duration::from_secs(1));
            let m = tailgate.metrics().unwrap_or_default();
            let point = MemoryPoint {
                traces: to,
                buffered_traces: m.sum("tailgate_buffered_traces", &[]),
                buffered_spans: m.sum("tailgate_buffered_spans", &[]),
                buffered_bytes: m.sum("tailgate_buffered_bytes", &[]),
                span_bytes: w.span_bytes_cum[to - 1],
                message_bytes: w.message_bytes_cum[to - 1],
                rss: tailgate.process().rss()?,
            };
            eprintln!(
                "e2e: {label}: {:.0} traces, {:.0} spans buffered, RSS {:.1} MiB",
                point.buffered_traces,
                point.buffered_spans,
                point.rss as f64 / MIB
            );
            points.push(point);
        }
        let peak_rss = tailgate.process().peak_rss()?;
        stop(tailgate.process_mut(), Duration::from_secs(30));
        let all = points.last().map_or(0.0, |p| p.buffered_spans);
        self.checks.push(Check {
            asserted: true,
            run: label.into(),
            what: "holds the whole workload undecided".into(),
            ok: all == w.total_spans() as f64,
            detail: format!("{all:.0} of {} spans buffered", w.total_spans()),
        });
        let rss: Vec<f64> = points.iter().map(|p| p.rss as f64).collect();
        let xs = |f: fn(&MemoryPoint) -> f64| points.iter().map(f).collect::<Vec<f64>>();
        let (slope, intercept) = least_squares(&xs(|p| p.span_bytes as f64), &rss);
        let (slope_message, _) = least_squares(&xs(|p| p.message_bytes as f64), &rss);
        let (per_span, _) = least_squares(&xs(|p| p.buffered_spans), &rss);
        self.results.memory = Some(Memory {
            idle_rss,
            peak_rss,
            points,
            slope,
            intercept,
            slope_message,
            per_span,
        });
        Ok(())
    }
}

/// (slope, intercept) of the least-squares line through the points.
fn least_squares(xs: &[f64], ys: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { f64::NAN };
    (slope, my - slope * mx)
}
