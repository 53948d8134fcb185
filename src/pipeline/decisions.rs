//! Remembered decisions, followed by the late spans of traces already
//! decided: a kept trace's late spans are produced at once, a dropped
//! trace's released.
//!
//! Sized for `decision.decided_ttl` × the trace rate, so it is kept compact:
//! a decision is a 24-byte slot in a ring ordered by decision time (the
//! trace id's 64-bit hash, when it expires, the rule's index in a small
//! table of names, keep or drop, the rule's sampling stage) and a 16-byte
//! entry of an index from the hash to the slot — about 61 bytes in all with
//! the spare room of both (a test measures it; [`Decisions::bytes`] counts
//! what is allocated).
//! The hash stands for the trace id: two traces share one with a
//! probability of about 2⁻⁶⁴ per pair, far below any other cause of a
//! wrong late-span decision. Decisions expire `decided_ttl` after they
//! were made *in stream time* — on the partition's clock, calendar time
//! since the Unix epoch — also those read back from the decision log, which
//! carry their own: a late span follows its trace's decision when it is
//! late in the stream, however long reading was interrupted (a restart, an
//! outage of the output). The byte budget is held as a count (`BYTES_EACH` bytes
//! a decision); when it is full the oldest is forgotten before its time,
//! one for each new one, and that is counted, not silent. Right after a
//! doubling of the ring or the index the allocation can briefly be up to
//! twice the budget.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use crate::otlp::tracestate::Stage;
use crate::otlp::TraceId;

/// A decision remembered for the trace's late spans. It names its rule and
/// carries its sampling stage itself, so it stays right across a rule
/// reload and a restart.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Decided {
    pub keep: bool,
    pub rule: Arc<str>,
    /// What the rule did to the threshold of the spans it kept: a late span
    /// leaves with what its trace's did, from its own `tracestate`.
    pub stage: Stage,
    /// Read back from the decision log (made by an earlier worker of the
    /// partition), not decided here.
    pub from_log: bool,
}

/// One remembered decision.
#[derive(Clone, Copy, Debug)]
struct Slot {
    hash: u64,
    /// Stream time (seconds since the Unix epoch) when it expires.
    expires: u32,
    /// The stage, exactly as decided ([`Stage::to_bits`]).
    stage: u64,
    rule: u16,
    keep: bool,
    from_log: bool,
}

/// What putting a decision in did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Remembered {
    /// Decisions forgotten before their time for lack of room.
    pub forgotten: u64,
}

/// Decisions of recently decided traces, for `decision.decided_ttl`, in at
/// most `max_bytes`.
pub(super) struct Decisions {
    ttl: Duration,
    max_bytes: usize,
    /// The budget as a count: allocation grows in doublings, so a bound on
    /// allocated bytes would forget half the store at once when one comes.
    max_len: usize,
    hasher: foldhash::quality::FixedState,
    /// Oldest first; the slot at `slots[i]` has sequence number `first + i`.
    slots: VecDeque<Slot>,
    first: u64,
    /// Trace hash → sequence number of its latest slot.
    index: HashMap<u64, u64, foldhash::quality::FixedState>,
    rules: Vec<Arc<str>>,
}

/// What `decision.remembered_bytes` is divided by to bound the count: a
/// decision's ring slot and index entry with their spare room, as measured
/// (about 61 bytes at a million), rounded up.
pub(super) const BYTES_EACH: usize = 64;

/// Rule names beyond this many (the rules of many reloads) are not told
/// apart: the last one stands for the rest. A rule set has a few dozen.
const MAX_RULE_NAMES: usize = u16::MAX as usize;

impl Decisions {
    pub fn new(ttl: Duration, max_bytes: usize) -> Self {
        Self {
            ttl,
            max_bytes,
            max_len: (max_bytes / BYTES_EACH).max(1),
            hasher: foldhash::quality::FixedState::with_seed(0x7a11_6a7e),
            slots: VecDeque::new(),
            first: 0,
            index: HashMap::with_hasher(foldhash::quality::FixedState::with_seed(1)),
            rules: Vec::new(),
        }
    }

    fn hash(&self, id: &TraceId) -> u64 {
        self.hasher.hash_one(id.0)
    }

    /// Stream time in the slots' seconds (since the Unix epoch: they last
    /// until 2106).
    fn seconds(at: Duration) -> u32 {
        at.as_secs().min(u64::from(u32::MAX)) as u32
    }

    fn rule_index(&mut self, rule: &Arc<str>) -> u16 {
        // Few rules, looked up from the newest: a linear scan.
        if let Some(i) = self.rules.iter().rposition(|r| r == rule) {
            return i as u16;
        }
        if self.rules.len() < MAX_RULE_NAMES {
            self.rules.push(rule.clone());
        }
        (self.rules.len() - 1) as u16
    }

    /// The decision of trace `id`, if it is remembered and has not expired
    /// at stream time `now`.
    pub fn get(&self, id: &TraceId, now: Duration) -> Option<Decided> {
        let seq = *self.index.get(&self.hash(id))?;
        let slot = self.slots.get(seq.checked_sub(self.first)? as usize)?;
        if slot.expires <= Self::seconds(now) {
            return None;
        }
        Some(Decided {
            keep: slot.keep,
            rule: self.rules.get(usize::from(slot.rule))?.clone(),
            stage: Stage::from_bits(slot.stage),
            from_log: slot.from_log,
        })
    }

    /// Remembers `decided` for trace `id`, decided at stream time `at` (now,
    /// or for a decision read back from the log, when it was made); it
    /// expires `decided_ttl` after that. Expired decisions go first; then,
    /// if the store is over its bytes, the oldest.
    pub fn insert(
        &mut self,
        id: TraceId,
        decided: &Decided,
        at: Duration,
        now: Duration,
    ) -> Remembered {
        self.expire(now);
        // A TTL of centuries (a setting) must not overflow the clock.
        let expires = at.checked_add(self.ttl).map_or(u32::MAX, Self::seconds);
        if expires <= Self::seconds(now) {
            return Remembered::default();
        }
        let slot = Slot {
            hash: self.hash(&id),
            expires,
            stage: decided.stage.to_bits(),
            rule: self.rule_index(&decided.rule),
            keep: decided.keep,
            from_log: decided.from_log,
        };
        let seq = self.first + self.slots.len() as u64;
        self.slots.push_back(slot);
        self.index.insert(slot.hash, seq);
        let mut done = Remembered::default();
        while self.slots.len() > self.max_len {
            self.pop_oldest();
            done.forgotten += 1;
        }
        done
    }

    /// Forgets what has expired at `now`. Decisions read back from the log
    /// may be older than those before them; they wait for their turn at the
    /// front, and `get` never answers with an expired one.
    pub fn expire(&mut self, now: Duration) {
        let now = Self::seconds(now);
        while self.slots.front().is_some_and(|s| s.expires <= now) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        let Some(slot) = self.slots.pop_front() else {
            return;
        };
        // Only if the index still points here (not to a later decision of
        // the same trace).
        if self.index.get(&slot.hash) == Some(&self.first) {
            self.index.remove(&slot.hash);
        }
        self.first += 1;
        if self.slots.capacity() > 64 && self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to(self.slots.capacity() / 2);
            self.index.shrink_to(self.slots.len());
        }
    }

    /// Decisions remembered.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Bytes it holds: the ring and the index as allocated, and the rule names.
    pub fn bytes(&self) -> usize {
        // hashbrown: one control byte per bucket besides the entry; its
        // bucket count is the capacity / 0.875, rounded to a power of two.
        let buckets = (self.index.capacity() * 8 / 7).next_power_of_two();
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + buckets * (std::mem::size_of::<(u64, u64)>() + 1)
            + self.rules.iter().map(|r| r.len() + 16).sum::<usize>()
    }

    /// How many decisions it holds at most.
    pub fn capacity(&self) -> usize {
        self.max_len
    }

    /// The byte budget.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::tracestate::Threshold;

    fn decided(keep: bool, rule: &str, p: f64) -> Decided {
        let stage = match p {
            1.0 => Stage::Unchanged,
            _ => Stage::Sampled(Threshold::from_probability(p).expect("a probability")),
        };
        Decided {
            keep,
            rule: Arc::from(rule),
            stage,
            from_log: false,
        }
    }

    fn id(n: u64) -> TraceId {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&n.to_le_bytes());
        b[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        TraceId(b)
    }

    const S: Duration = Duration::from_secs(1);
    /// 2026-01-01, stream time.
    const JAN: Duration = Duration::from_secs(1_767_225_600);

    #[test]
    fn a_decision_is_remembered_until_its_ttl_from_when_it_was_made() {
        let t0 = JAN;
        let mut d = Decisions::new(60 * S, 1 << 20);
        d.insert(id(1), &decided(true, "errors", 1.0), t0, t0);
        assert_eq!(
            d.get(&id(1), t0 + 59 * S),
            Some(decided(true, "errors", 1.0))
        );
        // Read back from the log: made 50 s before now, 10 s left.
        let now = t0 + 100 * S;
        d.insert(id(2), &decided(false, "rest", 0.1), now - 50 * S, now);
        assert_eq!(d.get(&id(1), now), None, "expired");
        assert_eq!(d.get(&id(2), now + 9 * S).map(|x| x.keep), Some(false));
        assert_eq!(d.get(&id(2), now + 10 * S), None);
        // Already expired when read back: not remembered at all.
        let before = d.len();
        d.insert(id(3), &decided(true, "errors", 1.0), now - 61 * S, now);
        assert_eq!(d.len(), before);
        assert_eq!(d.get(&id(9), now), None);
    }

    #[test]
    fn a_ttl_of_centuries_does_not_overflow() {
        let t0 = JAN;
        let mut d = Decisions::new(Duration::MAX, 1 << 20);
        d.insert(id(1), &decided(true, "errors", 1.0), t0, t0);
        assert!(d.get(&id(1), t0 + 1_000_000 * S).is_some());
    }

    #[test]
    fn the_stage_and_rule_survive_exactly() {
        let t0 = JAN;
        let mut d = Decisions::new(60 * S, 1 << 20);
        let mut n = 0;
        let stages = [
            Stage::Unchanged,
            Stage::Unknown,
            Stage::Sampled(Threshold::ALWAYS),
            // Not exact in f32 or f64: a late span's threshold must be its
            // trace's to the last bit.
            Stage::Sampled(Threshold::from_probability(0.1).unwrap()),
            Stage::Sampled(Threshold::new((1 << 56) - 1).unwrap()),
        ];
        for stage in stages {
            for (keep, from_log) in [(true, false), (false, true), (true, true)] {
                n += 1;
                let want = Decided {
                    keep,
                    rule: Arc::from(format!("r{n}")),
                    stage,
                    from_log,
                };
                d.insert(id(n), &want, t0, t0);
                assert_eq!(d.get(&id(n), t0), Some(want));
            }
        }
    }

    #[test]
    fn when_full_the_oldest_are_forgotten_one_for_one_and_counted() {
        let t0 = JAN;
        let mut d = Decisions::new(600 * S, 64 * 1024);
        let mut forgotten = 0;
        for n in 0..20_000 {
            let f = d
                .insert(id(n), &decided(n % 2 == 0, "r", 1.0), t0, t0)
                .forgotten;
            assert!(f <= 1, "insert {n} forgot {f} at once");
            forgotten += f;
        }
        assert_eq!(d.len(), 64 * 1024 / BYTES_EACH, "full, and no fuller");
        assert!(d.bytes() <= 2 * 64 * 1024, "{} bytes", d.bytes());
        assert!(forgotten > 0);
        assert_eq!(forgotten as usize + d.len(), 20_000);
        assert_eq!(d.get(&id(0), t0), None, "the oldest went first");
        assert!(d.get(&id(19_999), t0).is_some(), "the newest stays");
    }

    #[test]
    fn a_trace_decided_again_is_answered_with_its_latest_decision() {
        let t0 = JAN;
        let mut d = Decisions::new(60 * S, 1 << 20);
        d.insert(id(1), &decided(false, "rest", 0.1), t0, t0);
        d.insert(id(1), &decided(true, "errors", 1.0), t0 + S, t0 + S);
        assert_eq!(d.get(&id(1), t0 + S).map(|x| x.keep), Some(true));
        // The first slot expiring does not take the second's index entry.
        d.expire(t0 + 60 * S);
        assert_eq!(d.get(&id(1), t0 + 60 * S).map(|x| x.keep), Some(true));
        d.expire(t0 + 61 * S);
        assert_eq!(d.len(), 0);
    }

    /// What one remembered decision costs. A million decisions,
    /// the store's bytes as allocated (the ring and the index each just
    /// past a doubling: about the most it takes).
    #[test]
    fn a_remembered_decision_costs_under_72_bytes() {
        let t0 = JAN;
        let mut d = Decisions::new(3600 * S, usize::MAX);
        for n in 0..1_000_000 {
            d.insert(id(n), &decided(n % 10 == 0, "r", 1.0), t0, t0);
        }
        let per = d.bytes() as f64 / d.len() as f64;
        eprintln!(
            "{per:.1} bytes per remembered decision ({} decisions)",
            d.len()
        );
        assert!(per < 72.0, "{per:.1} bytes per decision");
    }
}
