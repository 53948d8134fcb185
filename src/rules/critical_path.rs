//! The critical path of a trace: the chain of spans that determined when it
//! ended.
//!
//! Walk back from the end of the root span: the time is the root's own until
//! the last of its children to finish ended; step into that child and explain
//! its time the same way; when it started, go on with the child of the root
//! that finished last before that moment, and so on. Every nanosecond of the
//! root's extent is attributed to exactly one span.
//!
//! A child that ends after its parent (a message consumed from Kafka after the
//! producing request returned, in the same trace) extends its parent: a span's
//! effective end is the latest end in its subtree, so the hop and what happened
//! on its far side are on the path.
//!
//! Pure and linear in the number of spans (plus sorting each span's children);
//! no recursion, so a deep trace cannot overflow the stack.

use std::collections::HashMap;

use crate::otlp::SpanRecord;

/// A stretch of time attributed to one span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Index into the trace's spans.
    pub span: usize,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// The critical path of one trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CriticalPath {
    /// In time order; contiguous, covering `[start, start + total)`.
    pub segments: Vec<Segment>,
    /// From the path's first span's start to its effective end.
    pub total_ns: u64,
    /// The span the path starts from: the root, or, when the root has not
    /// arrived, the top-most span whose subtree ends last. `None` for an
    /// empty trace.
    pub top: Option<usize>,
}

impl CriticalPath {
    /// Computes the path from the root span, or, when the root has not
    /// arrived, from the top-most span whose subtree ends last. Empty for an
    /// empty trace.
    pub fn of(spans: &[SpanRecord]) -> Self {
        if spans.is_empty() {
            return Self::default();
        }
        let n = spans.len();
        // Parent of each span, by index (the first span with an id wins).
        // Small traces, the common case, scan: it beats hashing.
        let index: Option<HashMap<[u8; 8], usize>> = (n > 32).then(|| {
            spans
                .iter()
                .enumerate()
                .rev()
                .map(|(i, s)| (s.span_id, i))
                .collect()
        });
        let parent_of: Vec<Option<usize>> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if s.is_root() {
                    return None;
                }
                match &index {
                    Some(index) => index.get(&s.parent_span_id).copied(),
                    None => spans.iter().position(|p| p.span_id == s.parent_span_id),
                }
                .filter(|&p| p != i)
            })
            .collect();
        // Children grouped by parent in one array: `kids[start[p]..start[p + 1]]`.
        let mut start = vec![0usize; n + 1];
        for p in parent_of.iter().flatten() {
            start[p + 1] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut kids = vec![0usize; start[n]];
        let mut fill = start.clone();
        let mut tops = Vec::new();
        for (i, p) in parent_of.iter().enumerate() {
            match p {
                Some(p) => {
                    kids[fill[*p]] = i;
                    fill[*p] += 1;
                }
                None => tops.push(i),
            }
        }
        let children = |p: usize| &kids[start[p]..start[p + 1]];
        // Effective ends, children before parents (an explicit post-order;
        // spans on a parent cycle are unreachable from the tops and ignored).
        let mut eff_end: Vec<u64> = spans.iter().map(|s| s.end_ns).collect();
        let mut order = Vec::with_capacity(n);
        let mut stack: Vec<usize> = tops.clone();
        while let Some(i) = stack.pop() {
            order.push(i);
            stack.extend(children(i));
        }
        for &i in order.iter().rev() {
            if let Some(m) = children(i).iter().map(|&c| eff_end[c]).max() {
                eff_end[i] = eff_end[i].max(m);
            }
        }
        for p in 0..n {
            kids[start[p]..start[p + 1]].sort_by(|&a, &b| eff_end[b].cmp(&eff_end[a]));
        }
        let children = |p: usize| &kids[start[p]..start[p + 1]];
        let Some(&top) = tops.iter().max_by_key(|&&i| {
            // A true root first; among equals, the latest effective end.
            (spans[i].is_root(), eff_end[i], std::cmp::Reverse(i))
        }) else {
            return Self::default();
        };

        struct Frame {
            span: usize,
            lo: u64,
            cur: u64,
            next_child: usize,
        }
        let mut segments = Vec::new();
        let lo = spans[top].start_ns;
        let mut frames = vec![Frame {
            span: top,
            lo,
            cur: eff_end[top],
            next_child: 0,
        }];
        while let Some(f) = frames.last_mut() {
            let kids = children(f.span);
            let mut step = None;
            while f.next_child < kids.len() && f.cur > f.lo {
                let c = kids[f.next_child];
                f.next_child += 1;
                let c_end = eff_end[c];
                if c_end > f.cur {
                    // Overlaps time already explained by a later sibling.
                    continue;
                }
                if c_end <= f.lo {
                    // Sorted by end: no later child ends within this span.
                    f.next_child = kids.len();
                    break;
                }
                if c_end < f.cur {
                    segments.push(Segment {
                        span: f.span,
                        start_ns: c_end,
                        end_ns: f.cur,
                    });
                }
                let c_lo = spans[c].start_ns.max(f.lo);
                f.cur = c_lo;
                step = Some(Frame {
                    span: c,
                    lo: c_lo,
                    cur: c_end,
                    next_child: 0,
                });
                break;
            }
            match step {
                Some(child) => frames.push(child),
                None => {
                    if f.cur > f.lo {
                        segments.push(Segment {
                            span: f.span,
                            start_ns: f.lo,
                            end_ns: f.cur,
                        });
                    }
                    frames.pop();
                }
            }
        }
        segments.reverse();
        Self {
            segments,
            total_ns: eff_end[top].saturating_sub(lo),
            top: Some(top),
        }
    }

    /// Time on the path spent in spans for which `select` holds.
    pub fn time_in(&self, spans: &[SpanRecord], select: impl Fn(&SpanRecord) -> bool) -> u64 {
        self.segments
            .iter()
            .filter(|s| spans.get(s.span).is_some_and(&select))
            .map(|s| s.end_ns - s.start_ns)
            .sum()
    }

    /// Each span on the path once, in the order the path reaches it, with its
    /// total time on the path.
    pub fn steps(&self) -> Vec<(usize, u64)> {
        // Linear in the segments (every decided trace comes here): each
        // span's place in the list, by index.
        let n = self.segments.iter().map(|s| s.span + 1).max().unwrap_or(0);
        let mut place: Vec<u32> = vec![u32::MAX; n];
        let mut out: Vec<(usize, u64)> = Vec::new();
        for s in &self.segments {
            let d = s.end_ns - s.start_ns;
            match place[s.span] {
                u32::MAX => {
                    place[s.span] = out.len() as u32;
                    out.push((s.span, d));
                }
                at => out[at as usize].1 += d,
            }
        }
        out
    }
}
