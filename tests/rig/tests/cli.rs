//! The `tessera` command-line tool against a real rig.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use tessera_testrig::bins::artefact;
use tessera_testrig::login::{LoginRig, PIN};
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
        stdout.contains("revocation: not checked (pki.revocation = \"none\")"),
        "{stdout}"
    );
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

fn tessera(rig: &LoginRig) -> Command {
    let mut command = Command::new(artefact("tessera"));
    let (key, value) = rig.hsm.env();
    command
        .env(key, value)
        .env("LD_PRELOAD", "libnss_wrapper.so")
        .env("NSS_WRAPPER_PASSWD", rig.path().join("passwd"))
        .env("NSS_WRAPPER_GROUP", rig.path().join("group"));
    command
}

#[test]
fn inspect_shows_tokens_certificates_verdicts_and_mapping_as_json() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let mut expired = tessera_testrig::pki::UserCert::valid("bob");
    expired.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(3);
    expired.not_before = expired.not_after - time::Duration::days(30);
    rig.enroll_with("bob-token", KeyType::P256, &expired, &rig.ca);
    let output = tessera(&rig)
        .args(["inspect", "--json", "--config"])
        .arg(rig.config_path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let tokens = report["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{report:#}");
    let alice = tokens.iter().find(|t| t["label"] == "alice-token").unwrap();
    assert_eq!(alice["pin"], "ok");
    let certificate = &alice["certificates"][0];
    assert_eq!(certificate["verdict"], "valid");
    assert_eq!(certificate["users"][0], "alice");
    assert_eq!(certificate["rule"], "rule 1");
    assert_eq!(certificate["upns"][0], "alice@EXAMPLE.TEST");
    assert!(certificate["extended_key_usage"]
        .as_array()
        .unwrap()
        .iter()
        .any(|eku| eku == "smartcardLogon"));
    let bob = tokens.iter().find(|t| t["label"] == "bob-token").unwrap();
    assert!(
        bob["certificates"][0]["verdict"]
            .as_str()
            .unwrap()
            .starts_with("rejected: certificate expired on"),
        "{bob:#}"
    );

    let filtered = tessera(&rig)
        .args(["inspect", "--token", "pkcs11:token=bob-token", "--config"])
        .arg(rig.config_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&filtered.stdout);
    assert!(text.contains("token \"bob-token\""), "{text}");
    assert!(!text.contains("alice-token"), "{text}");
}

#[test]
fn login_runs_the_flow_without_pam_and_prints_each_step() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let run = |pin: &str| {
        let mut child = tessera(&rig)
            .args(["login", "--user", "alice", "--config"])
            .arg(rig.config_path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{pin}").unwrap();
        child.wait_with_output().unwrap()
    };
    let good = run(PIN);
    let stderr = String::from_utf8_lossy(&good.stderr);
    assert!(good.status.success(), "{stderr}");
    for step in [
        "trust anchors loaded",
        "PKCS#11 module loaded",
        "certificate valid",
        "logged in to the token",
        "token signed the challenge",
        "challenge signature verified",
        "login OK: user alice",
    ] {
        assert!(stderr.contains(step), "missing {step:?} in:\n{stderr}");
    }
    assert!(!stderr.contains(PIN), "{stderr}");
    let bad = run("000000");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("login FAILED (WrongPin)"));
}
