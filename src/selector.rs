//! Label selectors as `kctl get -l` and `kctl delete -l` take them, in the
//! syntax Kubernetes has used since v0.5 and kubectl still does:
//!
//! ```text
//! name=web            name==web        the label has this value
//! tier!=front                          absent, or another value
//! env in (prod, qa)   env notin (dev)  one of / none of a set
//! canary              !canary          the label is there / is not
//! ```
//!
//! Requirements are separated by commas (outside parentheses) and must all
//! hold. Parsing is pure; a bad selector says where it went wrong.

use crate::model::Labels;
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
            Requirement::NotIn(k, set) => labels.get(k).is_none_or(|v| !set.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        }
    }
}

/// All of its requirements; none matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

impl Selector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }
}

/// What is wrong with a selector, and at which character (0-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad label selector {text:?} at column {}: {message}", .at + 1)]
pub struct SelectorError {
    pub text: String,
    pub at: usize,
    pub message: String,
}

/// A label key or value: letters, digits, '-', '_', '.', and '/' (a key's
/// prefix), as Kubernetes allows.
fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

pub fn parse(text: &str) -> Result<Selector, SelectorError> {
    let fail = |at: usize, message: &str| SelectorError {
        text: text.to_string(),
        at,
        message: message.to_string(),
    };
    // Split at commas outside parentheses, keeping each part's offset.
    let mut parts = vec![];
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(fail(i, "')' without '('"));
                }
            }
            ',' if depth == 0 => {
                parts.push((start, &text[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(fail(text.len(), "'(' without ')'"));
    }
    parts.push((start, &text[start..]));
    let mut requirements = vec![];
    for (offset, part) in parts {
        let lead = part.len() - part.trim_start().len();
        let at = offset + lead;
        let part = part.trim();
        if part.is_empty() {
            if text.trim().is_empty() {
                continue;
            }
            return Err(fail(at, "an empty requirement"));
        }
        requirements.push(requirement(part).map_err(|(i, m)| fail(at + i, &m))?);
    }
    Ok(Selector(requirements))
}

/// One requirement; errors carry an offset into `part`.
fn requirement(part: &str) -> Result<Requirement, (usize, String)> {
    let word = |s: &str, at: usize, what: &str| -> Result<String, (usize, String)> {
        let lead = s.len() - s.trim_start().len();
        let w = s.trim();
        if w.is_empty() {
            return Err((at + lead, format!("a {what} is missing")));
        }
        match w.char_indices().find(|(_, c)| !is_label_char(*c)) {
            Some((i, c)) => Err((at + lead + i, format!("{c:?} cannot be in a {what}"))),
            None => Ok(w.to_string()),
        }
    };
    if let Some(rest) = part.strip_prefix('!') {
        if !rest.contains('=') {
            return Ok(Requirement::NotExists(word(rest, 1, "key")?));
        }
    }
    if let Some(i) = part.find("!=") {
        return Ok(Requirement::NotEquals(
            word(&part[..i], 0, "key")?,
            word(&part[i + 2..], i + 2, "value")?,
        ));
    }
    if let Some(i) = part.find("==") {
        return Ok(Requirement::Equals(
            word(&part[..i], 0, "key")?,
            word(&part[i + 2..], i + 2, "value")?,
        ));
    }
    if let Some(i) = part.find('=') {
        return Ok(Requirement::Equals(
            word(&part[..i], 0, "key")?,
            word(&part[i + 1..], i + 1, "value")?,
        ));
    }
    if let Some(open) = part.find('(') {
        // key in (a, b) / key notin (a, b)
        let head = &part[..open];
        let mut words = head.split_whitespace();
        let (Some(key), Some(op), None) = (words.next(), words.next(), words.next()) else {
            return Err((0, "write KEY in (A, B) or KEY notin (A, B)".into()));
        };
        let key = word(key, 0, "key")?;
        let close = part.rfind(')').unwrap_or(part.len());
        if !part[close + 1..].trim().is_empty() {
            return Err((close + 1, "nothing may follow ')'".into()));
        }
        let mut set = BTreeSet::new();
        let mut at = open + 1;
        for value in part[open + 1..close].split(',') {
            set.insert(word(value, at, "value")?);
            at += value.len() + 1;
        }
        return match op {
            "in" => Ok(Requirement::In(key, set)),
            "notin" => Ok(Requirement::NotIn(key, set)),
            other => Err((
                head.find(other).unwrap_or(0),
                format!("{other:?} is not an operator (in, notin)"),
            )),
        };
    }
    Ok(Requirement::Exists(word(part, 0, "key")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn every_form_of_v05_and_today() {
        let s = parse("name=web, tier==front,env!=dev,zone in (a, b),k notin (x),canary,!legacy")
            .unwrap();
        assert_eq!(
            s.0,
            [
                Requirement::Equals("name".into(), "web".into()),
                Requirement::Equals("tier".into(), "front".into()),
                Requirement::NotEquals("env".into(), "dev".into()),
                Requirement::In("zone".into(), set(&["a", "b"])),
                Requirement::NotIn("k".into(), set(&["x"])),
                Requirement::Exists("canary".into()),
                Requirement::NotExists("legacy".into()),
            ]
        );
    }

    #[test]
    fn matching_follows_kubernetes() {
        let pod = labels(&[("name", "web"), ("env", "prod"), ("canary", "yes")]);
        let yes = [
            "name=web",
            "name==web",
            "env!=dev",
            "tier!=front",
            "env in (prod,qa)",
            "tier notin (front)",
            "canary",
            "!legacy",
            "",
        ];
        for text in yes {
            assert!(parse(text).unwrap().matches(&pod), "{text}");
        }
        let no = [
            "name=db",
            "env!=prod",
            "env in (qa)",
            "env notin (prod)",
            "tier in (front)",
            "legacy",
            "!canary",
            "name=web,env=dev",
        ];
        for text in no {
            assert!(!parse(text).unwrap().matches(&pod), "{text}");
        }
    }

    #[test]
    fn bad_selectors_say_where() {
        for (text, at, what) in [
            ("name", 0, None),
            ("=x", 0, Some("a key is missing")),
            ("name=", 5, Some("a value is missing")),
            ("a=b,,c=d", 4, Some("an empty requirement")),
            ("env in (a,b", 11, Some("'(' without ')'")),
            ("env in a,b)", 10, Some("')' without '('")),
            ("env within (a)", 4, Some("\"within\" is not an operator")),
            ("na me=x", 2, Some("' ' cannot be in a key")),
            ("name=a;b", 6, Some("';' cannot be in a value")),
        ] {
            match (parse(text), what) {
                (Ok(_), None) => {}
                (Err(e), Some(what)) => {
                    assert_eq!(e.at, at, "{text}: {e}");
                    assert!(e.message.contains(what), "{text}: {e}");
                }
                (other, _) => panic!("{text}: {other:?}"),
            }
        }
    }
}
