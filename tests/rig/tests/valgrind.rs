//! pam_tessera.so under valgrind memcheck during a successful and a failed
//! login through real libpam (DESIGN.md lesson 7: the anchors' memory-safety
//! bugs were only seen under valgrind).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use tessera_testrig::bins::artefact;
use tessera_testrig::login::{LoginRig, PIN, SERVICE};
use tessera_testrig::softhsm::KeyType;

fn memcheck(rig: &LoginRig, pin: &str, expected: &str) {
    let log = rig.path().join(format!("valgrind-{pin}.log"));
    let (key, value) = rig.hsm.env();
    let output = Command::new("valgrind")
        .args([
            "--tool=memcheck",
            "--error-exitcode=99",
            "--track-origins=yes",
        ])
        .arg(format!("--log-file={}", log.display()))
        .arg(artefact("tessera-pam-harness"))
        .arg("--confdir")
        .arg(rig.confdir())
        .args(["--service", SERVICE, "--user", "alice", "--answer", pin])
        .env(key, value)
        .env("NSS_WRAPPER_PASSWD", rig.path().join("passwd"))
        .env("NSS_WRAPPER_GROUP", rig.path().join("group"))
        .env("LD_PRELOAD", "libnss_wrapper.so")
        .output()
        .unwrap();
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        output.status.code(),
        Some(0),
        "valgrind found errors:\n{report}\nstdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(report.contains("ERROR SUMMARY: 0 errors"), "{report}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(expected),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn a_login_and_a_failed_login_are_clean_under_memcheck() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::Rsa2048);
    memcheck(&rig, PIN, "\"PAM_SUCCESS\"");
    memcheck(&rig, "000000", "\"PAM_AUTH_ERR\"");
}
