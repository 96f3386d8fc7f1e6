//! The shipped pam-auth-update profiles, rendered into common-auth by the
//! real pam-auth-update and run by the real `su`, in a private mount
//! namespace (overlays over /etc, the PAM module directory and
//! /usr/share/pam-configs): card present, absent and disabled for the
//! service. A probe profile after pam_tessera (pam_env, whose setcred sets
//! a variable su passes on) shows whether later modules get their setcred.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use tessera_testrig::bins::pam_module;
use tessera_testrig::login::{LoginRig, PIN};
use tessera_testrig::softhsm::KeyType;
use tessera_testrig::system::Overlay;
use tessera_testrig::{describe, output_with_stdin};

const PASSWORD: &str = "correct horse";

/// A Primary module of lower priority than pam_tessera (320) and higher
/// than pam_unix (256): its setcred sets TESSERA_PROBE.
const PROBE_PROFILE: &str = "Name: setcred probe\nDefault: no\nPriority: 300\nAuth-Type: Primary\nAuth:\n\t[success=end default=ignore]\tpam_env.so conffile=/etc/tessera-probe.conf readenv=0 user_readenv=0\n";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Card {
    Present,
    Absent,
    Disabled,
}

fn install(source: &Path, destination: &Path, mode: u32) {
    std::fs::create_dir_all(destination.parent().unwrap()).unwrap();
    std::fs::copy(source, destination).unwrap();
    std::fs::set_permissions(destination, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Enables `profile` (and the probe) with pam-auth-update, then runs
/// `su alice` as root through common-auth, answering with `input`.
fn su_with_profile(profile: &str, card: Card, input: &str) -> Output {
    let mut rig = LoginRig::new();
    if card == Card::Absent {
        rig.add_user("alice");
    } else {
        rig.enroll("alice", KeyType::P256);
    }
    let uid = rig.uid_of("alice");
    let mut overlay = Overlay::new(&rig.path().join(format!("overlay-{profile}")));
    let etc = overlay.overlay_dir("/etc");
    let security = overlay.overlay_dir("/usr/lib/x86_64-linux-gnu/security");
    let profiles = overlay.overlay_dir("/usr/share/pam-configs");
    // pam-auth-update records its choices in debconf and /var/lib/pam:
    // private copies keep the host's as they were and parallel tests out
    // of each other's lock and temporary files.
    overlay.overlay_dir("/var/cache/debconf");
    overlay.overlay_dir("/var/lib/pam");
    install(&pam_module(), &security.join("pam_tessera.so"), 0o644);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../etc/pam-configs")
        .join(profile);
    install(&shipped, &profiles.join(profile), 0o644);
    write(&profiles.join("tessera-probe"), PROBE_PROFILE, 0o644);
    write(
        &etc.join("tessera-probe.conf"),
        "TESSERA_PROBE DEFAULT=setcred\n",
        0o644,
    );
    install(
        &rig.ca_dir().join("root.pem"),
        &etc.join("tessera/ca/root.pem"),
        0o644,
    );
    let mut config = rig
        .default_config()
        .replace(&rig.ca_dir().display().to_string(), "/etc/tessera/ca");
    if card == Card::Disabled {
        config = config.replace("[pki]", "[service.su]\ncard = \"disabled\"\n[pki]");
    }
    write(&etc.join("tessera/tessera.toml"), &config, 0o644);
    // alice, with a password for pam_unix.
    let hash = Command::new("openssl")
        .args(["passwd", "-6", PASSWORD])
        .output()
        .unwrap();
    let hash = String::from_utf8(hash.stdout).unwrap();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap()
        + &format!("alice:x:{uid}:{uid}:alice:/tmp:/bin/sh\n");
    let group = std::fs::read_to_string("/etc/group").unwrap() + &format!("alice:x:{uid}:\n");
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap()
        + &format!("alice:{}:19000:0:99999:7:::\n", hash.trim());
    write(&etc.join("passwd"), &passwd, 0o644);
    write(&etc.join("group"), &group, 0o644);
    write(&etc.join("shadow"), &shadow, 0o640);
    // su without pam_rootok, so root authenticates too.
    write(
        &etc.join("pam.d/su"),
        "@include common-auth\n@include common-account\nsession required pam_permit.so\n",
        0o644,
    );

    let (key, value) = rig.hsm.env();
    let script = format!(
        "pam-auth-update --package --enable {profile} tessera-probe >/dev/null && cat /etc/pam.d/common-auth >&2 && exec su alice -c 'id -u; echo \"probe=$TESSERA_PROBE\"'"
    );
    let output = output_with_stdin(
        overlay
            .command("sh")
            .args(["-c", &script])
            .env(key, value)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        input,
    );
    assert!(
        !Path::new("/usr/lib/x86_64-linux-gnu/security/pam_tessera.so").exists(),
        "the overlay must not leak into the real system"
    );
    output
}

fn logged_in(output: &Output, probe: bool) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", describe(output));
    assert!(stdout.contains("2000"), "{}", describe(output));
    assert_eq!(
        stdout.contains("probe=setcred"),
        probe,
        "later modules' setcred: {}",
        describe(output)
    );
}

#[test]
fn card_or_password_profile_with_the_card_present() {
    let output = su_with_profile("tessera", Card::Present, &format!("{PIN}\n"));
    // pam_tessera authenticated: setcred ends with it, as authentication did.
    logged_in(&output, false);
    assert!(String::from_utf8_lossy(&output.stderr).contains("PIN for alice-token"));
}

#[test]
fn card_or_password_profile_without_a_card_falls_back_to_the_password() {
    let output = su_with_profile("tessera", Card::Absent, &format!("{PASSWORD}\n"));
    // pam_tessera did not authenticate: later modules get their setcred.
    logged_in(&output, true);
}

#[test]
fn card_or_password_profile_with_the_card_disabled_uses_the_password() {
    let output = su_with_profile("tessera", Card::Disabled, &format!("{PASSWORD}\n"));
    logged_in(&output, true);
    assert!(!String::from_utf8_lossy(&output.stderr).contains("PIN for"));
}

#[test]
fn card_required_profile_with_the_card_present() {
    let output = su_with_profile("tessera-required", Card::Present, &format!("{PIN}\n"));
    logged_in(&output, false);
}

#[test]
fn card_required_profile_without_a_card_refuses_the_password() {
    let output = su_with_profile("tessera-required", Card::Absent, &format!("{PASSWORD}\n"));
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(!String::from_utf8_lossy(&output.stdout).contains("2000"));
}

#[test]
fn card_required_profile_keeps_the_card_required_when_the_config_disables_it() {
    // card=required in the profile wins over the service's "disabled".
    let output = su_with_profile("tessera-required", Card::Disabled, &format!("{PASSWORD}\n"));
    assert!(!output.status.success(), "{}", describe(&output));
    let output = su_with_profile("tessera-required", Card::Disabled, &format!("{PIN}\n"));
    logged_in(&output, false);
}
