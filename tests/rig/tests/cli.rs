//! The `tessera` command-line tool against a real rig.

use std::process::Command;

use tessera_testrig::bins::artefact;
use tessera_testrig::login::LoginRig;
use tessera_testrig::softhsm::KeyType;

#[test]
fn check_config_accepts_a_working_setup() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let (key, value) = rig.hsm.env();
    let output = Command::new(artefact("tessera"))
        .arg("check-config")
        .arg(rig.config_path())
        .env(key, value)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("trust anchors: 1 CA certificate(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("1 token(s) present"), "{stdout}");
    assert!(
        stdout.contains("rule \"rule 1\": user = \"{cn}\""),
        "{stdout}"
    );
}

#[test]
fn check_config_names_file_line_and_column_of_an_error() {
    let rig = LoginRig::new();
    rig.write_config(
        &rig.default_config()
            .replace("version = 1", "version = 1\nfoo = 2"),
    );
    let output = Command::new(artefact("tessera"))
        .arg("check-config")
        .arg(rig.config_path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("{}:2:1: unknown field `foo`", rig.config_path().display());
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn eventd_and_cli_report_their_version() {
    for binary in ["tessera", "tessera-eventd"] {
        let output = Command::new(artefact(binary))
            .arg("--version")
            .output()
            .unwrap();
        assert!(output.status.success());
        assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));
    }
}
