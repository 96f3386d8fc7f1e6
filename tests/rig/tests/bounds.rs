//! A well-formed certificate object over 64 KiB
//! (`tessera_mappers::MAX_CERTIFICATE_SIZE`) is skipped and the login goes
//! on with the others. (Absurd lengths and floods of objects are in
//! `faults.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use rcgen::{CertificateParams, CustomExtension, KeyPair};
use tessera_testrig::bins::artefact;
use tessera_testrig::login::{LoginRig, PIN};
use tessera_testrig::softhsm::KeyType;

/// The certificates `tessera inspect` lists for `token`.
fn listed_certificates(rig: &LoginRig, token: &str) -> usize {
    let (key, value) = rig.hsm.env();
    let output = Command::new(artefact("tessera"))
        .args(["inspect", "--json", "--config"])
        .arg(rig.config_path())
        .env(key, value)
        .env("LD_PRELOAD", "libnss_wrapper.so")
        .env("NSS_WRAPPER_PASSWD", rig.path().join("passwd"))
        .env("NSS_WRAPPER_GROUP", rig.path().join("group"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let tokens = report["tokens"].as_array().unwrap();
    let found = tokens.iter().find(|t| t["label"] == token).unwrap();
    found["certificates"].as_array().unwrap().len()
}

#[test]
fn a_certificate_object_over_64_kib_is_skipped() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    // A well-formed certificate padded by an unknown non-critical extension.
    let mut params = CertificateParams::new(vec!["alice.example.test".to_owned()]).unwrap();
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 55555, 1],
            vec![0x04; 70 * 1024],
        ));
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let large = params.self_signed(&key).unwrap().der().to_vec();
    assert!(large.len() > 64 * 1024);
    rig.hsm
        .write_raw_certificate("alice-token", PIN, "03", &large);

    assert_eq!(listed_certificates(&rig, "alice-token"), 1);
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert!(
        run.log
            .contains("certificate object larger than 65536 bytes; skipped"),
        "{run}"
    );
}
