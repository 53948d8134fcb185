//! The commit watermark of one partition.
//!
//! Traces finish out of order, so the offset to commit is not the last one
//! read: it is the lowest offset still pinned by an undecided span or an
//! unacknowledged produce, or one past the highest offset seen when nothing is
//! pinned. Committing it means a restart re-reads everything not yet decided
//! and delivered, and nothing else needs to be remembered.

use std::collections::VecDeque;

/// Pending offsets of one partition with their pin counts.
///
/// Offsets are read in order, so the pinned ones are kept as a queue sorted
/// by offset: a new one goes at the back, a pin or release finds its entry
/// by a binary search (the back first), and the front is always pinned, so
/// it is what to commit. A released entry inside the queue stays, at zero,
/// until the front reaches it (or the queue is compacted): no allocation per
/// offset, no tree to walk.
#[derive(Debug, Default, Clone)]
pub struct Watermark {
    /// (offset, holders: traces or produces not yet done with it), offsets
    /// ascending; the front's count is never zero.
    pending: VecDeque<(i64, u32)>,
    /// Entries of `pending` with holders.
    live: usize,
    /// One past the highest offset tracked; what to commit when nothing is pending.
    next: Option<i64>,
    /// The last value handed out by [`Watermark::advance`].
    committed: Option<i64>,
}

/// Entries at zero `pending` may hold beyond as many again as are live
/// before they are dropped.
const SLACK: usize = 1024;

impl Watermark {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the message at `offset` was read and is held by `pins`
    /// holders (zero when nothing of it needs to wait: bad input, or spans that
    /// followed an earlier drop decision).
    pub fn track(&mut self, offset: i64, pins: u32) {
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
        self.pin(offset, pins);
    }

    /// Where `offset`'s entry is (`Ok`), or would go (`Err`). Read offsets
    /// are mostly consecutive, so an offset's entry is mostly as far from
    /// the front as the offset is: tried first, then a binary search.
    fn find(&self, offset: i64) -> Result<usize, usize> {
        let (Some(&(first, _)), Some(&(last, _))) = (self.pending.front(), self.pending.back())
        else {
            return Err(0);
        };
        if offset > last {
            return Err(self.pending.len());
        }
        let guess = usize::try_from(offset.wrapping_sub(first)).ok();
        if let Some(i) = guess.filter(|i| self.pending.get(*i).is_some_and(|e| e.0 == offset)) {
            return Ok(i);
        }
        self.pending.binary_search_by_key(&offset, |(o, _)| *o)
    }

    /// Adds holders to an offset (pending already, or not).
    pub fn pin(&mut self, offset: i64, pins: u32) {
        if pins == 0 {
            return;
        }
        match self.find(offset) {
            Ok(i) => {
                let n = &mut self.pending[i].1;
                if *n == 0 {
                    self.live += 1;
                }
                *n += pins;
            }
            Err(i) => {
                self.pending.insert(i, (offset, pins));
                self.live += 1;
            }
        }
    }

    /// One holder is done with `offset`. Releasing an offset that is not
    /// pending is a bug in the caller and is reported as `false`.
    pub fn release(&mut self, offset: i64) -> bool {
        let Ok(i) = self.find(offset) else {
            return false;
        };
        let n = &mut self.pending[i].1;
        if *n == 0 {
            return false;
        }
        *n -= 1;
        if *n == 0 {
            self.live -= 1;
            if i == 0 {
                while self.pending.front().is_some_and(|(_, n)| *n == 0) {
                    self.pending.pop_front();
                }
            } else if self.pending.len() > 2 * self.live + SLACK {
                self.pending.retain(|(_, n)| *n > 0);
            }
            // The room a burst left behind goes back.
            if self.pending.capacity() > 4 * (self.pending.len() + SLACK) {
                self.pending.shrink_to(2 * (self.pending.len() + SLACK));
            }
        }
        true
    }

    /// The offset it is safe to commit (the next offset to read after a restart).
    pub fn committable(&self) -> Option<i64> {
        match self.pending.front() {
            Some(&(lowest, _)) => Some(lowest),
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
        self.pending.iter().copied().filter(|(_, n)| *n > 0)
    }

    /// Number of offsets still pinned.
    pub fn pending(&self) -> usize {
        self.live
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

    #[derive(Debug, Clone)]
    enum Op {
        /// The next offset is read (`skip` offsets after the last: gaps of
        /// compaction or transaction markers), with `pins` holders.
        Track {
            skip: i64,
            pins: u32,
        },
        /// Another holder for a tracked offset (the k-th, modulo).
        Pin(usize),
        /// A holder of a pinned offset is done (the k-th holder, modulo),
        /// or of one that is not pinned.
        Release(usize),
        Stray(i64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0i64..3, 0u32..3).prop_map(|(skip, pins)| Op::Track { skip, pins }),
            2 => any::<usize>().prop_map(Op::Pin),
            5 => any::<usize>().prop_map(Op::Release),
            1 => (-2i64..200).prop_map(Op::Stray),
        ]
    }

    proptest::proptest! {
        /// The queue against a map of every offset's holders: the same
        /// offset to commit, pinned offsets and count after every step, an
        /// unknown release refused, and its size bounded.
        #[test]
        fn agrees_with_a_map_of_holders(ops in proptest::collection::vec(op(), 1..400)) {
            use std::collections::BTreeMap;
            let mut w = Watermark::new();
            let mut model: BTreeMap<i64, u32> = BTreeMap::new();
            let mut holders: Vec<i64> = Vec::new();
            let mut tracked: Vec<i64> = Vec::new();
            let mut next: Option<i64> = None;
            for op in ops {
                match op {
                    Op::Track { skip, pins } => {
                        let o = next.map_or(0, |n| n + skip);
                        w.track(o, pins);
                        next = Some(o + 1);
                        tracked.push(o);
                        if pins > 0 {
                            *model.entry(o).or_insert(0) += pins;
                            holders.extend(std::iter::repeat_n(o, pins as usize));
                        }
                    }
                    Op::Pin(k) if !tracked.is_empty() => {
                        let o = tracked[k % tracked.len()];
                        w.pin(o, 1);
                        *model.entry(o).or_insert(0) += 1;
                        holders.push(o);
                    }
                    Op::Release(k) if !holders.is_empty() => {
                        let o = holders.swap_remove(k % holders.len());
                        proptest::prop_assert!(w.release(o));
                        let n = model.get_mut(&o).expect("held");
                        *n -= 1;
                        if *n == 0 {
                            model.remove(&o);
                        }
                    }
                    Op::Stray(o) if !model.contains_key(&o) => {
                        proptest::prop_assert!(!w.release(o), "{} is not pinned", o);
                    }
                    _ => {}
                }
                let want = model.keys().next().copied().or(next);
                proptest::prop_assert_eq!(w.committable(), want);
                proptest::prop_assert_eq!(w.pending(), model.len());
                let pinned: Vec<(i64, u32)> = w.pinned().collect();
                let expected: Vec<(i64, u32)> = model.iter().map(|(o, n)| (*o, *n)).collect();
                proptest::prop_assert_eq!(pinned, expected);
                proptest::prop_assert!(w.pending.len() <= 2 * model.len() + SLACK + 1);
            }
        }
    }
}
