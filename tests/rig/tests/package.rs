//! The Debian package, installed with dpkg into writable overlays over
//! /usr, /etc, /var and /run in a private mount namespace: its files, its
//! maintainer scripts, its man pages, `tessera setup` and a login through
//! `@include common-auth` with the installed module and its installed
//! helper, then removal; GDM's smart-card service beside gdm3's own PAM
//! files, and a login through it with no user name. The machine's own files
//! are never changed, and the tests check that too. The unit's exposure is
//! measured inside the systemd namespace.
//!
//! The .deb is built before the tests by scripts/test
//! (`TESSERA_DEB_PROFILE=deb-test scripts/build-deb`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tessera_testrig::bins::{artefact, bin_dir};
use tessera_testrig::login::{CardKey, LoginRig, PamRun, PIN};
use tessera_testrig::pcscd::{Pcscd, OPENSC_PKCS11};
use tessera_testrig::softhsm::KeyType;
use tessera_testrig::system::Overlay;
use tessera_testrig::systemd::in_namespace;
use tessera_testrig::vcard::{CardSpec, VirtualCard};
use tessera_testrig::{describe, output_with_stdin};

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
    "/usr/share/doc/tessera/changelog.Debian.gz",
    "/usr/share/lintian/overrides/tessera",
    GDM_EXCLUSIVE,
    GDM_OR_PASSWORD,
];

/// GDM's smart-card services the package ships.
const GDM_EXCLUSIVE: &str = "/etc/pam.d/gdm-smartcard-tessera-exclusive";
const GDM_OR_PASSWORD: &str = "/etc/pam.d/gdm-smartcard-tessera-or-password";

/// Where scripts/setup downloads gdm3's package (never installed).
const GDM3_CACHE: &str = "/var/cache/tessera-test";

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

/// Runs `script` with the overlay in place, `input` on standard input.
fn run(overlay: &Overlay, rig: &LoginRig, script: &str, input: &str) -> Output {
    let (key, value) = rig.hsm.env();
    output_with_stdin(
        overlay
            .command("sh")
            .args(["-c", script])
            .env(key, value)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        input,
    )
}

fn succeeds(overlay: &Overlay, rig: &LoginRig, script: &str, input: &str) -> String {
    let output = run(overlay, rig, script, input);
    assert!(output.status.success(), "{script}\n{}", describe(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What must not change on the real system, whatever the test does:
/// common-auth, whether tessera is installed, the module, and whether a
/// gdm-smartcard alternative exists.
fn real_system() -> (String, bool, bool, bool) {
    let common_auth = std::fs::read_to_string("/etc/pam.d/common-auth").unwrap();
    let installed = Command::new("dpkg-query")
        .args(["-W", "tessera"])
        .output()
        .unwrap()
        .status
        .success();
    let gdm_smartcard = Path::new("/var/lib/dpkg/alternatives/gdm-smartcard").exists()
        || std::fs::symlink_metadata("/etc/pam.d/gdm-smartcard").is_ok();
    (
        common_auth,
        installed,
        Path::new(MODULE).exists(),
        gdm_smartcard,
    )
}

/// The overlays the package is installed into: /usr, /etc, /var and /run,
/// kept under `rig`'s directory `name`, with alice (uid 20001) in
/// /etc/passwd. Returns the overlay and the upper directories of /usr, /etc
/// and /run.
fn overlays(rig: &LoginRig, name: &str) -> (Overlay, PathBuf, PathBuf, PathBuf) {
    let mut overlay = Overlay::new(&rig.path().join(name));
    let usr = overlay.overlay_dir("/usr");
    let etc = overlay.overlay_dir("/etc");
    overlay.overlay_dir("/var");
    let run_dir = overlay.overlay_dir("/run");
    overlay.users(&[("alice", 20001)]);
    (overlay, usr, etc, run_dir)
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
    let (overlay, usr, etc, run_dir) = overlays(&rig, "overlay-package");

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
    // Without gdm3 there is no gdm-smartcard service to offer a stack for.
    let output = run(
        &overlay,
        &rig,
        "update-alternatives --query gdm-smartcard",
        "",
    );
    assert!(!output.status.success(), "{}", describe(&output));

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
    let mut conffiles: Vec<&str> = conffiles.lines().collect();
    conffiles.sort_unstable();
    assert_eq!(
        conffiles,
        [GDM_EXCLUSIVE, GDM_OR_PASSWORD, "/etc/tessera/tessera.toml"]
    );
    let control = succeeds(&overlay, &rig, "dpkg -s tessera", "");
    for dependency in ["libc6", "libpam0g", "libpcsclite1"] {
        assert!(control.contains(dependency), "{control}");
    }
    assert!(
        control.contains("Recommends: pcscd, opensc, p11-kit"),
        "{control}"
    );

    // The man pages render without warnings.
    for page in PACKAGED
        .iter()
        .filter(|path| path.starts_with("/usr/share/man/"))
    {
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
        describe(&output)
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
        describe(&output)
    );
    let output = run(&overlay, &rig, login, "000000\n");
    assert!(
        !output.status.success(),
        "a wrong PIN: {}",
        describe(&output)
    );

    // The login went through the installed helper: the module names it,
    // and the helper's own record follows.
    let output = run(&overlay, &rig, debug_login, &format!("{PIN}\n"));
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}", describe(&output));
    // Records by their stable ids (docs/pam.md, "Log records").
    let record = |id: &str, fields: &[&str]| {
        log.lines().any(|line| {
            line.contains(&format!("id=\"{id}\""))
                && fields.iter().all(|field| line.contains(field))
        })
    };
    assert!(
        record("pam.helper.started", &[&format!(" helper={HELPER} ")]),
        "{}",
        describe(&output)
    );
    assert!(
        record(
            "auth.login.succeeded",
            &["service=\"tessera-package-debug\"", "user=alice"]
        ),
        "{}",
        describe(&output)
    );
    // Without a trustworthy helper there is no card login: made
    // group-writable, the helper is refused and never started
    // (PAM_SERVICE_ERR, "Error in service module" from pamtester).
    succeeds(&overlay, &rig, &format!("chmod 0775 {HELPER}"), "");
    let output = run(&overlay, &rig, debug_login, &format!("{PIN}\n"));
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(log.contains("refusing the helper"), "{}", describe(&output));
    assert!(
        log.contains("Error in service module"),
        "{}",
        describe(&output)
    );
    assert!(!log.contains("helper started"), "{}", describe(&output));
    succeeds(&overlay, &rig, &format!("chmod 0755 {HELPER}"), "");

    // Removal takes the module out of the stacks before the file goes.
    succeeds(&overlay, &rig, "dpkg --purge tessera", "");
    let common_auth = succeeds(&overlay, &rig, "cat /etc/pam.d/common-auth", "");
    assert!(!common_auth.contains("pam_tessera"), "{common_auth}");
    // dpkg removed it: the upper directory holds a whiteout, not the file.
    assert!(!usr.join(MODULE.trim_start_matches("/usr/")).is_file());

    assert_eq!(real_system(), before, "the real system changed");
}

/// gdm3's package as scripts/setup downloaded it, unpacked into `dir`:
/// its files under `dir/root`, its maintainer scripts under `dir/control`.
fn gdm3_unpacked(dir: &Path) -> (PathBuf, PathBuf) {
    let deb = std::fs::read_dir(GDM3_CACHE)
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .find(|path| {
                    path.file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with("gdm3_"))
                        && path.extension().is_some_and(|ext| ext == "deb")
                })
        })
        .unwrap_or_else(|| panic!("no gdm3_*.deb in {GDM3_CACHE}: run scripts/setup"));
    let (root, control) = (dir.join("root"), dir.join("control"));
    std::fs::create_dir_all(dir).unwrap();
    tessera_testrig::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    tessera_testrig::run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    (root, control)
}

/// The gdm-smartcard lines of gdm3's maintainer script `script` (postinst:
/// `update-alternatives --install`, prerm: `--remove`), as a shell script.
fn gdm3_alternatives(control: &Path, script: &str) -> String {
    let text = std::fs::read_to_string(control.join(script)).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("update-alternatives ") && line.contains("gdm-smartcard"))
        .collect();
    assert_eq!(lines.len(), 3, "gdm3's {script}:\n{text}");
    lines.join("\n")
}

/// The gdm-smartcard alternative, as `update-alternatives --query` shows it.
#[derive(Debug, PartialEq)]
struct GdmSmartcard {
    /// The stack /etc/pam.d/gdm-smartcard points at.
    value: String,
    /// `auto` or `manual`.
    status: String,
    /// Each stack offered, with its priority.
    stacks: Vec<(String, u32)>,
}

/// `update-alternatives --query gdm-smartcard`; None when there is no such
/// alternative.
fn gdm_smartcard(overlay: &Overlay, rig: &LoginRig) -> Option<GdmSmartcard> {
    let output = run(
        overlay,
        rig,
        "update-alternatives --query gdm-smartcard",
        "",
    );
    if !output.status.success() {
        return None;
    }
    let query = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |name: &str| {
        query
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {query}"))
            .to_owned()
    };
    let mut stacks = Vec::new();
    let mut lines = query.lines();
    while let Some(line) = lines.next() {
        if let Some(path) = line.strip_prefix("Alternative: ") {
            let priority = lines
                .next()
                .and_then(|line| line.strip_prefix("Priority: "))
                .and_then(|priority| priority.parse().ok())
                .unwrap_or_else(|| panic!("no priority for {path} in {query}"));
            stacks.push((path.to_owned(), priority));
        }
    }
    Some(GdmSmartcard {
        value: field("Value: "),
        status: field("Status: "),
        stacks,
    })
}

/// GDM's smart-card login as a distribution ships it: gdm3's own PAM files
/// and its gdm-smartcard alternatives (from its package, without GNOME),
/// tessera's installed beside them at lower priorities, made the active
/// one by the admin, then a login through the `gdm-smartcard` service with
/// no user name, the card inserted while the module waits for it, as the
/// greeter sees it; a card of root's refused; the card-or-password stack
/// falling back to the password when no card comes. gdm3's removal and
/// return (its file trigger), and tessera's purge, leave gdm3's
/// alternatives as gdm3 made them.
#[test]
fn gdm_smartcard_stacks_are_offered_beside_gdm3s_and_log_in_without_a_user_name() {
    let deb = package();
    let before = real_system();
    let rig = LoginRig::new();
    let (overlay, usr, etc, run_dir) = overlays(&rig, "overlay-gdm");

    // gdm3 "installed": its files, and its alternatives registered by its
    // own postinst's lines.
    let (gdm3, control) = gdm3_unpacked(&rig.path().join("gdm3"));
    std::fs::create_dir_all(etc.join("pam.d")).unwrap();
    std::fs::create_dir_all(usr.join("sbin")).unwrap();
    let install_gdm3 = format!(
        "cp -a {root}/etc/pam.d/gdm-* /etc/pam.d/ && cp -a {root}/usr/sbin/gdm3 /usr/sbin/ && {alternatives}",
        root = gdm3.display(),
        alternatives = gdm3_alternatives(&control, "postinst").replace('\n', " && ")
    );
    let remove_gdm3 = format!(
        "rm /usr/sbin/gdm3 && {}",
        gdm3_alternatives(&control, "prerm").replace('\n', " && ")
    );
    succeeds(&overlay, &rig, &install_gdm3, "");
    let gdm3_only = gdm_smartcard(&overlay, &rig).expect("gdm3's alternatives");
    let lowest_of_gdm3 = gdm3_only
        .stacks
        .iter()
        .map(|(_, priority)| *priority)
        .min()
        .unwrap();

    // Installed twice: the registration is idempotent.
    for _ in 0..2 {
        succeeds(&overlay, &rig, &format!("dpkg -i {}", deb.display()), "");
        let offered = gdm_smartcard(&overlay, &rig).unwrap();
        // Offered, below every stack of gdm3's: GDM keeps the one it had.
        assert_eq!(
            (offered.value.as_str(), offered.status.as_str()),
            (gdm3_only.value.as_str(), "auto")
        );
        let stacks = offered.stacks;
        assert_eq!(stacks.len(), gdm3_only.stacks.len() + 2, "{stacks:?}");
        for ours in [GDM_EXCLUSIVE, GDM_OR_PASSWORD] {
            let priority = stacks
                .iter()
                .find(|(path, _)| path == ours)
                .map(|(_, priority)| *priority)
                .unwrap_or_else(|| panic!("{ours} not registered: {stacks:?}"));
            assert!(priority < lowest_of_gdm3, "{ours}: {stacks:?}");
        }
    }
    // The admin's choice (docs/pam.md, "GDM").
    succeeds(
        &overlay,
        &rig,
        &format!("update-alternatives --set gdm-smartcard {GDM_EXCLUSIVE}"),
        "",
    );
    let active = succeeds(&overlay, &rig, "readlink -f /etc/pam.d/gdm-smartcard", "");
    assert_eq!(active.trim(), GDM_EXCLUSIVE);

    // The card: a virtual PIV card behind real pcscd and OpenSC, out of its
    // reader when the login starts. The overlay's /run hides the host's
    // pcscd socket; a link through this process's root reaches it.
    let pcscd = Pcscd::start_for_readers(&rig.path().join("pcscd"), &[0]).unwrap();
    let (key, cert) = rig.card_credentials("alice", CardKey::P256);
    let card = CardSpec::new(0)
        .slot("9a", key, cert)
        .pin(PIN)
        .pulled()
        .start(&pcscd)
        .unwrap();
    std::fs::create_dir_all(run_dir.join("pcscd")).unwrap();
    std::os::unix::fs::symlink(
        format!(
            "/proc/{}/root{}",
            std::process::id(),
            tessera_testrig::pcscd::PCSCD_SOCKET
        ),
        run_dir.join("pcscd/pcscd.comm"),
    )
    .unwrap();
    let config = format!(
        "version = 1\n[pkcs11]\nmodule = \"{OPENSC_PKCS11}\"\nenvironment = {{ OPENSC_CONF = \"{}\" }}\n\
         [pki]\nca = [\"{}\"]\nrevocation = \"none\"\n[[rule]]\nuser = \"{{cn}}\"\n\
         [service.gdm-smartcard]\nwait_for_card = \"30s\"\n",
        pcscd.opensc_conf().display(),
        rig.ca_dir().display()
    );
    succeeds(&overlay, &rig, "cat > /etc/tessera/tessera.toml", &config);
    // Alice's shadow entry, as a real account has: common-account's
    // pam_unix wants it, and the card-or-password stack falls back to it.
    succeeds(
        &overlay,
        &rig,
        "echo \"alice:$(openssl passwd -6 -salt tessera password):20000:0:99999:7:::\" >> /etc/shadow",
        "",
    );

    // GDM's worker: pam_start("gdm-smartcard", NULL user), then the whole
    // login, with /etc/pam.d as libpam's directory.
    let harness = artefact("tessera-pam-harness");
    // The card goes in a second after the login started, while the module
    // waits for it.
    let greet_then_insert = |card: &VirtualCard| {
        let login = overlay
            .command(harness.to_str().unwrap())
            .args(["--confdir", "/etc/pam.d", "--service", "gdm-smartcard"])
            .args(["--answer", PIN])
            .args(["--op", "authenticate", "--op", "acct_mgmt"])
            .args(["--op", "open_session", "--op", "close_session"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_secs(1));
        card.insert().unwrap();
        let output = login.wait_with_output().unwrap();
        PamRun::parse(&output.stdout, &output.stderr)
    };
    let login = greet_then_insert(&card);
    for op in ["authenticate", "acct_mgmt", "open_session", "close_session"] {
        assert_eq!(login.result(op), "PAM_SUCCESS", "{op}: {login}");
    }
    assert_eq!(login.user().as_deref(), Some("alice"), "{login}");
    let messages = login.messages();
    assert!(
        messages
            .iter()
            .any(|(_, text)| text == "Insert your smart card"),
        "the module did not wait for the card: {login}"
    );
    // Only the PIN was asked: no "login:" for a user name.
    let prompts: Vec<&(String, String)> = messages
        .iter()
        .filter(|(style, _)| style.starts_with("prompt"))
        .collect();
    assert_eq!(prompts.len(), 1, "{login}");
    assert_eq!(prompts[0].0, "prompt_echo_off", "{login}");

    // A card whose certificate maps to root: the stack's root check, after
    // the module found the user, refuses it.
    drop(card);
    let (key, cert) = rig.card_credentials("root", CardKey::P256);
    let root_card = CardSpec::new(0)
        .slot("9a", key, cert)
        .pin(PIN)
        .pulled()
        .start(&pcscd)
        .unwrap();
    let root_login = greet_then_insert(&root_card);
    assert_eq!(
        root_login.result("authenticate"),
        "PAM_AUTH_ERR",
        "{root_login}"
    );
    // pam_tessera mapped the card to root; pam_succeed_if refused it.
    assert_eq!(root_login.user().as_deref(), Some("root"), "{root_login}");

    // The card-or-password stack, no card before the wait ends: common-auth
    // asks for the name and the password.
    drop(root_card);
    succeeds(
        &overlay,
        &rig,
        &format!("update-alternatives --set gdm-smartcard {GDM_OR_PASSWORD}"),
        "",
    );
    let short_wait = config.replace("wait_for_card = \"30s\"", "wait_for_card = \"1s\"");
    succeeds(
        &overlay,
        &rig,
        "cat > /etc/tessera/tessera.toml",
        &short_wait,
    );
    let output = overlay
        .command(harness.to_str().unwrap())
        .args(["--confdir", "/etc/pam.d", "--service", "gdm-smartcard"])
        .args(["--answer", "alice", "--answer", "password"])
        .output()
        .unwrap();
    let password_login = PamRun::parse(&output.stdout, &output.stderr);
    assert_eq!(
        password_login.result("authenticate"),
        "PAM_SUCCESS",
        "{password_login}"
    );
    assert_eq!(password_login.user().as_deref(), Some("alice"));
    let prompts: Vec<String> = password_login
        .messages()
        .into_iter()
        .filter(|(style, _)| style.starts_with("prompt"))
        .map(|(style, _)| style)
        .collect();
    assert_eq!(
        prompts,
        ["prompt_echo_on", "prompt_echo_off"],
        "{password_login}"
    );

    // gdm3 removed after tessera: its file trigger takes tessera's stacks
    // out with gdm3's, and gdm3 back brings them back.
    let trigger = "dpkg-trigger --no-await /usr/sbin/gdm3 && dpkg --triggers-only --pending";
    succeeds(&overlay, &rig, &format!("{remove_gdm3} && {trigger}"), "");
    assert_eq!(gdm_smartcard(&overlay, &rig), None);
    succeeds(&overlay, &rig, &format!("{install_gdm3} && {trigger}"), "");
    let stacks = gdm_smartcard(&overlay, &rig).unwrap().stacks;
    assert_eq!(stacks.len(), gdm3_only.stacks.len() + 2, "{stacks:?}");

    // Purged: gdm3's alternatives as gdm3 made them, its choice back.
    succeeds(&overlay, &rig, "dpkg --purge tessera", "");
    assert_eq!(gdm_smartcard(&overlay, &rig), Some(gdm3_only));
    succeeds(
        &overlay,
        &rig,
        &format!("test ! -e {GDM_EXCLUSIVE} && test ! -e {GDM_OR_PASSWORD}"),
        "",
    );

    assert_eq!(real_system(), before, "the real system changed");
}

/// `systemd-analyze security` of the unit as shipped, loaded by systemd in
/// the namespace: what stays exposed is exactly what docs/eventd.md
/// ("Exposure") explains eventd needs.
#[test]
fn the_eventd_unit_exposes_only_what_eventd_needs() {
    in_namespace(|| {
        std::fs::copy(
            tessera_testrig::eventd::etc_dir().join("systemd/tessera-eventd.service"),
            "/etc/systemd/system/tessera-eventd.service",
        )
        .unwrap();
        tessera_testrig::run(Command::new("systemctl").arg("daemon-reload"));
        let output = tessera_testrig::run(Command::new("systemd-analyze").args([
            "security",
            "--no-pager",
            "tessera-eventd.service",
        ]));
        let report = String::from_utf8_lossy(&output.stdout);
        // For docs/eventd.md ("Exposure"), with --nocapture.
        eprintln!("{report}");
        let exposed: std::collections::BTreeSet<&str> = report
            .lines()
            .filter_map(|line| line.strip_prefix("✗ "))
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        assert_eq!(
            exposed,
            [
                "DeviceAllow=",
                "PrivateUsers=",
                "RestrictAddressFamilies=~AF_UNIX",
                "RootDirectory=/RootImage=",
                "User=/DynamicUser=",
            ]
            .into(),
            "{report}"
        );
        assert!(
            report.contains("Overall exposure level for tessera-eventd.service: 0.7 SAFE"),
            "{report}"
        );
    });
}
