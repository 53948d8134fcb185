//! Matchers on one value: the operators of the rule language, checked
//! against the type of the field they test, and explained.

use regex::Regex;

use super::super::language::{Operators, Scalar, ValueSpec};
use std::time::Duration;

use crate::otlp::AttrValue;

/// A compile error: the field's path within the rule and what is wrong.
pub(crate) type FieldError = (String, String);

/// What a field holds, which decides the operators it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
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
pub(super) enum Lit {
    Text(String),
    Num(f64),
    Bool(bool),
}

impl Lit {
    pub(super) fn equals(&self, f: &Field<'_>) -> bool {
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
pub(super) enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Cmp {
    pub(super) fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Cmp::Gt => a > b,
            Cmp::Gte => a >= b,
            Cmp::Lt => a < b,
            Cmp::Lte => a <= b,
        }
    }
    pub(super) fn symbol(self) -> &'static str {
        match self {
            Cmp::Gt => ">",
            Cmp::Gte => ">=",
            Cmp::Lt => "<",
            Cmp::Lte => "<=",
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Op {
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

pub(super) fn show_number(kind: Kind, v: f64) -> String {
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

    pub(super) fn show(&self, f: Field<'_>) -> String {
        match (self.kind, f) {
            (Kind::Duration | Kind::Share, Field::Num(n)) => show_number(self.kind, n),
            _ => f.to_string(),
        }
    }
}

pub(super) fn lit(kind: Kind, v: &Scalar, path: &str) -> Result<Lit, FieldError> {
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

pub(super) fn number(kind: Kind, v: &Scalar, path: &str) -> Result<f64, FieldError> {
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

pub(super) fn matcher(kind: Kind, spec: &ValueSpec, path: &str) -> Result<Matcher, FieldError> {
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

pub(super) fn operators(kind: Kind, o: &Operators, path: &str) -> Result<Vec<Op>, FieldError> {
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
