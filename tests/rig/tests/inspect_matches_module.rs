//! `tessera inspect` shows what the module does: for every certificate of
//! the end-to-end worlds (valid, expired, wrong CA, revoked, unmapped,
//! without EKU where one is required, with a wrong EKU), the verdict and
//! the users `tessera inspect --json` reports agree with what real libpam
//! and `pam_tessera.so` make of a login with that certificate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use rcgen::{ExtendedKeyUsagePurpose, RevocationReason};
use serde_json::Value;
use tessera_testrig::bins::artefact;
use tessera_testrig::http::{HttpServer, Reply};
use tessera_testrig::login::{LoginRig, PIN};
use tessera_testrig::pki::{Pointers, Revoked, TestCa, UserCert};
use tessera_testrig::softhsm::KeyType;
use time::{Duration, OffsetDateTime};

/// What `tessera inspect --json` says of each certificate of the rig's
/// tokens: (token label, verdict, users).
fn inspect(rig: &LoginRig) -> Vec<(String, String, Vec<String>)> {
    let output = Command::new(artefact("tessera"))
        .args(["inspect", "--json", "--config"])
        .arg(rig.config_path())
        .envs(rig.env())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut certificates = Vec::new();
    for token in report["tokens"].as_array().unwrap() {
        for certificate in token["certificates"].as_array().unwrap() {
            certificates.push((
                token["label"].as_str().unwrap().to_owned(),
                certificate["verdict"].as_str().unwrap().to_owned(),
                certificate["users"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|user| user.as_str().unwrap().to_owned())
                    .collect(),
            ));
        }
    }
    certificates
}

/// Logs `user` in through libpam and the module with the right PIN, and
/// checks the result is the one inspect's verdict for the certificate says.
fn module_agrees(rig: &LoginRig, user: &str, world: &str) {
    let certificates = inspect(rig);
    assert_eq!(certificates.len(), 1, "{world}: {certificates:?}");
    let (_, verdict, users) = &certificates[0];
    let run = rig.authenticate(Some(user), &[PIN]);
    let result = run.result("authenticate");
    if !users.iter().any(|mapped| mapped == user) {
        assert_eq!(
            result, "PAM_AUTHINFO_UNAVAIL",
            "{world}: inspect maps the certificate to {users:?}, not {user}: {run}"
        );
        assert!(
            run.logged(
                "auth.login.unavailable",
                &format!("no valid certificate on the token(s) maps to user {user}")
            ),
            "{world}: {run}"
        );
    } else if verdict == "valid" {
        assert_eq!(result, "PAM_SUCCESS", "{world}: inspect says valid: {run}");
    } else {
        let reason = verdict
            .strip_prefix("rejected: ")
            .unwrap_or_else(|| panic!("{world}: verdict {verdict:?}"));
        assert_eq!(
            result, "PAM_AUTH_ERR",
            "{world}: inspect says {verdict:?}: {run}"
        );
        assert!(
            run.logged("auth.login.failed", &format!("rejected: {reason}")),
            "{world}: the module rejects it for the reason inspect gives ({reason}): {run}"
        );
    }
}

/// A rig with alice, and a token holding one certificate for her from `ca`.
fn world(spec: &UserCert, ca: Option<&TestCa>) -> LoginRig {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    rig.enroll_with("alice-token", KeyType::P256, spec, ca.unwrap_or(&rig.ca));
    rig
}

#[test]
fn a_valid_certificate_is_valid_in_inspect_and_logs_in() {
    let rig = world(&UserCert::valid("alice"), None);
    assert_eq!(inspect(&rig)[0].1, "valid");
    module_agrees(&rig, "alice", "valid");
}

#[test]
fn an_expired_certificate_is_rejected_by_both_for_its_expiry() {
    let mut spec = UserCert::valid("alice");
    spec.not_after = OffsetDateTime::now_utc() - Duration::days(3);
    spec.not_before = spec.not_after - Duration::days(30);
    let rig = world(&spec, None);
    assert!(inspect(&rig)[0]
        .1
        .starts_with("rejected: certificate expired on"));
    module_agrees(&rig, "alice", "expired");
}

#[test]
fn a_certificate_from_another_ca_is_untrusted_in_both() {
    let other = TestCa::new("Tessera Test Root CA");
    let rig = world(&UserCert::valid("alice"), Some(&other));
    assert!(inspect(&rig)[0]
        .1
        .starts_with("rejected: issuer not trusted"));
    module_agrees(&rig, "alice", "wrong CA");
}

#[test]
fn a_revoked_certificate_is_revoked_in_both() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let http = HttpServer::start();
    http.route(
        "root.crl",
        Reply::Body(rig.ca.crl(
            &[Revoked::new(0x5001, Some(RevocationReason::KeyCompromise))],
            OffsetDateTime::now_utc() + Duration::days(1),
        )),
    );
    let config = rig.default_config().replace(
        "revocation = \"none\"\n",
        &format!(
            "revocation = \"crl\"\ncache_dir = \"{}\"\n",
            rig.path().join("cache").display()
        ),
    );
    rig.write_config(&config);
    let mut spec = UserCert::valid("alice");
    spec.serial = Some(0x5001);
    spec.pointers = Pointers {
        crl_url: Some(http.url("root.crl")),
        ocsp_url: None,
    };
    rig.enroll_with("alice-token", KeyType::P256, &spec, &rig.ca);
    assert!(
        inspect(&rig)[0]
            .1
            .contains("certificate revoked (keyCompromise)"),
        "{:?}",
        inspect(&rig)
    );
    module_agrees(&rig, "alice", "revoked");
}

#[test]
fn an_unmapped_certificate_maps_to_nobody_in_both() {
    // mallory is not in the user database: `user = "{cn}"` gives nobody.
    let rig = world(&UserCert::valid("mallory"), None);
    let certificates = inspect(&rig);
    assert!(certificates[0].2.is_empty(), "{certificates:?}");
    assert_eq!(certificates[0].1, "valid", "inspect validates it anyway");
    module_agrees(&rig, "alice", "unmapped");
}

#[test]
fn a_certificate_without_eku_is_rejected_by_both_where_one_is_required() {
    let mut spec = UserCert::valid("alice");
    spec.eku.clear();
    let rig = world(&spec, None);
    let config = rig.default_config().replace(
        "revocation = \"none\"\n",
        "revocation = \"none\"\nrequire_eku = true\n",
    );
    rig.write_config(&config);
    assert!(inspect(&rig)[0]
        .1
        .starts_with("rejected: certificate has no extended key usage"));
    module_agrees(&rig, "alice", "EKU missing");
}

#[test]
fn a_certificate_for_servers_only_is_rejected_by_both() {
    let mut spec = UserCert::valid("alice");
    spec.eku = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let rig = world(&spec, None);
    assert!(inspect(&rig)[0]
        .1
        .starts_with("rejected: certificate is not for client authentication"));
    module_agrees(&rig, "alice", "server EKU");
}

#[test]
fn every_certificate_of_several_tokens_gets_the_modules_verdict() {
    // Each world's certificate side by side: inspect judges each, the
    // module (asked for each owner in turn) agrees with each.
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let mut expired = UserCert::valid("bob");
    expired.not_after = OffsetDateTime::now_utc() - Duration::days(3);
    expired.not_before = expired.not_after - Duration::days(30);
    rig.add_user("bob");
    rig.enroll_with("bob-token", KeyType::P256, &expired, &rig.ca);
    let other = TestCa::new("Tessera Test Root CA");
    rig.add_user("carol");
    rig.enroll_with(
        "carol-token",
        KeyType::P256,
        &UserCert::valid("carol"),
        &other,
    );

    let certificates = inspect(&rig);
    assert_eq!(certificates.len(), 3, "{certificates:?}");
    for (token, verdict, users) in &certificates {
        let user = token.trim_end_matches("-token");
        assert_eq!(users, &[user.to_owned()], "{token}");
        let run = rig.authenticate(Some(user), &[PIN]);
        match verdict.strip_prefix("rejected: ") {
            None => {
                assert_eq!(verdict, "valid");
                assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{token}: {run}");
            }
            Some(reason) => {
                assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{token}: {run}");
                assert!(
                    run.logged("auth.certificate.rejected", reason),
                    "{token}: {reason}: {run}"
                );
            }
        }
    }
}
