//! Fixes the path of the `tessera-auth` helper at build time.
//!
//! `TESSERA_AUTH_HELPER` sets it (packagers: `/usr/libexec/tessera/tessera-auth`,
//! which is also the default of release builds). Other builds use the helper
//! built next to them in the same target directory, so the tests run the
//! helper of the tree under test.

use std::path::Path;

const INSTALLED: &str = "/usr/libexec/tessera/tessera-auth";

fn main() {
    println!("cargo:rerun-if-env-changed=TESSERA_AUTH_HELPER");
    let helper = match std::env::var("TESSERA_AUTH_HELPER") {
        Ok(path) if !path.is_empty() => path,
        _ if std::env::var("PROFILE").as_deref() == Ok("release") => INSTALLED.to_owned(),
        _ => {
            // OUT_DIR is <target>/<profile>/build/tessera-ipc-<hash>/out.
            let out_dir = std::env::var("OUT_DIR").unwrap_or_default();
            match Path::new(&out_dir).ancestors().nth(3) {
                Some(profile_dir) => profile_dir.join("tessera-auth").display().to_string(),
                None => INSTALLED.to_owned(),
            }
        }
    };
    assert!(
        Path::new(&helper).is_absolute(),
        "TESSERA_AUTH_HELPER must be an absolute path, got {helper:?}"
    );
    println!("cargo:rustc-env=TESSERA_AUTH_HELPER_PATH={helper}");
}
