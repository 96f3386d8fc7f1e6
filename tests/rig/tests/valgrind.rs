//! pam_tessera.so under valgrind memcheck through real libpam: a successful
//! and a failed login with a SoftHSM token, the same with revocation by
//! local CRLs (a good and a revoked certificate), and with the virtual PIV
//! card behind pcscd and OpenSC. docs/design.md, lesson 7: the anchors'
//! memory-safety bugs were in their CRL paths and only seen under valgrind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use rcgen::RevocationReason;
use tessera_testrig::login::{CardKey, LoginRig, PamRun, PIN};
use tessera_testrig::p11fault::{memcheck_command, memcheck_reports};
use tessera_testrig::pcscd::{Pcscd, OPENSC_PKCS11};
use tessera_testrig::pki::{Pointers, Revoked, UserCert};
use tessera_testrig::run;
use tessera_testrig::softhsm::KeyType;
use tessera_testrig::vcard::CardSpec;
use time::OffsetDateTime;

/// Runs the rig's PAM application, and the helper it starts, under
/// memcheck from now on.
fn memcheck(rig: &mut LoginRig) {
    rig.run_under(memcheck_command());
}

/// `run` ended with `expected` and memcheck, which followed it into the
/// helper, found nothing in any process.
fn clean(run: &PamRun, expected: &str) {
    if let Err(error) = memcheck_reports(&run.log) {
        panic!("{error}\n{run}");
    }
    assert_eq!(run.result("authenticate"), expected, "{run}");
}

#[test]
fn a_login_and_a_failed_login_are_clean_under_memcheck() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::Rsa2048);
    memcheck(&mut rig);
    clean(&rig.authenticate(Some("alice"), &[PIN]), "PAM_SUCCESS");
    clean(
        &rig.authenticate(Some("alice"), &["000000"]),
        "PAM_AUTH_ERR",
    );
}

#[test]
fn crl_checks_of_a_good_and_a_revoked_certificate_are_clean_under_memcheck() {
    let mut rig = LoginRig::new();
    let issuing = rig
        .ca
        .intermediate("Tessera Test Issuing CA", &Pointers::default());
    let next_update = OffsetDateTime::now_utc() + time::Duration::days(1);
    let crl_dir = rig.path().join("crl");
    std::fs::create_dir(&crl_dir).unwrap();
    let revoked = [Revoked::new(0x4002, Some(RevocationReason::KeyCompromise))];
    std::fs::write(
        crl_dir.join("issuing.crl"),
        issuing.crl(&revoked, next_update),
    )
    .unwrap();
    // The root's CRL as PEM, so that both encodings are read.
    let root_der = crl_dir.join("root.der.tmp");
    std::fs::write(&root_der, rig.ca.crl(&[], next_update)).unwrap();
    run(Command::new("openssl")
        .args(["crl", "-inform", "DER", "-in"])
        .arg(&root_der)
        .arg("-out")
        .arg(crl_dir.join("root.pem")));
    std::fs::remove_file(&root_der).unwrap();
    let config = rig.default_config().replace(
        "revocation = \"none\"\n",
        &format!(
            "revocation = \"crl\"\ncache = false\n[pki.crl]\nfiles = [\"{}\"]\nfetch = false\n",
            crl_dir.display()
        ),
    );
    rig.write_config(&config);
    for (user, serial) in [("alice", 0x4001), ("bob", 0x4002)] {
        rig.add_user(user);
        let mut spec = UserCert::valid(user);
        spec.serial = Some(serial);
        let token = format!("{user}-token");
        rig.enroll_with(&token, KeyType::P256, &spec, &issuing);
        rig.hsm
            .write_object(&token, PIN, "02", "cert", issuing.der());
    }
    memcheck(&mut rig);
    clean(&rig.authenticate(Some("alice"), &[PIN]), "PAM_SUCCESS");
    let run = rig.authenticate(Some("bob"), &[PIN]);
    clean(&run, "PAM_AUTH_ERR");
    assert!(
        run.logged("auth.certificate.rejected", "revoked (keyCompromise)"),
        "{run}"
    );
}

#[test]
fn a_virtual_card_login_and_a_failed_one_are_clean_under_memcheck() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let (key, cert) = rig.card_credentials("alice", CardKey::P256);
    let pcscd = Pcscd::start_for_readers(&rig.path().join("pcscd"), &[0]).unwrap();
    let _card = CardSpec::new(0)
        .slot("9a", key, cert)
        .pin(PIN)
        .start(&pcscd)
        .unwrap();
    pcscd.wait_card(0, true, Duration::from_secs(5)).unwrap();
    rig.add_env(pcscd.env());
    rig.use_pkcs11_module(OPENSC_PKCS11);
    memcheck(&mut rig);
    clean(&rig.authenticate(Some("alice"), &[PIN]), "PAM_SUCCESS");
    clean(
        &rig.authenticate(Some("alice"), &["000000"]),
        "PAM_AUTH_ERR",
    );
}
