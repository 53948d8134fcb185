//! The steps of a history, as the consumer, the process and the worker
//! task would take them.

use super::*;
use crate::pipeline::model::generate::{Outcome, Step};

impl Sim {
    pub(super) fn step(&mut self, step: Step) -> Result<(), String> {
        self.log
            .push(format!("{step:?} (position {})", self.position));
        match step {
            Step::Read => self.read()?,
            Step::Wait(d) => self.now += d,
            Step::CaughtUp => {
                // The consumer says so only once the worker read everything.
                if self.position as usize >= self.input.len() {
                    let now = self.now;
                    self.core().caught_up(now);
                }
            }
            Step::MemoryPause(paused) => {
                self.paused = paused;
                let now = self.now;
                self.core().input_paused(paused, now);
            }
            Step::Ack(i, outcome) => {
                if !self.in_flight.is_empty() {
                    let (id, message) = self.in_flight.remove(i % self.in_flight.len());
                    self.ack(id, message, outcome)?;
                }
            }
            Step::Commit => self.commit(),
            Step::Crash => {
                // The process is gone: what it stored but did not commit is too.
                self.stored
                    .values
                    .lock()
                    .expect("lock")
                    .push(self.committed);
                self.seen_stored = self.stored.values.lock().expect("lock").len();
                let from = self.committed;
                self.start(from)?;
                self.replacement_from = None;
                self.open_offset = None;
            }
            Step::WorkerDies => {
                // The consumer stays: the replacement reads from what the dead
                // worker itself last stored (exactly-once: wrote with the
                // transaction), else from where the dead worker began if it
                // was a replacement too, else from the committed offset — as
                // `Partitions` and the app do.
                let from = self
                    .now_
                    .stored
                    .or(self.replacement_from)
                    .unwrap_or(self.committed);
                let written = std::mem::take(&mut self.open_transaction);
                let transaction_offset = self.now_.written_offset.or(self.open_offset);
                self.start(from)?;
                self.replacement_from = Some(from);
                // The open transaction stays open, with what the dead worker
                // wrote, and its offset for the partition.
                self.open_transaction = written;
                self.open_offset = transaction_offset;
            }
            Step::Stop => {
                self.drain()?;
                self.commit();
                let from = self.committed;
                self.start(from)?;
                self.replacement_from = None;
            }
            Step::RefuseStores(refuse) => self
                .stored
                .refuse
                .store(refuse, std::sync::atomic::Ordering::Relaxed),
            Step::Reload => {
                self.in_force = 1 - self.in_force;
                self.rules_tx
                    .send_replace(self.rules[self.in_force].clone());
            }
        }
        self.settle()
    }

    pub(super) fn read(&mut self) -> Result<(), String> {
        if !self.core().can_read() || self.position as usize >= self.input.len() {
            return Ok(());
        }
        let at = self.position as usize;
        self.position += 1;
        let message = self.input[at].message.clone();
        // The model first: where each span goes.
        let offset = message.offset;
        if self.input[at].garbage && !self.case.dead_letter {
            self.now_.garbage_done.insert(offset);
        }
        let mut groups: Vec<(TraceId, Vec<Key>)> = Vec::new();
        for key in self.input[at].spans.clone() {
            match groups.iter_mut().find(|(t, _)| *t == key.0) {
                Some((_, g)) => g.push(key),
                None => groups.push((key.0, vec![key])),
            }
        }
        let mut followed = Vec::new();
        for (t, keys) in groups {
            if let Some(open) = self.now_.open.get_mut(&t) {
                open.extend(keys.iter().copied());
                self.now_.reading.insert(t, keys);
            } else if let Some((keep, counting)) = self.now_.remembered.get(&t) {
                followed.push((t, keys, *keep, counting.clone()));
            } else {
                self.now_.open.insert(t, keys);
            }
        }
        let now = self.now;
        // The partition gets a payload of its own, so that what it keeps of
        // it shows: once read, nothing but a dead-letter copy may refer to it.
        let mut message = message;
        message.payload = Bytes::copy_from_slice(&message.payload);
        let payload = message.payload.clone();
        self.core().handle(message, now);
        if !self.input[at].garbage && !payload.is_unique() {
            return Err(format!("message {offset} is kept alive after it was read"));
        }
        for (_, keys, keep, counting) in followed {
            self.follow(keys, keep, &counting);
        }
        Ok(())
    }

    /// Late spans follow their trace's decision.
    pub(super) fn follow(&mut self, keys: Vec<Key>, keep: bool, counting: &Counting) {
        for key in keys {
            self.decided(key, keep);
            let encoding = self.spans[&key].encoding;
            if let Some(copy) = keep
                .then(|| self.too_large(&key, counting, encoding))
                .flatten()
            {
                self.given_up(key, copy);
            }
        }
    }

    /// The model records `key`'s decision.
    pub(super) fn decided(&mut self, key: Key, keep: bool) {
        self.now_.decided.insert(key, keep);
        if keep {
            self.kept_ever.insert(key);
        }
    }

    pub(super) fn commit(&mut self) {
        if self.case.exactly_once {
            let messages = std::mem::take(&mut self.open_transaction);
            for m in &messages {
                if m.destination == Destination::Sampled {
                    for key in self.output_spans(m).unwrap_or_default() {
                        *self.delivered.entry(key).or_default() += 1;
                    }
                }
            }
            self.now_.written.clear();
            if let Some(o) = self.now_.written_offset.or(self.open_offset) {
                self.committed = o;
            }
            self.open_offset = None;
            self.now_.written_offset = None;
        } else if let Some(o) = self.last_stored() {
            self.committed = o;
        }
    }

    /// At-least-once with the decision log: records not acknowledged within
    /// `record_timeout` of their decision are given up by the worker's pass
    /// at `now` — their traces count as logged — and a decision made without
    /// a record must come after such a give-up.
    fn records_given_up(&mut self, now: Instant) -> Result<(), String> {
        let unrecorded: Vec<TraceId> = self.now_.unrecorded.drain().collect();
        let Some(timeout) = self.case.record_timeout else {
            return match unrecorded.first() {
                Some(t) => Err(format!("{t} decided without a decision record")),
                None => Ok(()),
            };
        };
        if !self.case.decision_log || self.case.exactly_once {
            return Ok(());
        }
        let due: Vec<Bytes> = self
            .now_
            .records_pending
            .iter()
            .filter(|(_, (_, since))| *since + timeout <= now)
            .map(|(payload, _)| payload.clone())
            .collect();
        if !due.is_empty() {
            self.now_.last_give_up = Some(now);
        }
        for payload in due {
            if let Some((traces, _)) = self.now_.records_pending.remove(&payload) {
                for trace in traces {
                    self.log.push(format!("  (record of {trace} given up)"));
                    self.now_.logged.insert(trace);
                }
            }
        }
        for trace in unrecorded {
            if self.now_.last_give_up.is_none() {
                return Err(format!(
                    "{trace} decided without a decision record, though no record was given up"
                ));
            }
            self.now_.logged.insert(trace);
        }
        Ok(())
    }

    /// After every step, as the worker task does: decide what is due,
    /// advance; then the commands, and every check.
    pub(super) fn settle(&mut self) -> Result<(), String> {
        let now = self.now;
        self.core().decide_due(now);
        self.core().advance();
        loop {
            let commands = self.core().commands();
            if commands.is_empty() {
                break;
            }
            for c in commands {
                self.command(c)?;
            }
            // A write's receipt may let more go.
            self.core().advance();
        }
        self.now_.reading.clear();
        self.records_given_up(now)?;
        self.check_stored()?;
        self.check_memory()
    }

    /// Delivers everything in flight, retries included.
    pub(super) fn drain(&mut self) -> Result<(), String> {
        for _ in 0..10_000 {
            if self.in_flight.is_empty() {
                return Ok(());
            }
            let (id, message) = self.in_flight.remove(0);
            self.ack(id, message, Outcome::Ok)?;
            self.settle()?;
        }
        Err("in-flight produces never end".into())
    }
}
