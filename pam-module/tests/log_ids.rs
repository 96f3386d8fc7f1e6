//! Every record logged under the `pam_tessera` identifier (by the module, its
//! helper and the code the helper runs) carries a stable `id`, and
//! docs/pam.md's "Log records" table lists exactly the IDs the code uses:
//! admins filter and alert on them, tests wait for them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The sources (folders or files) whose records reach the log as
/// `pam_tessera`.
const LOGGING_SOURCES: &[&str] = &[
    "pam-module/src",
    "ipc/src",
    "auth-helper/src",
    "core/src",
    "mappers/src",
];

const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    if dir.is_file() {
        files.push(dir.to_owned());
        return;
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

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

/// `source` up to its unit tests: an inline `#[cfg(test)] mod name {` (at
/// the end of a file), which logs what it tests, not records. A test module
/// in a file of its own (`#[cfg(test)] mod tests;`) does not end the code.
fn without_unit_tests(source: &str) -> &str {
    const ATTRIBUTE: &str = "#[cfg(test)]";
    let mut from = 0;
    while let Some(found) = source[from..].find(ATTRIBUTE) {
        let at = from + found;
        from = at + ATTRIBUTE.len();
        let item = &source[from..];
        let Some(end) = item.find(['{', ';']) else {
            break;
        };
        let inline_module = item[end..].starts_with('{')
            && item[..end].split_whitespace().any(|word| word == "mod");
        if inline_module {
            return &source[..at];
        }
    }
    source
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
    let mut files = Vec::new();
    for dir in LOGGING_SOURCES {
        rust_files(&workspace().join(dir), &mut files);
    }
    assert!(files.len() > 5, "no sources found: {files:?}");
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

#[test]
fn unit_test_modules_are_cut_off_but_test_module_declarations_are_not() {
    let source = "#[cfg(test)]\nmod tests;\nfn code() {}\n#[cfg(test)]\nmod unit {\n}\n";
    assert_eq!(
        without_unit_tests(source),
        "#[cfg(test)]\nmod tests;\nfn code() {}\n"
    );
    assert_eq!(without_unit_tests("fn code() {}"), "fn code() {}");
}
