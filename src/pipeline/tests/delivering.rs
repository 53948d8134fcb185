//! Delivery: retries holding the watermark, kept traces split to fit the
//! output's message limit, and what can never be delivered (a span too
//! large, a permanent produce error, a message refused as too large)
//! dead-lettered and released.

use super::*;

#[tokio::test(start_paused = true)]
async fn failed_produces_are_retried_and_hold_the_watermark() {
    let h = start(3);
    let (_, parts) = two_part_trace(3, true);
    send(&h, 0, payload(&parts[0])).await;
    send(&h, 1, payload(&parts[1])).await;
    tokio::time::sleep(Duration::from_secs(2) + Duration::from_millis(10)).await;
    assert_eq!(h.output.attempts.load(Ordering::SeqCst), 1);
    assert_eq!(
        h.offsets.last(),
        Some(0),
        "undelivered: nothing committed past it"
    );
    tokio::time::sleep(Duration::from_secs(5)).await; // backoff 200 ms, 400 ms, 800 ms
    assert_eq!(h.output.attempts.load(Ordering::SeqCst), 4);
    assert_eq!(h.output.sent.lock().unwrap().len(), 1);
    assert_eq!(h.offsets.last(), Some(2));
}

/// An ERROR trace of `spans` spans (about 200 bytes each), in `messages`
/// input messages, protobuf.
fn big_trace(n: u8, spans: usize, messages: usize) -> (TraceId, Vec<Bytes>) {
    let id = TraceId([n; 16]);
    let ids: Vec<[u8; 8]> = (0..spans)
        .map(|i| {
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&(i as u32 + 1).to_be_bytes());
            b[7] = n;
            b
        })
        .collect();
    let mut specs: Vec<SpanSpec> = (0..spans)
        .map(|i| {
            let mut s = SpanSpec::new(
                "backend",
                &format!("query {i} {}", "x".repeat(120)),
                (i > 0).then_some(0),
                i as u64 / 10,
                1,
            );
            s.error = i == spans / 2;
            s
        })
        .collect();
    specs[0].service = "gateway";
    let mut data = TracesData::default();
    for m in build_trace(id, &ids, 1_000, &specs) {
        data.resource_spans.extend(m.resource_spans);
    }
    // All spans under one resource and scope per service, then cut into messages.
    let all: Vec<_> = data
        .resource_spans
        .iter()
        .flat_map(|rs| {
            rs.scope_spans[0].spans.iter().map(move |s| {
                let mut one = rs.clone();
                one.scope_spans[0].spans = vec![s.clone()];
                one
            })
        })
        .collect();
    let per = all.len().div_ceil(messages);
    let payloads = all
        .chunks(per)
        .map(|chunk| {
            let mut m = TracesData::default();
            for rs in chunk {
                match m
                    .resource_spans
                    .iter_mut()
                    .find(|r| r.resource == rs.resource)
                {
                    Some(r) => r.scope_spans[0]
                        .spans
                        .extend(rs.scope_spans[0].spans.clone()),
                    None => m.resource_spans.push(rs.clone()),
                }
            }
            payload(&m)
        })
        .collect();
    (id, payloads)
}

/// The span ids in a batch of output messages, checking each is a valid
/// `TracesData` within `limit`, keyed by `id`, every span annotated.
fn output_spans(
    sent: &[(String, Bytes)],
    id: TraceId,
    limit: usize,
) -> std::collections::HashSet<[u8; 8]> {
    let mut spans = std::collections::HashSet::new();
    for (key, payload) in sent {
        assert!(
            payload.len() <= limit,
            "{} bytes over {limit}",
            payload.len()
        );
        assert_eq!(key, &id.to_hex());
        let data = TracesData::decode(payload.clone()).expect("a valid TracesData");
        for rs in &data.resource_spans {
            assert!(rs.resource.is_some(), "each message carries its resource");
            for ss in &rs.scope_spans {
                assert!(ss.scope.is_some(), "and its scope");
                for s in &ss.spans {
                    assert!(s.attributes.iter().any(|kv| kv.key == "tailgate.rule"));
                    assert!(spans.insert(<[u8; 8]>::try_from(s.span_id.as_slice()).unwrap()));
                }
            }
        }
    }
    spans
}

/// A kept trace too big for one output message — 4 000
/// spans in one input message, 8 000 over 80 — is split into messages under
/// the limit, all of it delivered, and the watermark moves past it.
#[tokio::test(start_paused = true)]
async fn a_kept_trace_bigger_than_a_message_is_split_and_delivered_whole() {
    for (spans, messages) in [(4_000, 1), (8_000, 80)] {
        let limit = 100_000;
        let h = start_opts(Opts {
            max_message_bytes: limit,
            ..Opts::default()
        });
        let (id, payloads) = big_trace(7, spans, messages);
        assert_eq!(payloads.len(), messages);
        let total: usize = payloads.iter().map(Bytes::len).sum();
        for (o, p) in payloads.into_iter().enumerate() {
            send(&h, o as i64, p).await;
        }
        tokio::time::sleep(Duration::from_secs(11)).await;
        let sent = h.output.sent.lock().unwrap().clone();
        assert_eq!(
            output_spans(&sent, id, limit).len(),
            spans,
            "every span, once"
        );
        assert!(
            sent.len() >= total / limit,
            "{} messages for {total} bytes",
            sent.len()
        );
        assert!(
            sent.len() <= 2 * total.div_ceil(limit) + 1,
            "as many messages as it needs: {} for {total} bytes",
            sent.len()
        );
        eprintln!(
            "{spans} spans in {messages} input messages ({total} bytes): {} output messages under {limit} bytes",
            sent.len()
        );
        assert_eq!(h.offsets.last(), Some(messages as i64), "committed past it");
    }
}

/// A span that fits no message even alone is counted, copied to the
/// dead-letter topic, and released: the rest of its trace goes out, the
/// partition goes on.
#[tokio::test(start_paused = true)]
async fn a_span_too_large_for_any_message_is_dead_lettered_and_released() {
    let limit = 2_000;
    let h = start_opts(Opts {
        max_message_bytes: limit,
        dead_letter_bytes: Some(1_000_000),
        dead_letter: true,
        ..Opts::default()
    });
    let id = TraceId([9; 16]);
    let mut root = SpanSpec::new("gateway", "GET /", None, 0, 10);
    root.error = true;
    let huge = SpanSpec::new("backend", &"n".repeat(5_000), Some(0), 1, 5);
    let parts = build_trace(id, &[[1; 8], [2; 8]], 1_000, &[root, huge]);
    send(&h, 0, payload(&parts[0])).await;
    send(&h, 1, payload(&parts[1])).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = h.output.sent.lock().unwrap().clone();
    let spans = output_spans(&sent, id, limit);
    assert_eq!(
        spans.into_iter().collect::<Vec<_>>(),
        vec![[1; 8]],
        "the root goes out"
    );
    let dl = h.output.dead_letters.lock().unwrap().clone();
    assert_eq!(dl.len(), 1);
    let header = |name: &str| {
        dl[0]
            .headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header(DLQ_REASON_HEADER).as_deref(), Some(SPAN_TOO_LARGE));
    assert_eq!(header(DLQ_TRACE_HEADER), Some(id.to_hex()));
    assert_eq!(h.offsets.last(), Some(2), "released");
}

/// Produce errors no retry can fix are not retried:
/// the kept spans are copied to the dead-letter topic (or, without one,
/// released), and the watermark moves on.
#[tokio::test(start_paused = true)]
async fn a_permanent_produce_error_is_dead_lettered_and_released_not_retried() {
    for dead_letter in [true, false] {
        for kind in [
            ProduceErrorKind::UnknownTopic,
            ProduceErrorKind::Authorization,
            ProduceErrorKind::InvalidRecord,
        ] {
            let h = start_opts(Opts {
                dead_letter,
                refuse: Some(kind),
                ..Opts::default()
            });
            let (id, parts) = two_part_trace(12, true);
            send(&h, 0, payload(&parts[0])).await;
            send(&h, 1, payload(&parts[1])).await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            assert!(h.output.sent.lock().unwrap().is_empty());
            let attempts = h.output.attempts.load(Ordering::SeqCst);
            assert_eq!(
                attempts,
                1 + usize::from(dead_letter),
                "{kind:?}: never retried"
            );
            let dl = h.output.dead_letters.lock().unwrap().clone();
            assert_eq!(dl.len(), usize::from(dead_letter));
            if dead_letter {
                let header = |name: &str| {
                    dl[0]
                        .headers
                        .iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| v.clone())
                };
                assert_eq!(header(DLQ_REASON_HEADER).as_deref(), Some(kind.as_str()));
                assert_eq!(header(DLQ_TRACE_HEADER), Some(id.to_hex()));
                assert_eq!(header(DLQ_OFFSET_HEADER).as_deref(), Some("0"));
            }
            assert_eq!(h.offsets.last(), Some(2), "{kind:?}: released");
        }
    }
}

/// A broker refusing an output message as too large (its limit is below
/// what tailgate read, or was lowered since): the limit is lowered for
/// every worker and the message split again; what still does not fit is
/// dead-lettered and released.
#[tokio::test(start_paused = true)]
async fn an_output_message_refused_as_too_large_is_split_again() {
    let limits = MessageLimits::new(1_000_000);
    let h = start_opts(Opts {
        dead_letter: true,
        refuse: Some(ProduceErrorKind::MessageTooLarge),
        limits: Some(limits.clone()),
        ..Opts::default()
    });
    let (id, parts) = two_part_trace(13, true);
    send(&h, 0, payload(&parts[0])).await;
    send(&h, 1, payload(&parts[1])).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let output = limits.of(Destination::Sampled);
    assert!(
        output < 1_000,
        "lowered below the refused message: {output}"
    );
    // 1 refused; then the halves that fit the lowered limit, refused (a span
    // over it alone goes straight to the dead letters); 2 dead letters.
    let attempts = h.output.attempts.load(Ordering::SeqCst);
    assert!((4..=5).contains(&attempts), "{attempts} attempts");
    let dl = h.output.dead_letters.lock().unwrap().clone();
    assert_eq!(dl.len(), 2, "each span alone, dead-lettered");
    for d in &dl {
        assert_eq!(d.destination, Destination::DeadLetter(DeadLetterOf::Output));
        assert_eq!(d.key.as_deref(), Some(id.to_hex().as_bytes()));
        let trace = d.headers.iter().find(|(k, _)| *k == DLQ_TRACE_HEADER);
        assert_eq!(trace.map(|(_, v)| v.as_str()), Some(id.to_hex().as_str()));
    }
    assert_eq!(h.offsets.last(), Some(2), "released");
}

/// A producer in librdkafka's fatal state (fenced, or its
/// idempotent identity refused) delivers nothing ever again. Its failures
/// are not retried (a retry loop would stop every worker at
/// `max_in_flight` for good), nor given up (dead-lettered or released: the
/// offsets would be committed past kept spans never delivered): the
/// watermark stays behind them, and the worker stops at once when its input
/// closes, so the process can stop and a new producer deliver them.
#[tokio::test(start_paused = true)]
async fn a_fatal_produce_error_is_neither_retried_nor_released() {
    for dead_letter in [true, false] {
        let h = start_opts(Opts {
            dead_letter,
            refuse: Some(ProduceErrorKind::Fatal),
            ..Opts::default()
        });
        let (_, kept) = two_part_trace(21, true);
        let (_, dropped) = two_part_trace(22, false);
        send(&h, 0, payload(&kept[0])).await;
        send(&h, 1, payload(&kept[1])).await;
        send(&h, 2, payload(&dropped[0])).await;
        send(&h, 3, payload(&dropped[1])).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            h.output.attempts.load(Ordering::SeqCst),
            1,
            "dead letter {dead_letter}: tried once, never again, nothing dead-lettered"
        );
        assert!(h.output.dead_letters.lock().unwrap().is_empty());
        assert!(h.output.sent.lock().unwrap().is_empty());
        assert_eq!(
            h.offsets.last(),
            Some(0),
            "dead letter {dead_letter}: nothing stored past the kept trace, not even the dropped one after it"
        );
        let Harness { tx, task, .. } = h;
        drop(tx);
        let stopped = tokio::time::timeout(Duration::from_secs(1), task).await;
        assert!(
            matches!(stopped, Ok(Ok(_))),
            "dead letter {dead_letter}: the worker stops at once, not after a drain timeout"
        );
    }
}
