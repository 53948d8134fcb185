//! Spans copied out of their message before they are buffered: the same
//! bytes, the same resource and scope, shared where equal, and no reference
//! left to the message.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::workload::attr;

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

/// What a record reads: its bytes, every part of its scope, its name.
fn seen(s: &SpanRecord) -> (Vec<u8>, Vec<Vec<u8>>, String) {
    let parts = [
        Part::Resource,
        Part::ResourceSchemaUrl,
        Part::Scope,
        Part::ScopeSchemaUrl,
        Part::Service,
    ]
    .map(|p| s.scope.part(p).to_vec());
    (s.encoded().to_vec(), parts.to_vec(), s.name().into_owned())
}

proptest! {
    /// Whatever the messages hold, a compacted span reads what it read in
    /// its message, equal resources and scopes are kept once, and no
    /// message stays referenced.
    #[test]
    fn compacted_spans_read_what_they_read_in_their_message(
        messages in prop::collection::vec(
            (prop::collection::vec((1u8..6, 0usize..3, 0u8..3), 1..5), prop::bool::ANY),
            1..12,
        ),
    ) {
        let mut interner = Interner::default();
        let mut kept: Vec<Vec<SpanRecord>> = Vec::new();
        let mut charged = 0;
        for (resources, json) in &messages {
            let encoding = if *json { Encoding::OtlpJson } else { Encoding::OtlpProto };
            let payload = message(resources, encoding);
            let decoded = decode(payload.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decoded.spans.len(), 2 * resources.len());
            for (_, mut group) in by_trace(decoded.spans) {
                let before: Vec<_> = group.iter().map(seen).collect();
                let own = compact(&mut group, &mut interner);
                let after: Vec<_> = group.iter().map(seen).collect();
                prop_assert_eq!(before, after);
                let encodings: usize = group.iter().map(|s| s.encoded().len()).sum();
                prop_assert!(own >= encodings, "the copies are counted: {} < {}", own, encodings);
                charged += own;
                kept.push(group);
            }
            prop_assert!(payload.is_unique(), "a compacted span refers to its message");
        }
        // Equal resources and scopes, one copy: (service, host) pairs.
        let mut copies: HashMap<Vec<u8>, std::collections::HashSet<usize>> = HashMap::new();
        for s in kept.iter().flatten() {
            copies
                .entry(s.scope.resource().to_vec())
                .or_default()
                .insert(s.scope.resource().as_ptr() as usize);
        }
        for (resource, at) in &copies {
            prop_assert_eq!(at.len(), 1, "{} copies of one resource", at.len());
            prop_assert!(!resource.is_empty());
        }
        prop_assert_eq!(interner.bytes(), interned(kept.iter().flatten()));
        prop_assert!(charged > 0);
        // As the traces go, so do their resources: the last one gives back all.
        for group in kept.iter().rev() {
            compact::release(group, &mut interner);
            prop_assert!(interner.bytes() <= interned(kept.iter().flatten()));
        }
        prop_assert_eq!(interner.bytes(), 0);
    }
}

/// A stream of resources that never repeat (a unique attribute per
/// message): each is interned while the spans under it are buffered, and
/// given back with them; what is interned is exactly what the buffered
/// spans use.
#[test]
fn resources_that_never_repeat_are_counted_while_their_spans_are_buffered() {
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
        for (_, mut group) in by_trace(decoded.spans) {
            compact(&mut group, &mut interner);
            kept.push_back(group);
        }
        // Half the traces are decided as they go.
        if n % 2 == 1 {
            let gone = kept.pop_front().expect("a trace");
            compact::release(&gone, &mut interner);
        }
        if n % 500 == 0 {
            assert_eq!(interner.bytes(), interned(kept.iter().flatten()));
        }
    }
    assert_eq!(interner.bytes(), interned(kept.iter().flatten()));
    for gone in kept.drain(..) {
        compact::release(&gone, &mut interner);
    }
    assert_eq!(interner.bytes(), 0);
}

/// What the distinct resources and scopes of `spans` take, counted from
/// the spans themselves: each distinct one once.
fn interned<'a>(spans: impl Iterator<Item = &'a SpanRecord>) -> usize {
    let mut distinct = std::collections::HashSet::new();
    for s in spans {
        let parts = [
            Part::Resource,
            Part::ResourceSchemaUrl,
            Part::Scope,
            Part::ScopeSchemaUrl,
            Part::Service,
        ]
        .map(|p| s.scope.part(p).to_vec());
        distinct.insert(parts);
    }
    distinct
        .iter()
        .map(|p| p.iter().map(Vec::len).sum::<usize>() + compact::PARTS_OVERHEAD)
        .sum()
}
