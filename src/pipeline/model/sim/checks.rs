//! The invariants, checked after every step (offsets, memory) and once
//! everything is done.

use super::*;

impl Sim {
    pub(super) fn check_stored(&mut self) -> Result<(), String> {
        let values: Vec<i64> =
            self.stored.values.lock().expect("lock")[self.seen_stored..].to_vec();
        self.seen_stored += values.len();
        if self.case.exactly_once && !values.is_empty() {
            return Err("offsets stored around the transaction in exactly-once mode".into());
        }
        for v in values {
            self.check_below(v, "stored")?;
            self.now_.stored = Some(v);
        }
        let anomalies = self.core().anomalies();
        if anomalies > 0 {
            return Err(format!(
                "{anomalies} watermark pins released that were not held"
            ));
        }
        Ok(())
    }

    /// Nothing below `next` may still need the worker.
    pub(super) fn check_below(&self, next: i64, what: &str) -> Result<(), String> {
        let end = (next.max(0) as usize).min(self.input.len());
        for fact in &self.input[(self.from as usize).min(end)..end] {
            let offset = fact.message.offset;
            if fact.garbage && !self.now_.garbage_done.contains(&offset) {
                return Err(format!(
                    "offset {next} {what}, past garbage at {offset} whose dead letter is not delivered"
                ));
            }
            for key in &fact.spans {
                if let Some(why) = self.unresolved(key) {
                    return Err(format!(
                        "offset {next} {what}, past span {key:?} at offset {offset}: {why}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Why the worker is not done with `key`, if it is not.
    fn unresolved(&self, key: &Key) -> Option<&'static str> {
        if self.case.decision_log
            && self.now_.decided.contains_key(key)
            && !self.now_.logged.contains(&key.0)
        {
            return Some("decided, and its decision record not in the decision log");
        }
        let delivered = self.delivered.contains_key(key)
            || (self.case.exactly_once && self.now_.written.contains(key));
        match self.now_.decided.get(key) {
            _ if delivered => None,
            None => Some("undecided"),
            Some(false) => None,
            Some(true) if self.now_.undeliverable.contains(key) => None,
            Some(true) if self.now_.awaiting_copy.contains(key) => {
                Some("kept, failed for good, and its dead-letter copy not delivered")
            }
            Some(true) => Some("kept and not delivered"),
        }
    }

    /// The buffer counts at least the bytes its spans keep alive: their
    /// encodings' copies and their records (no message is kept whole).
    pub(super) fn check_memory(&mut self) -> Result<(), String> {
        let alive: usize = self
            .now_
            .open
            .values()
            .flatten()
            .map(|k| self.spans[k].record.encoded().len() + crate::buffer::SPAN_OVERHEAD)
            .sum();
        let counted = self.core().status().1.bytes;
        if counted < alive {
            return Err(format!(
                "the buffer counts {counted} bytes; its spans keep {alive} alive"
            ));
        }
        Ok(())
    }

    /// Reads, decides, delivers and commits everything left; then the final checks.
    pub(super) fn finish(&mut self) -> Result<(), String> {
        // The partition is this worker's again.
        self.stored
            .refuse
            .store(false, std::sync::atomic::Ordering::Relaxed);
        // A worker whose store was refused tries again soon, idle or not.
        if self.core().store_refused() {
            self.now += S;
            self.settle()?;
        }
        for _ in 0..10_000 {
            let done = self.position as usize >= self.input.len()
                && self.in_flight.is_empty()
                && self.core().status().1.traces == 0
                && self.core().held() == 0;
            if done {
                break;
            }
            self.log
                .push(format!("finish: read, 61 s (position {})", self.position));
            self.read()?;
            if self.position as usize >= self.input.len() {
                let now = self.now;
                self.core().caught_up(now);
            }
            self.now += 61 * S;
            self.settle()?;
            self.drain()?;
        }
        self.commit();
        if self.committed != self.input.len() as i64 {
            return Err(format!(
                "everything done, but the committed offset is {} of {}",
                self.committed,
                self.input.len()
            ));
        }
        for (key, fact) in &self.spans {
            if self.case.exactly_once && self.delivered.get(key).copied().unwrap_or(0) > 1 {
                return Err(format!("exactly-once output holds span {key:?} twice"));
            }
            if fact.offset < self.from {
                continue; // checked when an earlier worker passed it
            }
            if let Some(why) = self.unresolved(key) {
                return Err(format!(
                    "at the end, span {key:?} at offset {}: {why}",
                    fact.offset
                ));
            }
        }
        let usage = self.usage.load(std::sync::atomic::Ordering::Relaxed);
        drop(self.core.take());
        let left = self.usage.load(std::sync::atomic::Ordering::Relaxed);
        if left != 0 {
            return Err(format!(
                "a finished worker leaves {left} bytes of usage (had {usage})"
            ));
        }
        Ok(())
    }
}
