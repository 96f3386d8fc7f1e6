//! The Debian package, installed with dpkg into writable overlays over
//! /usr, /etc, /var and /run in a private mount namespace: its files, its
//! maintainer scripts, its man pages, `tessera setup` and a login through
//! `@include common-auth` with the installed module and its installed
//! helper, then removal. The machine's own files are never changed, and the
//! test checks that too.
//!
//! The .deb is built before the tests by scripts/test
//! (`TESSERA_DEB_PROFILE=deb-test scripts/build-deb`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tessera_testrig::bins::bin_dir;
use tessera_testrig::login::{LoginRig, PIN};
use tessera_testrig::softhsm::KeyType;
use tessera_testrig::system::Overlay;

const MODULE: &str = "/usr/lib/x86_64-linux-gnu/security/pam_tessera.so";

/// Where the package puts the module's helper, and the path the module was
/// built to run (scripts/build-deb sets TESSERA_AUTH_HELPER).
const HELPER: &str = "/usr/libexec/tessera/tessera-auth";

/// Every path the package must install.
const PACKAGED: &[&str] = &[
    MODULE,
    HELPER,
    "/usr/bin/tessera",
    "/usr/sbin/tessera-eventd",
    "/etc/tessera/tessera.toml",
    "/usr/share/pam-configs/tessera",
    "/usr/share/pam-configs/tessera-required",
    "/usr/lib/systemd/system/tessera-eventd.service",
    "/usr/share/dbus-1/system.d/org.tessera.EventD1.conf",
    "/usr/lib/tmpfiles.d/tessera.conf",
    "/usr/share/man/man1/tessera.1.gz",
    "/usr/share/man/man5/tessera.toml.5.gz",
    "/usr/share/man/man8/pam_tessera.8.gz",
    "/usr/share/man/man8/tessera-eventd.8.gz",
    "/usr/share/doc/tessera/README.md",
    "/usr/share/doc/tessera/pam.md",
    "/usr/share/doc/tessera/copyright",
];

/// The .deb scripts/build-deb made with the deb-test profile, next to the
/// workspace's debug artefacts (`target/debug` → `target/debian/deb-test`).
fn package() -> PathBuf {
    let dir = bin_dir().join("../debian/deb-test");
    let found = std::fs::read_dir(&dir).ok().and_then(|entries| {
        entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
    });
    found.unwrap_or_else(|| {
        panic!(
            "no .deb in {}: run `TESSERA_DEB_PROFILE=deb-test scripts/build-deb` first",
            dir.display()
        )
    })
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `script` with the overlay in place, `input` on standard input.
fn run(overlay: &Overlay, rig: &LoginRig, script: &str, input: &str) -> Output {
    let (key, value) = rig.hsm.env();
    let mut child = overlay
        .command("sh")
        .args(["-c", script])
        .env(key, value)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn succeeds(overlay: &Overlay, rig: &LoginRig, script: &str, input: &str) -> String {
    let output = run(overlay, rig, script, input);
    assert!(output.status.success(), "{script}\n{}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What must not change on the real system, whatever the test does.
fn real_system() -> (String, bool, bool) {
    let common_auth = std::fs::read_to_string("/etc/pam.d/common-auth").unwrap();
    let installed = Command::new("dpkg-query")
        .args(["-W", "tessera"])
        .output()
        .unwrap()
        .status
        .success();
    (common_auth, installed, Path::new(MODULE).exists())
}

#[test]
fn the_package_installs_sets_up_and_logs_in_through_common_auth_then_removes_cleanly() {
    let deb = package();
    let before = real_system();
    assert!(
        !before.1 && !before.2,
        "tessera is installed on this machine"
    );

    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let mut overlay = Overlay::new(&rig.path().join("overlay-package"));
    let usr = overlay.overlay_dir("/usr");
    let etc = overlay.overlay_dir("/etc");
    overlay.overlay_dir("/var");
    let run_dir = overlay.overlay_dir("/run");
    overlay.users(&[("alice", 20001)]);

    // Install: the profiles are registered but, "Default: no", not enabled.
    succeeds(&overlay, &rig, &format!("dpkg -i {}", deb.display()), "");
    assert!(usr.join(MODULE.trim_start_matches("/usr/")).exists());
    let common_auth = succeeds(&overlay, &rig, "cat /etc/pam.d/common-auth", "");
    assert!(!common_auth.contains("pam_tessera"), "{common_auth}");
    // postinst: the unit enabled (not started), /run/tessera from tmpfiles.d.
    // The link points into the overlay's /usr: read it, do not follow it.
    let wants = etc.join("systemd/system/multi-user.target.wants/tessera-eventd.service");
    let unit = std::fs::read_link(&wants).unwrap();
    assert!(
        unit.ends_with("systemd/system/tessera-eventd.service"),
        "{unit:?}"
    );
    let sessions = std::fs::metadata(run_dir.join("tessera/sessions")).unwrap();
    assert_eq!(sessions.permissions().mode() & 0o7777, 0o700);

    let listed = succeeds(&overlay, &rig, "dpkg -L tessera", "");
    let listed: Vec<&str> = listed.lines().collect();
    for path in PACKAGED {
        assert!(listed.contains(path), "dpkg -L lacks {path}: {listed:?}");
    }
    // The helper runs as root inside su and sudo: root's, writable by root
    // alone, as the module demands (it refuses it otherwise).
    let helper = succeeds(
        &overlay,
        &rig,
        &format!("stat -c '%U %G %a' {HELPER} /usr/libexec/tessera"),
        "",
    );
    assert_eq!(helper, "root root 755\nroot root 755\n", "{HELPER}");
    let conffiles = succeeds(
        &overlay,
        &rig,
        "cat /var/lib/dpkg/info/tessera.conffiles",
        "",
    );
    assert_eq!(conffiles.trim(), "/etc/tessera/tessera.toml");
    let control = succeeds(&overlay, &rig, "dpkg -s tessera", "");
    for dependency in ["libc6", "libpam0g", "libpcsclite1"] {
        assert!(control.contains(dependency), "{control}");
    }
    assert!(
        control.contains("Recommends: pcscd, opensc, p11-kit"),
        "{control}"
    );

    // The man pages render without warnings.
    for page in PACKAGED.iter().filter(|path| path.ends_with(".gz")) {
        let rendered = succeeds(
            &overlay,
            &rig,
            &format!("zcat {page} | groff -man -Tutf8 -ww 2>&1 >/dev/null | tee /dev/stderr | wc -c; man -l {page} | head -3"),
            "",
        );
        assert!(rendered.starts_with("0\n"), "{page}: {rendered}");
        assert!(rendered.contains("NAME"), "{page}: {rendered}");
    }

    // The admin's path: tessera setup, enable the profile, log in with the
    // PIN through a service that only includes common-auth.
    let setup = succeeds(
        &overlay,
        &rig,
        &format!(
            "tessera setup --ca {} --rule '{{cn}}' --module /usr/lib/softhsm/libsofthsm2.so --revocation none --force",
            rig.ca_dir().join("root.pem").display()
        ),
        "",
    );
    assert!(
        setup.contains("pam-auth-update --enable tessera"),
        "{setup}"
    );
    assert!(setup.contains("1 token(s) present"), "{setup}");
    std::fs::create_dir_all(etc.join("pam.d")).unwrap();
    std::fs::write(
        etc.join("pam.d/tessera-package-check"),
        "@include common-auth\n@include common-account\n",
    )
    .unwrap();
    // The same module with its log on pamtester's stderr, to see the helper.
    std::fs::write(
        etc.join("pam.d/tessera-package-debug"),
        "auth required pam_tessera.so log=stderr debug\naccount required pam_permit.so\n",
    )
    .unwrap();
    let login = "pam-auth-update --package --enable tessera && pamtester tessera-package-check alice authenticate";
    let debug_login = "pamtester tessera-package-debug alice authenticate";

    // SOFTHSM2_CONF is in pamtester's environment (run() sets it), but the
    // helper starts with an empty one: SoftHSM finds no token of the rig.
    let output = run(&overlay, &rig, debug_login, &format!("{PIN}\n"));
    assert!(
        !output.status.success(),
        "the caller's environment reached the token stack: {}",
        text(&output)
    );
    // The admin gives the helper its environment in the configuration.
    let config = succeeds(&overlay, &rig, "cat /etc/tessera/tessera.toml", "");
    let (key, value) = rig.hsm.env();
    let config = config.replacen(
        "[pkcs11]\n",
        &format!(
            "[pkcs11]\nenvironment = {{ {key} = \"{}\" }}\n",
            value.display()
        ),
        1,
    );
    assert!(config.contains("environment = {"), "{config}");
    succeeds(&overlay, &rig, "cat > /etc/tessera/tessera.toml", &config);

    let output = run(&overlay, &rig, login, &format!("{PIN}\n"));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("successfully authenticated"),
        "{}",
        text(&output)
    );
    let output = run(&overlay, &rig, login, "000000\n");
    assert!(!output.status.success(), "a wrong PIN: {}", text(&output));

    // The login went through the installed helper: the module names it,
    // and the helper's own record follows.
    let output = run(&overlay, &rig, debug_login, &format!("{PIN}\n"));
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        log.contains(&format!("helper started helper={HELPER}")),
        "{}",
        text(&output)
    );
    assert!(
        log.contains("authenticated service=\"tessera-package-debug\" user=alice"),
        "{}",
        text(&output)
    );
    // Without a trustworthy helper there is no card login: made
    // group-writable, the helper is refused and never started
    // (PAM_SERVICE_ERR, "Error in service module" from pamtester).
    succeeds(&overlay, &rig, &format!("chmod 0775 {HELPER}"), "");
    let output = run(&overlay, &rig, debug_login, &format!("{PIN}\n"));
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(log.contains("refusing the helper"), "{}", text(&output));
    assert!(log.contains("Error in service module"), "{}", text(&output));
    assert!(!log.contains("helper started"), "{}", text(&output));
    succeeds(&overlay, &rig, &format!("chmod 0755 {HELPER}"), "");

    // Removal takes the module out of the stacks before the file goes.
    succeeds(&overlay, &rig, "dpkg --purge tessera", "");
    let common_auth = succeeds(&overlay, &rig, "cat /etc/pam.d/common-auth", "");
    assert!(!common_auth.contains("pam_tessera"), "{common_auth}");
    // dpkg removed it: the upper directory holds a whiteout, not the file.
    assert!(!usr.join(MODULE.trim_start_matches("/usr/")).is_file());

    assert_eq!(real_system(), before, "the real system changed");
}
