//! Tests on one span: which of its fields to read, and the matcher for it.

use super::super::language::SpanCondition;
use super::value::{matcher, Field, FieldError, Kind, Matcher};
use crate::otlp::{span_kind, status_code, SpanRecord};

/// What a span test reads.
#[derive(Debug, Clone)]
pub(super) enum SpanField {
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
pub(super) struct SpanTest {
    field: SpanField,
    matcher: Matcher,
}

impl SpanTest {
    /// The span's value this test reads (no allocation: this runs for every
    /// span a rule looks at).
    pub(super) fn value<'a>(&self, s: &'a SpanRecord) -> Field<'a> {
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
    pub(super) fn label(&self) -> String {
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

    pub(super) fn holds(&self, s: &SpanRecord) -> bool {
        self.matcher.matches(self.value(s))
    }
}

pub(super) fn str_of(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("")
}

pub(super) fn name_of(s: &SpanRecord) -> &str {
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

    pub(super) fn describe(&self) -> String {
        if self.0.is_empty() {
            return "any span".into();
        }
        self.0
            .iter()
            .map(|t| format!("{} {}", t.label(), t.matcher.describe()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(super) fn show_values(&self, s: &SpanRecord) -> String {
        self.0
            .iter()
            .map(|t| format!("{} {}", t.label(), t.matcher.show(t.value(s))))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(super) fn span_match(c: &SpanCondition, path: &str) -> Result<SpanMatch, FieldError> {
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

impl SpanMatch {
    /// No test: every span is selected.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
