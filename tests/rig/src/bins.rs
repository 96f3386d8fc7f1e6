//! Finding the workspace's built artefacts (the PAM module, the harness, helper tools).

use std::path::PathBuf;

/// The cargo output directory holding the binaries and `libpam_tessera.so`:
/// `$TESSERA_BIN_DIR` if set, else the profile directory above the running
/// test executable (`target/debug/deps/x` → `target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TESSERA_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a built artefact; panics with a hint when it was not built.
pub fn artefact(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first (or set TESSERA_BIN_DIR)",
        path.display()
    );
    path
}

/// The PAM module under test.
pub fn pam_module() -> PathBuf {
    artefact("libpam_tessera.so")
}
