//! The shape of the source tree, as a newcomer reads it: within each crate,
//! no file imports a file that imports it back (directly or around a
//! loop), and no file holds more than 600 lines of non-test code unless its
//! opening comment says why ("Long on purpose: ..."). Needs neither root
//! nor any component: it reads the sources.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tessera_testrig::source_tree::{
    crate_modules, declared_module, without_unit_tests, workspace, ModulePath,
};

/// Crate roots, relative to the workspace.
const CRATES: &[&str] = &[
    "ipc/src/lib.rs",
    "core/src/lib.rs",
    "mappers/src/lib.rs",
    "pam-module/src/lib.rs",
    "auth-helper/src/main.rs",
    "eventd/src/main.rs",
    "cli/src/main.rs",
    "tests/rig/src/lib.rs",
    "tests/vcard/src/lib.rs",
    "tests/vcard/src/main.rs",
    "tests/p11fault/src/lib.rs",
    "tests/pamharness/src/main.rs",
];

const MAX_LINES: usize = 600;
const LONG_ON_PURPOSE: &str = "Long on purpose:";

/// The code of a file without its comments and its inline test module.
fn code_of(source: &str) -> String {
    without_unit_tests(source)
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Child modules a file declares as `#[cfg(test)] mod name;`: test code.
fn test_children(source: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = source.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|pair| pair[0] == "#[cfg(test)]")
        .filter_map(|pair| declared_module(pair[1]))
        .collect()
}

/// The paths a `use` tree names: `a::{b, c::{d, e}}` gives `a::b`,
/// `a::c::d`, `a::c::e`.
fn use_paths(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        return vec![path.to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (index, character) in inner.char_indices() {
        match character {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&inner[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|part| !part.trim().is_empty())
        .flat_map(use_paths)
        .map(|path| format!("{prefix}{path}"))
        .collect()
}

/// The trees of the `use` declarations of `code` (`[pub[(...)]] use TREE;`
/// starting a line).
fn use_trees(code: &str) -> Vec<String> {
    let mut trees = Vec::new();
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let mut rest = line.trim_start();
        if let Some(after) = rest.strip_prefix("pub") {
            rest = after
                .trim_start()
                .strip_prefix('(')
                .and_then(|inner| inner.split_once(')'))
                .map_or(after, |(_, after)| after)
                .trim_start();
        }
        let Some(tree) = rest.strip_prefix("use ") else {
            continue;
        };
        let mut tree = tree.to_owned();
        while !tree.contains(';') {
            match lines.next() {
                Some(more) => tree.push_str(more),
                None => break,
            }
        }
        trees.push(tree.split(';').next().unwrap_or_default().to_owned());
    }
    trees
}

/// The longest module prefix of `path` that is a file.
fn resolve(path: &[String], files: &BTreeMap<ModulePath, PathBuf>) -> Option<ModulePath> {
    let segments: Vec<String> = path
        .iter()
        .filter(|segment| !segment.is_empty() && *segment != "*" && *segment != "self")
        .cloned()
        .collect();
    (0..=segments.len())
        .rev()
        .map(|length| segments[..length].to_vec())
        .find(|candidate| files.contains_key(candidate))
}

fn identifier_end(character: char) -> bool {
    !(character.is_alphanumeric() || character == '_' || character == ':')
}

/// The files of its crate that `module` (whose code is `code`) uses.
fn dependencies(
    module: &ModulePath,
    code: &str,
    files: &BTreeMap<ModulePath, PathBuf>,
) -> BTreeSet<ModulePath> {
    let mut targets = BTreeSet::new();
    for tree in use_trees(code) {
        for path in use_paths(&tree) {
            let segments: Vec<String> = path.split("::").map(|s| s.trim().to_owned()).collect();
            let (mut base, rest): (ModulePath, &[String]) = match segments[0].as_str() {
                "crate" => (Vec::new(), &segments[1..]),
                "self" => (module.clone(), &segments[1..]),
                "super" => {
                    let mut base = module.clone();
                    base.pop();
                    let mut rest = &segments[1..];
                    while rest.first().is_some_and(|s| s == "super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    (base, rest)
                }
                _ => continue,
            };
            base.extend(rest.iter().cloned());
            if let Some(target) = resolve(&base, files) {
                targets.insert(target);
            }
        }
    }
    for (position, _) in code.match_indices("crate::") {
        if position > 0 && !identifier_end(code[..position].chars().last().unwrap_or(' ')) {
            continue;
        }
        let path: String = code[position + 7..]
            .chars()
            .take_while(|character| {
                character.is_alphanumeric() || *character == '_' || *character == ':'
            })
            .collect();
        // `crate::{a, b}` is a use tree, read above.
        if path.is_empty() {
            continue;
        }
        let segments: Vec<String> = path.split("::").map(str::to_owned).collect();
        if let Some(target) = resolve(&segments, files) {
            targets.insert(target);
        }
    }
    // A parent reaches its children by their names: `child::item`.
    for line in code.lines() {
        let Some(child) = declared_module(line) else {
            continue;
        };
        let needle = format!("{child}::");
        let used = code.match_indices(&needle).any(|(position, _)| {
            position == 0 || identifier_end(code[..position].chars().last().unwrap_or(' '))
        });
        if used {
            let mut path = module.clone();
            path.push(child);
            if let Some(target) = resolve(&path, files) {
                targets.insert(target);
            }
        }
    }
    targets.remove(module);
    targets
}

/// Whether a crate root only declares modules and re-exports: edges into
/// such a root are paths through it, not a dependency on its code.
fn is_facade(code: &str) -> bool {
    const ITEMS: [&str; 8] = [
        "fn ", "struct ", "enum ", "impl", "const ", "static ", "trait ", "type ",
    ];
    !code.lines().any(|line| {
        let line = line.trim_start();
        let line = line
            .strip_prefix("pub(crate) ")
            .or_else(|| line.strip_prefix("pub "))
            .unwrap_or(line);
        ITEMS.iter().any(|item| line.starts_with(item))
    })
}

/// The strongly connected components of more than one file (Tarjan).
fn cycles(graph: &BTreeMap<ModulePath, BTreeSet<ModulePath>>) -> Vec<Vec<ModulePath>> {
    struct State<'a> {
        graph: &'a BTreeMap<ModulePath, BTreeSet<ModulePath>>,
        index: BTreeMap<&'a ModulePath, usize>,
        low: BTreeMap<&'a ModulePath, usize>,
        stack: Vec<&'a ModulePath>,
        found: Vec<Vec<ModulePath>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a ModulePath) {
        let number = state.index.len();
        state.index.insert(node, number);
        state.low.insert(node, number);
        state.stack.push(node);
        for next in &state.graph[node] {
            if !state.index.contains_key(next) {
                visit(state, next);
                let low = state.low[next].min(state.low[node]);
                state.low.insert(node, low);
            } else if state.stack.contains(&next) {
                let low = state.index[next].min(state.low[node]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                component.push(member.clone());
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    state.found
}

fn name(module: &ModulePath) -> String {
    if module.is_empty() {
        "<root>".to_owned()
    } else {
        module.join("::")
    }
}

/// The files of `src` (test modules left out) and the graph of their uses.
fn crate_graph(
    root: &Path,
) -> (
    BTreeMap<ModulePath, BTreeSet<ModulePath>>,
    BTreeMap<ModulePath, String>,
) {
    let mut files = crate_modules(root);
    let sources: BTreeMap<ModulePath, String> = files
        .iter()
        .map(|(module, path)| (module.clone(), std::fs::read_to_string(path).unwrap()))
        .collect();
    for (module, source) in &sources {
        for child in test_children(source) {
            let mut path = module.clone();
            path.push(child);
            files.remove(&path);
        }
    }
    let codes: BTreeMap<ModulePath, String> = files
        .keys()
        .map(|module| (module.clone(), code_of(&sources[module])))
        .collect();
    let facade_root = codes.get(&Vec::new()).is_some_and(|code| is_facade(code));
    let graph = codes
        .iter()
        .map(|(module, code)| {
            let mut targets = dependencies(module, code, &files);
            if facade_root {
                targets.remove(&Vec::new());
            }
            (module.clone(), targets)
        })
        .collect();
    (graph, codes)
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let mut found = Vec::new();
    for root in CRATES {
        let (graph, _) = crate_graph(&workspace().join(root));
        assert!(!graph.is_empty(), "no module at {root}");
        for cycle in cycles(&graph) {
            let edges: Vec<String> = cycle
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|to| cycle.contains(to))
                        .map(move |to| format!("{} -> {}", name(from), name(to)))
                })
                .collect();
            found.push(format!("{root}: {}", edges.join(", ")));
        }
    }
    assert!(
        found.is_empty(),
        "import cycles between files:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_file_is_long_without_saying_why() {
    let mut long = Vec::new();
    for root in CRATES {
        for path in crate_modules(&workspace().join(root)).values() {
            let source = std::fs::read_to_string(path).unwrap();
            let lines = without_unit_tests(&source).lines().count();
            if lines > MAX_LINES && !source.contains(LONG_ON_PURPOSE) {
                long.push(format!("{} ({lines} lines)", path.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines of non-test code without a \"{LONG_ON_PURPOSE}\" comment:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checker_sees_a_cycle_through_use_lines_and_child_paths() {
    let files: BTreeMap<ModulePath, PathBuf> = [
        (vec![], PathBuf::new()),
        (vec!["a".to_owned()], PathBuf::new()),
        (vec!["a".to_owned(), "b".to_owned()], PathBuf::new()),
    ]
    .into_iter()
    .collect();
    let parent =
        code_of("mod b;\npub fn f() { b::g() }\n#[cfg(test)]\nmod tests {\n use crate::x;\n}\n");
    let child = code_of("use super::{f, Other as O};\n// use crate::ignored;\npub fn g() {}\n");
    let a = vec!["a".to_owned()];
    let b = vec!["a".to_owned(), "b".to_owned()];
    let mut graph = BTreeMap::new();
    graph.insert(a.clone(), dependencies(&a, &parent, &files));
    graph.insert(b.clone(), dependencies(&b, &child, &files));
    assert_eq!(graph[&a], [b.clone()].into_iter().collect());
    assert_eq!(graph[&b], [a.clone()].into_iter().collect());
    assert_eq!(cycles(&graph).len(), 1);
    assert_eq!(
        use_paths("crate::{x, y::{z, w as v}}"),
        ["crate::x", "crate::y::z", "crate::y::w"]
    );
    assert!(is_facade("mod a;\npub use a::f;\n"));
    assert!(!is_facade("mod a;\npub struct S;\n"));
}
