//! The README's promises are tied to tests: every row of "What kctl
//! survives" names at least one test, and every test it names exists.
//! No cluster needed.

use std::path::Path;

/// The rows of the table under `heading` (its header and rule left out).
fn table_rows(readme: &str, heading: &str) -> Vec<String> {
    let at = readme
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in the README"));
    readme[at..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(str::to_string)
        .collect()
}

/// The (`file.rs`, `test_name`) pairs a cell names: a file in backticks,
/// then the test names in backticks that follow it.
fn named_tests(cell: &str) -> Vec<(String, String)> {
    let quoted: Vec<&str> = cell.split('`').skip(1).step_by(2).collect();
    let mut file = None;
    let mut named = vec![];
    for q in quoted {
        if q.ends_with(".rs") {
            file = Some(q.to_string());
        } else if let Some(file) = &file {
            if q.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                named.push((file.clone(), q.to_string()));
            }
        }
    }
    named
}

#[test]
fn every_survival_guarantee_names_a_test_that_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let rows = table_rows(&readme, "## What kctl survives");
    assert!(rows.len() >= 10, "{rows:?}");
    for row in rows {
        let cells: Vec<&str> = row.split(" | ").collect();
        let last = cells.last().unwrap();
        let named = named_tests(last);
        assert!(!named.is_empty(), "a guarantee with no test: {row}");
        for (file, test) in named {
            let source = std::fs::read_to_string(root.join("tests").join(&file))
                .unwrap_or_else(|e| panic!("{file}, named in the README: {e}"));
            assert!(
                source.contains(&format!("fn {test}(")),
                "the README names {file} {test}, which is not there"
            );
        }
    }
}
