//! Real PAM clients — pamtester, su and sudo — with pam_tessera.so and
//! SoftHSM2 tokens. Each runs in a private mount namespace where the test's
//! PAM stacks, users and sudoers are bind-mounted over the system's, so the
//! machine's own files are never changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Output;

use tessera_testrig::bins::pam_module;
use tessera_testrig::login::{LoginRig, PIN};
use tessera_testrig::softhsm::KeyType;
use tessera_testrig::system::Overlay;
use tessera_testrig::{describe, output_with_stdin};

const PAM_MATRIX: &str = "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so";
const PASSWORD: &str = "correct horse";

/// "card or password": a missing card falls through to a password module
/// (pam_wrapper's pam_matrix, with its own password file).
fn card_or_password(rig: &LoginRig, card: &str) -> String {
    let passdb = rig.path().join("passdb");
    std::fs::write(
        &passdb,
        format!("alice:{PASSWORD}:su\nalice:{PASSWORD}:sudo\n"),
    )
    .unwrap();
    format!(
        "auth [success=done authinfo_unavail=ignore default=die] {} config={} log=stderr card={card}\n\
         auth required {PAM_MATRIX} passdb={}\n\
         account required pam_permit.so\nsession required pam_permit.so\n",
        pam_module().display(),
        rig.config_path().display(),
        passdb.display()
    )
}

/// `su alice -c 'id -u'` as root, through the card-or-password stack with
/// `card=` set to `card`.
fn su(rig: &LoginRig, card: &str, input: &str) -> Output {
    let mut overlay = Overlay::new(&rig.path().join("overlay-su"));
    overlay
        .users(&[("alice", 20001)])
        .pam_service("su", &card_or_password(rig, card));
    // No SOFTHSM2_CONF here: the helper gets its environment from the
    // config's `[pkcs11] environment` only, never from su's caller.
    output_with_stdin(
        overlay
            .command("su")
            .args(["alice", "-c", "id -u"])
            .env_remove("SOFTHSM2_CONF"),
        input,
    )
}

/// `sudo -S -k id -u` as alice, through the card-or-password stack with
/// `card=` set to `card`.
fn sudo(rig: &LoginRig, card: &str, input: &str) -> Output {
    let mut overlay = Overlay::new(&rig.path().join("overlay-sudo"));
    // sudo passes no SOFTHSM2_CONF on, and need not: the helper finds the
    // test's SoftHSM through the config's `[pkcs11] environment`.
    overlay
        .users(&[("alice", 20001)])
        .pam_service("sudo", &card_or_password(rig, card))
        .file(
            "/etc/sudoers",
            "Defaults !lecture, passwd_tries=1\nroot ALL=(ALL:ALL) ALL\nalice ALL=(root) /usr/bin/id\n",
            0o440,
        );
    output_with_stdin(
        overlay
            .command("setpriv")
            .args(["--reuid=20001", "--regid=20001", "--clear-groups"])
            .args(["sudo", "-S", "-k", "/usr/bin/id", "-u"]),
        input,
    )
}

/// The client ran its command, which printed `expected`.
fn assert_ran(output: &Output, expected: &str) {
    assert!(output.status.success(), "{}", describe(output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        expected,
        "{}",
        describe(output)
    );
}

/// The client refused: it failed and its command never ran.
fn assert_refused(output: &Output) {
    assert!(!output.status.success(), "{}", describe(output));
    assert!(
        String::from_utf8_lossy(&output.stdout).trim().is_empty(),
        "{}",
        describe(output)
    );
}

fn rig_with_alice() -> LoginRig {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    rig
}

#[test]
fn pamtester_authenticates_with_the_card_and_refuses_a_wrong_pin() {
    let rig = rig_with_alice();
    let mut overlay = Overlay::new(&rig.path().join("overlay-pamtester"));
    overlay.users(&[("alice", 20001)]).pam_service(
        "tessera-pamtester",
        &format!(
            "auth required {} config={} log=stderr\naccount required pam_permit.so\n",
            pam_module().display(),
            rig.config_path().display()
        ),
    );
    let run = |pin: &str| {
        output_with_stdin(
            overlay
                .command("pamtester")
                .args(["tessera-pamtester", "alice", "authenticate"])
                .env_remove("SOFTHSM2_CONF"),
            &format!("{pin}\n"),
        )
    };
    let good = run(PIN);
    assert!(good.status.success(), "{}", describe(&good));
    assert!(
        String::from_utf8_lossy(&good.stdout).contains("successfully authenticated"),
        "{}",
        describe(&good)
    );
    let bad = run("000000");
    assert!(!bad.status.success(), "{}", describe(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Authentication failure"),
        "{}",
        describe(&bad)
    );
}

#[test]
fn su_logs_in_with_the_card() {
    let rig = rig_with_alice();
    let output = su(&rig, "optional", &format!("{PIN}\n"));
    assert_ran(&output, "20001");
}

#[test]
fn su_with_a_wrong_pin_fails_without_falling_back_to_the_password() {
    let rig = rig_with_alice();
    let output = su(&rig, "optional", &format!("000000\n{PASSWORD}\n"));
    assert_refused(&output);
}

#[test]
fn su_without_a_card_falls_back_to_the_password_when_allowed() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let output = su(&rig, "optional", &format!("{PASSWORD}\n"));
    assert_ran(&output, "20001");
}

#[test]
fn su_without_a_card_fails_when_the_card_is_required() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let output = su(&rig, "required", &format!("{PASSWORD}\n"));
    assert_refused(&output);
}

#[test]
fn sudo_runs_the_command_after_the_card_pin() {
    let rig = rig_with_alice();
    let output = sudo(&rig, "optional", &format!("{PIN}\n"));
    assert_ran(&output, "0");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("PIN for alice-token: "),
        "{}",
        describe(&output)
    );
}

#[test]
fn sudo_refuses_a_wrong_pin() {
    let rig = rig_with_alice();
    let output = sudo(&rig, "optional", &format!("000000\n{PASSWORD}\n"));
    assert_refused(&output);
}

#[test]
fn sudo_falls_back_to_the_password_without_a_card_only_when_allowed() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let allowed = sudo(&rig, "optional", &format!("{PASSWORD}\n"));
    assert_ran(&allowed, "0");
    let required = sudo(&rig, "required", &format!("{PASSWORD}\n"));
    assert_refused(&required);
}

#[test]
fn sudo_with_someone_elses_card_says_so_and_falls_back() {
    let mut rig = LoginRig::new();
    rig.enroll("bob", KeyType::P256);
    rig.add_user("alice");
    let output = sudo(&rig, "optional", &format!("{PASSWORD}\n"));
    assert_ran(&output, "0");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("The smart card does not belong to alice"),
        "{}",
        describe(&output)
    );
}

/// Copies `source` to `destination`, creating parent directories.
fn install(source: &std::path::Path, destination: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(destination.parent().unwrap()).unwrap();
    std::fs::copy(source, destination).unwrap();
    std::fs::set_permissions(destination, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_pam_auth_update_profile_enables_card_or_password_in_common_auth() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let mut overlay = Overlay::new(&rig.path().join("overlay-profile"));
    let etc = overlay.overlay_dir("/etc");
    let security = overlay.overlay_dir("/usr/lib/x86_64-linux-gnu/security");
    let profiles = overlay.overlay_dir("/usr/share/pam-configs");
    // pam-auth-update records its choices in debconf and /var/lib/pam:
    // private copies keep the host's as they were and parallel tests out
    // of each other's lock and temporary files.
    overlay.overlay_dir("/var/cache/debconf");
    overlay.overlay_dir("/var/lib/pam");
    install(&pam_module(), &security.join("pam_tessera.so"), 0o644);
    let profile =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/pam-configs/tessera");
    install(&profile, &profiles.join("tessera"), 0o644);
    install(
        &rig.ca_dir().join("root.pem"),
        &etc.join("tessera/ca/root.pem"),
        0o644,
    );
    let config = rig
        .default_config()
        .replace(&rig.ca_dir().display().to_string(), "/etc/tessera/ca");
    std::fs::write(etc.join("tessera/tessera.toml"), config).unwrap();
    std::fs::create_dir_all(etc.join("pam.d")).unwrap();
    std::fs::write(
        etc.join("pam.d/tessera-profile-check"),
        "@include common-auth\n@include common-account\n",
    )
    .unwrap();

    let (key, value) = rig.hsm.env();
    let script = "pam-auth-update --package --enable tessera && cat /etc/pam.d/common-auth && pamtester tessera-profile-check alice authenticate";
    let output = output_with_stdin(
        overlay
            .command("sh")
            .args(["-c", script])
            .env(key, value)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LD_PRELOAD", "libnss_wrapper.so")
            .env("NSS_WRAPPER_PASSWD", rig.path().join("passwd"))
            .env("NSS_WRAPPER_GROUP", rig.path().join("group")),
        &format!("{PIN}\n"),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        stdout.contains("authinfo_unavail=ignore ignore=ignore default=die]\tpam_tessera.so"),
        "{stdout}"
    );
    assert!(stdout.contains("successfully authenticated"), "{stdout}");
    assert!(
        !std::path::Path::new("/usr/lib/x86_64-linux-gnu/security/pam_tessera.so").exists(),
        "the overlay must not leak into the real system"
    );
}
