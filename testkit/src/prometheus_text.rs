//! The one reader of Prometheus's text format (what tailgate's `/metrics`
//! serves): parsed once into samples, then summed by name and labels.

use std::fmt;
use std::time::Duration;

use crate::http::http_get;

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether it carries every `(key, value)` of `labels`.
    pub fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// A scrape: its text, and the samples read from it.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    text: String,
    samples: Vec<Sample>,
}

impl Metrics {
    /// Reads every sample line; comments, blank lines and lines that are
    /// not samples are left out.
    pub fn parse(text: impl Into<String>) -> Self {
        let text = text.into();
        let samples = text.lines().filter_map(sample).collect();
        Self { text, samples }
    }

    /// `/metrics` on `127.0.0.1:<port>`, parsed; `None` unless it answered 200.
    pub fn scrape(port: u16) -> Option<Self> {
        match http_get(port, "/metrics", Duration::from_secs(5))? {
            (200, text) => Some(Self::parse(text)),
            _ => None,
        }
    }

    /// The text as scraped.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Sum of the samples of `name` that carry every one of `labels`
    /// (`("decision", "keep")`); 0 if there are none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && s.has(labels))
            .map(|s| s.value)
            .sum()
    }

    /// The cumulative buckets of histogram `name` (its `<name>_bucket`
    /// samples): (upper bound `le`, count), ascending.
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.name == bucket)
            .filter_map(|s| Some((number(s.label("le")?)?, s.value)))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `name value` or `name{k="v",...} value`, an optional timestamp after.
fn sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    let end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, mut rest) = line.split_at(end);
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = read_labels(inside, &mut labels)?;
    }
    Some(Sample {
        name: name.to_string(),
        labels,
        value: number(rest.split_whitespace().next()?)?,
    })
}

/// Reads `k="v",...}` into `labels`: what follows the `}`.
fn read_labels<'a>(mut s: &'a str, labels: &mut Vec<(String, String)>) -> Option<&'a str> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some(after);
        }
        let (key, rest) = s.split_once('=')?;
        let rest = rest.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        s = rest[end + 1..].trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

/// A sample value or bucket bound: a number, `+Inf`, `-Inf` or `NaN`.
fn number(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE tailgate_traces_decided_total counter
tailgate_traces_decided_total{rule="errors",decision="keep",reason="wait"} 3
tailgate_traces_decided_total{rule="baseline",decision="drop",reason="memory"} 5
tailgate_traces_decided_total{rule="a, \"b\"",decision="keep",reason="after_root"} 1
tailgate_traces_decided_total_other 100
tailgate_buffered_bytes 1.5e3

# TYPE tailgate_decision_lateness_seconds histogram
tailgate_decision_lateness_seconds_bucket{le="0.05"} 8
tailgate_decision_lateness_seconds_bucket{le="+Inf"} 9
tailgate_decision_lateness_seconds_bucket{le="0.001"} 2
tailgate_decision_lateness_seconds_sum 0.25
tailgate_decision_lateness_seconds_count 9
"#;

    #[test]
    fn sums_a_name_exactly_over_the_labels_asked_for() {
        let m = Metrics::parse(TEXT);
        assert_eq!(m.sum("tailgate_traces_decided_total", &[]), 9.0);
        assert_eq!(
            m.sum("tailgate_traces_decided_total", &[("decision", "keep")]),
            4.0
        );
        assert_eq!(
            m.sum(
                "tailgate_traces_decided_total",
                &[("decision", "drop"), ("reason", "memory")]
            ),
            5.0
        );
        assert_eq!(
            m.sum("tailgate_traces_decided_total", &[("rule", "a, \"b\"")]),
            1.0
        );
        assert_eq!(m.sum("tailgate_buffered_bytes", &[]), 1500.0);
        assert_eq!(m.sum("tailgate_decision_lateness_seconds_count", &[]), 9.0);
        assert_eq!(m.sum("tailgate_missing", &[]), 0.0);
        assert_eq!(m.to_string(), TEXT);
    }

    #[test]
    fn reads_a_histograms_buckets_in_order() {
        let m = Metrics::parse(TEXT);
        assert_eq!(
            m.buckets("tailgate_decision_lateness_seconds"),
            vec![(0.001, 2.0), (0.05, 8.0), (f64::INFINITY, 9.0)]
        );
        assert!(m.buckets("tailgate_buffered_bytes").is_empty());
    }

    #[test]
    fn leaves_out_what_is_not_a_sample() {
        let m = Metrics::parse("# HELP x y\n\nbroken{le=\"1\" 2\nok 1 1700000000000\nnan NaN\n");
        let names: Vec<&str> = m.samples().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ok", "nan"]);
        assert_eq!(m.sum("ok", &[]), 1.0);
        assert!(m.sum("nan", &[]).is_nan());
    }
}
