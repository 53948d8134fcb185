//! tailgate's output against the library's decisions.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use tailgate::clock::ClockMode;
use tailgate::otlp::{self, TraceId};

use crate::bench::Bench;
use crate::figures::{Check, TailgateFigures};
use crate::workload::Workload;
use crate::ONE_MESSAGE_BYTES;

impl Bench {
    /// Every error and slow trace complete; the rest kept at 10 %; exactly
    /// the library's decisions; with the stream clock, no trace decided in
    /// parts. Fills in `f.parts` (its late-span and decision counts come
    /// from the metrics, read before).
    pub fn check_output(
        &mut self,
        w: &Workload,
        n: usize,
        label: &str,
        output: &str,
        f: &mut TailgateFigures,
    ) -> Result<(), String> {
        let messages = self.kafka.read_all(output, 4)?;
        let mut spans: HashMap<TraceId, HashSet<[u8; 8]>> = HashMap::new();
        // Per kept trace: the spans it has in each output message that holds
        // any, in the order read (one partition per trace, so in order), and
        // those messages' payload bytes.
        let mut parts: HashMap<TraceId, (Vec<usize>, usize)> = HashMap::new();
        let (mut duplicates, mut bad_keys, mut undecodable) = (0usize, 0usize, 0usize);
        for (key, payload) in &messages {
            let Ok(decoded) = otlp::decode(Bytes::from(payload.clone())) else {
                undecodable += 1;
                continue;
            };
            let mut bad = false;
            let mut in_message: Vec<(TraceId, usize)> = Vec::new();
            for (id, s) in decoded.spans {
                bad |= id.to_hex().as_bytes() != key.as_slice();
                if !spans.entry(id).or_default().insert(s.span_id) {
                    duplicates += 1;
                }
                match in_message.iter_mut().find(|(t, _)| *t == id) {
                    Some((_, count)) => *count += 1,
                    None => in_message.push((id, 1)),
                }
            }
            for (id, count) in in_message {
                let (counts, bytes) = parts.entry(id).or_default();
                counts.push(count);
                *bytes += payload.len();
            }
            bad_keys += usize::from(bad);
        }
        let complete = |i: usize| spans.get(&w.ids[i]).map_or(0, HashSet::len) >= w.spans[i];
        let errors = w.error[..n].iter().filter(|e| **e).count();
        let slow = w.slow[..n].iter().filter(|s| **s).count();
        // The wall clock decides a pre-filled topic by how fast it is read:
        // a trace split by a pause in reading can lose the part that made it
        // an error or slow trace (the stream clock is there to prevent
        // that). So with it, completeness is reported, not asserted.
        let wall = f.clock == ClockMode::Wall;
        if f.variant.bench_rules() {
            self.check_bench_rules(w, n, label, wall, &spans, &complete);
        } else {
            self.check_production(w, n, label, &spans, &complete);
        }
        let not_expected = if f.variant.bench_rules() {
            let expected: HashSet<TraceId> =
                (0..n).filter(|&i| w.keep[i]).map(|i| w.ids[i]).collect();
            spans.keys().filter(|id| !expected.contains(id)).count()
        } else {
            0
        };
        let incomplete = if f.variant.bench_rules() {
            (0..n).filter(|&i| w.keep[i] && !complete(i)).count()
        } else {
            // Whatever the production rules keep, they keep whole.
            (0..n)
                .filter(|&i| spans.contains_key(&w.ids[i]) && !complete(i))
                .count()
        };
        let unknown = spans.len() - (0..n).filter(|&i| spans.contains_key(&w.ids[i])).count();
        self.checks.push(Check {
            asserted: true,
            run: label.into(),
            what: match (f.variant.bench_rules(), wall) {
                (true, false) => "exactly the library's decisions, nothing twice".into(),
                (true, true) => {
                    "the library's decisions, nothing twice (wall clock: incomplete traces reported)"
                        .into()
                }
                (false, _) => "every kept trace whole, nothing twice".into(),
            },
            ok: not_expected == 0
                && unknown == 0
                && (incomplete == 0 || wall)
                && duplicates == 0
                && bad_keys == 0
                && undecodable == 0
                && f.decided_memory == 0.0,
            detail: format!(
                "{} traces kept ({} spans, {} messages); {not_expected} unexpected, {unknown} not in the \
                 workload, {incomplete} incomplete, {duplicates} duplicate spans, {bad_keys} bad keys, \
                 {undecodable} undecodable, {} decided early for memory ({errors} traces with an error, \
                 {slow} slow, some both)",
                spans.len(),
                spans.values().map(HashSet::len).sum::<usize>(),
                messages.len(),
                f.decided_memory
            ),
        });
        let expected_kept = (0..n).filter(|&i| w.keep[i]).count();

        // Decided in parts: a kept trace in more than one message that one
        // message would have held.
        let index: HashMap<TraceId, usize> = (0..n).map(|i| (w.ids[i], i)).collect();
        let p = &mut f.parts;
        p.kept = spans.len();
        p.expected_kept = if f.variant.bench_rules() {
            expected_kept
        } else {
            p.kept
        };
        p.messages = messages.len();
        p.most = parts.values().map(|(c, _)| c.len()).max().unwrap_or(0);
        let mut split: Vec<(&TraceId, &(Vec<usize>, usize))> = Vec::new();
        for (id, part) in &parts {
            if part.1 > ONE_MESSAGE_BYTES {
                p.oversize += 1;
            } else if part.0.len() > 1 {
                split.push((id, part));
            }
        }
        split.sort_by_key(|(id, _)| index.get(id).copied().unwrap_or(usize::MAX));
        p.split = split.len();
        p.extra_messages = split.iter().map(|(_, (c, _))| c.len() - 1).sum();
        p.examples = split
            .iter()
            .take(5)
            .map(|(id, (counts, _))| {
                let what = match index.get(id) {
                    Some(&i) if w.error[i] => format!("trace {i}, an error"),
                    Some(&i) if w.slow[i] => format!("trace {i}, slow"),
                    Some(&i) => format!("trace {i}, by rate"),
                    None => "not in the workload".into(),
                };
                let counts: Vec<String> = counts.iter().map(usize::to_string).collect();
                format!("{} ({what}): spans {}", id.to_hex(), counts.join(" + "))
            })
            .collect();
        if f.clock == ClockMode::Stream {
            let p = &f.parts;
            self.checks.push(Check {
                asserted: true,
                run: label.into(),
                what: "no trace decided in parts (stream clock, pre-filled topic)".into(),
                ok: p.split == 0
                    && p.late_kept == 0.0
                    && p.late_dropped == 0.0
                    && p.decided == n as f64,
                detail: format!(
                    "{} kept traces in {} messages ({} expected, one each): {} split{}{}; \
                     {:.0} spans read after their trace's decision ({:.0} of kept traces, {:.0} of dropped); \
                     {:.0} decisions for {n} traces",
                    p.kept,
                    p.messages,
                    p.expected_kept,
                    p.split,
                    if p.oversize > 0 {
                        format!(", {} in several for their size", p.oversize)
                    } else {
                        String::new()
                    },
                    if p.examples.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", p.examples.join("; "))
                    },
                    p.late_kept + p.late_dropped,
                    p.late_kept,
                    p.late_dropped,
                    p.decided
                ),
            });
        }
        Ok(())
    }

    /// The bench's rules: every error and slow trace whole, the rest at 10 %.
    fn check_bench_rules(
        &mut self,
        w: &Workload,
        n: usize,
        label: &str,
        wall: bool,
        spans: &HashMap<TraceId, HashSet<[u8; 8]>>,
        complete: &dyn Fn(usize) -> bool,
    ) {
        let must: Vec<usize> = (0..n).filter(|&i| w.must_keep[i]).collect();
        let must_missing = must.iter().filter(|&&i| !complete(i)).count();
        let others: Vec<usize> = (0..n).filter(|&i| !w.must_keep[i]).collect();
        let others_kept = others
            .iter()
            .filter(|&&i| spans.contains_key(&w.ids[i]))
            .count();
        let fraction = others_kept as f64 / others.len().max(1) as f64;
        let sigma = (0.1 * 0.9 / others.len().max(1) as f64).sqrt();
        let tolerance = (5.0 * sigma).max(0.01);
        self.checks.push(Check {
            asserted: !wall,
            run: label.into(),
            what: if wall {
                "every error and slow trace kept, all its spans (wall clock: reported)".into()
            } else {
                "every error and slow trace kept, all its spans".into()
            },
            ok: must_missing == 0,
            detail: format!("{} of {} complete", must.len() - must_missing, must.len()),
        });
        self.checks.push(Check {
            asserted: true,
            run: label.into(),
            what: "the other traces kept at 10 %".into(),
            ok: (fraction - 0.1).abs() <= tolerance,
            detail: format!(
                "{others_kept} of {} = {:.2} % (tolerance ± {:.2} points)",
                others.len(),
                fraction * 100.0,
                tolerance * 100.0
            ),
        });
    }

    /// The production policy's rules, whose per-endpoint sample depends on
    /// the stream's pace: every error trace whole (its `errors` rule), and
    /// some of the rest (its per-endpoint and baseline rules).
    fn check_production(
        &mut self,
        w: &Workload,
        n: usize,
        label: &str,
        spans: &HashMap<TraceId, HashSet<[u8; 8]>>,
        complete: &dyn Fn(usize) -> bool,
    ) {
        let errors: Vec<usize> = (0..n).filter(|&i| w.error[i]).collect();
        let missing = errors.iter().filter(|&&i| !complete(i)).count();
        let others = (0..n).filter(|&i| !w.error[i]).count();
        let others_kept = (0..n)
            .filter(|&i| !w.error[i] && spans.contains_key(&w.ids[i]))
            .count();
        self.checks.push(Check {
            asserted: true,
            run: label.into(),
            what: "every error trace kept, all its spans; some of the rest".into(),
            ok: missing == 0 && others_kept > 0 && others_kept < others,
            detail: format!(
                "{} of {} error traces complete; {others_kept} of {others} others kept ({:.2} %)",
                errors.len() - missing,
                errors.len(),
                100.0 * others_kept as f64 / others.max(1) as f64
            ),
        });
    }
}
