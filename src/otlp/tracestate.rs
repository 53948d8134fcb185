//! The OpenTelemetry member of the W3C `tracestate`, `ot`, and the two
//! sub-keys of consistent-probability sampling in it (the specification's
//! `trace/tracestate-probability-sampling.md`, status Development):
//!
//! - `th`: the rejection threshold `T`, 56 bits written as 1 to 14
//!   lowercase hex digits with trailing zeros left out (`th:0` keeps
//!   everything, `th:8` half, `th:c` a quarter). A trace is kept when its
//!   randomness `R >= T`; its probability is `(2^56 - T) / 2^56`.
//! - `rv`: an explicit randomness value, exactly 14 hex digits, which a
//!   trace uses instead of its trace id's low 56 bits.
//!
//! Pure: strings in, strings out. Editing a `tracestate` keeps every other
//! member, and every other `ot` sub-key, as it was; the edited `ot` member
//! moves to the front, as W3C Trace Context asks of a modified member.

use super::TraceId;

/// 2^56: one more than the largest threshold or randomness.
pub const MAX: u64 = 1 << 56;

/// A rejection threshold: traces with randomness at or above it are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u64);

impl Threshold {
    /// `th:0`: every trace is kept (probability 1).
    pub const ALWAYS: Threshold = Threshold(0);

    /// The threshold `t`, if it is one (below 2^56).
    pub fn new(t: u64) -> Option<Self> {
        (t < MAX).then_some(Self(t))
    }

    pub fn value(self) -> u64 {
        self.0
    }

    /// The threshold of probability `p` at full precision, `2^56 -
    /// round(p * 2^56)` (scaling by a power of two is exact, so
    /// [`Threshold::probability`] gives `p` back for every `p` of 53
    /// significant bits or fewer). `None` for a probability no threshold
    /// can express (0 or less, or not a number); over 1 is 1, and under
    /// 2^-56 is 2^-56.
    pub fn from_probability(p: f64) -> Option<Self> {
        if p.is_nan() || p <= 0.0 {
            return None;
        }
        let kept = (p.min(1.0) * MAX as f64).round() as u64;
        Some(Self(MAX - kept.max(1)))
    }

    /// The probability a trace is kept with: `(2^56 - T) / 2^56`.
    pub fn probability(self) -> f64 {
        (MAX - self.0) as f64 / MAX as f64
    }

    /// How many traces a kept one stands for: `2^56 / (2^56 - T)`.
    pub fn adjusted_count(self) -> f64 {
        MAX as f64 / (MAX - self.0) as f64
    }

    /// Whether a trace of randomness `r` is kept.
    pub fn keeps(self, r: Randomness) -> bool {
        r.0 >= self.0
    }

    /// Reads a `th` value: 1 to 14 lowercase hex digits, trailing zeros
    /// left out (`c` is `c0000000000000`).
    pub fn parse(th: &str) -> Option<Self> {
        if th.is_empty() || th.len() > 14 || !th.bytes().all(is_lower_hex) {
            return None;
        }
        let v = u64::from_str_radix(th, 16).ok()?;
        Some(Self(v << (4 * (14 - th.len()))))
    }

    /// Writes it as a `th` value: 14 hex digits without their trailing
    /// zeros, `0` for [`Threshold::ALWAYS`].
    pub fn encode(self) -> String {
        if self.0 == 0 {
            return "0".into();
        }
        let digits = format!("{:014x}", self.0);
        digits.trim_end_matches('0').to_string()
    }

    /// The specification's equalizing composition: a downstream sampler of
    /// threshold `mine` after an upstream one of `incoming` keeps what is
    /// at or above the larger of the two, and says so. A threshold is
    /// never lowered.
    pub fn compose(incoming: Option<Threshold>, mine: Threshold) -> Threshold {
        incoming.map_or(mine, |t| t.max(mine))
    }
}

/// A trace's randomness: 56 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Randomness(u64);

impl Randomness {
    /// The trace id's low 56 bits (its last 7 bytes).
    pub fn of(trace_id: &TraceId) -> Self {
        Self(trace_id.randomness56())
    }

    pub fn value(self) -> u64 {
        self.0
    }

    /// Reads an `rv` value: exactly 14 lowercase hex digits.
    pub fn parse(rv: &str) -> Option<Self> {
        if rv.len() != 14 || !rv.bytes().all(is_lower_hex) {
            return None;
        }
        u64::from_str_radix(rv, 16).ok().map(Self)
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// What a span's `tracestate` says about its sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sampling {
    /// The threshold it was sampled with, if it says one it can be read.
    pub threshold: Option<Threshold>,
    /// Its explicit randomness, if it has one that can be read.
    pub randomness: Option<Randomness>,
    /// A `th` that is there but cannot be read: it is erased.
    pub malformed_threshold: bool,
}

impl Sampling {
    /// Reads the `ot` member of `tracestate` (the first, if there are
    /// several).
    pub fn of(tracestate: &str) -> Self {
        let mut s = Self::default();
        if let Some(ot) = members(tracestate).find_map(|(k, v)| (k == "ot").then_some(v)) {
            for (key, value) in sub_keys(ot) {
                match key {
                    "th" if s.threshold.is_none() && !s.malformed_threshold => {
                        s.threshold = Threshold::parse(value);
                        s.malformed_threshold = s.threshold.is_none();
                    }
                    "rv" if s.randomness.is_none() => s.randomness = Randomness::parse(value),
                    _ => {}
                }
            }
        }
        s
    }

    /// What a trace's spans say of its sampling: its root's `tracestate`
    /// (`key`, else its first span's), else the first of the others whose
    /// `tracestate` has a `th` or an `rv` (a root without, from a proxy
    /// that does not pass it on; a root that has not arrived). `others`
    /// gives each span's `tracestate` in the order of the trace.
    pub fn of_trace<'a>(key: &'a [u8], others: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let read = |state: &[u8]| Sampling::of(&String::from_utf8_lossy(state));
        let says = |s: &Sampling| s.threshold.is_some() || s.randomness.is_some();
        let own = if key.is_empty() {
            Sampling::default()
        } else {
            read(key)
        };
        if says(&own) {
            return own;
        }
        others
            .into_iter()
            .filter(|state| !state.is_empty())
            .map(read)
            .find(says)
            .unwrap_or(own)
    }

    /// The randomness of a trace with this `tracestate`: its explicit
    /// `rv`, else its id's low 56 bits.
    pub fn randomness_of(&self, trace_id: &TraceId) -> Randomness {
        self.randomness.unwrap_or_else(|| Randomness::of(trace_id))
    }

    /// Whether the threshold it carries is consistent with the randomness:
    /// a span that was kept had `R >= T`. No threshold is consistent.
    pub fn consistent(&self, trace_id: &TraceId) -> bool {
        self.threshold
            .is_none_or(|t| t.keeps(self.randomness_of(trace_id)))
    }
}

/// What a sampling stage does to the threshold of the spans it keeps:
/// tailgate's rules are one such stage, after any head sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Keeps whatever it is given: the incoming threshold passes unchanged
    /// (`keep`).
    Unchanged,
    /// Keeps a trace when its randomness is at or above this threshold: the
    /// outgoing threshold is the larger of it and the incoming one (`rate`,
    /// `dynamic`; the specification's equalizing composition).
    Sampled(Threshold),
    /// Not a probability sampler (`limit`): what it keeps stands for an
    /// unknown number of traces, so the threshold is erased.
    Unknown,
}

impl Stage {
    /// The threshold a kept span leaves with, given the one it came with.
    pub fn outgoing(self, incoming: Option<Threshold>) -> Option<Threshold> {
        match self {
            Stage::Unchanged => incoming,
            Stage::Sampled(mine) => Some(Threshold::compose(incoming, mine)),
            Stage::Unknown => None,
        }
    }

    /// The stage's own probability: 1 for [`Stage::Unchanged`], none for
    /// [`Stage::Unknown`].
    pub fn probability(self) -> Option<f64> {
        match self {
            Stage::Unchanged => Some(1.0),
            Stage::Sampled(t) => Some(t.probability()),
            Stage::Unknown => None,
        }
    }

    /// In 64 bits, for compact stores: the threshold itself, or a value
    /// no threshold takes for the other two.
    pub fn to_bits(self) -> u64 {
        match self {
            Stage::Sampled(t) => t.value(),
            Stage::Unchanged => u64::MAX,
            Stage::Unknown => u64::MAX - 1,
        }
    }

    /// Reads [`Stage::to_bits`].
    pub fn from_bits(bits: u64) -> Self {
        match bits {
            u64::MAX => Stage::Unchanged,
            t => Threshold::new(t).map_or(Stage::Unknown, Stage::Sampled),
        }
    }

    /// As written in the decision log's JSON and `why --json`: `unchanged`,
    /// `th:<hex>` or `unknown`.
    pub fn name(self) -> String {
        match self {
            Stage::Unchanged => "unchanged".into(),
            Stage::Sampled(t) => format!("th:{}", t.encode()),
            Stage::Unknown => "unknown".into(),
        }
    }

    /// Reads [`Stage::name`]'s form.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "unchanged" => Some(Stage::Unchanged),
            "unknown" => Some(Stage::Unknown),
            _ => name
                .strip_prefix("th:")
                .and_then(Threshold::parse)
                .map(Stage::Sampled),
        }
    }
}

impl serde::Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Stage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Stage::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{name}` is not a sampling stage (unchanged, th:<hex> or unknown)"
            ))
        })
    }
}

/// Why a kept span's incoming threshold was erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Erased {
    /// A `th` that cannot be read.
    Malformed,
    /// A `th` its span's randomness is below: that span could not have
    /// been kept by it, or the one it would leave with.
    Inconsistent,
}

impl Erased {
    /// Every reason, in the order of [`Erased::index`].
    pub const ALL: [Erased; 2] = [Erased::Malformed, Erased::Inconsistent];

    /// Its place in [`Erased::ALL`] (and in counts kept per reason).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Erased::Malformed => "malformed",
            Erased::Inconsistent => "inconsistent",
        }
    }
}

/// What a kept span leaves with, from the `tracestate` it came with.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Its threshold on the way out (`None`: no `th`).
    pub threshold: Option<Threshold>,
    /// The `tracestate` to write, when it changes.
    pub tracestate: Option<String>,
    /// How many spans like it it stands for: 1 / the product of every
    /// stage's probability. `None` when that is not known (a stage that is
    /// not a probability sampler, or a threshold erased as wrong). A span
    /// without any `th` is taken as collected whole: the count is this
    /// stage's alone.
    pub adjusted_count: Option<f64>,
    /// Its incoming threshold was erased, and why.
    pub erased: Option<Erased>,
}

/// The outgoing threshold, `tracestate` and adjusted count of a span of
/// trace `trace_id` that `stage` keeps, which came with `tracestate`; the
/// trace's own sampling (its root's, else the first span's that says any:
/// [`Sampling`]) stands in for what the span's does not say. A span without
/// a `th` in a trace that has one was sampled with its trace (its
/// `tracestate` was not passed on to it whole); a span without an `rv` in
/// a trace that has one was decided by it, and leaves with it.
pub fn outgoing(tracestate: &str, trace_id: &TraceId, trace: &Sampling, stage: Stage) -> Outgoing {
    let own = Sampling::of(tracestate);
    let randomness = own
        .randomness
        .or(trace.randomness)
        .unwrap_or_else(|| Randomness::of(trace_id));
    let mut erased = if own.malformed_threshold {
        Some(Erased::Malformed)
    } else if own.threshold.is_some_and(|t| !t.keeps(randomness)) {
        Some(Erased::Inconsistent)
    } else {
        None
    };
    let incoming = match (erased, own.threshold) {
        (Some(_), _) => None,
        (None, Some(t)) => Some(t),
        // Not the span's own, and not a reason to erase anything.
        (None, None) => trace.threshold.filter(|t| t.keeps(randomness)),
    };
    let mut threshold = match erased {
        Some(_) => None,
        None => stage.outgoing(incoming),
    };
    if threshold.is_some_and(|t| !t.keeps(randomness)) {
        // Kept by the trace's randomness, which this span does not share
        // (an `rv` of its own): its threshold would say it was not kept.
        erased = Some(Erased::Inconsistent);
        threshold = None;
    }
    let adjusted_count = match (erased, stage, threshold) {
        (Some(_), _, _) | (None, Stage::Unknown, _) => None,
        (None, _, Some(t)) => Some(t.adjusted_count()),
        (None, _, None) => Some(1.0),
    };
    // The trace's `rv` decided it: a span that states a threshold by it
    // states the `rv` too (the specification: it must be passed on).
    let rv = own
        .randomness
        .is_none()
        .then_some(trace.randomness)
        .flatten()
        .filter(|_| threshold.is_some());
    let unchanged = erased.is_none() && threshold == own.threshold && rv.is_none();
    Outgoing {
        threshold,
        tracestate: (!unchanged).then(|| with_threshold(tracestate, threshold, rv)),
        adjusted_count,
        erased,
    }
}

/// The members of a W3C `tracestate`: `key=value`, separated by commas,
/// with optional spaces and tabs around them; empty members are skipped.
fn members(tracestate: &str) -> impl Iterator<Item = (&str, &str)> {
    tracestate.split(',').filter_map(|m| {
        let m = m.trim_matches([' ', '\t']);
        let (k, v) = m.split_once('=')?;
        Some((k, v))
    })
}

/// The sub-keys of an `ot` value: `key:value`, separated by semicolons.
fn sub_keys(ot: &str) -> impl Iterator<Item = (&str, &str)> {
    ot.split(';').filter_map(|kv| kv.split_once(':'))
}

/// `tracestate` with the `ot` member's `th` set to `threshold`, or erased
/// when it is `None`: the other sub-keys of `ot` (`rv` among them) and
/// every other member kept as they were, the `ot` member first (W3C: a
/// modified member moves to the front); without any sub-key left, no `ot`
/// member. Members that are not `key=value` are kept as they were; a
/// second `ot` member (a duplicate key) is left out. `rv`, when given, is
/// written into the `ot` member after `th` — given only for a span
/// without an `rv` that can be read, so in place of any that cannot.
pub fn with_threshold(
    tracestate: &str,
    threshold: Option<Threshold>,
    rv: Option<Randomness>,
) -> String {
    let mut ot: Vec<String> = Vec::new();
    let mut others: Vec<&str> = Vec::new();
    let mut seen_ot = false;
    for m in tracestate.split(',') {
        let trimmed = m.trim_matches([' ', '\t']);
        if trimmed.is_empty() {
            continue;
        }
        match trimmed.split_once('=') {
            // A second `ot` member is a duplicate key, which W3C forbids and
            // readers ignore: left out, so that it cannot become the first.
            Some(("ot", _)) if seen_ot => {}
            Some(("ot", value)) => {
                seen_ot = true;
                ot.extend(
                    value
                        .split(';')
                        .filter(|kv| !kv.is_empty() && !kv.starts_with("th:") && *kv != "th")
                        .map(str::to_string),
                );
            }
            _ => others.push(trimmed),
        }
    }
    if let Some(r) = rv {
        // In place of one that cannot be read.
        ot.retain(|kv| !kv.starts_with("rv:"));
        ot.insert(0, format!("rv:{:014x}", r.value()));
    }
    if let Some(t) = threshold {
        ot.insert(0, format!("th:{}", t.encode()));
    }
    let mut out = String::with_capacity(tracestate.len() + 20);
    if !ot.is_empty() {
        out.push_str("ot=");
        out.push_str(&ot.join(";"));
    }
    for m in others {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(m);
    }
    out
}

#[cfg(test)]
mod tests;
