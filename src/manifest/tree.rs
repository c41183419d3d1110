//! The generic document tree both parsers produce: every node and every key
//! carries the byte span it came from, so that decoding errors can point at
//! a line and column.

use std::collections::HashMap;

/// Deeper nesting than any v1beta1 manifest needs; the limit keeps the
/// recursive parts of parsing and decoding away from the stack's end.
pub(crate) const MAX_DEPTH: usize = 128;

/// Byte offsets into the source text, `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span {
            start,
            end: end.max(start),
        }
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(span: Span) -> Self {
        (span.start..span.end).into()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub span: Span,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    /// Whole numbers, saturated at the ends of `i128`: every range kctl
    /// checks is far narrower, so a saturated value is still out of range.
    Integer(i128),
    /// Numbers written with a fraction or an exponent.
    Float(f64),
    String(String),
    Sequence(Vec<Node>),
    Mapping(Vec<Entry>),
}

impl Value {
    /// "a string", "an object": for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Integer(_) | Value::Float(_) => "a number",
            Value::String(_) => "a string",
            Value::Sequence(_) => "a list",
            Value::Mapping(_) => "an object",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

/// A parse failure, before it is tied to a file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub message: String,
    pub span: Span,
    pub help: Option<String>,
}

impl SyntaxError {
    pub fn new(message: impl Into<String>, span: Span) -> Self {
        SyntaxError {
            message: message.into(),
            span,
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn too_deep(span: Span) -> Self {
        SyntaxError::new(format!("nesting is deeper than {MAX_DEPTH} levels"), span)
            .with_help("no manifest needs this much nesting; check for unbalanced brackets")
    }
}

/// Collects the entries of one mapping, refusing a key that appears twice
/// (Go kept the last silently; here it is almost always a mistake).
#[derive(Debug, Default)]
pub(crate) struct MappingBuilder {
    entries: Vec<Entry>,
    seen: HashMap<String, Span>,
}

impl MappingBuilder {
    pub fn insert(&mut self, text: &str, entry: Entry) -> Result<(), SyntaxError> {
        if let Some(first) = self.seen.get(&entry.key) {
            let line = text
                .get(..first.start)
                .unwrap_or(text)
                .matches('\n')
                .count()
                + 1;
            return Err(
                SyntaxError::new(format!("duplicate key `{}`", entry.key), entry.key_span)
                    .with_help(format!("`{}` is already set on line {line}", entry.key)),
            );
        }
        self.seen.insert(entry.key.clone(), entry.key_span);
        self.entries.push(entry);
        Ok(())
    }

    pub fn finish(self) -> Vec<Entry> {
        self.entries
    }
}

/// Parses digits in `radix`, saturating instead of overflowing; `None` when
/// `digits` is empty or holds anything else.
pub(crate) fn parse_integer_digits(digits: &str, radix: u32, negative: bool) -> Option<i128> {
    if digits.is_empty() {
        return None;
    }
    let mut value: i128 = 0;
    for c in digits.chars() {
        let digit = i128::from(c.to_digit(radix)?);
        let step = if negative { -digit } else { digit };
        value = value.saturating_mul(i128::from(radix)).saturating_add(step);
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_digits_saturate() {
        assert_eq!(parse_integer_digits("8080", 10, false), Some(8080));
        assert_eq!(parse_integer_digits("12", 10, true), Some(-12));
        assert_eq!(parse_integer_digits("ff", 16, false), Some(255));
        assert_eq!(
            parse_integer_digits(&"9".repeat(60), 10, false),
            Some(i128::MAX)
        );
        assert_eq!(
            parse_integer_digits(&"9".repeat(60), 10, true),
            Some(i128::MIN)
        );
        assert_eq!(parse_integer_digits("", 10, false), None);
        assert_eq!(parse_integer_digits("1x", 10, false), None);
    }
}
