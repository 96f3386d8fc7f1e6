//! Bounds on what a token hands over: a well-formed certificate object over
//! 64 KiB (`tessera_mappers::MAX_CERTIFICATE_SIZE`) is skipped and the login
//! goes on with the others; at most 32 public-key objects are read, none with
//! an attribute over 4 KiB. (Absurd lengths and floods of certificate objects
//! are in `faults.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use rcgen::{CertificateParams, CustomExtension, KeyPair};
use tessera_testrig::bins::artefact;
use tessera_testrig::login::{LoginRig, PIN};
use tessera_testrig::p11fault::{FaultPlan, FaultRig};
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

#[test]
fn ten_thousand_public_key_objects_are_read_no_further_than_the_limit() {
    let rig = FaultRig::new(LoginRig::with_bare_key(0o600));
    // `before` pushes the real key past the limit; `after` keeps it first.
    for (position, expected) in [("before", "PAM_AUTHINFO_UNAVAIL"), ("after", "PAM_SUCCESS")] {
        let flood = format!(
            "{{ flood = {{ count = 10000, position = \"{position}\", class = \"public_key\" }} }}"
        );
        let run = rig.login(
            &FaultPlan::new().rule("C_FindObjects", None, &flood),
            Some("alice"),
            &[PIN],
        );
        assert!(
            run.injected()
                .iter()
                .any(|call| call.function == "C_FindObjects"),
            "the flood never joined the public-key search\n{run}"
        );
        assert!(!run.timed_out, "{run}");
        assert_eq!(run.result(), Some(expected), "{run}");
        assert!(
            run.run
                .logged("auth.token.too_many_keys", "more than 32 public keys"),
            "{run}"
        );
        // One C_FindObjects fills the 32 read, one more shows there are more;
        // the certificate search (not flooded) adds its own.
        assert!(run.count("C_FindObjects") <= 4, "{run}");
        // Per key: the size query, then cryptoki's length query and fetch,
        // attribute by attribute for those the object lacks (7 asked).
        assert!(run.count("C_GetAttributeValue") <= 16 * 32 + 16, "{run}");
        let peak = run
            .peak_rss_kb()
            .unwrap_or_else(|| panic!("no peak memory logged\n{run}"));
        assert!(peak < 64 * 1024, "peak memory {peak} KiB\n{run}");
    }
}

#[test]
fn a_public_key_attribute_over_4_kib_skips_the_key() {
    let rig = FaultRig::new(LoginRig::with_bare_key(0o600));
    // Every size query reports this length: at the bound the key is read
    // (the real values are small), one byte over it is skipped unread.
    for (length, expected) in [(4096, "PAM_SUCCESS"), (4097, "PAM_AUTHINFO_UNAVAIL")] {
        let run = rig.login(
            &FaultPlan::new().rule(
                "C_GetAttributeValue",
                None,
                &format!("{{ absurd_length = {length} }}"),
            ),
            Some("alice"),
            &[PIN],
        );
        assert!(!run.timed_out, "{run}");
        assert_eq!(run.result(), Some(expected), "{run}");
        let skipped = run
            .run
            .log
            .contains("public-key attribute larger than 4096 bytes; key skipped");
        assert_eq!(skipped, length > 4096, "{run}");
    }
}
