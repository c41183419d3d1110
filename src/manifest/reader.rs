//! Reading typed values out of a span tree, Go `encoding/json` style (field
//! names match case-insensitively), collecting every problem instead of
//! stopping at the first.

use std::collections::HashSet;

use super::error::{closest, ManifestError, ManifestWarning, SourceFile};
use super::tree::{Entry, Node, Span, Value};
use crate::model::Labels;

/// The fields one v1beta1 object (or part of one) may have.
pub(crate) struct Shape {
    /// How messages name it: "a container", "a Pod's `desiredState`".
    pub what: &'static str,
    /// Fields kctl reads.
    pub fields: &'static [&'static str],
    /// v1beta1 fields kctl accepts and does not act on.
    pub ignored: &'static [&'static str],
}

/// Diagnostics of a whole run, over every file.
#[derive(Default)]
pub(crate) struct Report {
    pub errors: Vec<ManifestError>,
    pub warnings: Vec<ManifestWarning>,
    ignored: Vec<String>,
    first_ignored: Option<(SourceFile, Span)>,
}

impl Report {
    /// The one warning naming every ignored field seen in the run, pointing
    /// at the first of them.
    pub fn ignored_fields_warning(&self) -> Option<ManifestWarning> {
        let (file, span) = self.first_ignored.as_ref()?;
        let names: Vec<String> = self
            .ignored
            .iter()
            .map(|name| format!("`{name}`"))
            .collect();
        let noun = if names.len() == 1 { "field" } else { "fields" };
        Some(
            ManifestWarning::at(
                file,
                *span,
                format!("kctl ignores the v1beta1 {noun} {}", names.join(", ")),
                "first ignored field",
            )
            .with_help("accepted so that v0.5 manifests load as they are, with no effect on what kctl runs"),
        )
    }
}

/// Decoding state for one file.
pub(crate) struct FileContext<'r> {
    pub file: SourceFile,
    report: &'r mut Report,
    /// Every shape, to tell where a misplaced field belongs.
    all_shapes: &'static [&'static Shape],
    warned_spellings: HashSet<String>,
    pub warned_missing_api_version: bool,
    /// How the command reads manifests: `--kind`, what the cluster allows.
    pub options: super::LoadOptions,
    /// Unknown fields, by the span of their key: warnings (v0.5 ignored
    /// such fields) unless a required field turns out to be missing and
    /// the key was its misspelling, which makes it an error.
    unknown: Vec<(Span, ManifestWarning)>,
}

/// The fields found in one mapping, by their canonical name.
pub(crate) struct Fields<'n> {
    shape: &'static Shape,
    /// Where "missing field" errors point: the mapping's `{` or first key.
    pub anchor: Span,
    found: Vec<Option<&'n Entry>>,
    /// Fields an unknown key was taken to be a typo of, with that key: a
    /// "missing" error for one points at the typo.
    suggested: Vec<(&'static str, &'n Entry)>,
}

impl<'n> Fields<'n> {
    /// The entry for a field, unless it is absent or `null` (which Go read
    /// as absent).
    pub fn entry(&self, name: &str) -> Option<&'n Entry> {
        let index = self.shape.fields.iter().position(|field| *field == name);
        debug_assert!(
            index.is_some(),
            "`{name}` is not a field of {}",
            self.shape.what
        );
        index
            .and_then(|i| self.found.get(i).copied().flatten())
            .filter(|entry| entry.value.value != Value::Null)
    }

    pub fn get(&self, name: &str) -> Option<&'n Node> {
        self.entry(name).map(|entry| &entry.value)
    }

    /// Whether an unknown key here looks like a misspelling of `name`.
    pub fn has_typo_of(&self, name: &str) -> bool {
        self.suggested
            .iter()
            .any(|(suggestion, _)| *suggestion == name)
    }
}

impl<'r> FileContext<'r> {
    pub fn new(
        file: SourceFile,
        report: &'r mut Report,
        all_shapes: &'static [&'static Shape],
    ) -> Self {
        FileContext {
            file,
            report,
            all_shapes,
            warned_spellings: HashSet::new(),
            warned_missing_api_version: false,
            options: super::LoadOptions::default(),
            unknown: Vec::new(),
        }
    }

    /// Ends the file: the unknown fields not made errors are warnings.
    pub fn finish(self) {
        let FileContext {
            report, unknown, ..
        } = self;
        report
            .warnings
            .extend(unknown.into_iter().map(|(_, warning)| warning));
    }

    pub fn error(&self, span: Span, message: String, label: &str) -> ManifestError {
        ManifestError::at(&self.file, span, message, label)
    }

    pub fn warning(&self, span: Span, message: String, label: &str) -> ManifestWarning {
        ManifestWarning::at(&self.file, span, message, label)
    }

    pub fn push(&mut self, error: ManifestError) {
        self.report.errors.push(error);
    }

    pub fn warn(&mut self, warning: ManifestWarning) {
        self.report.warnings.push(warning);
    }

    /// Reads a mapping's entries against `shape`: misspelt case is a
    /// warning, ignored fields are noted for the run's warning, and an
    /// unknown field is a warning, as v0.5 ignored it (`--strict` makes
    /// every warning an error). Returns `None` only when `node` is no
    /// mapping.
    pub fn fields<'n>(&mut self, node: &'n Node, shape: &'static Shape) -> Option<Fields<'n>> {
        let Value::Mapping(entries) = &node.value else {
            self.type_error(node, shape.what, "an object");
            return None;
        };
        let mut fields = Fields {
            shape,
            anchor: self.anchor(node, entries),
            found: vec![None; shape.fields.len()],
            suggested: Vec::new(),
        };
        let mut found_ignored: Vec<Option<&Entry>> = vec![None; shape.ignored.len()];
        for entry in entries {
            let (canonical, slot) = if let Some(index) = find_field(shape.fields, &entry.key) {
                (shape.fields[index], &mut fields.found[index])
            } else if let Some(index) = find_field(shape.ignored, &entry.key) {
                self.note_ignored(shape.ignored[index], entry.key_span);
                (shape.ignored[index], &mut found_ignored[index])
            } else {
                if let Some(suggestion) = self.unknown_field(entry, shape) {
                    fields.suggested.push((suggestion, entry));
                }
                continue;
            };
            self.check_spelling(entry, canonical);
            match *slot {
                Some(first) => self.duplicate_field(entry, first, canonical),
                None => *slot = Some(entry),
            }
        }
        Some(fields)
    }

    /// A required field: its node, or an error at the mapping (at the
    /// misspelt key, when one was taken for it).
    pub fn require<'n>(&mut self, fields: &Fields<'n>, name: &str) -> Option<&'n Node> {
        let node = fields.get(name);
        if node.is_some() {
            return node;
        }
        let typo = fields
            .suggested
            .iter()
            .find(|(suggestion, _)| *suggestion == name)
            .map(|(_, entry)| *entry);
        let error = match typo {
            Some(entry) => {
                // The typo's warning would only repeat this error.
                self.unknown.retain(|(span, _)| *span != entry.key_span);
                self.error(
                    entry.key_span,
                    format!(
                        "{} is missing `{name}`; `{}` is no field of it",
                        fields.shape.what, entry.key
                    ),
                    "unknown field",
                )
                .with_help(format!("did you mean `{name}`?"))
            }
            None => self.error(
                fields.anchor,
                format!("{} is missing `{name}`", fields.shape.what),
                &format!("`{name}` is required here"),
            ),
        };
        self.push(error);
        node
    }

    /// Where to point for something missing from a mapping: its `{`, or
    /// its first key in block style.
    pub fn anchor(&self, node: &Node, entries: &[Entry]) -> Span {
        let opens_with_brace = self
            .file
            .text
            .get(node.span.start..)
            .is_some_and(|rest| rest.starts_with('{'));
        match entries.first() {
            Some(first) if !opens_with_brace => first.key_span,
            _ => Span::new(
                node.span.start,
                node.span.start + usize::from(opens_with_brace),
            ),
        }
    }

    fn check_spelling(&mut self, entry: &Entry, canonical: &str) {
        if entry.key == canonical || !self.warned_spellings.insert(entry.key.clone()) {
            return;
        }
        let warning = ManifestWarning::at(
            &self.file,
            entry.key_span,
            format!("field `{}` should be spelled `{canonical}`", entry.key),
            &format!("read as `{canonical}`"),
        )
        .with_help(format!(
            "v1beta1 matched field names without regard to case; write `{canonical}` \
             (this is the only warning for `{}` in this file)",
            entry.key
        ));
        self.warn(warning);
    }

    fn duplicate_field(&mut self, entry: &Entry, first: &Entry, canonical: &str) {
        let (line, column) = self.file.line_col(first.key_span.start);
        let error = self
            .error(
                entry.key_span,
                format!("field `{canonical}` is given twice"),
                "second time",
            )
            .with_help(format!(
                "it is already set at line {line}, column {column} (names match regardless of case); keep one"
            ));
        self.push(error);
    }

    fn note_ignored(&mut self, name: &str, span: Span) {
        if !self.report.ignored.iter().any(|seen| seen == name) {
            self.report.ignored.push(name.to_string());
        }
        if self.report.first_ignored.is_none() {
            self.report.first_ignored = Some((self.file.clone(), span));
        }
    }

    /// Warns of an unknown key; returns the field it is probably a typo of.
    fn unknown_field(&mut self, entry: &Entry, shape: &'static Shape) -> Option<&'static str> {
        let candidates: Vec<&'static str> =
            shape.fields.iter().chain(shape.ignored).copied().collect();
        let suggestion = closest(&entry.key, &candidates);
        let elsewhere = self
            .all_shapes
            .iter()
            .find(|other| find_field(other.fields, &entry.key).is_some());
        let help = match (suggestion, elsewhere) {
            (Some(suggestion), _) => format!("did you mean `{suggestion}`?"),
            (None, Some(other)) => format!(
                "`{}` belongs in {}, not in {}",
                entry.key, other.what, shape.what
            ),
            (None, None) if shape.fields.is_empty() => {
                format!("{} has no fields; write `{{}}`", shape.what)
            }
            (None, None) => format!(
                "the fields of {} are: {}",
                shape.what,
                shape.fields.join(", ")
            ),
        };
        let warning = self
            .warning(
                entry.key_span,
                format!(
                    "unknown field `{}` in {}; it is ignored",
                    entry.key, shape.what
                ),
                "not a field kctl knows here",
            )
            .with_help(help);
        self.unknown.push((entry.key_span, warning));
        suggestion
    }

    /// "`what` must be <expected>, found <actual>" at `node`.
    pub fn type_error(&mut self, node: &Node, what: &str, expected: &str) {
        let found = node.value.describe();
        let mut error = self.error(
            node.span,
            format!("{what} must be {expected}, found {found}"),
            found,
        );
        if expected == "a string"
            && matches!(
                node.value,
                Value::Integer(_) | Value::Float(_) | Value::Bool(_)
            )
        {
            error = error.with_help("put the value in quotes to make it a string");
        } else if expected.contains("number") {
            if let Value::String(text) = &node.value {
                if text.trim().parse::<f64>().is_ok() {
                    error = error.with_help("write the number without quotes");
                }
            }
        }
        self.push(error);
    }

    pub fn string<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        match &node.value {
            Value::String(text) => Some(text),
            _ => {
                self.type_error(node, what, "a string");
                None
            }
        }
    }

    /// A whole number within `min..=max`.
    pub fn integer(&mut self, node: &Node, what: &str, min: i128, max: i128) -> Option<i128> {
        let value = match node.value {
            Value::Integer(value) => value,
            Value::Float(value) => {
                let error = self
                    .error(
                        node.span,
                        format!("{what} must be a whole number, found {value}"),
                        "not a whole number",
                    )
                    .with_help(format!("use a whole number between {min} and {max}"));
                self.push(error);
                return None;
            }
            _ => {
                self.type_error(node, what, "a number");
                return None;
            }
        };
        if (min..=max).contains(&value) {
            Some(value)
        } else {
            let error = self
                .error(
                    node.span,
                    format!("{what} is out of range"),
                    &format!("{value} is out of range"),
                )
                .with_help(format!("use a whole number between {min} and {max}"));
            self.push(error);
            None
        }
    }

    pub fn sequence<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Sequence(items) => Some(items),
            _ => {
                self.type_error(node, what, "a list");
                None
            }
        }
    }

    pub fn strings(&mut self, node: &Node, what: &str) -> Option<Vec<String>> {
        if let Value::String(text) = &node.value {
            let words: Vec<String> = text.split_whitespace().map(|w| format!("{w:?}")).collect();
            let error = self
                .error(
                    node.span,
                    format!("{what} must be a list of strings, found a string"),
                    "a string",
                )
                .with_help(format!(
                    "write it as a list, one argument each: [{}]",
                    words.join(", ")
                ));
            self.push(error);
            return None;
        }
        let items = self.sequence(node, what)?;
        let mut strings = Some(Vec::with_capacity(items.len()));
        for item in items {
            let text = self.string(item, &format!("each item of {what}"));
            match (&mut strings, text) {
                (Some(strings), Some(text)) => strings.push(text.to_string()),
                _ => strings = None,
            }
        }
        strings
    }

    pub fn labels(&mut self, node: &Node, what: &str) -> Option<Labels> {
        let Value::Mapping(entries) = &node.value else {
            self.type_error(node, what, "an object of string values");
            return None;
        };
        let mut labels = Some(Labels::new());
        for entry in entries {
            let value = self.string(&entry.value, &format!("label `{}`", entry.key));
            match (&mut labels, value) {
                (Some(labels), Some(value)) => {
                    labels.insert(entry.key.clone(), value.to_string());
                }
                _ => labels = None,
            }
        }
        labels
    }
}

/// The index of `key` among `names`: an exact match first, then one that
/// differs only in ASCII case, as Go's `encoding/json` did.
fn find_field(names: &[&str], key: &str) -> Option<usize> {
    names
        .iter()
        .position(|name| *name == key)
        .or_else(|| names.iter().position(|name| name.eq_ignore_ascii_case(key)))
}
