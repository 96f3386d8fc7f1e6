//! The man pages must name every CLI flag and every configuration key.
//!
//! Both lists come from the code, not from a copy: the flags from clap's
//! `Command` tree, the keys from the config parser itself. Its tables are
//! `deny_unknown_fields`, so an unknown key in a table makes serde list
//! every field that table accepts; probing each field with a table (or an
//! array of tables, or a map of tables) finds the nested ones. A key added
//! to the structs shows up here without anyone touching this test.

#![allow(clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use tessera_core::Config;

const PROBE: &str = "zz_probe_key";

fn man_page(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/man")
        .join(format!("{name}.md"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The fields serde lists in "unknown field `zz_probe_key`, expected one
/// of `a`, `b`" (or "expected `a` or `b`"), or `None` when the error is
/// about something else (the probed key is not a table of that shape).
fn expected_fields(document: &str) -> Option<Vec<String>> {
    let error = match Config::parse(Path::new("probe.toml"), document) {
        Ok(_) => return None,
        Err(error) => error.to_string(),
    };
    let listed = error
        .split_once(&format!("unknown field `{PROBE}`, expected"))?
        .1;
    Some(
        listed
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// `value` placed at the dotted `path` as inline tables, e.g. `a.b` and
/// `{ x = 1 }` give `a = { b = { x = 1 } }`.
fn nest(path: &[String], value: &str) -> String {
    path.iter().rev().fold(value.to_owned(), |inner, key| {
        format!("{{ {key} = {inner} }}")
    })
}

/// Every key of the table at `path`, recursively, as dotted names.
fn walk(path: &[String], shapes: &[&str], keys: &mut BTreeSet<String>) {
    // The top level needs `version` first so the probe is what fails.
    let document = |value: &str| match path.split_first() {
        None => format!("version = 1\n{PROBE} = 1\n"),
        Some((first, rest)) => format!("version = 1\n{first} = {}\n", nest(rest, value)),
    };
    let mut found = None;
    for shape in shapes {
        found = expected_fields(&document(&shape.replace("P", &format!("{PROBE} = 1"))));
        if found.is_some() {
            break;
        }
    }
    let Some(fields) = found else {
        return;
    };
    for field in fields {
        let mut child = path.to_vec();
        child.push(field);
        keys.insert(child.join("."));
        walk(&child, shapes, keys);
    }
}

/// Every configuration key the parser accepts, dotted (`pki.crl.files`).
/// Maps of tables (`[service.NAME]`) appear as their table's keys.
fn config_keys() -> BTreeSet<String> {
    // A table, an array of tables, a map whose values are tables.
    let shapes = ["{ P }", "[{ P }]", "{ any = { P } }"];
    let mut keys = BTreeSet::new();
    walk(&[], &shapes, &mut keys);
    keys
}

fn flags(command: &clap::Command, prefix: &str, out: &mut Vec<(String, String)>) {
    for argument in command.get_arguments() {
        if let Some(long) = argument.get_long() {
            out.push((prefix.to_owned(), format!("--{long}")));
        }
    }
    for sub in command.get_subcommands() {
        out.push((prefix.to_owned(), sub.get_name().to_owned()));
        flags(sub, &format!("{prefix} {}", sub.get_name()), out);
    }
}

#[test]
fn the_key_walk_finds_nested_and_repeated_tables() {
    let keys = config_keys();
    for key in [
        "version",
        "pki.ca",
        "pki.crl.files",
        "pki.ocsp.nonce",
        "rule.user",
        "service.card",
        "eventd.grace",
    ] {
        assert!(keys.contains(key), "{key} not found in {keys:?}");
    }
}

#[test]
fn every_config_key_is_in_tessera_toml_5() {
    let page = man_page("tessera.toml.5");
    let missing: Vec<String> = config_keys()
        .into_iter()
        .filter(|key| {
            let last = key.rsplit('.').next().unwrap_or(key);
            // A key is documented as `key` (or the heading of its section).
            !page.contains(&format!("`{last}`"))
                && !page.contains(&format!("[{key}]"))
                && !page.contains(&format!("[{key}."))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/man/tessera.toml.5.md: {missing:?}"
    );
}

#[test]
fn every_cli_flag_and_command_is_in_tessera_1() {
    let page = man_page("tessera.1");
    let mut all = Vec::new();
    flags(&crate::Cli::command(), "tessera", &mut all);
    // clap adds --help and --version when the command is built, so they
    // are not in this walk; the page names them in its synopsis.
    let missing: Vec<String> = all
        .into_iter()
        .filter(|(_, flag)| {
            !page.contains(&format!("`{flag}`")) && !page.contains(&format!("## {flag}"))
        })
        .map(|(command, flag)| format!("{command} {flag}"))
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/man/tessera.1.md: {missing:?}"
    );
}
