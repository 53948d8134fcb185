//! Exactly-once mode: kept spans go into the open transaction only together
//! with an input offset past every message they came from.
//!
//! A decided message is held, pinning every input offset it came from, until
//! every offset at or below its last one is pinned by held messages only.
//! Then all of those are written, in offset order, together with the offset
//! the watermark reaches once they are released, in one step that no commit
//! can split. So a committed transaction's offsets never pass a message whose
//! kept spans are not in a committed transaction, and its kept spans are
//! never read again after it committed: a crash re-reads exactly what no
//! committed transaction holds.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::delivery::{DeliveryId, InFlight};
use super::ports::{DeadLetterOf, Destination};
use super::{Command, Mode, Partition, Written};
use crate::watermark::Watermark;

/// Messages decided but not yet in the transaction.
#[derive(Default)]
pub(super) struct Held {
    flights: HashMap<DeliveryId, InFlight>,
    /// Per input offset, the pins held messages have on it.
    pins: HashMap<i64, u32>,
    /// Per input offset, the held messages pinning it.
    by_offset: BTreeMap<i64, Vec<DeliveryId>>,
    next: DeliveryId,
    /// Payload bytes of `flights`.
    bytes: usize,
}

impl Held {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.flights.len()
    }
}

impl Held {
    /// Holds a message (with the pins on its offsets) until its turn.
    pub fn hold(&mut self, flight: InFlight) {
        self.next += 1;
        let id = self.next;
        for o in &flight.offsets {
            *self.pins.entry(*o).or_default() += 1;
            self.by_offset.entry(*o).or_default().push(id);
        }
        self.bytes += flight.message.payload.len();
        self.flights.insert(id, flight);
    }

    /// The held messages that cover a prefix of the pinned offsets: walking
    /// the pinned offsets from the lowest, as long as every pin on them is a
    /// held message's, the messages met are taken, and the walk may stop
    /// wherever it has passed the last offset of each of them.
    fn turn(&self, watermark: &Watermark) -> Vec<DeliveryId> {
        let mut batch: Vec<DeliveryId> = Vec::new();
        let mut taken: HashSet<DeliveryId> = HashSet::new();
        let mut reach = i64::MIN;
        let mut whole = 0;
        let mut blocked = false;
        for (offset, pins) in watermark.pinned() {
            if offset > reach {
                whole = batch.len();
            }
            if self.pins.get(&offset) != Some(&pins) {
                blocked = true;
                break;
            }
            for id in self.by_offset.get(&offset).into_iter().flatten() {
                if taken.insert(*id) {
                    batch.push(*id);
                    if let Some(last) = self.flights.get(id).and_then(InFlight::last_offset) {
                        reach = reach.max(last);
                    }
                }
            }
        }
        if !blocked {
            whole = batch.len();
        }
        batch.truncate(whole);
        batch
    }

    /// Takes the held messages whose turn has come (their pins here go
    /// with them), in offset order.
    fn take_turn(&mut self, watermark: &Watermark) -> Vec<InFlight> {
        let mut ready: Vec<InFlight> = Vec::new();
        for id in self.turn(watermark) {
            let Some(flight) = self.flights.remove(&id) else {
                continue;
            };
            for o in &flight.offsets {
                if let Some(n) = self.pins.get_mut(o) {
                    *n -= 1;
                    if *n == 0 {
                        self.pins.remove(o);
                    }
                }
                if let Some(ids) = self.by_offset.get_mut(o) {
                    ids.retain(|i| *i != id);
                    if ids.is_empty() {
                        self.by_offset.remove(o);
                    }
                }
            }
            self.bytes -= flight.message.payload.len();
            ready.push(flight);
        }
        ready.sort_by_key(InFlight::last_offset);
        ready
    }
}

impl Partition {
    /// Writes the held messages whose turn has come, in offset order, into
    /// the transaction with the offset the watermark reaches past them; or
    /// that offset alone if it moved and nothing is due.
    pub(super) fn release_held(&mut self) {
        let Mode::ExactlyOnce { held } = &mut self.mode else {
            return;
        };
        let ready = held.take_turn(&self.watermark);
        for flight in &ready {
            for o in &flight.offsets {
                self.release(*o);
            }
        }
        let next = self.watermark.advance();
        if ready.is_empty() && next.is_none() {
            return;
        }
        let mut receipt = Written {
            stored: next.is_some(),
            ..Written::default()
        };
        let mut messages = Vec::with_capacity(ready.len());
        for flight in ready {
            match flight.message.destination {
                Destination::Sampled => {
                    receipt.sampled += 1;
                    receipt.spans += flight.spans as u64;
                }
                Destination::DeadLetter(DeadLetterOf::Input) => receipt.input_dead_letters += 1,
                Destination::DeadLetter(DeadLetterOf::Output) => receipt.output_dead_letters += 1,
                Destination::Decisions(_) => receipt.decisions += flight.decisions as u64,
            }
            messages.push(flight.message);
        }
        self.commands.push(Command::Write {
            messages,
            next_offset: next,
            receipt,
        });
    }

    /// A transactional write is done (it commits with the transaction).
    pub fn written(&mut self, receipt: Written) {
        let t = &self.telemetry;
        t.produced_messages.increment(receipt.sampled);
        t.produced_spans.increment(receipt.spans);
        t.dead_letter(DeadLetterOf::Input)
            .increment(receipt.input_dead_letters);
        t.dead_letter(DeadLetterOf::Output)
            .increment(receipt.output_dead_letters);
        t.decisions_written.increment(receipt.decisions);
        if receipt.stored {
            t.offsets_stored.increment(1);
        }
    }

    /// Messages held for the transaction.
    pub fn held(&self) -> usize {
        match &self.mode {
            Mode::ExactlyOnce { held } => held.len(),
            Mode::AtLeastOnce { .. } => 0,
        }
    }
}
