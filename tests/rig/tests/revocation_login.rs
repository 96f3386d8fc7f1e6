//! Revocation through the whole login: real libpam, `pam_tessera.so`, a
//! SoftHSM token holding the user's certificate and the issuing CA's, CRLs
//! over HTTP and a real `openssl ocsp` responder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rcgen::RevocationReason;
use tessera_testrig::http::{HttpServer, Reply};
use tessera_testrig::login::{LoginRig, PamRun, PIN};
use tessera_testrig::ocsp::{write_index, IndexEntry, OcspResponder, ResponderFiles};
use tessera_testrig::pki::{Pointers, Revoked, TestCa, UserCert};
use tessera_testrig::softhsm::KeyType;
use time::{Duration, OffsetDateTime};

/// A rig whose root publishes its CRL on `http`, an issuing CA under it,
/// and `revocation = MODE` in the config.
struct RevocationRig {
    rig: LoginRig,
    http: HttpServer,
    issuing: TestCa,
}

impl RevocationRig {
    fn new(mode: &str, extra: &str) -> Self {
        let mut rig = LoginRig::new();
        rig.add_user("alice");
        let http = HttpServer::start();
        let next_update = OffsetDateTime::now_utc() + Duration::days(1);
        http.route("root.crl", Reply::Body(rig.ca.crl(&[], next_update)));
        let issuing = rig.ca.intermediate(
            "Tessera Test Issuing CA",
            &Pointers {
                crl_url: Some(http.url("root.crl")),
                ocsp_url: None,
            },
        );
        let config = rig.default_config().replace(
            "revocation = \"none\"\n",
            &format!(
                "revocation = \"{mode}\"\ncache_dir = \"{}\"\n{extra}",
                rig.path().join("cache").display()
            ),
        );
        rig.write_config(&config);
        Self { rig, http, issuing }
    }

    /// Gives alice a token with a certificate (serial, pointers) from the
    /// issuing CA, and the issuing CA's certificate next to it.
    fn enroll(&self, serial: u64, pointers: Pointers) {
        let mut spec = UserCert::valid("alice");
        spec.serial = Some(serial);
        spec.pointers = pointers;
        self.rig
            .enroll_with("alice-token", KeyType::P256, &spec, &self.issuing);
        self.rig
            .hsm
            .write_object("alice-token", PIN, "02", "cert", self.issuing.der());
    }

    fn login(&self) -> PamRun {
        self.rig.authenticate(Some("alice"), &[PIN])
    }
}

fn rejected_as_revoked(run: &PamRun, reason: &str) {
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");
    let expected = format!("certificate revoked ({reason})");
    assert!(
        run.messages()
            .iter()
            .any(|(style, text)| style == "error" && text.contains(&expected)),
        "the user is told why: {run}"
    );
    assert!(
        run.logged("auth.certificate.rejected", &expected),
        "the log says why: {run}"
    );
    assert!(
        !run.messages()
            .iter()
            .any(|(style, _)| style == "prompt_echo_off"),
        "no PIN is asked for a revoked certificate: {run}"
    );
}

#[test]
fn a_certificate_revoked_on_the_crl_is_auth_err_with_the_reason() {
    let rig = RevocationRig::new("crl", "");
    rig.http.route(
        "issuing.crl",
        Reply::Body(rig.issuing.crl(
            &[Revoked::new(0x4001, Some(RevocationReason::KeyCompromise))],
            OffsetDateTime::now_utc() + Duration::days(1),
        )),
    );
    rig.enroll(
        0x4001,
        Pointers {
            crl_url: Some(rig.http.url("issuing.crl")),
            ocsp_url: None,
        },
    );
    rejected_as_revoked(&rig.login(), "keyCompromise");
}

fn responder(rig: &RevocationRig) -> OcspResponder {
    let files = ResponderFiles::write(
        rig.rig.path(),
        "issuing",
        rig.issuing.pem(),
        &rig.issuing.ocsp_signer("Tessera Test OCSP Responder"),
    );
    write_index(
        &files.index,
        &[
            IndexEntry {
                serial: 0x4002,
                subject: "/O=Example Test/CN=alice".to_owned(),
                revoked: None,
            },
            IndexEntry {
                serial: 0x4003,
                subject: "/O=Example Test/CN=alice".to_owned(),
                revoked: Some("affiliationChanged"),
            },
        ],
    );
    OcspResponder::start(&files, rig.rig.path())
}

#[test]
fn a_certificate_revoked_by_ocsp_is_auth_err_with_the_reason() {
    let rig = RevocationRig::new("ocsp-then-crl", "");
    let responder = responder(&rig);
    rig.enroll(
        0x4003,
        Pointers {
            crl_url: None,
            ocsp_url: Some(responder.url()),
        },
    );
    rejected_as_revoked(&rig.login(), "affiliationChanged");
}

#[test]
fn a_good_certificate_logs_in_after_ocsp_and_the_roots_crl() {
    let rig = RevocationRig::new("ocsp-then-crl", "");
    let responder = responder(&rig);
    rig.enroll(
        0x4002,
        Pointers {
            crl_url: None,
            ocsp_url: Some(responder.url()),
        },
    );
    let run = rig.login();
    assert_eq!(
        run.result("authenticate"),
        "PAM_SUCCESS",
        "{run}\n{}",
        responder.log()
    );
    assert_eq!(
        rig.http.hits("root.crl"),
        1,
        "the issuing CA's status came from the root's CRL"
    );
}

#[test]
fn a_down_responder_is_auth_err_unless_soft_fail() {
    let hard = RevocationRig::new("ocsp", "");
    let mut responder = responder(&hard);
    let url = responder.url();
    responder.stop();
    hard.enroll(
        0x4002,
        Pointers {
            crl_url: None,
            ocsp_url: Some(url.clone()),
        },
    );
    let run = hard.login();
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");
    assert!(
        run.log
            .contains("revocation status of the certificate is unknown"),
        "{run}"
    );
    assert!(run.log.contains(&url), "{run}");

    let soft = RevocationRig::new("ocsp", "[pki.ocsp]\nsoft_fail = true\n");
    soft.enroll(
        0x4002,
        Pointers {
            crl_url: None,
            ocsp_url: Some(url),
        },
    );
    let run = soft.login();
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert!(
        run.logged("auth.revocation.unknown_allowed", "allowed by policy"),
        "the soft failure is logged: {run}"
    );
}
