//! YAML streams into span trees, one tree per non-empty document.
//!
//! Built on saphyr-parser's event stream rather than a ready-made loader so
//! that duplicate keys are caught, nesting depth is bounded while parsing,
//! and aliases (which could multiply a small file into a huge tree) are
//! refused. Plain scalars are resolved with the YAML 1.2 core schema.

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};
use std::borrow::Cow;

use super::tree::{
    parse_integer_digits, Entry, MappingBuilder, Node, Span, SyntaxError, Value, MAX_DEPTH,
};

pub(crate) fn parse(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut builder = Builder {
        text,
        offsets: CharOffsets::new(text),
        open: Vec::new(),
        root: None,
        documents: Vec::new(),
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        match next {
            Ok((event, span)) => {
                let span = builder.offsets.span(span.start.index(), span.end.index());
                builder.event(event, span)?;
            }
            Err(error) => {
                let at = builder.offsets.byte(error.marker().index());
                let len = text
                    .get(at..)
                    .and_then(|rest| rest.chars().next())
                    .map_or(0, char::len_utf8);
                return Err(SyntaxError::new(error.info(), Span::new(at, at + len)));
            }
        }
    }
    Ok(builder.documents)
}

/// saphyr's markers count characters; spans here are bytes.
struct CharOffsets {
    /// Byte offset of each character, then the text's length; `None` for
    /// ASCII text, where the two are the same.
    table: Option<Vec<usize>>,
    len: usize,
}

impl CharOffsets {
    fn new(text: &str) -> Self {
        let table = (!text.is_ascii()).then(|| {
            text.char_indices()
                .map(|(at, _)| at)
                .chain(std::iter::once(text.len()))
                .collect()
        });
        CharOffsets {
            table,
            len: text.len(),
        }
    }

    fn byte(&self, char_index: usize) -> usize {
        match &self.table {
            None => char_index.min(self.len),
            Some(table) => table.get(char_index).copied().unwrap_or(self.len),
        }
    }

    fn span(&self, start: usize, end: usize) -> Span {
        Span::new(self.byte(start), self.byte(end))
    }
}

/// A collection whose end event has not come yet.
enum Open {
    Sequence {
        start: usize,
        items: Vec<Node>,
    },
    Mapping {
        start: usize,
        entries: MappingBuilder,
        key: Option<(String, Span)>,
    },
}

struct Builder<'t> {
    text: &'t str,
    offsets: CharOffsets,
    open: Vec<Open>,
    root: Option<Node>,
    documents: Vec<Node>,
}

impl Builder<'_> {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) => {
                Ok(())
            }
            Event::DocumentEnd => {
                // An empty document (or one that is only `~`) holds no object.
                if let Some(root) = self.root.take().filter(|root| root.value != Value::Null) {
                    self.documents.push(root);
                }
                Ok(())
            }
            Event::Alias(_) => Err(SyntaxError::new(
                "YAML aliases are not supported in manifests",
                span,
            )
            .with_help("write the value out in full instead of `*name`")),
            Event::Scalar(raw, style, _anchor, tag) => {
                if let Some(Open::Mapping {
                    key: key @ None, ..
                }) = self.open.last_mut()
                {
                    *key = Some((raw.into_owned(), span));
                    return Ok(());
                }
                let value = scalar_value(raw, style, tag.as_deref(), span)?;
                self.complete(Node { span, value })
            }
            Event::SequenceStart(_, tag) => {
                self.check_collection_start(tag.as_deref(), "seq", span)?;
                self.open.push(Open::Sequence {
                    start: span.start,
                    items: Vec::new(),
                });
                Ok(())
            }
            Event::MappingStart(_, tag) => {
                self.check_collection_start(tag.as_deref(), "map", span)?;
                self.open.push(Open::Mapping {
                    start: span.start,
                    entries: MappingBuilder::default(),
                    key: None,
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.open.pop() {
                    Some(Open::Sequence { start, items }) => Node {
                        span: Span::new(start, span.end),
                        value: Value::Sequence(items),
                    },
                    Some(Open::Mapping { start, entries, .. }) => Node {
                        span: Span::new(start, span.end),
                        value: Value::Mapping(entries.finish()),
                    },
                    None => return Err(SyntaxError::new("unbalanced end of a collection", span)),
                };
                self.complete(node)
            }
        }
    }

    fn check_collection_start(
        &self,
        tag: Option<&Tag>,
        core_tag: &str,
        span: Span,
    ) -> Result<(), SyntaxError> {
        if let Some(Open::Mapping { key: None, .. }) = self.open.last() {
            return Err(
                SyntaxError::new("a mapping key must be a plain value", span)
                    .with_help("manifest keys are field names such as `id` or `containers`"),
            );
        }
        if self.open.len() >= MAX_DEPTH {
            return Err(SyntaxError::too_deep(span));
        }
        match tag {
            Some(tag) if !(tag.is_yaml_core_schema() && tag.suffix == core_tag) => {
                Err(unsupported_tag(tag, span))
            }
            _ => Ok(()),
        }
    }

    /// Hands a finished node to the collection it belongs to.
    fn complete(&mut self, node: Node) -> Result<(), SyntaxError> {
        match self.open.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Open::Sequence { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Open::Mapping { entries, key, .. }) => match key.take() {
                Some((key, key_span)) => entries.insert(
                    self.text,
                    Entry {
                        key,
                        key_span,
                        value: node,
                    },
                ),
                None => Err(SyntaxError::new(
                    "a mapping key must be a plain value",
                    node.span,
                )),
            },
        }
    }
}

fn scalar_value(
    raw: Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<&Tag>,
    span: Span,
) -> Result<Value, SyntaxError> {
    match tag {
        None if style == ScalarStyle::Plain => Ok(resolve_plain(&raw)),
        None => Ok(Value::String(raw.into_owned())),
        Some(tag) if tag.is_yaml_core_schema() => match tag.suffix.as_str() {
            "str" => Ok(Value::String(raw.into_owned())),
            "null" | "bool" | "int" | "float" => Ok(resolve_plain(&raw)),
            _ => Err(unsupported_tag(tag, span)),
        },
        Some(tag) => Err(unsupported_tag(tag, span)),
    }
}

fn unsupported_tag(tag: &Tag, span: Span) -> SyntaxError {
    SyntaxError::new(
        format!("YAML tag `{tag}` is not supported in manifests"),
        span,
    )
    .with_help("remove the tag; a manifest needs only plain strings, numbers, lists and mappings")
}

/// The YAML 1.2 core schema: what an unquoted scalar means.
fn resolve_plain(raw: &str) -> Value {
    match raw {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(value) = core_integer(raw) {
        return Value::Integer(value);
    }
    if let Some(value) = core_float(raw) {
        return Value::Float(value);
    }
    Value::String(raw.to_string())
}

fn core_integer(raw: &str) -> Option<i128> {
    if let Some(octal) = raw.strip_prefix("0o") {
        return parse_integer_digits(octal, 8, false);
    }
    if let Some(hex) = raw.strip_prefix("0x") {
        return parse_integer_digits(hex, 16, false);
    }
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw.strip_prefix('+').unwrap_or(raw)),
    };
    parse_integer_digits(digits, 10, negative)
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` and `[-+]?.inf`.
fn core_float(raw: &str) -> Option<f64> {
    let unsigned = raw.strip_prefix(['-', '+']).unwrap_or(raw);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") {
        return Some(if raw.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (unsigned.get(..at)?, Some(unsigned.get(at + 1..)?)),
        None => (unsigned, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (mantissa, None),
    };
    let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match fraction {
        Some(fraction) => {
            all_digits(whole) && all_digits(fraction) && !(whole.is_empty() && fraction.is_empty())
        }
        None => !whole.is_empty() && all_digits(whole),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
        !digits.is_empty() && all_digits(digits)
    });
    if mantissa_ok && exponent_ok {
        raw.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(text: &str, span: Span) -> &str {
        &text[span.start..span.end]
    }

    fn only_document(text: &str) -> Node {
        let mut documents = parse(text).unwrap();
        assert_eq!(documents.len(), 1);
        documents.remove(0)
    }

    #[test]
    fn spans_are_bytes_even_after_non_ascii_text() {
        let text = "a: é\nbé: [x, \"ü\"]\nc:\n  d: 1\n";
        let root = only_document(text);
        let Value::Mapping(entries) = &root.value else {
            panic!("not a mapping")
        };
        assert_eq!(text_of(text, entries[1].key_span), "bé");
        let Value::Sequence(items) = &entries[1].value.value else {
            panic!("not a list")
        };
        assert_eq!(text_of(text, items[1].span), "\"ü\"");
        assert_eq!(items[1].value, Value::String("ü".into()));
        let Value::Mapping(inner) = &entries[2].value.value else {
            panic!("not a mapping")
        };
        assert_eq!(text_of(text, inner[0].value.span), "1");
    }

    #[test]
    fn empty_documents_are_skipped() {
        let documents = parse("---\n# nothing\n---\na: 1\n---\n~\n---\nb: 2\n").unwrap();
        assert_eq!(documents.len(), 2);
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        let cases = [
            ("8080", Value::Integer(8080)),
            ("-3", Value::Integer(-3)),
            ("0x1F", Value::Integer(31)),
            ("0o17", Value::Integer(15)),
            ("1.5", Value::Float(1.5)),
            (".5", Value::Float(0.5)),
            ("1e3", Value::Float(1000.0)),
            ("-.inf", Value::Float(f64::NEG_INFINITY)),
            ("true", Value::Bool(true)),
            ("yes", Value::String("yes".into())),
            ("~", Value::Null),
            ("1.2.3", Value::String("1.2.3".into())),
            ("e3", Value::String("e3".into())),
            ("inf", Value::String("inf".into())),
            ("0x", Value::String("0x".into())),
        ];
        for (raw, expected) in cases {
            assert_eq!(resolve_plain(raw), expected, "{raw}");
        }
        let root = only_document("a: '8080'\nb: !!str 8080\n");
        let Value::Mapping(entries) = root.value else {
            panic!("not a mapping")
        };
        assert_eq!(entries[0].value.value, Value::String("8080".into()));
        assert_eq!(entries[1].value.value, Value::String("8080".into()));
    }

    #[test]
    fn refuses_what_manifests_do_not_need() {
        let alias = parse("a: &x 1\nb: *x\n").unwrap_err();
        assert!(alias.message.contains("aliases"));
        let duplicate = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(duplicate.message, "duplicate key `a`");
        assert_eq!(duplicate.span, Span::new(10, 11));
        assert!(parse("? [a]\n: 1\n").unwrap_err().message.contains("key"));
        assert!(parse("a: !custom 1\n").unwrap_err().message.contains("tag"));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(parse(&deep).unwrap_err().message.contains("nesting"));
    }

    #[test]
    fn syntax_errors_have_byte_positions() {
        let text = "é: 1\nb: 'unterminated\n";
        let error = parse(text).unwrap_err();
        assert_eq!(text_of(text, error.span), "'");
    }
}
