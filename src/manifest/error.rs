//! Diagnostics for manifests: every problem points at the file as the user
//! named it and, where there is one, at the offending key or value.

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};
use std::sync::Arc;
use thiserror::Error;

use super::tree::Span;

/// One input file, shared by every diagnostic that points into it.
#[derive(Debug, Clone)]
pub(crate) struct SourceFile {
    pub name: String,
    pub text: Arc<str>,
}

impl SourceFile {
    pub fn new(name: &str, text: &str) -> Self {
        SourceFile {
            name: name.to_string(),
            text: Arc::from(text),
        }
    }

    fn named_source(&self) -> NamedSource<Arc<str>> {
        NamedSource::new(&self.name, Arc::clone(&self.text))
    }

    /// 1-based line and column (in characters) of a byte offset, for help
    /// texts that refer to another place in the same file.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = self.text.get(..offset).unwrap_or(&self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        (line, column)
    }
}

/// A problem that keeps the manifests from being applied.
#[derive(Debug, Error, Diagnostic)]
#[error("{message}")]
pub struct ManifestError {
    message: String,
    #[source_code]
    src: Option<NamedSource<Arc<str>>>,
    #[label(collection)]
    labels: Vec<LabeledSpan>,
    #[help]
    help: Option<String>,
}

impl ManifestError {
    /// An error about a place in a file.
    pub(crate) fn at(file: &SourceFile, span: Span, message: String, label: &str) -> Self {
        ManifestError {
            message,
            src: Some(file.named_source()),
            labels: vec![primary_label(span, label)],
            help: None,
        }
    }

    /// An error about a file as a whole (it cannot be read, holds nothing).
    pub(crate) fn without_span(message: String) -> Self {
        ManifestError {
            message,
            src: None,
            labels: Vec::new(),
            help: None,
        }
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The file the error points into, if it points into one.
    pub fn file(&self) -> Option<&str> {
        self.src.as_ref().map(|s| s.name())
    }

    /// Where in that file, as byte offsets.
    pub fn span(&self) -> Option<SourceSpan> {
        self.labels.first().map(|l| *l.inner())
    }
}

/// Everything wrong with one set of manifests.
#[derive(Debug, Error, Diagnostic)]
#[error("{} in manifests; nothing was applied", count_errors(.errors.len()))]
pub struct ManifestErrors {
    #[related]
    pub errors: Vec<ManifestError>,
    /// Warnings found on the way, so that they can still be shown.
    pub warnings: Vec<ManifestWarning>,
}

fn count_errors(n: usize) -> String {
    if n == 1 {
        "1 error".to_string()
    } else {
        format!("{n} errors")
    }
}

/// Something accepted that the user probably wants to know about.
#[derive(Debug, Error, Diagnostic)]
#[error("{message}")]
#[diagnostic(severity(Warning))]
pub struct ManifestWarning {
    message: String,
    #[source_code]
    src: NamedSource<Arc<str>>,
    #[label(collection)]
    labels: Vec<LabeledSpan>,
    #[help]
    help: Option<String>,
}

impl ManifestWarning {
    pub(crate) fn at(file: &SourceFile, span: Span, message: String, label: &str) -> Self {
        ManifestWarning {
            message,
            src: file.named_source(),
            labels: vec![primary_label(span, label)],
            help: None,
        }
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn file(&self) -> &str {
        self.src.name()
    }

    pub fn span(&self) -> SourceSpan {
        self.labels
            .first()
            .map_or_else(|| SourceSpan::from(0..0), |l| *l.inner())
    }
}

impl From<ManifestWarning> for ManifestError {
    /// A warning made an error by `--strict`.
    fn from(warning: ManifestWarning) -> Self {
        let help = match &warning.help {
            Some(help) => format!("{help} (an error under --strict)"),
            None => "an error under --strict".to_string(),
        };
        ManifestError {
            message: warning.message,
            src: Some(warning.src),
            labels: warning.labels,
            help: Some(help),
        }
    }
}

fn primary_label(span: Span, label: &str) -> LabeledSpan {
    let text = (!label.is_empty()).then(|| label.to_string());
    LabeledSpan::new_primary_with_span(text, span)
}

/// The candidate closest to `word` by edit distance, when it is close enough
/// to be a plausible typo.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            let deletion = previous[j + 1] + 1;
            let insertion = current[j] + 1;
            current.push(substitution.min(deletion).min(insertion));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("containerport", "containerport"), 0);
        assert_eq!(edit_distance("contianerport", "containerport"), 2);
        assert_eq!(edit_distance("imge", "image"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn closest_ignores_far_candidates() {
        let fields = ["containerPort", "hostPort", "name", "protocol"];
        assert_eq!(closest("contianerPort", &fields), Some("containerPort"));
        assert_eq!(closest("hostport", &fields), Some("hostPort"));
        assert_eq!(closest("volumes", &fields), None);
    }

    #[test]
    fn line_col_counts_characters() {
        let file = SourceFile::new("f", "ab\nçé x");
        assert_eq!(file.line_col(0), (1, 1));
        assert_eq!(file.line_col(3), (2, 1));
        // "çé " is 5 bytes but 3 characters.
        assert_eq!(file.line_col(8), (2, 4));
    }
}
