//! Counts a backend can trust: what each kept span of a trace leaves with —
//! the threshold in its `tracestate` (the OpenTelemetry `ot=th:`), and
//! `tailgate.adjusted_count`, how many spans like it it stands for — from
//! the `tracestate` it came with and the sampling stage that kept it (see
//! [`super::tracestate`]).
//!
//! Spans of a trace mostly share one `tracestate`; each distinct one is
//! read once. When every kept span of the trace has the same adjusted
//! count (the rule), it is written once for all of them, with the rule's
//! name, in the trace's [`Annotation`]; a span whose `tracestate` changes,
//! or whose count differs from the others', gets a copy of its encoding
//! with the change made ([`super::annotate::edit_spans`]).

use std::collections::HashMap;

use super::annotate::{edit_spans, Attributes, Edit};
use super::encode::ADJUSTED_COUNT_ATTRIBUTE;
use super::tracestate::{outgoing, Erased, Outgoing, Sampling, Stage};
use super::{Annotation, SpanRecord, TraceId};

/// What the kept spans of one trace leave with.
#[derive(Debug)]
pub struct Counted {
    /// What every span carries alike: the rule, and the adjusted count
    /// when all share it.
    pub annotation: Annotation,
    /// Each distinct outcome, and the attributes a span with it carries
    /// itself (its adjusted count, when the spans' differ).
    outcomes: Vec<(Outgoing, Attributes)>,
    /// Per span: the index of its outcome.
    of_span: Vec<u32>,
    /// Spans whose incoming threshold was erased, by [`Erased::index`].
    pub erased: [u64; 2],
}

/// The attributes of an adjusted count: `tailgate.adjusted_count`, and the
/// same number rounded under `sample_rate` (as a backend such as Honeycomb
/// reads it, an integer `SampleRate`) if named. Nothing when the count is
/// unknown.
pub fn count_attributes(
    attributes: &mut Attributes,
    adjusted_count: Option<f64>,
    sample_rate: Option<&str>,
) {
    if let Some(n) = adjusted_count {
        attributes.double(ADJUSTED_COUNT_ATTRIBUTE, n);
        if let Some(name) = sample_rate {
            attributes.int(name, n.round().clamp(1.0, i64::MAX as f64) as i64);
        }
    }
}

impl Counted {
    /// Reads the `tracestate` of each of `spans` (of trace `trace_id`, whose
    /// sampling says `trace`, kept by rule `rule` as `stage`) and works out
    /// what it leaves with.
    pub fn of(
        spans: &[SpanRecord],
        trace_id: &TraceId,
        trace: &Sampling,
        stage: Stage,
        rule: &str,
        sample_rate: Option<&str>,
    ) -> Self {
        let mut outcomes: Vec<(Outgoing, Attributes)> = Vec::new();
        let mut of_span = Vec::with_capacity(spans.len());
        let mut erased = [0u64; 2];
        // Each distinct `tracestate`, in the order of `outcomes`: a trace has
        // one or a few, looked up in a short list; a hostile trace that
        // gives every span its own gets a map past a handful.
        let mut states: Vec<&[u8]> = Vec::new();
        // Seeded per process: the keys come from the input.
        let mut many: Option<HashMap<&[u8], u32, foldhash::fast::RandomState>> = None;
        let mut previous: Option<(&[u8], u32)> = None;
        for s in spans {
            let state = s.trace_state();
            let known = match (previous, &many) {
                (Some((p, k)), _) if p == state => Some(k),
                (_, Some(map)) => map.get(state).copied(),
                (_, None) => states.iter().position(|&k| k == state).map(|k| k as u32),
            };
            let k = known.unwrap_or_else(|| {
                let out = match std::str::from_utf8(state) {
                    Ok(text) => outgoing(text, trace_id, trace, stage),
                    // Not UTF-8, which OTLP requires (the Collector's
                    // readers refuse the span): erased whole — nothing in
                    // it can be read — and the span claims no count.
                    Err(_) => Outgoing {
                        threshold: None,
                        tracestate: Some(String::new()),
                        adjusted_count: None,
                        erased: Some(Erased::Malformed),
                    },
                };
                outcomes.push((out, Attributes::new()));
                let k = (outcomes.len() - 1) as u32;
                match &mut many {
                    Some(map) => {
                        map.insert(state, k);
                    }
                    None if states.len() < 8 => states.push(state),
                    None => {
                        let mut map: HashMap<_, _, _> = HashMap::default();
                        map.extend(states.drain(..).zip(0u32..));
                        map.insert(state, k);
                        many = Some(map);
                    }
                }
                k
            });
            previous = Some((state, k));
            if let Some(why) = outcomes[k as usize].0.erased {
                erased[why.index()] += 1;
            }
            of_span.push(k);
        }
        let first = outcomes.first().and_then(|(o, _)| o.adjusted_count);
        let uniform = outcomes
            .iter()
            .all(|(o, _)| o.adjusted_count.map(f64::to_bits) == first.map(f64::to_bits));
        let mut shared = Attributes::new();
        shared.string(super::encode::RULE_ATTRIBUTE, rule);
        if uniform {
            count_attributes(&mut shared, first, sample_rate);
        } else {
            for (o, attributes) in &mut outcomes {
                count_attributes(attributes, o.adjusted_count, sample_rate);
            }
        }
        Self {
            annotation: Annotation::from_attributes(shared),
            outcomes,
            of_span,
            erased,
        }
    }

    /// What the trace's root (else its first span) leaves with, of
    /// `spans`, those it was worked out from: what `explain` and `replay`
    /// show for the trace.
    pub fn of_root(&self, spans: &[SpanRecord]) -> Option<&Outgoing> {
        self.outgoing(spans.iter().position(SpanRecord::is_root).unwrap_or(0))
    }

    /// What span `i` leaves with.
    pub fn outgoing(&self, i: usize) -> Option<&Outgoing> {
        let k = *self.of_span.get(i)?;
        self.outcomes.get(k as usize).map(|(o, _)| o)
    }

    /// Makes the changes on `spans` (those it was worked out from), with
    /// `extra` entries (index, attributes) appended to the spans they name.
    pub fn apply(&self, spans: &mut [SpanRecord], extra: &[(usize, Attributes)]) {
        let mut joined: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, a) in extra {
            if let Some(&k) = self.of_span.get(*i) {
                let own = self.outcomes[k as usize].1.as_bytes();
                joined.push((*i, [own, a.as_bytes()].concat()));
            }
        }
        joined.sort_by_key(|(i, _)| *i);
        let mut edits = Vec::new();
        for (i, &k) in self.of_span.iter().enumerate() {
            let (out, own) = &self.outcomes[k as usize];
            let attributes = match joined.binary_search_by_key(&i, |(j, _)| *j) {
                Ok(at) => joined[at].1.as_slice(),
                Err(_) => own.as_bytes(),
            };
            let edit = Edit {
                trace_state: out.tracestate.as_deref(),
                attributes,
            };
            if edit != Edit::default() {
                edits.push((i, edit));
            }
        }
        edit_spans(spans, &edits);
    }
}

#[cfg(test)]
mod tests;
