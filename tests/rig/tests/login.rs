//! End-to-end logins through real libpam, `pam_tessera.so` and SoftHSM2 tokens.

use tessera_testrig::login::{LoginRig, PIN};
use tessera_testrig::pki::{self, TestCa, UserCert};
use tessera_testrig::softhsm::KeyType;
use time::{Duration, OffsetDateTime};

fn logs_in(key_type: KeyType) {
    let mut rig = LoginRig::new();
    rig.enroll("alice", key_type);
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert_eq!(run.user().as_deref(), Some("alice"));
    assert!(
        run.messages()
            .iter()
            .any(|(style, text)| style == "prompt_echo_off" && text == "PIN for alice-token: "),
        "{run}"
    );
    assert!(
        !run.log.contains(PIN),
        "the PIN leaked into the log:\n{}",
        run.log
    );
}

#[test]
fn rsa_2048_user_logs_in() {
    logs_in(KeyType::Rsa2048);
}

#[test]
fn rsa_4096_user_logs_in_with_a_512_byte_signature() {
    logs_in(KeyType::Rsa4096);
}

#[test]
fn p256_user_logs_in() {
    logs_in(KeyType::P256);
}

#[test]
fn p384_user_logs_in() {
    logs_in(KeyType::P384);
}

#[test]
fn ed25519_user_logs_in() {
    logs_in(KeyType::Ed25519);
}

#[test]
fn wrong_pin_is_auth_err() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let run = rig.authenticate(Some("alice"), &["999999"]);
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");
    assert!(
        run.messages()
            .iter()
            .any(|(_, text)| text == "Incorrect PIN"),
        "{run}"
    );
}

#[test]
fn empty_pin_is_auth_err_without_a_login_attempt() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let run = rig.authenticate(Some("alice"), &[""]);
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");
    assert!(run.logged("auth.login.failed", "empty PIN"), "{run}");
}

#[test]
fn attacker_token_with_victims_certificate_and_another_key_is_auth_err() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    // The victim's key lives on the victim's own card, elsewhere.
    let victims_card = LoginRig::new();
    victims_card.hsm.init_token("alice-token", PIN);
    let victim_spki = victims_card
        .hsm
        .generate_key("alice-token", PIN, "01", KeyType::P256);
    let victim_certificate = rig.ca.issue(&UserCert::valid("alice"), &victim_spki);
    // The attacker's token: the victim's valid certificate next to the
    // attacker's own key under the same CKA_ID, and the attacker's PIN.
    rig.hsm.init_token("attacker", PIN);
    rig.hsm.generate_key("attacker", PIN, "01", KeyType::P256);
    rig.hsm
        .write_object("attacker", PIN, "01", "cert", &victim_certificate);

    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");
    assert!(
        run.logged(
            "auth.login.failed",
            "signature does not match the certificate"
        ),
        "{run}"
    );
}

#[test]
fn self_signed_certificate_with_the_victims_cn_is_rejected() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let (certificate, key) = pki::self_signed(&UserCert::valid("alice"));
    rig.hsm.init_token("attacker", PIN);
    rig.hsm.write_object("attacker", PIN, "01", "privkey", &key);
    rig.hsm
        .write_object("attacker", PIN, "01", "cert", &certificate);
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");
    assert!(
        run.logged("auth.certificate.rejected", "issuer not trusted"),
        "{run}"
    );
    assert!(
        !run.messages()
            .iter()
            .any(|(style, _)| style == "prompt_echo_off"),
        "the PIN must not be asked for a rejected certificate: {run}"
    );
}

#[test]
fn expired_certificate_is_rejected_with_its_date() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let mut spec = UserCert::valid("alice");
    let now = OffsetDateTime::now_utc();
    spec.not_before = now - Duration::days(400);
    spec.not_after = now - Duration::days(35);
    rig.enroll_with("alice-token", KeyType::P256, &spec, &rig.ca);
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");
    let expected = format!("certificate expired on {}", spec.not_after.date());
    assert!(
        run.messages()
            .iter()
            .any(|(style, text)| style == "error" && text.contains(&expected)),
        "{run}"
    );
}

#[test]
fn not_yet_valid_certificate_is_rejected() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let mut spec = UserCert::valid("alice");
    spec.not_before = OffsetDateTime::now_utc() + Duration::days(2);
    rig.enroll_with("alice-token", KeyType::P256, &spec, &rig.ca);
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");
    assert!(
        run.logged("auth.certificate.rejected", "not valid before"),
        "{run}"
    );
}

#[test]
fn certificate_from_an_untrusted_ca_is_rejected() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let rogue = TestCa::new("Tessera Test Root CA");
    rig.enroll_with(
        "alice-token",
        KeyType::P256,
        &UserCert::valid("alice"),
        &rogue,
    );
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");
    assert!(
        run.logged("auth.certificate.rejected", "issuer not trusted"),
        "{run}"
    );
}

#[test]
fn email_protection_only_certificate_is_rejected() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let mut spec = UserCert::valid("alice");
    spec.eku = vec![rcgen::ExtendedKeyUsagePurpose::EmailProtection];
    rig.enroll_with("alice-token", KeyType::P256, &spec, &rig.ca);
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");
    assert!(
        run.logged("auth.certificate.rejected", "extended key usage"),
        "{run}"
    );
}

#[test]
fn key_usage_without_digital_signature_is_rejected() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let mut spec = UserCert::valid("alice");
    spec.key_usage = vec![rcgen::KeyUsagePurpose::KeyEncipherment];
    rig.enroll_with("alice-token", KeyType::Rsa2048, &spec, &rig.ca);
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");
    assert!(
        run.logged(
            "auth.certificate.rejected",
            "does not allow digital signatures"
        ),
        "{run}"
    );
}

#[test]
fn no_token_is_authinfo_unavail() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTHINFO_UNAVAIL", "{run}");
    assert!(
        run.messages().is_empty(),
        "nothing to ask without a token: {run}"
    );
}

#[test]
fn another_users_card_is_authinfo_unavail_so_the_stack_can_fall_back() {
    let mut rig = LoginRig::new();
    rig.enroll("bob", KeyType::P256);
    rig.add_user("alice");
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTHINFO_UNAVAIL", "{run}");
}

#[test]
fn without_a_user_name_the_user_is_found_from_the_certificate() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let run = rig.authenticate(None, &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert_eq!(run.user().as_deref(), Some("alice"));
    assert!(
        run.messages()
            .iter()
            .any(|(_, text)| text == "Logging in as alice"),
        "{run}"
    );
}

#[test]
fn certificate_mapping_to_an_unknown_user_does_not_log_in() {
    let rig = LoginRig::new();
    rig.enroll_with(
        "ghost-token",
        KeyType::P256,
        &UserCert::valid("ghost"),
        &rig.ca,
    );
    let run = rig.authenticate(None, &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTHINFO_UNAVAIL", "{run}");
    assert_eq!(run.user(), None);
}

#[test]
fn unknown_config_key_is_service_err_naming_key_and_line() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let config = rig
        .default_config()
        .replace("[pki]\n", "[pki]\nca_file = \"/x\"\n");
    rig.write_config(&config);
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SERVICE_ERR", "{run}");
    let expected = format!(
        "{}:6:1: unknown field `ca_file`",
        rig.config_path().display()
    );
    assert!(
        run.logged("auth.config.invalid", &expected),
        "expected {expected:?} in the log: {run}"
    );
}

#[test]
fn group_writable_config_is_service_err() {
    use std::os::unix::fs::PermissionsExt;
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    std::fs::set_permissions(rig.config_path(), std::fs::Permissions::from_mode(0o664)).unwrap();
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SERVICE_ERR", "{run}");
    assert!(
        run.logged("auth.config.invalid", "lets group or others write it"),
        "{run}"
    );
}

#[test]
fn unknown_module_argument_is_service_err() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    rig.write_service(&format!(
        "auth required {} config={} nodebug\n",
        tessera_testrig::bins::pam_module().display(),
        rig.config_path().display()
    ));
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SERVICE_ERR", "{run}");
}

#[test]
fn missing_pkcs11_module_is_authinfo_unavail() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let config = rig.default_config().replace(
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/nonexistent-pkcs11.so",
    );
    rig.write_config(&config);
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTHINFO_UNAVAIL", "{run}");
}
