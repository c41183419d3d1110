//! Which fields of an object change, for the `~` lines of a plan and for
//! `kctl diff`: both versions flattened to `path: value` leaves and
//! compared. Pure.

use serde::Serialize;
use serde_json::Value;
use std::fmt;

/// One field that differs. `old` None: added; `new` None: removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// e.g. `template.spec.containers[0].image`.
    pub path: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.old, &self.new) {
            (Some(old), Some(new)) => write!(f, "~ {}: {old} → {new}", self.path),
            (None, Some(new)) => write!(f, "+ {}: {new}", self.path),
            (Some(old), None) => write!(f, "- {}: {old}", self.path),
            (None, None) => write!(f, "  {}", self.path),
        }
    }
}

/// The fields that differ between `old` and `new`, in `new`'s order,
/// then those only `old` has.
pub fn changes<T: Serialize>(old: &T, new: &T) -> Vec<FieldChange> {
    let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return vec![];
    };
    let old_leaves = leaves(&old);
    let new_leaves = leaves(&new);
    let find = |list: &[(String, String)], path: &str| {
        list.iter().find(|(p, _)| p == path).map(|(_, v)| v.clone())
    };
    let mut out: Vec<FieldChange> = new_leaves
        .iter()
        .filter_map(|(path, value)| {
            let before = find(&old_leaves, path);
            (before.as_ref() != Some(value)).then(|| FieldChange {
                path: path.clone(),
                old: before,
                new: Some(value.clone()),
            })
        })
        .collect();
    out.extend(
        old_leaves
            .iter()
            .filter(|(path, _)| find(&new_leaves, path).is_none())
            .map(|(path, value)| FieldChange {
                path: path.clone(),
                old: Some(value.clone()),
                new: None,
            }),
    );
    out
}

/// Every scalar of a JSON value with its path, in document order. An
/// empty object or array is a leaf of its own (`{}`, `[]`), so that
/// emptying a list shows.
fn leaves(value: &Value) -> Vec<(String, String)> {
    fn walk(value: &Value, path: String, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, v) in map {
                    let next = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(v, next, out);
                }
            }
            Value::Array(items) if !items.is_empty() => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, format!("{path}[{i}]"), out);
                }
            }
            Value::Null => {}
            scalar => out.push((path, scalar.to_string())),
        }
    }
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(old: Value, new: Value) -> Vec<String> {
        changes(&old, &new).iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn changed_added_and_removed_fields_by_path() {
        let old = json!({"replicas": 2, "template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]}]}}});
        let new = json!({"replicas": 3, "template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:2", "command": ["serve"]}]}}});
        assert_eq!(
            lines(old, new),
            [
                "~ replicas: 2 → 3",
                "~ template.spec.containers[0].image: \"nginx:1\" → \"nginx:2\"",
                "+ template.spec.containers[0].command[0]: \"serve\"",
                "- template.spec.containers[0].env[0].name: \"A\"",
                "- template.spec.containers[0].env[0].value: \"1\"",
            ]
        );
    }

    #[test]
    fn equal_values_have_no_changes_and_emptied_lists_show() {
        let v = json!({"a": [1, 2], "b": {"c": "d"}});
        assert!(changes(&v, &v).is_empty());
        assert_eq!(
            lines(json!({"labels": {"x": "1"}}), json!({"labels": {}})),
            ["+ labels: {}", "- labels.x: \"1\""]
        );
    }
}
