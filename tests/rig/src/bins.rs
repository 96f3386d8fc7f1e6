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

/// Under `cargo test` (CARGO set, no TESSERA_BIN_DIR), builds the
/// workspace's binaries and libraries once per test process, in the test's
/// profile: `cargo test -p tessera-testrig` alone must never run a stale
/// helper, PAM module or fault module.
fn build_once() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let Some(cargo) = std::env::var_os("CARGO") else {
            return;
        };
        if std::env::var_os("TESSERA_BIN_DIR").is_some() {
            return;
        }
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
        let mut command = std::process::Command::new(cargo);
        command.args([
            "build",
            "--quiet",
            "--workspace",
            "--manifest-path",
            manifest,
        ]);
        match bin_dir().file_name().and_then(|name| name.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                command.arg("--release");
            }
            Some(profile) => {
                command.args(["--profile", profile]);
            }
        }
        let output = command
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run cargo build --workspace");
        assert!(
            output.status.success(),
            "cargo build --workspace failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// Path of a built artefact; panics with a hint when it was not built.
pub fn artefact(name: &str) -> PathBuf {
    build_once();
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
