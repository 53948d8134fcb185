//! What a trace's critical path says, in the terms an engineer asks in:
//! which service made the request slow, by how much of the path, through
//! which hops, and which span in it. Written onto kept traces
//! (`output.critical_path`) and measured on every decided trace (the
//! `tailgate_critical_path_*` metrics).
//!
//! Pure: spans and their path in, numbers out.

use std::borrow::Cow;
use std::collections::HashMap;

use super::critical_path::CriticalPath;
use crate::otlp::{Attributes, SpanRecord};

pub use crate::otlp::annotate::{
    DURATION_ATTRIBUTE, SELF_ATTRIBUTE, SERVICES_ATTRIBUTE, SERVICE_ATTRIBUTE, SHARE_ATTRIBUTE,
    SPAN_ATTRIBUTE,
};

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The longest name (service or span) the summary writes, in bytes: input
/// names are unbounded (a 300 KB span name would otherwise be copied onto
/// the root). Longer ones are cut at a character boundary.
pub const MAX_NAME: usize = 256;

/// The most services `tailgate.critical_path.services` lists (the first
/// the path reaches).
pub const MAX_SERVICES: usize = 32;

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn bounded(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A critical path's summary as words and numbers: what is written onto
/// a kept trace, and what `explain` and `replay --json` show.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PathDigest {
    /// The service with the most time on the path.
    pub service: String,
    /// Its fraction of the path, 0–1.
    pub share: f64,
    /// The path's length, in milliseconds.
    pub duration_ms: f64,
    /// Name of the span with the most time of its own on the path.
    pub span: String,
    /// The services along the path, each once, in the order it reaches them.
    pub services: Vec<String>,
}

/// The summary of one trace's critical path (its names borrowed from the
/// trace's spans).
#[derive(Debug, Clone, PartialEq)]
pub struct PathSummary<'a> {
    /// The span the summary belongs on: the root, or the top-most span
    /// when the root never arrived (index into the trace's spans).
    pub top: usize,
    /// The path's length: from its first span's start to its end.
    pub total_ns: u64,
    /// The services on the path, each once, in the order the path first
    /// reaches them (in time), with their time on it.
    pub services: Vec<(Cow<'a, str>, u64)>,
    /// Index into `services` of the one with the most time on the path
    /// (the first reached among equals).
    pub dominant: usize,
    /// The span with the most time of its own on the path, and that time.
    pub span: (usize, u64),
    /// Each span on the path once, in the order the path reaches it, with
    /// its time on the path.
    pub steps: Vec<(usize, u64)>,
}

impl<'a> PathSummary<'a> {
    /// The summary of `path`, the critical path of `spans`; `None` for an
    /// empty trace.
    pub fn of(path: &CriticalPath, spans: &'a [SpanRecord]) -> Option<Self> {
        let top = path.top.filter(|&t| t < spans.len())?;
        let steps: Vec<(usize, u64)> = path
            .steps()
            .into_iter()
            .filter(|&(i, _)| i < spans.len())
            .collect();
        let mut services: Vec<(Cow<'a, str>, u64)> = Vec::with_capacity(4);
        // A few services: a scan; past that, an index (a path may cross
        // thousands of resources).
        let mut index: Option<HashMap<Cow<'a, str>, usize>> = None;
        for &(i, t) in &steps {
            let name = spans[i].service();
            let at = match &index {
                Some(index) => index.get(&name).copied(),
                None => services.iter().position(|(s, _)| *s == name),
            };
            match at {
                Some(at) => services[at].1 += t,
                None => {
                    if let Some(index) = &mut index {
                        index.insert(name.clone(), services.len());
                    }
                    services.push((name, t));
                    if index.is_none() && services.len() > 16 {
                        index = Some(
                            services
                                .iter()
                                .enumerate()
                                .map(|(k, (s, _))| (s.clone(), k))
                                .collect(),
                        );
                    }
                }
            }
        }
        if services.is_empty() {
            // A path without length: the top span is all there is of it.
            services.push((spans[top].service(), 0));
        }
        let mut dominant = 0;
        for (k, (_, t)) in services.iter().enumerate() {
            if *t > services[dominant].1 {
                dominant = k;
            }
        }
        let mut span = (top, 0);
        for &(i, t) in &steps {
            if t > span.1 {
                span = (i, t);
            }
        }
        Some(Self {
            top,
            total_ns: path.total_ns,
            services,
            dominant,
            span,
            steps,
        })
    }

    /// The service with the most time on the path.
    pub fn dominant_service(&self) -> &str {
        &self.services[self.dominant].0
    }

    /// The dominant service's fraction of the path, 0–1 (0 for a path
    /// without length).
    pub fn share(&self) -> f64 {
        if self.total_ns == 0 {
            return 0.0;
        }
        self.services[self.dominant].1 as f64 / self.total_ns as f64
    }

    /// The summary in words and numbers (span names read from `spans`).
    pub fn digest(&self, spans: &[SpanRecord]) -> PathDigest {
        PathDigest {
            service: self.dominant_service().to_string(),
            share: self.share(),
            duration_ms: ms(self.total_ns),
            span: spans
                .get(self.span.0)
                .map(|s| s.name().into_owned())
                .unwrap_or_default(),
            services: self.services.iter().map(|(s, _)| s.to_string()).collect(),
        }
    }

    /// The attributes that write the summary onto the trace: the summary
    /// on the top span, each path span's time on the path on it; as
    /// `(index of the span, its entries)`, each span once.
    pub fn attributes(&self, spans: &[SpanRecord]) -> Vec<(usize, Attributes)> {
        let mut out: Vec<(usize, Attributes)> = self
            .steps
            .iter()
            .map(|&(i, t)| {
                let mut a = Attributes::new();
                a.double(SELF_ATTRIBUTE, ms(t));
                (i, a)
            })
            .collect();
        let at = match out.iter().position(|(i, _)| *i == self.top) {
            Some(at) => at,
            None => {
                out.push((self.top, Attributes::new()));
                out.len() - 1
            }
        };
        let span = spans.get(self.span.0).map(|s| s.name()).unwrap_or_default();
        out[at]
            .1
            .string(
                SERVICE_ATTRIBUTE,
                bounded(self.dominant_service(), MAX_NAME),
            )
            .double(SHARE_ATTRIBUTE, self.share())
            .double(DURATION_ATTRIBUTE, ms(self.total_ns))
            .string(SPAN_ATTRIBUTE, bounded(&span, MAX_NAME))
            .strings(
                SERVICES_ATTRIBUTE,
                self.services
                    .iter()
                    .take(MAX_SERVICES)
                    .map(|(s, _)| bounded(s, MAX_NAME)),
            );
        out
    }
}
