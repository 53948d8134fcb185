//! Latency attribution: every decided trace's critical path, kept or
//! dropped, measured before sampling — each service's time on the path,
//! the service that dominates it, the trace's duration by its root's
//! service — and what a kept trace gets written onto it.
//!
//! Labels come from the input (`service.name`), so their number is bounded
//! for the whole process ([`ServiceLabels`], `metrics.max_services`): the
//! services beyond it are counted as [`OTHER`], and how many observations
//! were folded so is counted too.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use metrics::{counter, histogram, Counter, Histogram};

use crate::metrics as m;
use crate::otlp::SpanRecord;
use crate::rules::path_summary::bounded;
use crate::rules::PathSummary;

/// The label of the services past `metrics.max_services`.
pub const OTHER: &str = "(other)";

/// What the critical path of each decided trace is used for.
#[derive(Debug, Clone, Default)]
pub struct PathOutput {
    /// Write the summary onto kept traces (`output.critical_path`).
    pub annotate: bool,
    /// Measure it on every trace (`metrics.critical_path`), with the
    /// process's service labels.
    pub metrics: Option<Arc<ServiceLabels>>,
    /// Give every decision's summary with its record
    /// ([`super::DecisionRecord::critical_path`]: `replay --json`).
    pub report: bool,
}

impl PathOutput {
    /// The critical path is needed for a trace so decided.
    pub fn wanted(&self, keep: bool) -> bool {
        (self.annotate && keep) || self.metrics.is_some() || self.report
    }
}

/// The services the attribution metrics name, shared by the workers of a
/// process: the first `max` seen, for as long as it runs.
#[derive(Debug)]
pub struct ServiceLabels {
    max: usize,
    named: Mutex<HashSet<Box<str>>>,
}

impl ServiceLabels {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            named: Mutex::new(HashSet::new()),
        }
    }

    /// Whether `service` has a label of its own (taking one if there is
    /// room).
    fn admit(&self, service: &str) -> bool {
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        if named.contains(service) {
            return true;
        }
        if named.len() < self.max {
            named.insert(service.into());
            return true;
        }
        false
    }
}

/// One label's metric handles, made as they are first needed.
struct Handles {
    label: Box<str>,
    path_seconds: Option<Histogram>,
    dominant: Option<Counter>,
    duration: Option<Histogram>,
}

impl Handles {
    fn new(label: &str) -> Self {
        Self {
            label: label.into(),
            path_seconds: None,
            dominant: None,
            duration: None,
        }
    }

    fn path_seconds(&mut self) -> &Histogram {
        let label = &self.label;
        self.path_seconds.get_or_insert_with(
            || histogram!(m::CRITICAL_PATH_SECONDS, "service" => label.to_string()),
        )
    }

    fn dominant(&mut self) -> &Counter {
        let label = &self.label;
        self.dominant.get_or_insert_with(
            || counter!(m::CRITICAL_PATH_DOMINANT, "service" => label.to_string()),
        )
    }

    fn duration(&mut self) -> &Histogram {
        let label = &self.label;
        self.duration.get_or_insert_with(
            || histogram!(m::TRACE_DURATION_SECONDS, "root_service" => label.to_string()),
        )
    }
}

/// A worker's handles: per named service, and for the others.
pub(super) struct Attribution {
    labels: Arc<ServiceLabels>,
    /// At most `metrics.max_services` entries, looked up a few times per
    /// trace: a fast (randomly seeded) hash.
    named: HashMap<Box<str>, Handles, Fast>,
    /// Services refused a label, remembered by this worker (a bounded
    /// set, forgotten when full) so that it asks the process less often.
    refused: HashSet<Box<str>, Fast>,
    other: Handles,
    folded: Counter,
}

type Fast = foldhash::fast::RandomState;

/// The label of spans whose resource has no `service.name`.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// The longest label value the attribution metrics write, in bytes.
pub const MAX_LABEL: usize = 128;

/// Services refused a label that a worker remembers at most.
const REFUSED: usize = 1024;

impl Attribution {
    pub fn new(labels: Arc<ServiceLabels>) -> Self {
        Self {
            labels,
            named: HashMap::default(),
            refused: HashSet::default(),
            other: Handles::new(OTHER),
            folded: counter!(m::LABELS_FOLDED),
        }
    }

    /// The handles of `service`: its own, or, past the process's bound,
    /// those of [`OTHER`] (counted as folded).
    fn handles(&mut self, service: &str) -> &mut Handles {
        // A label is at most this long (a hostile `service.name` may be
        // any length); services alike in their first bytes share one.
        let service = match bounded(service, MAX_LABEL) {
            // No `service.name`: OpenTelemetry's name for it (an empty
            // label value is no label to Prometheus).
            "" => UNKNOWN_SERVICE,
            s => s,
        };
        if !self.named.contains_key(service) {
            let named = !self.refused.contains(service) && self.labels.admit(service);
            if !named {
                if self.refused.len() >= REFUSED {
                    self.refused.clear();
                }
                self.refused.insert(service.into());
                self.folded.increment(1);
                return &mut self.other;
            }
            self.named.insert(service.into(), Handles::new(service));
        }
        self.named.get_mut(service).expect("inserted above")
    }

    /// Measures one decided trace: each service's time on its critical
    /// path, the one that dominates it, and the trace's duration (earliest
    /// start to latest end) under its top span's service.
    pub fn record(&mut self, path: &PathSummary, spans: &[SpanRecord], duration_s: f64) {
        // A path of no length has no time to attribute and nothing that
        // dominates it; the trace's duration is still measured.
        let services = if path.total_ns == 0 {
            &[][..]
        } else {
            &path.services[..]
        };
        for (k, (service, ns)) in services.iter().enumerate() {
            let h = self.handles(service);
            h.path_seconds().record(*ns as f64 / 1e9);
            if k == path.dominant {
                h.dominant().increment(1);
            }
        }
        if let Some(top) = spans.get(path.top) {
            self.handles(&top.service()).duration().record(duration_s);
        }
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;
    use crate::otlp::{test_spans, TraceId};
    use crate::rules::CriticalPath;
    use crate::workload::SpanSpec;

    /// A trace whose root (in `root`) waits on one call to each of
    /// `calls`, one after another, `ms` each.
    fn trace(root: &'static str, calls: &[(&'static str, u64)]) -> Vec<SpanRecord> {
        let total: u64 = calls.iter().map(|(_, ms)| ms).sum();
        let mut specs = vec![SpanSpec::new(root, "GET /", None, 0, total + 2)];
        let mut at = 1;
        for (service, ms) in calls {
            specs.push(SpanSpec::new(service, "call", Some(0), at, *ms));
            at += ms;
        }
        test_spans(TraceId([1; 16]), &specs)
    }

    fn sample(text: &str, line_start: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Each service's time on the path, the dominant one, the duration by
    /// the root's service; past `max_services` services the rest are
    /// `(other)`, and each folded observation is counted.
    #[test]
    fn every_trace_is_measured_with_at_most_max_services_labels() {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Prefix("tailgate_".into()),
                &[0.01, 0.1, 1.0, 10.0],
            )
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        let labels = Arc::new(ServiceLabels::new(3));
        metrics::with_local_recorder(&recorder, || {
            // Two workers of one process share the bound.
            let mut workers = [
                Attribution::new(labels.clone()),
                Attribution::new(labels.clone()),
            ];
            for (w, root, calls) in [
                (0, "gateway", vec![("db", 500), ("cache", 20)]),
                (1, "gateway", vec![("db", 30), ("cache", 200)]),
                // A fourth and fifth service: past the bound.
                (1, "gateway", vec![("search", 900), ("ads", 10)]),
                (0, "batch", vec![("db", 40)]),
            ] {
                let spans = trace(root, &calls);
                let path = PathSummary::of(&CriticalPath::of(&spans), &spans).unwrap();
                workers[w].record(&path, &spans, 1.5);
            }
        });
        let text = handle.render();
        let count = |metric: &str, label: &str, value: &str| {
            sample(&text, &format!("{metric}_count{{{label}=\"{value}\"}}"))
        };
        let path = m::CRITICAL_PATH_SECONDS;
        assert_eq!(count(path, "service", "db"), Some(3.0));
        assert_eq!(count(path, "service", "cache"), Some(2.0));
        // The root's own time: gateway on all three of its traces.
        assert_eq!(count(path, "service", "gateway"), Some(3.0));
        // search, ads and batch came after three services had labels.
        assert_eq!(count(path, "service", "search"), None);
        assert_eq!(count(path, "service", OTHER), Some(3.0), "{text}");
        let db = sample(&text, &format!("{path}_sum{{service=\"db\"}}")).unwrap();
        assert!((db - 0.57).abs() < 1e-9, "500 + 30 + 40 ms: {db}");
        let dominant = |s: &str| {
            sample(
                &text,
                &format!("{}{{service=\"{s}\"}}", m::CRITICAL_PATH_DOMINANT),
            )
        };
        assert_eq!(dominant("db"), Some(2.0), "batch's trace too");
        assert_eq!(dominant("cache"), Some(1.0));
        assert_eq!(dominant(OTHER), Some(1.0), "search");
        assert_eq!(dominant("gateway"), None);
        let duration = m::TRACE_DURATION_SECONDS;
        assert_eq!(count(duration, "root_service", "gateway"), Some(3.0));
        assert_eq!(count(duration, "root_service", OTHER), Some(1.0));
        // search, ads; batch on the path and as the root's service.
        assert_eq!(sample(&text, m::LABELS_FOLDED), Some(4.0));
    }

    /// A service name of any length makes a label of at most `MAX_LABEL`
    /// bytes.
    #[test]
    fn a_long_service_name_makes_a_bounded_label() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let long: &'static str = Box::leak("s".repeat(10_000).into_boxed_str());
        metrics::with_local_recorder(&recorder, || {
            let mut a = Attribution::new(Arc::new(ServiceLabels::new(5)));
            let spans = trace(long, &[("db", 5)]);
            let path = PathSummary::of(&CriticalPath::of(&spans), &spans).unwrap();
            a.record(&path, &spans, 0.1);
        });
        let text = handle.render();
        let label = format!("root_service=\"{}\"", "s".repeat(MAX_LABEL));
        assert!(text.contains(&label), "{text}");
        assert!(!text.contains(&"s".repeat(MAX_LABEL + 1)));
    }
}
