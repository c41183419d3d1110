//! A small JSON parser (RFC 8259) that records the byte span of every node
//! and key, and reports syntax errors at the exact byte where they occur.

use super::tree::{
    parse_integer_digits, Entry, MappingBuilder, Node, Span, SyntaxError, Value, MAX_DEPTH,
};

/// Parses one JSON value that fills the whole text (surrounding whitespace
/// and a leading byte-order mark aside).
pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut parser = Parser {
        text,
        pos: if text.starts_with('\u{feff}') {
            '\u{feff}'.len_utf8()
        } else {
            0
        },
    };
    let root = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos < text.len() {
        return Err(parser
            .unexpected("after the end of the JSON value")
            .with_help(
                "a JSON file holds one object; put several in a `List` \
                 or use YAML documents separated by `---`",
            ));
    }
    Ok(root)
}

struct Parser<'t> {
    text: &'t str,
    /// Always on a character boundary.
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.text
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn skip_whitespace(&mut self) {
        while let Some(' ' | '\t' | '\n' | '\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// The span of the character at the cursor (empty at the end).
    fn here(&self) -> Span {
        let len = self.peek().map_or(0, char::len_utf8);
        Span::new(self.pos, self.pos + len)
    }

    /// "unexpected `x` <context>" at the cursor, or "unexpected end of input".
    fn unexpected(&self, context: &str) -> SyntaxError {
        match self.peek() {
            Some(c) => SyntaxError::new(
                format!("unexpected {} {context}", show_char(c)),
                self.here(),
            ),
            None => SyntaxError::new("unexpected end of input", self.here()),
        }
    }

    fn expect(&mut self, wanted: char, context: &str) -> Result<(), SyntaxError> {
        if self.peek() == Some(wanted) {
            self.pos += 1;
            Ok(())
        } else {
            Err(match self.peek() {
                Some(c) => SyntaxError::new(
                    format!("expected `{wanted}` {context}, found {}", show_char(c)),
                    self.here(),
                ),
                None => SyntaxError::new(
                    format!("expected `{wanted}` {context}, found the end of input"),
                    self.here(),
                ),
            })
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        self.skip_whitespace();
        let start = self.pos;
        let value = match self.peek() {
            Some('{') => self.mapping(depth + 1)?,
            Some('[') => self.sequence(depth + 1)?,
            Some('"') => Value::String(self.string()?),
            Some('-' | '0'..='9') => self.number()?,
            Some('t') => self.literal("true", Value::Bool(true))?,
            Some('f') => self.literal("false", Value::Bool(false))?,
            Some('n') => self.literal("null", Value::Null)?,
            Some('\'') => {
                return Err(self
                    .unexpected("where a value should be")
                    .with_help("JSON strings use double quotes"))
            }
            Some(_) => {
                let mut error = self.unexpected("where a value should be");
                if self
                    .text
                    .get(start..)
                    .is_some_and(|rest| rest.starts_with(char::is_alphabetic))
                {
                    error = error.with_help("JSON strings must be in double quotes");
                }
                return Err(error);
            }
            None => {
                return Err(SyntaxError::new(
                    "unexpected end of input; expected a value",
                    self.here(),
                ))
            }
        };
        Ok(Node {
            span: Span::new(start, self.pos),
            value,
        })
    }

    fn mapping(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(SyntaxError::too_deep(self.here()));
        }
        self.pos += 1; // `{`
        let mut entries = MappingBuilder::default();
        self.skip_whitespace();
        if self.peek() == Some('}') {
            self.pos += 1;
            return Ok(Value::Mapping(entries.finish()));
        }
        loop {
            self.skip_whitespace();
            let key_start = self.pos;
            let key = match self.peek() {
                Some('"') => self.string()?,
                Some('}') => return Err(trailing_comma(self.text, key_start)),
                _ => {
                    return Err(self
                        .unexpected("where an object key should be")
                        .with_help("object keys are strings in double quotes"))
                }
            };
            let key_span = Span::new(key_start, self.pos);
            self.skip_whitespace();
            self.expect(':', "after the object key")?;
            let value = self.value(depth)?;
            entries.insert(
                self.text,
                Entry {
                    key,
                    key_span,
                    value,
                },
            )?;
            self.skip_whitespace();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {
                    self.pos += 1;
                    return Ok(Value::Mapping(entries.finish()));
                }
                _ => {
                    return Err(self.unexpected("in an object").with_help(
                        "object members are separated by `,` and the object ends with `}`",
                    ))
                }
            }
        }
    }

    fn sequence(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(SyntaxError::too_deep(self.here()));
        }
        self.pos += 1; // `[`
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(']') {
            self.pos += 1;
            return Ok(Value::Sequence(items));
        }
        loop {
            self.skip_whitespace();
            if self.peek() == Some(']') {
                return Err(trailing_comma(self.text, self.pos));
            }
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(']') => {
                    self.pos += 1;
                    return Ok(Value::Sequence(items));
                }
                _ => {
                    return Err(self
                        .unexpected("in a list")
                        .with_help("list items are separated by `,` and the list ends with `]`"))
                }
            }
        }
    }

    /// A string at the cursor (which is on its opening quote).
    fn string(&mut self) -> Result<String, SyntaxError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(
                    SyntaxError::new("unterminated string", Span::new(open, self.pos))
                        .with_help("add the closing `\"`"),
                );
            };
            match c {
                '"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                '\\' => out.push(self.escape()?),
                c if u32::from(c) < 0x20 => {
                    let message = if c == '\n' {
                        "line break inside a string"
                    } else {
                        "control character inside a string"
                    };
                    return Err(SyntaxError::new(message, self.here()).with_help(
                        "the string may be missing its closing `\"`; \
                         otherwise write the character as an escape such as `\\n`",
                    ));
                }
                c => {
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    /// An escape sequence at the cursor (which is on its backslash).
    fn escape(&mut self) -> Result<char, SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        let Some(c) = self.peek() else {
            return Err(SyntaxError::new(
                "unterminated string",
                Span::new(start, self.pos),
            ));
        };
        self.pos += c.len_utf8();
        let simple = match c {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => return self.unicode_escape(start),
            _ => {
                return Err(SyntaxError::new(
                    format!("invalid escape `\\{c}`"),
                    Span::new(start, self.pos),
                )
                .with_help(r#"JSON knows \" \\ \/ \b \f \n \r \t and \uXXXX"#))
            }
        };
        Ok(simple)
    }

    /// The rest of `\uXXXX`, joining a surrogate pair into one character.
    fn unicode_escape(&mut self, start: usize) -> Result<char, SyntaxError> {
        let first = self.hex4(start)?;
        let code = if (0xD800..0xDC00).contains(&first) {
            let pair_start = self.pos;
            if self
                .text
                .get(self.pos..)
                .is_some_and(|rest| rest.starts_with("\\u"))
            {
                self.pos += 2;
                let second = self.hex4(pair_start)?;
                if !(0xDC00..0xE000).contains(&second) {
                    return Err(lone_surrogate(start, self.pos));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            } else {
                return Err(lone_surrogate(start, self.pos));
            }
        } else {
            first
        };
        char::from_u32(code).ok_or_else(|| lone_surrogate(start, self.pos))
    }

    fn hex4(&mut self, escape_start: usize) -> Result<u32, SyntaxError> {
        let digits = self.text.get(self.pos..self.pos + 4).unwrap_or("");
        match parse_integer_digits(digits, 16, false).and_then(|v| u32::try_from(v).ok()) {
            Some(value) if digits.len() == 4 => {
                self.pos += 4;
                Ok(value)
            }
            _ => Err(SyntaxError::new(
                "`\\u` must be followed by four hex digits",
                Span::new(escape_start, self.pos),
            )),
        }
    }

    fn number(&mut self) -> Result<Value, SyntaxError> {
        let start = self.pos;
        let negative = self.peek() == Some('-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            Some('0') => {
                self.pos += 1;
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return Err(SyntaxError::new(
                        "numbers cannot have leading zeros",
                        Span::new(start, self.pos + 1),
                    ));
                }
            }
            Some('1'..='9') => self.skip_digits(),
            _ => return Err(self.unexpected("in a number")),
        }
        let int_end = self.pos;
        let mut fractional = false;
        if self.peek() == Some('.') {
            fractional = true;
            self.pos += 1;
            self.require_digits()?;
        }
        if let Some('e' | 'E') = self.peek() {
            fractional = true;
            self.pos += 1;
            if let Some('+' | '-') = self.peek() {
                self.pos += 1;
            }
            self.require_digits()?;
        }
        let literal = self.text.get(start..self.pos).unwrap_or("");
        if fractional {
            // The grammar above is a subset of what `f64::from_str` accepts.
            literal
                .parse()
                .map(Value::Float)
                .map_err(|_| SyntaxError::new("invalid number", Span::new(start, self.pos)))
        } else {
            let digits = self.text.get(int_start..int_end).unwrap_or("");
            parse_integer_digits(digits, 10, negative)
                .map(Value::Integer)
                .ok_or_else(|| SyntaxError::new("invalid number", Span::new(start, self.pos)))
        }
    }

    fn skip_digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    fn require_digits(&mut self) -> Result<(), SyntaxError> {
        if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return Err(self.unexpected("in a number; expected a digit"));
        }
        self.skip_digits();
        Ok(())
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, SyntaxError> {
        if self
            .text
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(word))
        {
            self.pos += word.len();
            Ok(value)
        } else {
            let end = self
                .text
                .get(self.pos..)
                .and_then(|rest| rest.find(|c: char| !c.is_alphanumeric()))
                .map_or(self.text.len(), |n| self.pos + n);
            let found = self.text.get(self.pos..end).unwrap_or("");
            Err(SyntaxError::new(
                format!("unexpected `{found}` where a value should be"),
                Span::new(self.pos, end),
            )
            .with_help(format!(
                "did you mean `{word}`, or a string in double quotes?"
            )))
        }
    }
}

/// `[1, 2,]` or `{"a": 1,}`: point at the comma, which is the mistake.
fn trailing_comma(text: &str, closing: usize) -> SyntaxError {
    let comma = text
        .get(..closing)
        .and_then(|before| before.rfind(','))
        .unwrap_or(closing);
    SyntaxError::new("trailing comma", Span::new(comma, comma + 1))
        .with_help("JSON allows no comma after the last item; remove it")
}

fn lone_surrogate(start: usize, end: usize) -> SyntaxError {
    SyntaxError::new(
        "`\\u` escape is not a valid character (unpaired surrogate)",
        Span::new(start, end),
    )
}

fn show_char(c: char) -> String {
    if c.is_control() {
        format!("character {:?}", c)
    } else {
        format!("`{c}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_at(text: &str) -> (String, &str) {
        let error = parse(text).expect_err("should not parse");
        (error.message, &text[error.span.start..error.span.end])
    }

    #[test]
    fn parses_values_with_spans() {
        let text = r#" {"a": [1, -2.5e1, "x\u00e9\ud83d\ude00", true, null], "é": {}} "#;
        let root = parse(text).unwrap();
        assert_eq!(&text[root.span.start..root.span.end], text.trim());
        let Value::Mapping(entries) = &root.value else {
            panic!("not a mapping")
        };
        assert_eq!(entries[0].key, "a");
        assert_eq!(
            &text[entries[0].key_span.start..entries[0].key_span.end],
            r#""a""#
        );
        let Value::Sequence(items) = &entries[0].value.value else {
            panic!("not a list")
        };
        assert_eq!(items[0].value, Value::Integer(1));
        assert_eq!(items[1].value, Value::Float(-25.0));
        assert_eq!(items[2].value, Value::String("xé😀".to_string()));
        assert_eq!(
            &text[items[2].span.start..items[2].span.end],
            r#""x\u00e9\ud83d\ude00""#
        );
        assert_eq!(items[3].value, Value::Bool(true));
        assert_eq!(items[4].value, Value::Null);
        assert_eq!(entries[1].key, "é");
        assert_eq!(
            &text[entries[1].value.span.start..entries[1].value.span.end],
            "{}"
        );
    }

    #[test]
    fn syntax_errors_point_at_the_mistake() {
        assert_eq!(
            error_at(r#"{"a": 1 "b": 2}"#),
            ("unexpected `\"` in an object".into(), "\"")
        );
        assert_eq!(
            error_at(r#"{"a": [1, 2,]}"#),
            ("trailing comma".into(), ",")
        );
        assert_eq!(error_at(r#"{"a": 1,}"#), ("trailing comma".into(), ","));
        assert_eq!(error_at(r#"{"a": tru}"#).1, "tru");
        assert_eq!(error_at(r#"{"a": 'x'}"#).1, "'");
        assert_eq!(error_at(r#"{"a": "\q"}"#).1, r"\q");
        assert_eq!(error_at(r#"{"a": 01}"#).1, "01");
        assert_eq!(error_at(r#"{"a": 1.}"#).1, "}");
        assert_eq!(error_at(r#"{"a": "\ud800"}"#).1, r"\ud800");
        assert_eq!(error_at(r#"{"a": "é"}{}"#).1, "{");
        assert_eq!(error_at("{\"a\": \"x\ny\"}").1, "\n");
        assert_eq!(
            error_at(r#"{"a": "x"#),
            ("unterminated string".into(), "\"x")
        );
        assert_eq!(error_at(r#"{"a" 1}"#).1, "1");
        assert_eq!(
            error_at(r#"{"a": 1, "a": 2}"#),
            ("duplicate key `a`".into(), "\"a\"")
        );
        assert_eq!(
            error_at(""),
            ("unexpected end of input; expected a value".into(), "")
        );
    }

    #[test]
    fn nesting_is_limited() {
        let deep = "[".repeat(100_000);
        assert!(parse(&deep).unwrap_err().message.contains("nesting"));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(parse(&too_deep).is_err());
    }
}
