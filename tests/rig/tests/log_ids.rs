//! Every record logged under the `pam_tessera` identifier (by the module, its
//! helper and the code the helper runs) carries a stable `id`, and
//! docs/pam.md's "Log records" table lists exactly the IDs the code uses:
//! admins filter and alert on them, tests wait for them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;

use tessera_testrig::source_tree::{crate_modules, without_unit_tests, workspace};

/// The roots of the crates whose records reach the log as `pam_tessera`.
const LOGGING_CRATES: &[&str] = &[
    "pam-module/src/lib.rs",
    "ipc/src/lib.rs",
    "auth-helper/src/main.rs",
    "core/src/lib.rs",
    "mappers/src/lib.rs",
];

const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// The argument list of the macro call whose `(` is at `open`: up to the
/// matching `)`, skipping string literals.
fn arguments(source: &str, open: usize) -> &str {
    let bytes = source.as_bytes();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut index = open;
    while index < bytes.len() {
        match (bytes[index], in_string) {
            (b'\\', true) => index += 1,
            (b'"', _) => in_string = !in_string,
            (b'(', false) => depth += 1,
            (b')', false) => {
                depth -= 1;
                if depth == 0 {
                    return &source[open + 1..index];
                }
            }
            _ => {}
        }
        index += 1;
    }
    panic!("unbalanced macro call at byte {open}");
}

/// The `id = "..."` of a record's arguments, if it has one.
fn record_id(arguments: &str) -> Option<String> {
    let start = arguments.find("id = \"")? + "id = \"".len();
    let length = arguments[start..].find('"')?;
    Some(arguments[start..start + length].to_owned())
}

/// Every ID of `source`, and the places of records without one.
fn scan(path: &Path, source: &str, ids: &mut BTreeSet<String>, missing: &mut Vec<String>) {
    // `logging::emergency("id", ...)` writes to syslog directly.
    let mut calls: Vec<(usize, bool)> = Vec::new();
    for level in LEVELS {
        let needle = format!("tracing::{level}!(");
        calls.extend(
            source
                .match_indices(&needle)
                .map(|(at, _)| (at + needle.len() - 1, false)),
        );
    }
    let needle = "logging::emergency(";
    calls.extend(
        source
            .match_indices(needle)
            .map(|(at, _)| (at + needle.len() - 1, true)),
    );
    for (open, emergency) in calls {
        let arguments = arguments(source, open);
        let id = if emergency {
            arguments
                .trim_start()
                .strip_prefix('"')
                .and_then(|rest| rest.split_once('"'))
                .map(|(id, _)| id.to_owned())
        } else {
            record_id(arguments)
        };
        match id {
            Some(id) => {
                ids.insert(id);
            }
            None => {
                let line = source[..open].lines().count();
                missing.push(format!("{}:{line}", path.display()));
            }
        }
    }
}

/// The IDs in docs/pam.md's "Log records" table (first column, in backticks).
fn documented_ids() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(workspace().join("docs/pam.md")).expect("docs/pam.md");
    let section = doc
        .split("\n## Log records\n")
        .nth(1)
        .expect("docs/pam.md has a \"Log records\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(id, _)| id.to_owned())
        .collect()
}

#[test]
fn every_record_has_a_documented_stable_id() {
    let files: Vec<_> = LOGGING_CRATES
        .iter()
        .flat_map(|root| crate_modules(&workspace().join(root)).into_values())
        .collect();
    assert!(files.len() > 50, "no sources found: {files:?}");
    let mut ids = BTreeSet::new();
    let mut missing = Vec::new();
    for path in &files {
        let source = std::fs::read_to_string(path).expect("source file");
        scan(path, without_unit_tests(&source), &mut ids, &mut missing);
    }
    assert!(missing.is_empty(), "records without an `id`: {missing:#?}");
    for id in &ids {
        assert!(
            id.starts_with("pam.") || id.starts_with("auth."),
            "{id}: IDs of pam_tessera's log start with pam. or auth."
        );
    }
    let documented = documented_ids();
    let undocumented: Vec<_> = ids.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&ids).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/pam.md, \"Log records\": missing {undocumented:?}; no longer logged {stale:?}"
    );
}

#[test]
fn the_scanner_finds_ids_and_records_without_one() {
    let source = r#"
        tracing::warn!(id = "pam.a.b", user = %name, "text (with \"parens\")");
        tracing::error!("no id here: {error}");
        logging::emergency("pam.c.d", &format!("x"));
    "#;
    let mut ids = BTreeSet::new();
    let mut missing = Vec::new();
    scan(Path::new("example.rs"), source, &mut ids, &mut missing);
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["pam.a.b", "pam.c.d"]);
    assert_eq!(missing, ["example.rs:3"]);
}
