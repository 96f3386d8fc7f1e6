//! Reading the workspace's own sources, for the tests that check the
//! tree's shape (tests/architecture.rs) and its log records
//! (tests/log_ids.rs): which files a crate is made of, and their code
//! without the unit tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A module's path within its crate (`[]` for the root).
pub type ModulePath = Vec<String>;

/// The workspace's root folder.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The files of the crate whose root is `root`, by module path: the root,
/// and every module it declares (`mod name;`), recursively.
pub fn crate_modules(root: &Path) -> BTreeMap<ModulePath, PathBuf> {
    let mut found = BTreeMap::new();
    let mut pending = vec![(Vec::new(), root.to_owned())];
    while let Some((module, path)) = pending.pop() {
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        // A root or mod.rs holds its children beside it; a.rs in a/.
        let dir = if module.is_empty() || path.file_stem().is_some_and(|stem| stem == "mod") {
            path.parent().unwrap().to_owned()
        } else {
            path.with_extension("")
        };
        for child in source.lines().filter_map(declared_module) {
            let file = [
                dir.join(format!("{child}.rs")),
                dir.join(&child).join("mod.rs"),
            ]
            .into_iter()
            .find(|candidate| candidate.is_file())
            .unwrap_or_else(|| panic!("{}: module {child} has no file", path.display()));
            let mut child_module = module.clone();
            child_module.push(child);
            pending.push((child_module, file));
        }
        found.insert(module, path);
    }
    found
}

/// `name` of a line `[pub[(...)]] mod name;`.
pub fn declared_module(line: &str) -> Option<String> {
    let rest = line.trim();
    let rest = match rest.strip_prefix("pub") {
        Some(after) => after
            .trim_start()
            .strip_prefix('(')
            .and_then(|inner| inner.split_once(')'))
            .map_or(after, |(_, after)| after),
        None => rest,
    };
    let name = rest.trim_start().strip_prefix("mod ")?.strip_suffix(';')?;
    Some(name.trim().to_owned())
}

/// `source` up to its unit tests: an inline `#[cfg(test)] mod name {` (at
/// the end of a file), which logs what it tests, not records. A test module
/// in a file of its own (`#[cfg(test)] mod tests;`) does not end the code.
pub fn without_unit_tests(source: &str) -> &str {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_test_modules_are_cut_off_but_test_module_declarations_are_not() {
        let source = "#[cfg(test)]\nmod tests;\nfn code() {}\n#[cfg(test)]\nmod unit {\n}\n";
        assert_eq!(
            without_unit_tests(source),
            "#[cfg(test)]\nmod tests;\nfn code() {}\n"
        );
        assert_eq!(without_unit_tests("fn code() {}"), "fn code() {}");
    }
}
