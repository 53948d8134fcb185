//! What the partition sends and writes, and how each produce ends: the
//! model's side of delivery, dead letters and exactly-once writes.

use super::*;
use crate::pipeline::model::generate::Outcome;

impl Sim {
    pub(super) fn ack(
        &mut self,
        id: DeliveryId,
        message: Outgoing,
        outcome: Outcome,
    ) -> Result<(), String> {
        // What no retry can fix fails the same way every time.
        let outcome = match self.refused.get(&message.payload) {
            Some(kind) => Outcome::Permanent(*kind),
            None => outcome,
        };
        if let Outcome::Permanent(kind) = outcome {
            self.refused.insert(message.payload.clone(), kind);
        }
        let result = match outcome {
            Outcome::Ok => {
                match message.destination {
                    Destination::Sampled => {
                        for key in self.output_spans(&message)? {
                            *self.delivered.entry(key).or_default() += 1;
                        }
                    }
                    Destination::DeadLetter(_) => self.dead_letter_done(&message),
                    Destination::Decisions(_) => self.logged(&message)?,
                }
                Ok(())
            }
            Outcome::Transient => Err(ProduceError::transient("broker away")),
            Outcome::Permanent(kind) => {
                match message.destination {
                    Destination::Sampled => {
                        let keys = self.output_spans(&message)?;
                        if kind == ProduceErrorKind::MessageTooLarge && keys.len() > 1 {
                            // Split smaller and sent again.
                        } else {
                            for key in keys {
                                self.given_up(key, message.payload.len());
                            }
                        }
                    }
                    Destination::DeadLetter(_) => self.dead_letter_done(&message),
                    // Given up: released, the decision stands unlogged.
                    Destination::Decisions(_) => self.logged(&message)?,
                }
                Err(ProduceError::new(kind, "refused for good"))
            }
        };
        let now = self.now;
        self.core().delivered(id, result, now);
        // A message refused as too large is split again under the lowered
        // limit; one retried after the limit was lowered below it is split
        // at the limit (or, a single span, given up) before it is sent.
        let limit = self.limits.of(Destination::Sampled);
        let resplit = message.destination == Destination::Sampled
            && match outcome {
                Outcome::Permanent(ProduceErrorKind::MessageTooLarge) => true,
                Outcome::Transient => message.payload.len() > limit,
                _ => false,
            };
        if resplit {
            let decoded = otlp::decode(message.payload.clone()).map_err(|e| e.to_string())?;
            match decoded.spans.as_slice() {
                [(id, record)] => {
                    // Refused: given up above already; retried: over the limit now.
                    if matches!(outcome, Outcome::Transient) {
                        self.given_up((*id, record.span_id), message.payload.len());
                    }
                }
                spans => {
                    for (id, record) in spans {
                        let (alone, _) = otlp::encode_trace(
                            [record],
                            &crate::otlp::Annotation::none(),
                            decoded.encoding,
                        );
                        if alone.len() > limit {
                            self.given_up((*id, record.span_id), alone.len());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A kept span that can never reach the output: given up once its
    /// dead-letter copy (of `bytes`) is done, if there is one to be made.
    pub(super) fn given_up(&mut self, key: Key, bytes: usize) {
        if self.case.dead_letter
            && bytes
                <= self
                    .limits
                    .of(Destination::DeadLetter(DeadLetterOf::Output))
        {
            self.now_.awaiting_copy.insert(key);
        } else {
            self.now_.undeliverable.insert(key);
        }
    }

    fn dead_letter_done(&mut self, message: &Outgoing) {
        if message.destination == Destination::DeadLetter(DeadLetterOf::Output) {
            let keys: Vec<Key> = otlp::decode(message.payload.clone())
                .map(|d| d.spans.iter().map(|(id, s)| (*id, s.span_id)).collect())
                .unwrap_or_default();
            for key in keys {
                if self.now_.awaiting_copy.remove(&key) {
                    self.now_.undeliverable.insert(key);
                }
            }
            return;
        }
        let offset = message
            .headers
            .iter()
            .find(|(k, _)| *k == DLQ_OFFSET_HEADER)
            .and_then(|(_, v)| v.parse().ok())
            .expect("a dead letter names its offset");
        self.now_.garbage_done.insert(offset);
    }

    /// The spans of an output message, checking its shape.
    pub(super) fn output_spans(&self, message: &Outgoing) -> Result<Vec<Key>, String> {
        if message.payload.len() > self.case.max_message_bytes {
            return Err(format!(
                "an output message of {} bytes, over the limit of {}",
                message.payload.len(),
                self.case.max_message_bytes
            ));
        }
        let decoded = otlp::decode(message.payload.clone())
            .map_err(|e| format!("an output message does not decode: {e}"))?;
        let key = message.key.as_deref().unwrap_or_default();
        let mut out = Vec::new();
        for (id, s) in decoded.spans {
            if id.to_hex().as_bytes() != key {
                return Err(format!("a span of {id} in a message keyed {key:?}"));
            }
            let k = (id, s.span_id);
            if !self.kept_ever.contains(&k) {
                return Err(format!("span {k:?} produced, but no decision kept it"));
            }
            out.push(k);
        }
        Ok(out)
    }

    /// A batch of decision records: on the partition's number, keyed, each
    /// saying what the worker decided.
    fn decision_records(&self, message: &Outgoing) -> Result<Vec<LoggedDecision>, String> {
        if !self.case.decision_log {
            return Err("a decision record with the decision log off".into());
        }
        if message.destination != Destination::Decisions(0) {
            return Err(format!("a decision record to {:?}", message.destination));
        }
        if message.key.as_ref().is_none_or(|k| k.is_empty()) {
            return Err("a batch of decision records without a key".into());
        }
        let records = LoggedDecision::read(&message.payload)
            .ok_or_else(|| "a batch of decision records that does not read back".to_string())?;
        if records.is_empty() {
            return Err("an empty batch of decision records".into());
        }
        for record in &records {
            let trace = record.trace().ok_or("a record without a trace id")?;
            match self.now_.remembered.get(&trace) {
                Some((keep, _)) if *keep == record.keep => {}
                Some((keep, _)) => {
                    return Err(format!(
                        "the record of {trace} says keep={}, the decision was keep={keep}",
                        record.keep
                    ))
                }
                None => {
                    return Err(format!(
                        "a record of {trace}, which this worker did not decide"
                    ))
                }
            }
        }
        Ok(records)
    }

    /// A batch of decision records is in the log (or given up on).
    fn logged(&mut self, message: &Outgoing) -> Result<(), String> {
        self.now_.records_pending.remove(&message.payload);
        for record in self.decision_records(message)? {
            if let Some(trace) = record.trace() {
                self.now_.logged.insert(trace);
            }
        }
        Ok(())
    }

    pub(super) fn command(&mut self, c: Command) -> Result<(), String> {
        self.log.push(format!("  -> {}", describe(&c)));
        match c {
            Command::Send { id, message, .. } => {
                if self.case.exactly_once {
                    return Err("a produce outside the transaction in exactly-once mode".into());
                }
                match message.destination {
                    Destination::Sampled => {
                        self.output_spans(&message)?;
                    }
                    Destination::Decisions(_) => {
                        let records = self.decision_records(&message)?;
                        let traces: Vec<TraceId> =
                            records.iter().filter_map(LoggedDecision::trace).collect();
                        for trace in &traces {
                            self.now_.unrecorded.remove(trace);
                        }
                        // Given up `record_timeout` after its first decision.
                        let made = self.epoch.instant
                            + Duration::from_millis(records[0].decided_at_ms as u64)
                                .saturating_sub(self.epoch.since_unix);
                        self.now_
                            .records_pending
                            .entry(message.payload.clone())
                            .or_insert((traces, made));
                    }
                    Destination::DeadLetter(_) => {}
                }
                self.in_flight.push((id, message));
            }
            Command::Followed { trace_id, keep, .. } => {
                // Late spans follow what this worker remembers.
                match self.now_.remembered.get(&trace_id) {
                    Some((k, _)) if *k == keep => {}
                    other => {
                        return Err(format!(
                            "late spans of {trace_id} followed keep={keep}, but the model remembers {:?}",
                            other.map(|(k, _)| k)
                        ))
                    }
                }
            }
            Command::Decided(d) => {
                let Some(mut part) = self.now_.open.remove(&d.trace_id) else {
                    return Err(format!(
                        "{} decided, but the model has none of it open",
                        d.trace_id
                    ));
                };
                let mut late = Vec::new();
                if let Some(reading) = self.now_.reading.remove(&d.trace_id) {
                    if part.len() == d.spans + reading.len() {
                        // Decided before this message's spans were added:
                        // due by the time the message brought, or for memory.
                        late = part.split_off(d.spans);
                    }
                }
                if part.len() != d.spans {
                    return Err(format!(
                        "{} decided over {} spans, the model has {} open",
                        d.trace_id,
                        d.spans,
                        part.len()
                    ));
                }
                let records: Vec<SpanRecord> =
                    part.iter().map(|k| self.spans[k].record.clone()).collect();
                let rules = &self.rules[self.in_force];
                let decision =
                    rules.decide(&TraceSummary::of(d.trace_id, &records), Duration::ZERO);
                let counting = Counting {
                    stage: decision.stage,
                    rule: rules.names()[decision.rule].clone(),
                };
                let want = decision.keep;
                if want != d.keep {
                    return Err(format!(
                        "{} decided keep={} by {}; the rules in force say keep={want}",
                        d.trace_id, d.keep, d.rule
                    ));
                }
                self.now_
                    .remembered
                    .insert(d.trace_id, (d.keep, counting.clone()));
                if self.case.decision_log && !self.case.exactly_once {
                    // Its record follows in this pass, unless the log was
                    // given up on a moment ago.
                    self.now_.unrecorded.insert(d.trace_id);
                }
                let encoding = self.spans[&part[0]].encoding;
                for key in part {
                    self.decided(key, d.keep);
                    if let Some(copy) = d
                        .keep
                        .then(|| self.too_large(&key, &counting, encoding))
                        .flatten()
                    {
                        self.given_up(key, copy);
                    }
                }
                self.follow(late, d.keep, &counting);
            }
            Command::Write {
                messages,
                next_offset,
                receipt,
            } => {
                if !self.case.exactly_once {
                    return Err("a transactional write in at-least-once mode".into());
                }
                for m in &messages {
                    match m.destination {
                        Destination::Sampled => {
                            let keys = self.output_spans(m)?;
                            self.now_.written.extend(keys);
                        }
                        Destination::DeadLetter(_) => self.dead_letter_done(m),
                        Destination::Decisions(_) => self.logged(m)?,
                    }
                }
                self.open_transaction.extend(messages);
                if let Some(next) = next_offset {
                    self.check_below(next, "written with the transaction")?;
                    self.now_.written_offset = Some(next);
                    self.now_.stored = Some(next);
                }
                self.core().written(receipt);
            }
        }
        Ok(())
    }

    /// Too large for any output message, alone with its resource and scope:
    /// the size of that message, its dead-letter copy.
    pub(super) fn too_large(
        &self,
        key: &Key,
        counting: &Counting,
        encoding: Encoding,
    ) -> Option<usize> {
        let mut records = vec![self.spans[key].record.clone()];
        // The model's spans carry no `tracestate`: the trace's sampling says
        // nothing a span's does not.
        let trace = crate::otlp::tracestate::Sampling::default();
        let counted = Counted::of(
            &records,
            &key.0,
            &trace,
            counting.stage,
            &counting.rule,
            None,
        );
        counted.apply(&mut records, &[]);
        let (payload, _) = otlp::encode_trace(&records, &counted.annotation, encoding);
        (payload.len() > self.limits.of(Destination::Sampled)).then_some(payload.len())
    }
}

/// A command, short.
fn describe(c: &Command) -> String {
    let message = |m: &Outgoing| {
        let spans: Vec<String> = otlp::decode(m.payload.clone()).map_or(Vec::new(), |d| {
            d.spans
                .iter()
                .map(|(t, s)| format!("{}/{}", &t.to_hex()[28..], s.span_id[2]))
                .collect()
        });
        format!(
            "{:?} [{}] {} bytes",
            m.destination,
            spans.join(" "),
            m.payload.len()
        )
    };
    match c {
        Command::Send { id, message: m, .. } => format!("send #{id}: {}", message(m)),
        Command::Decided(d) => format!(
            "decided {} keep={} by {} ({}) over {} spans",
            d.trace_id,
            d.keep,
            d.rule,
            d.reason.as_str(),
            d.spans
        ),
        Command::Followed {
            trace_id,
            keep,
            rule,
            spans,
        } => format!("{spans} late spans of {trace_id} followed keep={keep} by {rule}"),
        Command::Write {
            messages,
            next_offset,
            ..
        } => format!(
            "write [{}] with offset {next_offset:?}",
            messages.iter().map(message).collect::<Vec<_>>().join(", ")
        ),
    }
}
