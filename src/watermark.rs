//! The commit watermark of one partition.
//!
//! Traces finish out of order, so the offset to commit is not the last one
//! read: it is the lowest offset still pinned by an undecided span or an
//! unacknowledged produce, or one past the highest offset seen when nothing is
//! pinned. Committing it means a restart re-reads everything not yet decided
//! and delivered, and nothing else needs to be remembered.

use std::collections::BTreeMap;

/// Pending offsets of one partition with their pin counts.
#[derive(Debug, Default, Clone)]
pub struct Watermark {
    /// offset → number of holders (traces or produces) not yet done with it.
    pending: BTreeMap<i64, u32>,
    /// One past the highest offset tracked; what to commit when nothing is pending.
    next: Option<i64>,
    /// The last value handed out by [`Watermark::advance`].
    committed: Option<i64>,
}

impl Watermark {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the message at `offset` was read and is held by `pins`
    /// holders (zero when nothing of it needs to wait: bad input, or spans that
    /// followed an earlier drop decision).
    pub fn track(&mut self, offset: i64, pins: u32) {
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
        if pins > 0 {
            *self.pending.entry(offset).or_insert(0) += pins;
        }
    }

    /// Adds holders to an offset that is already pending.
    pub fn pin(&mut self, offset: i64, pins: u32) {
        if pins > 0 {
            *self.pending.entry(offset).or_insert(0) += pins;
        }
    }

    /// One holder is done with `offset`. Releasing an offset that is not
    /// pending is a bug in the caller and is reported as `false`.
    pub fn release(&mut self, offset: i64) -> bool {
        match self.pending.get_mut(&offset) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                self.pending.remove(&offset);
                true
            }
            None => false,
        }
    }

    /// The offset it is safe to commit (the next offset to read after a restart).
    pub fn committable(&self) -> Option<i64> {
        match self.pending.first_key_value() {
            Some((&lowest, _)) => Some(lowest),
            None => self.next,
        }
    }

    /// The committable offset if it moved since the last call.
    pub fn advance(&mut self) -> Option<i64> {
        let c = self.committable()?;
        if self.committed == Some(c) {
            return None;
        }
        self.committed = Some(c);
        Some(c)
    }

    /// The value [`Watermark::advance`] last handed out could not be stored:
    /// the next call hands it out again even if it did not move.
    pub fn unstored(&mut self) {
        self.committed = None;
    }

    /// The pinned offsets, lowest first, with their holder counts.
    pub fn pinned(&self) -> impl Iterator<Item = (i64, u32)> + '_ {
        self.pending.iter().map(|(o, n)| (*o, *n))
    }

    /// Number of offsets still pinned.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_read_nothing_to_commit() {
        assert_eq!(Watermark::new().committable(), None);
    }

    #[test]
    fn unpinned_messages_commit_past_themselves() {
        let mut w = Watermark::new();
        w.track(10, 0);
        w.track(11, 0);
        assert_eq!(w.committable(), Some(12));
    }

    #[test]
    fn out_of_order_completion_holds_the_lowest() {
        let mut w = Watermark::new();
        w.track(5, 1); // trace A
        w.track(6, 2); // traces A and B
        w.track(7, 1); // trace B
        assert_eq!(w.committable(), Some(5));
        // B decided first: releases 6 and 7; 5 still holds.
        assert!(w.release(6));
        assert!(w.release(7));
        assert_eq!(w.committable(), Some(5));
        // A decided: 5 and 6 free.
        assert!(w.release(5));
        assert_eq!(w.committable(), Some(6));
        assert!(w.release(6));
        assert_eq!(w.committable(), Some(8));
    }

    #[test]
    fn a_produce_pin_outlives_the_decision() {
        let mut w = Watermark::new();
        w.track(3, 1);
        w.pin(3, 1); // kept: the produce holds it too
        assert!(w.release(3)); // the trace's decision is done
        assert_eq!(w.committable(), Some(3));
        assert!(w.release(3)); // the producer acknowledged
        assert_eq!(w.committable(), Some(4));
    }

    #[test]
    fn releasing_unknown_offset_is_reported() {
        let mut w = Watermark::new();
        w.track(1, 0);
        assert!(!w.release(1));
        assert_eq!(w.committable(), Some(2));
    }

    #[test]
    fn advance_reports_only_movement() {
        let mut w = Watermark::new();
        w.track(0, 1);
        assert_eq!(w.advance(), Some(0));
        assert_eq!(w.advance(), None);
        w.release(0);
        assert_eq!(w.advance(), Some(1));
    }

    #[test]
    fn an_offset_that_could_not_be_stored_is_handed_out_again() {
        let mut w = Watermark::new();
        w.track(0, 0);
        assert_eq!(w.advance(), Some(1));
        w.unstored();
        assert_eq!(w.advance(), Some(1));
        assert_eq!(w.advance(), None);
    }

    proptest::proptest! {
        /// Whatever the order of releases, the watermark never passes an offset
        /// that is still pinned and reaches the end once all are released.
        #[test]
        fn never_passes_a_pinned_offset(pins in proptest::collection::vec(0u32..3, 1..40), order in proptest::collection::vec(0usize..1000, 0..120)) {
            let mut w = Watermark::new();
            let mut held: Vec<i64> = Vec::new();
            for (o, &p) in pins.iter().enumerate() {
                w.track(o as i64, p);
                for _ in 0..p { held.push(o as i64); }
            }
            for k in order {
                if held.is_empty() { break; }
                let i = k % held.len();
                let o = held.swap_remove(i);
                proptest::prop_assert!(w.release(o));
                let c = w.committable().unwrap();
                if let Some(min) = held.iter().min() {
                    proptest::prop_assert!(c <= *min);
                }
            }
            for o in held.drain(..) { w.release(o); }
            proptest::prop_assert_eq!(w.committable(), Some(pins.len() as i64));
        }
    }
}
