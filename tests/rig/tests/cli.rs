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

/// `tessera login EXTRA... --user alice --repeat N`, one PIN per run on
/// standard input.
fn login_with_pins(
    command: &mut Command,
    rig: &LoginRig,
    extra: &[&str],
    pins: &[&str],
) -> std::process::Output {
    let mut child = command
        .arg("login")
        .args(extra)
        .args(["--user", "alice", "--repeat"])
        .arg(pins.len().to_string())
        .arg("--config")
        .arg(rig.config_path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    for pin in pins {
        writeln!(stdin, "{pin}").unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn login_runs_the_flow_without_pam_and_prints_each_step() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let run_all = |pins: &[&str]| login_with_pins(&mut tessera(&rig), &rig, &[], pins);
    let run = |pin: &str| run_all(&[pin]);
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

    // --repeat: one run per PIN, each with its own timeline from the config
    // on; success only if every run succeeded.
    let twice = run_all(&[PIN, PIN]);
    let stderr = String::from_utf8_lossy(&twice.stderr);
    assert!(twice.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("login OK: user alice").count(),
        2,
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("configuration loaded").count(),
        2,
        "{stderr}"
    );
    let mixed = run_all(&[PIN, "000000"]);
    let stderr = String::from_utf8_lossy(&mixed.stderr);
    assert_eq!(mixed.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("login OK: user alice").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("login FAILED (WrongPin)"), "{stderr}");
}

#[test]
fn login_with_helper_runs_the_flow_in_tessera_auth_with_only_the_configured_environment() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let run = |pins: &[&str]| {
        let mut command = tessera(&rig);
        // The CLI's own environment names no usable token: only the helper,
        // which gets the config's [pkcs11] environment, can log in.
        command.env("SOFTHSM2_CONF", "/nonexistent/softhsm2.conf");
        login_with_pins(&mut command, &rig, &["--helper"], pins)
    };
    let good = run(&[PIN, PIN]);
    let stderr = String::from_utf8_lossy(&good.stderr);
    assert!(good.status.success(), "{stderr}");
    assert_eq!(
        stderr
            .matches("login OK: user alice with token alice-token")
            .count(),
        2,
        "{stderr}"
    );
    assert!(stderr.contains("in the helper"), "{stderr}");
    assert!(stderr.contains("challenge signature verified"), "{stderr}");
    assert!(!stderr.contains(PIN), "{stderr}");
    let bad = run(&["000000"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("login FAILED (WrongPin)"), "{stderr}");
}

fn run_tessera(rig: &LoginRig, args: &[&std::ffi::OsStr]) -> std::process::Output {
    tessera(rig).args(args).output().unwrap()
}

#[test]
fn setup_writes_a_usable_config_refuses_to_overwrite_it_and_tells_a_bad_one_apart() {
    use std::os::unix::fs::PermissionsExt;
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let output = rig.path().join("etc/tessera.toml");
    let ca = rig.ca_dir().join("root.pem");
    let setup = |module: &str, force: bool| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "setup".as_ref(),
            "--ca".as_ref(),
            ca.as_os_str(),
            "--rule".as_ref(),
            "{cn}".as_ref(),
            "--module".as_ref(),
            module.as_ref(),
            "--revocation".as_ref(),
            "none".as_ref(),
            "--output".as_ref(),
            output.as_os_str(),
        ];
        if force {
            args.push("--force".as_ref());
        }
        run_tessera(&rig, &args)
    };

    let first = setup("/usr/lib/softhsm/libsofthsm2.so", false);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("1 token(s) present"), "{stdout}");
    assert!(
        stdout.contains("pam-auth-update --enable tessera"),
        "{stdout}"
    );
    let mode = std::fs::metadata(&output).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644);
    assert_eq!(
        std::fs::read(rig.path().join("etc/ca/root.pem")).unwrap(),
        std::fs::read(&ca).unwrap()
    );
    let written = std::fs::read_to_string(&output).unwrap();

    // Without --force an existing config stays as it was.
    let again = setup("/nonexistent/module.so", false);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&output).unwrap(), written);

    // Written, but the module cannot be loaded: exit status 3.
    let broken = setup("/nonexistent/module.so", true);
    assert_eq!(
        broken.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&broken.stderr)
    );
    assert!(std::fs::read_to_string(&output)
        .unwrap()
        .contains("/nonexistent/module.so"));
}

#[test]
fn check_config_json_reports_success_and_failure() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let config = rig.config_path();
    let good = run_tessera(
        &rig,
        &[
            "check-config".as_ref(),
            "--json".as_ref(),
            config.as_os_str(),
        ],
    );
    assert!(good.status.success());
    let report: serde_json::Value = serde_json::from_slice(&good.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert!(report["checks"].as_array().unwrap().len() >= 4, "{report}");

    rig.write_config("version = 1\n[pki]\nca = []\nbogus = 1\n");
    let bad = run_tessera(
        &rig,
        &[
            "check-config".as_ref(),
            "--json".as_ref(),
            config.as_os_str(),
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert!(
        report["error"].as_str().unwrap().contains("bogus"),
        "{report}"
    );
}

const INSECURE_LDAP: &str = "allow_cleartext_i_understand_anyone_on_the_network_can_map_users";

#[test]
fn check_config_refuses_cleartext_ldap_naming_file_line_column_and_why() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let base = rig.default_config();
    let ldap = "[ldap]\nuri = [\"ldap://dc1.example.test\"]\nbase = \"dc=example,dc=test\"\nbind_dn = \"cn=reader,dc=example,dc=test\"\nbind_password_file = \"/etc/tessera/ldap-password\"\n";
    rig.write_config(&format!("{base}{ldap}"));
    let check = || {
        tessera(&rig)
            .arg("check-config")
            .arg(rig.config_path())
            .output()
            .unwrap()
    };
    let output = check();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("OK"), "{stdout}");
    let expected = format!(
        "tessera check-config: {}:{}:1: ldap.uri \"ldap://dc1.example.test\" is cleartext (not ldaps://, and starttls is off): anyone on the network path can read the bind password of cn=reader,dc=example,dc=test",
        rig.config_path().display(),
        base.lines().count() + 1
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        stderr.contains(&format!("{INSECURE_LDAP} = true")),
        "{stderr}"
    );

    // Said in so many words, it is accepted.
    rig.write_config(&format!("{base}{ldap}{INSECURE_LDAP} = true\n"));
    let output = check();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn migrate_sssd_writes_tls_settings_that_check_config_accepts() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let ca = rig.ca_dir().join("root.pem");
    // AD: SSSD talked to the DCs on ldap:// with GSSAPI sealing.
    let sssd = format!(
        "[sssd]\ndomains = example.com\n[pam]\npam_cert_auth = True\npam_cert_db_path = {ca}\n[domain/example.com]\nid_provider = ad\nad_server = dc1.example.com\nldap_tls_cacert = {ca}\n[certmap/example.com/upn]\nmaprule = (userPrincipalName={{subject_principal}})\n",
        ca = ca.display()
    );
    let file = rig.path().join("sssd.conf");
    std::fs::write(&file, sssd).unwrap();
    let output = tessera(&rig)
        .args(["migrate".as_ref(), "sssd".as_ref(), file.as_os_str()])
        .output()
        .unwrap();
    let toml = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{toml}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        toml.contains("uri = [\"ldap://dc1.example.com\"]"),
        "{toml}"
    );
    assert!(toml.contains("\nstarttls = true\n"), "{toml}");
    assert!(
        toml.contains(&format!("\ntls_ca = \"{}\"\n", ca.display())),
        "{toml}"
    );
    assert!(!toml.contains(INSECURE_LDAP), "{toml}");

    // As written, with the rig's token module, tessera takes it.
    let module = format!("module = \"{}\"", tessera_testrig::softhsm::SOFTHSM_MODULE);
    rig.write_config(&toml.replace("# module: p11-kit's proxy (the default)", &module));
    let output = tessera(&rig)
        .arg("check-config")
        .arg(rig.config_path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
