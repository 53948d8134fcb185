//! Conditions compiled from the rule language, evaluated against a trace, and
//! explained (`tailgate explain`).
//!
//! Compilation checks what serde cannot: that an operator fits the field's
//! type (`gt` on a duration, not on a service name), that durations carry a
//! unit, that span kinds and status codes exist, that regexes compile. Each
//! error names the field by its path within the rule.

use std::time::Duration;

use regex::Regex;

use super::language::{
    Condition, CriticalPathCondition, Operators, Scalar, SpanCondition, TraceCondition, ValueSpec,
};
use super::TraceSummary;
use crate::otlp::{span_kind, status_code, AttrValue, SpanRecord};

/// A compile error: the field's path within the rule and what is wrong.
pub(crate) type FieldError = (String, String);

/// What a field holds, which decides the operators it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Free text: service and span names.
    Text,
    /// One of a fixed set of names (span kinds, status codes).
    Enum(&'static [&'static str]),
    /// A duration, written with a unit (`250ms`, `2s`).
    Duration,
    /// A plain number.
    Number,
    /// A fraction, `0.5` or `"50%"`.
    Share,
    /// An attribute: any type; every operator.
    Any,
}

/// A value as a matcher sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field<'a> {
    Missing,
    Text(&'a str),
    Num(f64),
    Bool(bool),
    /// Present but not comparable (bytes, arrays, maps).
    Other,
}

impl<'a> From<Option<AttrValue<'a>>> for Field<'a> {
    fn from(v: Option<AttrValue<'a>>) -> Self {
        match v {
            None => Field::Missing,
            Some(AttrValue::Str(s)) => Field::Text(s),
            Some(AttrValue::Int(i)) => Field::Num(i as f64),
            Some(AttrValue::Double(d)) => Field::Num(d),
            Some(AttrValue::Bool(b)) => Field::Bool(b),
            Some(AttrValue::Other) => Field::Other,
        }
    }
}

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Missing => f.write_str("(absent)"),
            Field::Text(s) => write!(f, "{s:?}"),
            Field::Num(n) => write!(f, "{n}"),
            Field::Bool(b) => write!(f, "{b}"),
            Field::Other => f.write_str("(bytes, array or map)"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Text(String),
    Num(f64),
    Bool(bool),
}

impl Lit {
    fn equals(&self, f: &Field<'_>) -> bool {
        match (self, f) {
            (Lit::Text(a), Field::Text(b)) => a == b,
            (Lit::Num(a), Field::Num(b)) => a == b,
            (Lit::Bool(a), Field::Bool(b)) => a == b,
            // Numbers and booleans recorded as strings (`http.status_code: "500"`).
            (Lit::Num(a), Field::Text(b)) => b.trim().parse::<f64>().is_ok_and(|b| b == *a),
            (Lit::Bool(a), Field::Text(b)) => b.parse::<bool>().is_ok_and(|b| b == *a),
            (Lit::Text(a), Field::Num(b)) => a.trim().parse::<f64>().is_ok_and(|a| a == *b),
            (Lit::Text(a), Field::Bool(b)) => a.parse::<bool>().is_ok_and(|a| a == *b),
            _ => false,
        }
    }
}

impl std::fmt::Display for Lit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lit::Text(s) => write!(f, "{s:?}"),
            Lit::Num(n) => write!(f, "{n}"),
            Lit::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Cmp {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Gt => a > b,
            Cmp::Gte => a >= b,
            Cmp::Lt => a < b,
            Cmp::Lte => a <= b,
        }
    }
    fn symbol(self) -> &'static str {
        match self {
            Cmp::Gt => ">",
            Cmp::Gte => ">=",
            Cmp::Lt => "<",
            Cmp::Lte => "<=",
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Equals(Lit),
    NotEquals(Lit),
    In(Vec<Lit>),
    NotIn(Vec<Lit>),
    Exists(bool),
    Regex(Regex),
    Compare(Cmp, f64),
}

/// A compiled test on one value; all its operators must hold.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    kind: Kind,
    ops: Vec<Op>,
}

fn show_number(kind: Kind, v: f64) -> String {
    match kind {
        Kind::Duration => humantime::format_duration(Duration::from_nanos(v as u64)).to_string(),
        Kind::Share => format!("{:.1}%", v * 100.0),
        _ => format!("{v}"),
    }
}

impl Matcher {
    /// True when every operator holds for `f`. `not_equals` and `not_in` hold
    /// for an absent value; `exists: true` requires one.
    pub(crate) fn matches(&self, f: Field<'_>) -> bool {
        self.ops.iter().all(|op| match op {
            Op::Equals(l) => l.equals(&f),
            Op::NotEquals(l) => !l.equals(&f),
            Op::In(ls) => ls.iter().any(|l| l.equals(&f)),
            Op::NotIn(ls) => !ls.iter().any(|l| l.equals(&f)),
            Op::Exists(e) => *e != matches!(f, Field::Missing),
            Op::Regex(r) => match f {
                Field::Text(s) => r.is_match(s),
                Field::Num(n) => r.is_match(&n.to_string()),
                Field::Bool(b) => r.is_match(if b { "true" } else { "false" }),
                Field::Missing | Field::Other => false,
            },
            Op::Compare(c, b) => match f {
                Field::Num(a) => c.holds(a, *b),
                Field::Text(s) => s.trim().parse::<f64>().is_ok_and(|a| c.holds(a, *b)),
                _ => false,
            },
        })
    }

    /// The operators as a person reads them, e.g. `> 2s`, `in ["a", "b"]`.
    pub(crate) fn describe(&self) -> String {
        let list = |ls: &[Lit]| {
            ls.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.ops
            .iter()
            .map(|op| match op {
                Op::Equals(l) => format!("= {l}"),
                Op::NotEquals(l) => format!("!= {l}"),
                Op::In(ls) => format!("in [{}]", list(ls)),
                Op::NotIn(ls) => format!("not in [{}]", list(ls)),
                Op::Exists(true) => "exists".into(),
                Op::Exists(false) => "is absent".into(),
                Op::Regex(r) => format!("~ /{}/", r.as_str()),
                Op::Compare(c, b) => format!("{} {}", c.symbol(), show_number(self.kind, *b)),
            })
            .collect::<Vec<_>>()
            .join(" and ")
    }

    fn show(&self, f: Field<'_>) -> String {
        match (self.kind, f) {
            (Kind::Duration | Kind::Share, Field::Num(n)) => show_number(self.kind, n),
            _ => f.to_string(),
        }
    }
}

fn lit(kind: Kind, v: &Scalar, path: &str) -> Result<Lit, FieldError> {
    let bad = |m: String| Err((path.to_string(), m));
    match (kind, v) {
        (Kind::Enum(names), Scalar::Str(s)) => {
            if names.contains(&s.as_str()) {
                Ok(Lit::Text(s.clone()))
            } else {
                bad(format!("{s:?} is not one of {}", names.join(", ")))
            }
        }
        (Kind::Enum(names), other) => bad(format!("{other} is not one of {}", names.join(", "))),
        (Kind::Text, Scalar::Str(s)) => Ok(Lit::Text(s.clone())),
        (Kind::Text, other) => Ok(Lit::Text(other.to_string())),
        (Kind::Duration, _) => bad(format!(
            "{v}: a duration is compared with gt, gte, lt or lte, e.g. `{{ gt: 2s }}`"
        )),
        (Kind::Number | Kind::Share, _) => number(kind, v, path).map(Lit::Num),
        (Kind::Any, Scalar::Str(s)) => Ok(Lit::Text(s.clone())),
        (Kind::Any, Scalar::Int(i)) => Ok(Lit::Num(*i as f64)),
        (Kind::Any, Scalar::Float(x)) => Ok(Lit::Num(*x)),
        (Kind::Any, Scalar::Bool(b)) => Ok(Lit::Bool(*b)),
    }
}

fn number(kind: Kind, v: &Scalar, path: &str) -> Result<f64, FieldError> {
    let bad = |m: String| Err((path.to_string(), m));
    match (kind, v) {
        (Kind::Duration, Scalar::Str(s)) => humantime::parse_duration(s.trim())
            .map(|d| d.as_nanos() as f64)
            .or_else(|e| {
                bad(format!(
                    "{s:?} is not a duration ({e}); write e.g. 250ms, 2s, 1m"
                ))
            }),
        (Kind::Duration, other) => bad(format!(
            "{other} has no unit; write a duration such as 250ms, 2s or 1m"
        )),
        (Kind::Share, Scalar::Str(s)) if s.trim().ends_with('%') => s
            .trim()
            .trim_end_matches('%')
            .trim()
            .parse::<f64>()
            .map(|p| p / 100.0)
            .or_else(|_| bad(format!("{s:?} is not a percentage"))),
        (_, Scalar::Int(i)) => Ok(*i as f64),
        (_, Scalar::Float(x)) => Ok(*x),
        (_, Scalar::Str(s)) => s
            .trim()
            .parse::<f64>()
            .or_else(|_| bad(format!("{s:?} is not a number"))),
        (_, Scalar::Bool(b)) => bad(format!("{b} is not a number")),
    }
    .and_then(|n| {
        if kind == Kind::Share && !(0.0..=1.0).contains(&n) {
            bad(format!(
                "a share is between 0 and 1 (or 0% and 100%), not {n}"
            ))
        } else {
            Ok(n)
        }
    })
}

fn matcher(kind: Kind, spec: &ValueSpec, path: &str) -> Result<Matcher, FieldError> {
    let mut ops = Vec::new();
    match spec {
        ValueSpec::Is(v) => ops.push(Op::Equals(lit(kind, v, path)?)),
        ValueSpec::OneOf(vs) => ops.push(Op::In(
            vs.iter()
                .map(|v| lit(kind, v, path))
                .collect::<Result<_, _>>()?,
        )),
        ValueSpec::Ops(o) => ops = operators(kind, o, path)?,
    }
    Ok(Matcher { kind, ops })
}

fn operators(kind: Kind, o: &Operators, path: &str) -> Result<Vec<Op>, FieldError> {
    let at = |name: &str| format!("{path}.{name}");
    let not_for = |name: &str, what: &str| -> FieldError {
        (
            at(name),
            format!("`{name}` does not apply to {what}; use gt, gte, lt or lte"),
        )
    };
    let mut ops = Vec::new();
    let is_duration = kind == Kind::Duration;
    if let Some(v) = &o.equals {
        if is_duration {
            return Err(not_for("equals", "a duration"));
        }
        ops.push(Op::Equals(lit(kind, v, &at("equals"))?));
    }
    if let Some(v) = &o.not_equals {
        if is_duration {
            return Err(not_for("not_equals", "a duration"));
        }
        ops.push(Op::NotEquals(lit(kind, v, &at("not_equals"))?));
    }
    for (name, list, negate) in [("in", &o.in_, false), ("not_in", &o.not_in, true)] {
        if let Some(vs) = list {
            if is_duration {
                return Err(not_for(name, "a duration"));
            }
            if vs.is_empty() {
                return Err((at(name), "the list is empty".into()));
            }
            let ls = vs
                .iter()
                .map(|v| lit(kind, v, &at(name)))
                .collect::<Result<Vec<_>, _>>()?;
            ops.push(if negate { Op::NotIn(ls) } else { Op::In(ls) });
        }
    }
    if let Some(e) = o.exists {
        if kind != Kind::Any {
            return Err((
                at("exists"),
                "`exists` applies to attributes; this field is always present".into(),
            ));
        }
        ops.push(Op::Exists(e));
    }
    if let Some(r) = &o.regex {
        if matches!(kind, Kind::Duration | Kind::Number | Kind::Share) {
            return Err((
                at("regex"),
                "`regex` applies to text; compare numbers and durations with gt, gte, lt or lte"
                    .into(),
            ));
        }
        let re = regex::RegexBuilder::new(r)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                // The regex crate's message spans lines (pattern, caret, cause).
                let text = e.to_string();
                let cause = text
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                (at("regex"), format!("invalid regex {r:?}: {cause}"))
            })?;
        ops.push(Op::Regex(re));
    }
    for (name, v, c) in [
        ("gt", &o.gt, Cmp::Gt),
        ("gte", &o.gte, Cmp::Gte),
        ("lt", &o.lt, Cmp::Lt),
        ("lte", &o.lte, Cmp::Lte),
    ] {
        if let Some(v) = v {
            if matches!(kind, Kind::Text | Kind::Enum(_)) {
                return Err((
                    at(name),
                    format!("`{name}` compares numbers and durations, not names"),
                ));
            }
            ops.push(Op::Compare(c, number(kind, v, &at(name))?));
        }
    }
    if ops.is_empty() {
        return Err((path.to_string(), "no operator given".into()));
    }
    Ok(ops)
}

/// What a span test reads.
#[derive(Debug, Clone)]
enum SpanField {
    Service,
    Name,
    Kind,
    Status,
    Duration,
    Attribute(String),
    Resource(String),
}

/// A test on one span: a field and the matcher for its value.
#[derive(Debug, Clone)]
struct SpanTest {
    field: SpanField,
    matcher: Matcher,
}

impl SpanTest {
    /// The span's value this test reads (no allocation: this runs for every
    /// span a rule looks at).
    fn value<'a>(&self, s: &'a SpanRecord) -> Field<'a> {
        match &self.field {
            SpanField::Service => Field::Text(str_of(s.scope.part(crate::otlp::Part::Service))),
            SpanField::Name => Field::Text(name_of(s)),
            SpanField::Kind => Field::Text(s.kind_name()),
            SpanField::Status => Field::Text(s.status_name()),
            SpanField::Duration => Field::Num(s.duration_ns() as f64),
            SpanField::Attribute(k) => s.attribute(k).into(),
            SpanField::Resource(k) => s.resource_attribute(k).into(),
        }
    }

    /// What the test reads, for explanations.
    fn label(&self) -> String {
        match &self.field {
            SpanField::Service => "service".into(),
            SpanField::Name => "name".into(),
            SpanField::Kind => "kind".into(),
            SpanField::Status => "status".into(),
            SpanField::Duration => "duration".into(),
            SpanField::Attribute(k) => format!("attribute {k}"),
            SpanField::Resource(k) => format!("resource {k}"),
        }
    }

    fn holds(&self, s: &SpanRecord) -> bool {
        self.matcher.matches(self.value(s))
    }
}

fn str_of(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("")
}

fn name_of(s: &SpanRecord) -> &str {
    match s.name() {
        std::borrow::Cow::Borrowed(n) => n,
        std::borrow::Cow::Owned(_) => "",
    }
}

/// All tests on one span.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpanMatch(Vec<SpanTest>);

impl SpanMatch {
    pub(crate) fn holds(&self, s: &SpanRecord) -> bool {
        self.0.iter().all(|t| t.holds(s))
    }

    fn describe(&self) -> String {
        if self.0.is_empty() {
            return "any span".into();
        }
        self.0
            .iter()
            .map(|t| format!("{} {}", t.label(), t.matcher.describe()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn show_values(&self, s: &SpanRecord) -> String {
        self.0
            .iter()
            .map(|t| format!("{} {}", t.label(), t.matcher.show(t.value(s))))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn span_match(c: &SpanCondition, path: &str) -> Result<SpanMatch, FieldError> {
    let at = |n: &str| format!("{path}.{n}");
    let mut tests = Vec::new();
    for (name, spec, field, kind) in [
        ("service", &c.service, SpanField::Service, Kind::Text),
        ("name", &c.name, SpanField::Name, Kind::Text),
        (
            "kind",
            &c.kind,
            SpanField::Kind,
            Kind::Enum(&span_kind::NAMES),
        ),
        (
            "status",
            &c.status,
            SpanField::Status,
            Kind::Enum(&status_code::NAMES),
        ),
        ("duration", &c.duration, SpanField::Duration, Kind::Duration),
    ] {
        if let Some(v) = spec {
            tests.push(SpanTest {
                field,
                matcher: matcher(kind, v, &at(name))?,
            });
        }
    }
    for (key, map, resource) in [
        ("attribute", &c.attribute, false),
        ("resource", &c.resource, true),
    ] {
        for (k, v) in map.iter().flatten() {
            if k.is_empty() {
                return Err((at(key), "an attribute name is empty".into()));
            }
            tests.push(SpanTest {
                field: if resource {
                    SpanField::Resource(k.clone())
                } else {
                    SpanField::Attribute(k.clone())
                },
                matcher: matcher(Kind::Any, v, &format!("{}.{k}", at(key)))?,
            });
        }
    }
    Ok(SpanMatch(tests))
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    TraceError(bool),
    TraceDuration(Matcher),
    SpanCount(Matcher),
    HasRoot(bool),
    Root(SpanMatch),
    SomeSpan(SpanMatch),
    EverySpan(SpanMatch),
    CriticalPath(PathMatch),
}

/// Conditions on the critical path.
#[derive(Debug, Clone)]
pub(crate) struct PathMatch {
    select: SpanMatch,
    duration: Option<Matcher>,
    share: Option<Matcher>,
    total: Option<Matcher>,
}

/// Compiles a `when` condition; `path` is where it sits in the rule.
pub(crate) fn compile(c: &Condition, path: &str) -> Result<Cond, FieldError> {
    let at = |n: &str| format!("{path}.{n}");
    let mut all = Vec::new();
    for (name, list, any) in [("all", &c.all, false), ("any", &c.any, true)] {
        if let Some(list) = list {
            if list.is_empty() {
                return Err((at(name), "the list is empty".into()));
            }
            let cs = list
                .iter()
                .enumerate()
                .map(|(i, c)| compile(c, &format!("{}[{i}]", at(name))))
                .collect::<Result<Vec<_>, _>>()?;
            all.push(if any { Cond::Any(cs) } else { Cond::All(cs) });
        }
    }
    if let Some(n) = &c.not {
        all.push(Cond::Not(Box::new(compile(n, &at("not"))?)));
    }
    if let Some(t) = &c.trace {
        trace_conditions(t, &at("trace"), &mut all)?;
    }
    if let Some(r) = &c.root {
        all.push(Cond::Root(span_match(r, &at("root"))?));
    }
    if let Some(s) = &c.span {
        all.push(Cond::SomeSpan(span_match(s, &at("span"))?));
    }
    if let Some(s) = &c.every_span {
        all.push(Cond::EverySpan(span_match(s, &at("every_span"))?));
    }
    if let Some(p) = &c.critical_path {
        all.push(Cond::CriticalPath(path_match(p, &at("critical_path"))?));
    }
    Ok(match all.len() {
        1 => all.pop().expect("one condition"),
        _ => Cond::All(all),
    })
}

fn trace_conditions(t: &TraceCondition, path: &str, out: &mut Vec<Cond>) -> Result<(), FieldError> {
    let at = |n: &str| format!("{path}.{n}");
    if let Some(e) = t.error {
        out.push(Cond::TraceError(e));
    }
    if let Some(d) = &t.duration {
        out.push(Cond::TraceDuration(matcher(
            Kind::Duration,
            d,
            &at("duration"),
        )?));
    }
    if let Some(n) = &t.span_count {
        out.push(Cond::SpanCount(matcher(
            Kind::Number,
            n,
            &at("span_count"),
        )?));
    }
    if let Some(r) = t.has_root {
        out.push(Cond::HasRoot(r));
    }
    Ok(())
}

fn path_match(p: &CriticalPathCondition, path: &str) -> Result<PathMatch, FieldError> {
    let at = |n: &str| format!("{path}.{n}");
    let select = span_match(
        &SpanCondition {
            service: p.service.clone(),
            name: p.name.clone(),
            ..SpanCondition::default()
        },
        path,
    )?;
    let m = PathMatch {
        select,
        duration: p
            .duration
            .as_ref()
            .map(|d| matcher(Kind::Duration, d, &at("duration")))
            .transpose()?,
        share: p
            .share
            .as_ref()
            .map(|d| matcher(Kind::Share, d, &at("share")))
            .transpose()?,
        total: p
            .total
            .as_ref()
            .map(|d| matcher(Kind::Duration, d, &at("total")))
            .transpose()?,
    };
    if m.duration.is_none() && m.share.is_none() && m.total.is_none() {
        return Err((
            path.to_string(),
            "say what to measure: duration, share or total (e.g. `{ service: db, share: { gt: 50% } }`)".into(),
        ));
    }
    Ok(m)
}

/// One step of an explanation: what was tested, whether it held, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub text: String,
    pub ok: bool,
    pub children: Vec<Check>,
}

impl Check {
    fn leaf(text: String, ok: bool) -> Self {
        Self {
            text,
            ok,
            children: Vec::new(),
        }
    }
}

fn ms(ns: u64) -> String {
    humantime::format_duration(Duration::from_millis(ns / 1_000_000)).to_string()
}

impl PathMatch {
    /// (selected time, total) on the trace's critical path.
    fn measure(&self, t: &TraceSummary<'_>) -> (u64, u64) {
        let cp = t.critical_path();
        let selected = if self.select.0.is_empty() {
            cp.total_ns
        } else {
            cp.time_in(t.spans, |s| self.select.holds(s))
        };
        (selected, cp.total_ns)
    }

    fn holds(&self, t: &TraceSummary<'_>) -> bool {
        let (sel, total) = self.measure(t);
        if total == 0 {
            return false;
        }
        let share = sel as f64 / total as f64;
        self.duration
            .as_ref()
            .is_none_or(|m| m.matches(Field::Num(sel as f64)))
            && self
                .share
                .as_ref()
                .is_none_or(|m| m.matches(Field::Num(share)))
            && self
                .total
                .as_ref()
                .is_none_or(|m| m.matches(Field::Num(total as f64)))
    }
}

impl Cond {
    pub(crate) fn holds(&self, t: &TraceSummary<'_>) -> bool {
        match self {
            Cond::All(cs) => cs.iter().all(|c| c.holds(t)),
            Cond::Any(cs) => cs.iter().any(|c| c.holds(t)),
            Cond::Not(c) => !c.holds(t),
            Cond::TraceError(e) => t.error == *e,
            Cond::TraceDuration(m) => m.matches(Field::Num(t.duration.as_nanos() as f64)),
            Cond::SpanCount(m) => m.matches(Field::Num(t.span_count as f64)),
            Cond::HasRoot(r) => t.root.is_some() == *r,
            Cond::Root(m) => t.root.is_some_and(|r| m.holds(r)),
            Cond::SomeSpan(m) => t.spans.iter().any(|s| m.holds(s)),
            Cond::EverySpan(m) => t.spans.iter().all(|s| m.holds(s)),
            Cond::CriticalPath(p) => p.holds(t),
        }
    }

    /// Evaluates the condition and says why it holds or not.
    pub(crate) fn explain(&self, t: &TraceSummary<'_>) -> Check {
        let ok = self.holds(t);
        match self {
            Cond::All(cs) => Check {
                text: "all of".into(),
                ok,
                children: cs.iter().map(|c| c.explain(t)).collect(),
            },
            Cond::Any(cs) => Check {
                text: "any of".into(),
                ok,
                children: cs.iter().map(|c| c.explain(t)).collect(),
            },
            Cond::Not(c) => Check {
                text: "not".into(),
                ok,
                children: vec![c.explain(t)],
            },
            Cond::TraceError(e) => Check::leaf(
                format!(
                    "trace has an error: {} (wanted {e})",
                    if t.error { "yes" } else { "no" }
                ),
                ok,
            ),
            Cond::TraceDuration(m) => Check::leaf(
                format!(
                    "trace duration {} {}",
                    m.show(Field::Num(t.duration.as_nanos() as f64)),
                    m.describe()
                ),
                ok,
            ),
            Cond::SpanCount(m) => {
                Check::leaf(format!("span count {} {}", t.span_count, m.describe()), ok)
            }
            Cond::HasRoot(r) => Check::leaf(
                format!(
                    "root span arrived: {} (wanted {r})",
                    if t.root.is_some() { "yes" } else { "no" }
                ),
                ok,
            ),
            Cond::Root(m) => Check::leaf(
                match t.root {
                    Some(r) => format!("root span: {} ({})", m.describe(), m.show_values(r)),
                    None => format!("root span: {} (no root span)", m.describe()),
                },
                ok,
            ),
            Cond::SomeSpan(m) => Check::leaf(
                match t.spans.iter().find(|s| m.holds(s)) {
                    Some(s) => format!(
                        "some span: {} (span {:?} in {})",
                        m.describe(),
                        s.name(),
                        s.service()
                    ),
                    None => format!(
                        "some span: {} (none of {} spans)",
                        m.describe(),
                        t.spans.len()
                    ),
                },
                ok,
            ),
            Cond::EverySpan(m) => Check::leaf(
                match t.spans.iter().find(|s| !m.holds(s)) {
                    Some(s) => format!(
                        "every span: {} (span {:?} in {} has {})",
                        m.describe(),
                        s.name(),
                        s.service(),
                        m.show_values(s)
                    ),
                    None => format!("every span: {} (all {} do)", m.describe(), t.spans.len()),
                },
                ok,
            ),
            Cond::CriticalPath(p) => {
                let (sel, total) = p.measure(t);
                let what = if p.select.0.is_empty() {
                    "critical path".to_string()
                } else {
                    format!("critical path in spans with {}", p.select.describe())
                };
                let mut parts = Vec::new();
                if let Some(m) = &p.duration {
                    parts.push(format!("time {} {}", ms(sel), m.describe()));
                }
                if let Some(m) = &p.share {
                    let share = if total == 0 {
                        0.0
                    } else {
                        sel as f64 / total as f64
                    };
                    parts.push(format!("share {:.1}% {}", share * 100.0, m.describe()));
                }
                if let Some(m) = &p.total {
                    parts.push(format!("total {} {}", ms(total), m.describe()));
                }
                Check::leaf(format!("{what}: {}", parts.join(", ")), ok)
            }
        }
    }
}
