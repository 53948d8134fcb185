//! Spans copied out of their message into their trace before they are
//! buffered: the same bytes, the same resource and scope, shared where
//! equal, and no reference left to the message.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::otlp::compact::{self, PARTS_OVERHEAD};
use crate::workload::attr;
use opentelemetry_proto::tonic::trace::v1::ScopeSpans;
use std::sync::Arc;

const SERVICES: [&str; 3] = ["checkout", "payments", "fraud"];

/// A message of several traces and services: `(trace, service, host)` per
/// resource, `host` an extra resource attribute (0: none).
fn message(resources: &[(u8, usize, u8)], encoding: Encoding) -> Bytes {
    let mut data = TracesData::default();
    for (i, &(trace, service, host)) in resources.iter().enumerate() {
        let specs = [
            SpanSpec::new(SERVICES[service], "work", None, 0, 10),
            SpanSpec::new(SERVICES[service], "call", Some(0), 1, 5),
        ];
        let ids = [[i as u8 * 2 + 1; 8], [i as u8 * 2 + 2; 8]];
        for mut one in build_trace(TraceId([trace; 16]), &ids, 1_000, &specs) {
            if host > 0 {
                for rs in &mut one.resource_spans {
                    if let Some(r) = rs.resource.as_mut() {
                        r.attributes.push(attr("host.name", &format!("h{host}")));
                    }
                }
            }
            data.resource_spans.extend(one.resource_spans);
        }
    }
    Bytes::from(encode(&data, encoding))
}

/// Every part of a span's scope.
fn parts(s: &SpanRecord) -> [Vec<u8>; 5] {
    Part::ALL.map(|p| s.scope.part(p).to_vec())
}

/// What a record reads: its bytes, every part of its scope, its name, its fields.
type Seen = (
    Vec<u8>,
    [Vec<u8>; 5],
    String,
    [u8; 8],
    [u8; 8],
    u64,
    u64,
    u8,
    u8,
);

fn seen(s: &SpanRecord) -> Seen {
    (
        s.encoded().to_vec(),
        parts(s),
        s.name().into_owned(),
        s.span_id,
        s.parent_span_id,
        s.start_ns,
        s.end_ns,
        s.kind,
        s.status,
    )
}

/// What the distinct resources and scopes of `spans` take, counted from
/// the spans themselves: each distinct one once.
fn interned<'a>(spans: impl Iterator<Item = &'a [Vec<u8>; 5]>) -> usize {
    let distinct: HashSet<_> = spans.collect();
    distinct
        .iter()
        .map(|p| p.iter().map(Vec::len).sum::<usize>() + PARTS_OVERHEAD)
        .sum()
}

proptest! {
    /// Whatever the messages hold, a trace's spans read, once it is
    /// decided, what they read in their messages, in the order they came;
    /// equal resources and scopes are kept once while a trace uses them and
    /// not at all after; no message stays referenced.
    #[test]
    fn assembled_spans_read_what_they_read_in_their_messages(
        messages in prop::collection::vec(
            (prop::collection::vec((1u8..6, 0usize..3, 0u8..3), 1..5), prop::bool::ANY),
            1..12,
        ),
        decide_after in prop::collection::vec(0usize..12, 0..4),
    ) {
        let mut interner = Interner::default();
        let mut traces: HashMap<TraceId, (Assembled, Vec<Seen>)> = HashMap::new();
        for (n, (resources, json)) in messages.iter().enumerate() {
            let encoding = if *json { Encoding::OtlpJson } else { Encoding::OtlpProto };
            let payload = message(resources, encoding);
            let decoded = decode(payload.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decoded.spans.len(), 2 * resources.len());
            for (id, group) in by_trace(decoded.spans) {
                let (trace, want) = traces.entry(id).or_default();
                trace.add(&group, &mut interner);
                want.extend(group.iter().map(seen));
                let held: usize = want.iter().map(|s| s.0.len() + compact::PACKED_SPAN).sum();
                prop_assert!(trace.bytes() >= held, "the copies and records are counted");
                prop_assert_eq!(trace.len(), want.len());
            }
            prop_assert!(payload.is_unique(), "a buffered span refers to its message");
            let used = interned(traces.values().flat_map(|(_, w)| w.iter().map(|s| &s.1)));
            prop_assert_eq!(interner.bytes(), used, "each resource in use, once");
            // Some traces are decided between messages.
            if decide_after.contains(&n) {
                let id = *traces.keys().min().expect("a trace");
                let (trace, want) = traces.remove(&id).expect("the trace");
                let got: Vec<_> = trace.into_spans(&mut interner).iter().map(seen).collect();
                prop_assert_eq!(got, want);
            }
        }
        for (_, (trace, want)) in traces.drain() {
            let spans = trace.into_spans(&mut interner);
            let got: Vec<_> = spans.iter().map(seen).collect();
            prop_assert_eq!(got, want);
            // A decided trace's spans share one buffer.
            let first = spans[0].scope.bytes_at((0, 0)).as_ptr();
            prop_assert!(spans.iter().all(|s| s.scope.bytes_at((0, 0)).as_ptr() == first));
        }
        prop_assert_eq!(interner.bytes(), 0, "nothing interned once no trace is left");
    }
}

/// A stream of resources that never repeat (a unique attribute per
/// message): each is interned while the trace under it is buffered, and
/// given back with it; what is interned is exactly what the buffered
/// traces use.
#[test]
fn resources_that_never_repeat_are_counted_while_their_traces_are_buffered() {
    let mut interner = Interner::default();
    let mut kept = std::collections::VecDeque::new();
    for n in 0..4000u32 {
        let mut data = build_trace(
            TraceId([9; 16]),
            &[[1; 8]],
            1_000,
            &[SpanSpec::new("svc", "op", None, 0, 1)],
        )
        .remove(0);
        if let Some(r) = data.resource_spans[0].resource.as_mut() {
            // About 300 bytes of resource of its own.
            r.attributes.push(attr("unique", &format!("{n:0>300}")));
        }
        let decoded = decode(proto(&data)).expect("decodes");
        for (_, group) in by_trace(decoded.spans) {
            let mut trace = Assembled::default();
            trace.add(&group, &mut interner);
            kept.push_back((trace, parts(&group[0])));
        }
        // Half the traces are decided as they go.
        if n % 2 == 1 {
            let (gone, _) = kept.pop_front().expect("a trace");
            gone.into_spans(&mut interner);
        }
        if n % 500 == 0 {
            assert_eq!(interner.bytes(), interned(kept.iter().map(|(_, p)| p)));
        }
    }
    assert_eq!(interner.bytes(), interned(kept.iter().map(|(_, p)| p)));
    for (gone, _) in kept.drain(..) {
        gone.into_spans(&mut interner);
    }
    assert_eq!(interner.bytes(), 0);
}

/// A resource over many scopes without fields of their own (one span
/// each, each its own trace): as decoded, they share one set of parts, so
/// buffering the message looks its resource up once, not once per trace
/// (a 300 KB resource over 2 000 scopes was hashed 2 000 times a message).
#[test]
fn a_resources_bare_scopes_share_their_parts_and_one_interned_copy() {
    let big = "x".repeat(50_000);
    for encoding in [Encoding::OtlpProto, Encoding::OtlpJson] {
        let mut data = TracesData::default();
        for n in 1..=200u8 {
            let mut one = build_trace(
                TraceId([n; 16]),
                &[[n; 8]],
                1_000,
                &[SpanSpec::new("svc", "op", None, 0, 1)],
            )
            .remove(0);
            let rs = &mut one.resource_spans[0];
            if let Some(r) = rs.resource.as_mut() {
                r.attributes.push(attr("big", &big));
            }
            let scope = rs.scope_spans.remove(0);
            match data.resource_spans.first_mut() {
                None => {
                    rs.scope_spans.push(ScopeSpans {
                        scope: None,
                        ..scope
                    });
                    data.resource_spans.push(rs.clone());
                }
                Some(first) => first.scope_spans.push(ScopeSpans {
                    scope: None,
                    ..scope
                }),
            }
        }
        let decoded = decode(Bytes::from(encode(&data, encoding))).expect("decodes");
        assert_eq!(decoded.spans.len(), 200);
        let first = decoded.spans[0].1.scope.parts.clone();
        assert!(
            decoded
                .spans
                .iter()
                .all(|(_, s)| Arc::ptr_eq(&s.scope.parts, &first)),
            "{encoding:?}: one set of parts for the resource's scopes"
        );
        let mut interner = Interner::default();
        let mut traces = Vec::new();
        for (_, group) in by_trace(decoded.spans) {
            let mut trace = Assembled::default();
            trace.add(&group, &mut interner);
            traces.push(trace);
        }
        assert_eq!(
            interner.bytes(),
            first.size(),
            "{encoding:?}: the resource interned once"
        );
        for t in traces {
            t.into_spans(&mut interner);
        }
        assert_eq!(interner.bytes(), 0);
    }
}

/// The interner hashes a resource's head and tail, not all of it: two
/// resources that differ only in their middle share a hash, and each trace
/// still reads its own, the second copied for its trace and counted there.
#[test]
fn resources_that_differ_only_in_their_middle_stay_apart() {
    let mut interner = Interner::default();
    let mut traces = Vec::new();
    for (n, middle) in [(1u8, "a"), (2, "b"), (3, "a")] {
        let mut data = build_trace(
            TraceId([n; 16]),
            &[[n; 8]],
            1_000,
            &[SpanSpec::new("svc", "op", None, 0, 1)],
        )
        .remove(0);
        if let Some(r) = data.resource_spans[0].resource.as_mut() {
            let value = format!("{}{middle}{}", "x".repeat(2_000), "y".repeat(2_000));
            r.attributes.push(attr("big", &value));
        }
        let decoded = decode(proto(&data)).expect("decodes");
        let resource = decoded.spans[0].1.scope.resource().to_vec();
        let mut trace = Assembled::default();
        let (_, group) = by_trace(decoded.spans).next().expect("a trace");
        trace.add(&group, &mut interner);
        traces.push((trace, resource));
    }
    let one = interner.bytes();
    assert!(one > 4_000 && one < 8_000, "one resource interned: {one}");
    assert!(
        traces[1].0.bytes() > traces[0].0.bytes() + 4_000,
        "the second resource is counted with its trace"
    );
    for (trace, resource) in traces {
        let spans = trace.into_spans(&mut interner);
        assert_eq!(spans[0].scope.resource(), resource.as_slice());
    }
    assert_eq!(interner.bytes(), 0);
}
