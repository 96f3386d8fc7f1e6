//! Certificate validation and revocation through `tessera_core::pki::validate`,
//! against a two-level test PKI (RSA root, EC issuing CA), CRLs served over
//! HTTP from 127.0.0.1 and a real `openssl ocsp` responder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rcgen::RevocationReason;
use rustls_pki_types::{CertificateDer, UnixTime};
use tempfile::TempDir;
use tessera_core::pki::crl;
use tessera_core::pki::ocsp::{self, Target};
use tessera_core::pki::policy::{MissingPolicy, OcspHash, Policy, RevocationMode};
use tessera_core::pki::{validate, AnchorError, Deadline, Rejection, TrustStore};
use tessera_testrig::http::{HttpServer, Reply};
use tessera_testrig::ocsp::{write_index, IndexEntry, OcspResponder, ResponderFiles};
use tessera_testrig::pki::{serial_of, Pointers, Revoked, TestCa, UserCert};
use time::OffsetDateTime;
use x509_cert::der::Decode;
use x509_cert::Certificate;

const ISSUING_CA: &str = "Tessera Test EC Issuing CA";

fn unix_now() -> UnixTime {
    let seconds = OffsetDateTime::now_utc().unix_timestamp();
    UnixTime::since_unix_epoch(Duration::from_secs(seconds as u64))
}

fn days_from_now(days: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::days(days)
}

/// A root, an issuing CA whose CRL the root publishes on `http`, and a store.
struct Pki {
    dir: TempDir,
    http: HttpServer,
    root: TestCa,
    issuing: TestCa,
    store: TrustStore,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tessera-pki-")
            .tempdir()
            .unwrap();
        let http = HttpServer::start();
        let root = TestCa::new_rsa("Tessera Test RSA Root");
        let issuing = root.intermediate(
            ISSUING_CA,
            &Pointers {
                crl_url: Some(http.url("root.crl")),
                ocsp_url: None,
            },
        );
        http.route("root.crl", Reply::Body(root.crl(&[], days_from_now(1))));
        let ca = dir.path().join("ca");
        std::fs::create_dir(&ca).unwrap();
        std::fs::write(ca.join("root.pem"), root.pem()).unwrap();
        let store = TrustStore::load(&[ca]).unwrap();
        Self {
            dir,
            http,
            root,
            issuing,
            store,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A user certificate from the issuing CA, with `serial` and `pointers`.
    fn user(&self, serial: u64, pointers: Pointers) -> Vec<u8> {
        let mut spec = UserCert::valid(&format!("user{serial:x}"));
        spec.serial = Some(serial);
        spec.pointers = pointers;
        self.issuing.issue_with_new_key(&spec).0
    }

    fn crl_user(&self, serial: u64) -> Vec<u8> {
        self.user(
            serial,
            Pointers {
                crl_url: Some(self.http.url("issuing.crl")),
                ocsp_url: None,
            },
        )
    }

    fn policy(&self, mode: RevocationMode) -> Policy {
        Policy {
            revocation: mode,
            cache_dir: Some(self.path("cache")),
            ..Policy::default()
        }
    }

    fn check_at(
        &self,
        certificate: &[u8],
        policy: &Policy,
        now: UnixTime,
    ) -> Result<(), Rejection> {
        let der = CertificateDer::from(certificate);
        let intermediates = [CertificateDer::from(self.issuing.der())];
        let deadline = Deadline::after(policy.revocation_timeout);
        validate(&self.store, policy, &der, &intermediates, now, &deadline).map(|_| ())
    }

    fn check(&self, certificate: &[u8], policy: &Policy) -> Result<(), Rejection> {
        self.check_at(certificate, policy, unix_now())
    }

    /// The issuing CA's CRL, revoking `revoked`, served at /issuing.crl.
    fn publish_issuing_crl(&self, revoked: &[Revoked]) -> Vec<u8> {
        let crl = self.issuing.crl(revoked, days_from_now(1));
        self.http.route("issuing.crl", Reply::Body(crl.clone()));
        crl
    }

    /// Responder files for the issuing CA with a delegated signer, and an
    /// index saying 0x3001 good, 0x3002 revoked (keyCompromise).
    fn responder_files(&self) -> ResponderFiles {
        let files = ResponderFiles::write(
            self.dir.path(),
            "issuing",
            self.issuing.pem(),
            &self.issuing.ocsp_signer("Tessera Test OCSP Responder"),
        );
        write_index(
            &files.index,
            &[
                IndexEntry {
                    serial: 0x3001,
                    subject: "/O=Example Test/CN=user3001".to_owned(),
                    revoked: None,
                },
                IndexEntry {
                    serial: 0x3002,
                    subject: "/O=Example Test/CN=user3002".to_owned(),
                    revoked: Some("keyCompromise"),
                },
            ],
        );
        files
    }

    fn ocsp_user(&self, serial: u64, url: &str) -> Vec<u8> {
        self.user(
            serial,
            Pointers {
                crl_url: None,
                ocsp_url: Some(url.to_owned()),
            },
        )
    }

    /// A DER OCSP request for `certificate`, as tessera builds it.
    fn ocsp_request(&self, certificate: &[u8], nonce: Option<&[u8]>) -> Vec<u8> {
        let certificate = Certificate::from_der(certificate).unwrap();
        let issuer = Certificate::from_der(self.issuing.der()).unwrap();
        let id = ocsp::cert_id(
            OcspHash::Sha1,
            Target {
                certificate: &certificate,
                issuer: &issuer,
                issuer_der: self.issuing.der(),
            },
        )
        .unwrap();
        ocsp::request(&id, nonce).unwrap()
    }

    /// Asks `path` for every level, without a nonce; a level without an
    /// answer falls back to CRLs (the issuing CA's is on the root's CRL).
    fn canned_ocsp_policy(&self, path: &str) -> Policy {
        let mut policy = self.policy(RevocationMode::OcspThenCrl);
        policy.ocsp.url = Some(self.http.url(path));
        policy.ocsp.nonce = false;
        policy.cache_dir = None;
        policy
    }
}

fn revoked(result: Result<(), Rejection>) -> (String, String, String) {
    match result {
        Err(Rejection::Revoked {
            who,
            reason,
            origin,
            ..
        }) => (who, reason, origin),
        other => panic!("expected a revocation, got {other:?}"),
    }
}

fn unknown(result: Result<(), Rejection>) -> (String, String) {
    match result {
        Err(Rejection::RevocationUnknown { who, why }) => (who, why),
        other => panic!("expected an unknown status, got {other:?}"),
    }
}

fn failed(result: Result<(), Rejection>) -> String {
    match result {
        Err(Rejection::RevocationFailed(why)) => why,
        other => panic!("expected a failed revocation check, got {other:?}"),
    }
}

#[test]
fn rsa_root_and_ec_issuing_ca_validate_and_the_depth_limit_applies() {
    let pki = Pki::new();
    let user = pki.user(0x1001, Pointers::default());
    let mut policy = pki.policy(RevocationMode::None);
    pki.check(&user, &policy).unwrap();

    policy.max_chain_depth = 0;
    let error = pki.check(&user, &policy).unwrap_err();
    assert_eq!(error, Rejection::ChainTooLong { depth: 1, max: 0 });
    assert!(error.to_string().contains("pki.max_chain_depth"), "{error}");
}

#[test]
fn signature_algorithms_outside_the_policy_are_refused() {
    let pki = Pki::new();
    let user = pki.user(0x1002, Pointers::default());
    let mut policy = pki.policy(RevocationMode::None);
    // The root signs with RSA; allow only ECDSA.
    policy.signature_algorithms = vec![webpki::ring::ECDSA_P256_SHA256];
    assert_eq!(
        pki.check(&user, &policy),
        Err(Rejection::DisallowedAlgorithm)
    );
}

#[test]
fn allowed_and_required_extended_key_usages() {
    let pki = Pki::new();
    let policy = Policy {
        allowed_eku: vec![tessera_core::pki::EKU_PKINIT_CLIENT],
        ..pki.policy(RevocationMode::None)
    };
    let client_auth = pki.user(0x1003, Pointers::default());
    assert_eq!(
        pki.check(&client_auth, &policy),
        Err(Rejection::WrongExtendedKeyUsage)
    );
    let mut spec = UserCert::valid("kerberos");
    spec.eku = vec![rcgen::ExtendedKeyUsagePurpose::Other(vec![
        1, 3, 6, 1, 5, 2, 3, 4,
    ])];
    let pkinit = pki.issuing.issue_with_new_key(&spec).0;
    pki.check(&pkinit, &policy).unwrap();

    let mut spec = UserCert::valid("no-eku");
    spec.eku = Vec::new();
    let no_eku = pki.issuing.issue_with_new_key(&spec).0;
    let mut policy = pki.policy(RevocationMode::None);
    pki.check(&no_eku, &policy).unwrap();
    policy.require_eku = true;
    assert_eq!(
        pki.check(&no_eku, &policy),
        Err(Rejection::MissingExtendedKeyUsage)
    );
}

#[test]
fn clock_skew_tolerates_a_certificate_valid_in_a_minute() {
    let pki = Pki::new();
    let mut spec = UserCert::valid("early");
    spec.not_before = OffsetDateTime::now_utc() + time::Duration::seconds(60);
    let early = pki.issuing.issue_with_new_key(&spec).0;
    let mut policy = pki.policy(RevocationMode::None);
    pki.check(&early, &policy).unwrap();
    policy.clock_skew = Duration::ZERO;
    let error = pki.check(&early, &policy).unwrap_err();
    assert!(matches!(error, Rejection::NotYetValid(_)), "{error}");
}

#[test]
fn trust_store_errors_name_the_file() {
    let pki = Pki::new();
    let missing = pki.path("nonexistent.pem");
    let error = TrustStore::load(std::slice::from_ref(&missing)).unwrap_err();
    assert!(matches!(error, AnchorError::Io { .. }), "{error}");
    assert!(error.to_string().contains("nonexistent.pem"), "{error}");

    let leaf = pki.path("leaf.pem");
    let user = pki.user(0x1004, Pointers::default());
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64(&user)
    );
    std::fs::write(&leaf, pem).unwrap();
    let error = TrustStore::load(&[leaf]).unwrap_err();
    assert!(matches!(error, AnchorError::NotCa { .. }), "{error}");
    assert!(error.to_string().contains("is not a CA"), "{error}");
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn crl_from_the_distribution_point_finds_the_revoked_and_passes_the_good() {
    let pki = Pki::new();
    pki.publish_issuing_crl(&[Revoked::new(0x2002, Some(RevocationReason::KeyCompromise))]);
    let policy = pki.policy(RevocationMode::Crl);
    pki.check(&pki.crl_user(0x2001), &policy).unwrap();
    assert_eq!(
        pki.http.hits("root.crl"),
        1,
        "the issuing CA is checked too"
    );

    let (who, reason, origin) = revoked(pki.check(&pki.crl_user(0x2002), &policy));
    assert_eq!(
        (who.as_str(), reason.as_str()),
        ("certificate", "keyCompromise")
    );
    assert!(origin.contains("/issuing.crl"), "{origin}");
}

#[test]
fn a_revoked_issuing_ca_is_found_in_the_roots_crl() {
    let pki = Pki::new();
    pki.publish_issuing_crl(&[]);
    pki.http.route(
        "root.crl",
        Reply::Body(pki.root.crl(
            &[Revoked {
                serial: serial_of(pki.issuing.der()),
                reason: Some(RevocationReason::CaCompromise),
            }],
            days_from_now(1),
        )),
    );
    let (who, reason, _) =
        revoked(pki.check(&pki.crl_user(0x2003), &pki.policy(RevocationMode::Crl)));
    assert!(who.contains(ISSUING_CA), "{who}");
    assert_eq!(reason, "cACompromise");
}

#[test]
fn a_missing_crl_denies_by_default_and_allow_is_per_level() {
    let pki = Pki::new();
    let no_pointer = pki.user(0x2004, Pointers::default());
    let mut policy = pki.policy(RevocationMode::Crl);
    policy.cache_dir = None;
    let (who, why) = unknown(pki.check(&no_pointer, &policy));
    assert_eq!(who, "certificate");
    assert!(why.contains("no http:// CRL distribution point"), "{why}");

    policy.crl.missing = MissingPolicy::Allow;
    pki.check(&no_pointer, &policy).unwrap();

    // The root's CRL is gone: the issuing CA's level has its own policy.
    pki.http.route("root.crl", Reply::Status(404));
    let (who, why) = unknown(pki.check(&no_pointer, &policy));
    assert!(who.contains(ISSUING_CA), "{who}");
    assert!(why.contains("HTTP status 404"), "{why}");
    policy.crl.missing_intermediate = MissingPolicy::Allow;
    pki.check(&no_pointer, &policy).unwrap();
}

#[test]
fn local_crl_files_work_offline() {
    let pki = Pki::new();
    let crl_dir = pki.path("crl");
    std::fs::create_dir(&crl_dir).unwrap();
    let issuing = pki.issuing.crl(
        &[Revoked::new(0x2006, Some(RevocationReason::Superseded))],
        days_from_now(1),
    );
    std::fs::write(crl_dir.join("issuing.crl"), &issuing).unwrap();
    std::fs::write(
        crl_dir.join("root.crl"),
        pki.root.crl(&[], days_from_now(1)),
    )
    .unwrap();
    let mut policy = pki.policy(RevocationMode::Crl);
    policy.crl.paths = vec![crl_dir];
    policy.crl.fetch = false;
    // No distribution point is asked: the server has no issuing.crl at all.
    pki.check(&pki.crl_user(0x2005), &policy).unwrap();
    let (_, reason, origin) = revoked(pki.check(&pki.crl_user(0x2006), &policy));
    assert_eq!(reason, "superseded");
    assert!(origin.contains("issuing.crl"), "{origin}");
    assert_eq!(pki.http.hits("issuing.crl"), 0);
    assert_eq!(pki.http.hits("root.crl"), 0);
}

#[test]
fn an_oversized_local_crl_file_is_not_used_and_named() {
    let pki = Pki::new();
    let crl_dir = pki.path("crl");
    std::fs::create_dir(&crl_dir).unwrap();
    let entries: Vec<Revoked> = (0..200)
        .map(|serial| Revoked::new(0x10_0000 + serial, None))
        .collect();
    let crl = pki.issuing.crl(&entries, days_from_now(1));
    assert!(crl.len() > 2048);
    std::fs::write(crl_dir.join("issuing.crl"), &crl).unwrap();
    let mut policy = pki.policy(RevocationMode::Crl);
    policy.crl.paths = vec![crl_dir.clone()];
    policy.crl.fetch = false;
    policy.crl.max_bytes = 2048;
    let (_, why) = unknown(pki.check(&pki.crl_user(0x2010), &policy));
    let expected = format!(
        "{}: larger than 2048 bytes (pki.crl.max_bytes)",
        crl_dir.join("issuing.crl").display()
    );
    assert!(why.contains(&expected), "{why}");
}

#[test]
fn an_expired_crl_is_not_used() {
    let pki = Pki::new();
    let crl_dir = pki.path("crl");
    std::fs::create_dir(&crl_dir).unwrap();
    std::fs::write(
        crl_dir.join("issuing.crl"),
        pki.issuing
            .crl(&[], OffsetDateTime::now_utc() - time::Duration::minutes(30)),
    )
    .unwrap();
    let mut policy = pki.policy(RevocationMode::Crl);
    policy.crl.paths = vec![crl_dir];
    policy.crl.fetch = false;
    let (_, why) = unknown(pki.check(&pki.user(0x2007, Pointers::default()), &policy));
    assert!(why.contains("outside its validity"), "{why}");
}

#[test]
fn fetched_crls_are_cached_until_next_update() {
    let pki = Pki::new();
    pki.publish_issuing_crl(&[]);
    let policy = pki.policy(RevocationMode::Crl);
    let user = pki.crl_user(0x2008);
    pki.check(&user, &policy).unwrap();
    pki.http.route("issuing.crl", Reply::Status(500));
    pki.http.route("root.crl", Reply::Status(500));
    pki.check(&user, &policy).unwrap();
    assert_eq!(pki.http.hits("issuing.crl"), 1);
    assert_eq!(pki.http.hits("root.crl"), 1);
    // At a time past nextUpdate the cached copy is stale and the server is asked again.
    let later =
        UnixTime::since_unix_epoch(Duration::from_secs(days_from_now(2).unix_timestamp() as u64));
    unknown(pki.check_at(&user, &policy, later));
    assert_eq!(pki.http.hits("issuing.crl"), 2);
}

/// A CRL with the issuing CA's name, signed by another key, valid until
/// 9999: what an on-path attacker can answer to a plain-HTTP CRL download.
fn forged_issuing_crl() -> Vec<u8> {
    let forger = TestCa::new(ISSUING_CA);
    let year_9999 = time::Date::from_calendar_date(9999, time::Month::December, 31)
        .unwrap()
        .midnight()
        .assume_utc();
    forger.crl(&[], year_9999)
}

#[test]
fn a_forged_crl_from_the_network_is_never_cached() {
    let pki = Pki::new();
    let user = pki.crl_user(0x2011);
    pki.http
        .route("issuing.crl", Reply::Body(forged_issuing_crl()));
    let policy = pki.policy(RevocationMode::Crl);
    let why = failed(pki.check(&user, &policy));
    assert!(why.contains("/issuing.crl"), "{why}");
    let cached = pki
        .path("cache")
        .join(crl::cache_name(&pki.http.url("issuing.crl")));
    assert!(
        !cached.exists(),
        "the forged CRL was cached as {}",
        cached.display()
    );

    // The next login gets the genuine CRL from the server.
    let genuine = pki.publish_issuing_crl(&[]);
    pki.check(&user, &policy).unwrap();
    assert_eq!(pki.http.hits("issuing.crl"), 2);
    assert_eq!(std::fs::read(&cached).unwrap(), genuine);
}

#[test]
fn a_forged_crl_planted_in_the_cache_is_evicted_and_the_genuine_one_fetched() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let genuine = pki.publish_issuing_crl(&[]);
    let user = pki.crl_user(0x2012);
    let cache = pki.path("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cached = cache.join(crl::cache_name(&pki.http.url("issuing.crl")));
    std::fs::write(&cached, forged_issuing_crl()).unwrap();
    std::fs::set_permissions(&cached, std::fs::Permissions::from_mode(0o644)).unwrap();

    pki.check(&user, &pki.policy(RevocationMode::Crl))
        .unwrap_or_else(|error| panic!("login refused: {error}"));
    assert_eq!(
        pki.http.hits("issuing.crl"),
        1,
        "the genuine CRL is fetched"
    );
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        genuine,
        "and replaces the forged one in the cache"
    );
}

#[test]
fn a_delta_crl_is_reported_as_unsupported() {
    let pki = Pki::new();
    pki.http
        .route("issuing.crl", Reply::Body(pki.issuing.delta_crl()));
    let (_, why) = unknown(pki.check(&pki.crl_user(0x2009), &pki.policy(RevocationMode::Crl)));
    assert!(why.contains("delta CRLs are not supported"), "{why}");
}

#[test]
fn oversized_and_truncated_crls_are_refused_naming_the_url() {
    let pki = Pki::new();
    let crl = pki.publish_issuing_crl(
        &(0..200)
            .map(|serial| Revoked::new(0x10_0000 + serial, None))
            .collect::<Vec<_>>(),
    );
    let mut policy = pki.policy(RevocationMode::Crl);
    policy.cache_dir = None;
    policy.crl.max_bytes = 2048;
    let user = pki.crl_user(0x200a);
    let (_, why) = unknown(pki.check(&user, &policy));
    assert!(why.contains("larger than 2048 bytes"), "{why}");
    assert!(why.contains("/issuing.crl"), "{why}");

    policy.crl.max_bytes = 1024 * 1024;
    pki.http.route(
        "issuing.crl",
        Reply::Truncated {
            declared: crl.len(),
            body: crl[..crl.len() / 2].to_vec(),
        },
    );
    let (_, why) = unknown(pki.check(&user, &policy));
    assert!(why.contains("/issuing.crl"), "{why}");

    // Truncated but with a matching length: not a CRL.
    pki.http
        .route("issuing.crl", Reply::Body(crl[..crl.len() / 2].to_vec()));
    let (_, why) = unknown(pki.check(&user, &policy));
    assert!(why.contains("not a usable CRL"), "{why}");
}

#[test]
fn a_crl_of_100000_entries_is_searched() {
    let pki = Pki::new();
    let mut entries: Vec<Revoked> = (0..100_000)
        .map(|index| Revoked::new(0x100_0000 + index, Some(RevocationReason::Superseded)))
        .collect();
    entries.push(Revoked::new(0x200c, Some(RevocationReason::KeyCompromise)));
    let crl_dir = pki.path("crl");
    std::fs::create_dir(&crl_dir).unwrap();
    let crl = pki.issuing.crl(&entries, days_from_now(1));
    assert!(crl.len() > 2_000_000, "{} bytes", crl.len());
    std::fs::write(crl_dir.join("issuing.crl"), &crl).unwrap();
    let mut policy = pki.policy(RevocationMode::Crl);
    policy.crl.paths = vec![crl_dir];
    pki.check(&pki.crl_user(0x200b), &policy).unwrap();
    let (_, reason, _) = revoked(pki.check(&pki.crl_user(0x200c), &policy));
    assert_eq!(reason, "keyCompromise");
}

#[test]
fn the_revocation_deadline_bounds_a_slow_server() {
    let pki = Pki::new();
    let crl = pki.issuing.crl(&[], days_from_now(1));
    pki.http
        .route("issuing.crl", Reply::Slow(Duration::from_secs(3), crl));
    let mut policy = pki.policy(RevocationMode::Crl);
    policy.revocation_timeout = Duration::from_millis(400);
    let started = Instant::now();
    let (_, why) = unknown(pki.check(&pki.crl_user(0x200d), &policy));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(why.contains("no answer within"), "{why}");
}

#[test]
fn ocsp_good_revoked_and_unknown_from_a_real_responder() {
    let pki = Pki::new();
    let responder = OcspResponder::start(&pki.responder_files(), pki.dir.path());
    // The issuing CA has no OCSP URL: its status comes from the root's CRL.
    let mut policy = pki.policy(RevocationMode::OcspThenCrl);
    pki.check(&pki.ocsp_user(0x3001, &responder.url()), &policy)
        .unwrap_or_else(|error| panic!("{error}\n{}", responder.log()));

    let (who, reason, origin) =
        revoked(pki.check(&pki.ocsp_user(0x3002, &responder.url()), &policy));
    assert_eq!(
        (who.as_str(), reason.as_str()),
        ("certificate", "keyCompromise")
    );
    assert!(origin.contains(&responder.url()), "{origin}");

    let why = failed(pki.check(&pki.ocsp_user(0x3003, &responder.url()), &policy));
    assert!(why.contains("status unknown"), "{why}");

    // SHA-256 CertIDs are answered too.
    policy.ocsp.hash = OcspHash::Sha256;
    policy.cache_dir = None;
    pki.check(&pki.ocsp_user(0x3001, &responder.url()), &policy)
        .unwrap();
}

/// The issuing CA certificate as the root issued it, and a cross-certificate
/// of the same CA (same name, same key) from a second trusted root, both on
/// the token. The user's certificate is good by OCSP; the issuing CA's
/// level is left to the CRL of whichever root issued the path's copy.
struct CrossCertified {
    pki: Pki,
    cross_root: TestCa,
    cross: Vec<u8>,
    store: TrustStore,
}

impl CrossCertified {
    fn new() -> Self {
        let pki = Pki::new();
        let cross_root = TestCa::new("Tessera Test Cross Root");
        let cross = cross_root.cross_certify(
            ISSUING_CA,
            &pki.issuing,
            &Pointers {
                crl_url: Some(pki.http.url("cross-root.crl")),
                ocsp_url: None,
            },
        );
        pki.http.route(
            "cross-root.crl",
            Reply::Body(cross_root.crl(&[], days_from_now(1))),
        );
        let ca = pki.path("ca-cross");
        std::fs::create_dir(&ca).unwrap();
        std::fs::write(ca.join("root.pem"), pki.root.pem()).unwrap();
        std::fs::write(ca.join("cross-root.pem"), cross_root.pem()).unwrap();
        let store = TrustStore::load(&[ca]).unwrap();
        Self {
            pki,
            cross_root,
            cross,
            store,
        }
    }

    fn check(&self, user: &[u8], intermediates: &[&[u8]]) -> Result<(), Rejection> {
        let policy = Policy {
            cache_dir: None,
            ..self.pki.policy(RevocationMode::OcspThenCrl)
        };
        let der = CertificateDer::from(user);
        let intermediates: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|intermediate| CertificateDer::from(*intermediate))
            .collect();
        let deadline = Deadline::after(policy.revocation_timeout);
        validate(
            &self.store,
            &policy,
            &der,
            &intermediates,
            unix_now(),
            &deadline,
        )
        .map(|_| ())
    }
}

#[test]
fn the_crl_pass_keeps_the_path_whose_revocation_was_checked() {
    let rig = CrossCertified::new();
    let pki = &rig.pki;
    let responder = OcspResponder::start(&pki.responder_files(), pki.dir.path());
    let user = pki.ocsp_user(0x3001, &responder.url());
    let both = [pki.issuing.der(), rig.cross.as_slice()];
    // Either path validates while nothing is revoked.
    rig.check(&user, &both)
        .unwrap_or_else(|error| panic!("{error}\n{}", responder.log()));
    rig.check(&user, &[rig.cross.as_slice(), pki.issuing.der()])
        .unwrap();

    // Both copies of the issuing CA are revoked by their issuers. The
    // first pass chooses the root's copy and finds its CRL; the CRL pass
    // must not fall back to the cross-certificate, whose CRL nobody read.
    pki.http.route(
        "root.crl",
        Reply::Body(pki.root.crl(
            &[Revoked {
                serial: serial_of(pki.issuing.der()),
                reason: Some(RevocationReason::CaCompromise),
            }],
            days_from_now(1),
        )),
    );
    pki.http.route(
        "cross-root.crl",
        Reply::Body(rig.cross_root.crl(
            &[Revoked {
                serial: serial_of(&rig.cross),
                reason: Some(RevocationReason::CaCompromise),
            }],
            days_from_now(1),
        )),
    );
    let cross_hits = pki.http.hits("cross-root.crl");
    let (who, reason, origin) = revoked(rig.check(&user, &both));
    assert!(who.contains(ISSUING_CA), "{who}");
    assert_eq!(reason, "cACompromise");
    assert!(origin.contains("/root.crl"), "{origin}");
    assert_eq!(
        pki.http.hits("cross-root.crl"),
        cross_hits,
        "the first pass chose the root's copy"
    );
}

#[test]
fn a_response_signed_by_the_ca_itself_is_accepted() {
    let pki = Pki::new();
    let files = ResponderFiles::write(
        pki.dir.path(),
        "by-ca",
        pki.issuing.pem(),
        &(
            pki.issuing.pem().to_owned(),
            pki.issuing.key_pem().to_owned(),
        ),
    );
    write_index(
        &files.index,
        &[IndexEntry {
            serial: 0x3004,
            subject: "/O=Example Test/CN=user3004".to_owned(),
            revoked: None,
        }],
    );
    let responder = OcspResponder::start(&files, pki.dir.path());
    pki.check(
        &pki.ocsp_user(0x3004, &responder.url()),
        &pki.policy(RevocationMode::OcspThenCrl),
    )
    .unwrap_or_else(|error| panic!("{error}\n{}", responder.log()));
}

#[test]
fn an_unreachable_responder_is_allowed_only_with_soft_fail() {
    let pki = Pki::new();
    let mut responder = OcspResponder::start(&pki.responder_files(), pki.dir.path());
    let url = responder.url();
    responder.stop();
    let user = pki.ocsp_user(0x3001, &url);
    let mut policy = pki.policy(RevocationMode::Ocsp);
    let (who, why) = unknown(pki.check(&user, &policy));
    assert_eq!(who, "certificate");
    assert!(why.contains(&url), "{why}");
    policy.ocsp.soft_fail = true;
    pki.check(&user, &policy).unwrap();
}

#[test]
fn cached_ocsp_responses_are_used_until_next_update() {
    let pki = Pki::new();
    let mut responder = OcspResponder::start(&pki.responder_files(), pki.dir.path());
    let user = pki.ocsp_user(0x3001, &responder.url());
    let policy = pki.policy(RevocationMode::OcspThenCrl);
    pki.check(&user, &policy).unwrap();
    responder.stop();
    pki.check(&user, &policy).unwrap();
    let uncached = Policy {
        cache_dir: None,
        ..pki.policy(RevocationMode::Ocsp)
    };
    unknown(pki.check(&user, &uncached));
}

#[test]
fn a_response_signed_by_a_rogue_key_is_refused() {
    let pki = Pki::new();
    let user = pki.ocsp_user(0x3001, "http://127.0.0.1:9/unused");
    let rogue = TestCa::new(ISSUING_CA);
    let files = ResponderFiles::write(
        pki.dir.path(),
        "rogue",
        pki.issuing.pem(),
        &rogue.ocsp_signer("Tessera Test OCSP Responder"),
    );
    write_index(
        &files.index,
        &[IndexEntry {
            serial: 0x3001,
            subject: "/O=Example Test/CN=user3001".to_owned(),
            revoked: None,
        }],
    );
    let response = files.respond(&pki.ocsp_request(&user, None), 1, pki.dir.path());
    pki.http.route("rogue", Reply::Body(response));
    let why = failed(pki.check(&user, &pki.canned_ocsp_policy("rogue")));
    assert!(why.contains("not signed by the issuing CA"), "{why}");
}

#[test]
fn a_stale_response_is_refused() {
    let pki = Pki::new();
    let user = pki.ocsp_user(0x3001, "http://127.0.0.1:9/unused");
    let response = pki
        .responder_files()
        .respond(&pki.ocsp_request(&user, None), 1, pki.dir.path());
    pki.http.route("stale", Reply::Body(response));
    let policy = pki.canned_ocsp_policy("stale");
    let later =
        UnixTime::since_unix_epoch(Duration::from_secs(days_from_now(2).unix_timestamp() as u64));
    let why = failed(pki.check_at(&user, &policy, later));
    assert!(why.contains("stale response"), "{why}");
}

#[test]
fn a_response_about_another_certificate_is_refused() {
    let pki = Pki::new();
    let other = pki.ocsp_user(0x3001, "http://127.0.0.1:9/unused");
    let user = pki.ocsp_user(0x3002, "http://127.0.0.1:9/unused");
    let response =
        pki.responder_files()
            .respond(&pki.ocsp_request(&other, None), 1, pki.dir.path());
    pki.http.route("other", Reply::Body(response));
    let why = failed(pki.check(&user, &pki.canned_ocsp_policy("other")));
    assert!(why.contains("about another certificate"), "{why}");
}

#[test]
fn a_replayed_response_fails_the_nonce_check() {
    let pki = Pki::new();
    let user = pki.ocsp_user(0x3001, "http://127.0.0.1:9/unused");
    let response = pki.responder_files().respond(
        &pki.ocsp_request(&user, Some(&[7u8; 32])),
        1,
        pki.dir.path(),
    );
    pki.http.route("replay", Reply::Body(response));
    let mut policy = pki.canned_ocsp_policy("replay");
    policy.ocsp.nonce = true;
    let why = failed(pki.check(&user, &policy));
    assert!(why.contains("nonce does not match"), "{why}");
}

#[test]
fn oversized_truncated_and_garbage_responses_are_refused() {
    let pki = Pki::new();
    let user = pki.ocsp_user(0x3001, "http://127.0.0.1:9/unused");
    let response = pki
        .responder_files()
        .respond(&pki.ocsp_request(&user, None), 1, pki.dir.path());
    let policy = pki.canned_ocsp_policy("ocsp");

    pki.http.route("ocsp", Reply::Body(vec![0x30; 300 * 1024]));
    let (_, why) = unknown(pki.check(&user, &policy));
    assert!(why.contains("larger than 262144 bytes"), "{why}");

    pki.http.route(
        "ocsp",
        Reply::Truncated {
            declared: response.len(),
            body: response[..response.len() / 2].to_vec(),
        },
    );
    let (_, why) = unknown(pki.check(&user, &policy));
    assert!(why.contains("/ocsp"), "{why}");

    pki.http
        .route("ocsp", Reply::Body(response[..response.len() / 2].to_vec()));
    let (_, why) = unknown(pki.check(&user, &policy));
    assert!(why.contains("malformed response"), "{why}");

    // The intact response passes, so the failures above are the damage's.
    pki.http.route("ocsp", Reply::Body(response));
    pki.check(&user, &policy).unwrap();
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }

    /// `input` with a few random flips, truncations, insertions or deletions.
    fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut bytes = input.to_vec();
        for _ in 0..=self.below(4) {
            match self.below(5) {
                0 if !bytes.is_empty() => {
                    let at = self.below(bytes.len());
                    bytes[at] ^= 1 << self.below(8);
                }
                1 if !bytes.is_empty() => {
                    let at = self.below(bytes.len());
                    bytes[at] = self.next() as u8;
                }
                2 => bytes.truncate(self.below(bytes.len() + 1)),
                3 => {
                    let at = self.below(bytes.len() + 1);
                    let junk: Vec<u8> = (0..self.below(16)).map(|_| self.next() as u8).collect();
                    bytes.splice(at..at, junk);
                }
                _ if !bytes.is_empty() => {
                    let at = self.below(bytes.len());
                    let end = (at + self.below(32)).min(bytes.len());
                    bytes.drain(at..end);
                }
                _ => {}
            }
        }
        bytes
    }
}

#[test]
fn mutated_crls_and_ocsp_responses_are_errors_never_panics() {
    let pki = Pki::new();
    let user_der = pki.ocsp_user(0x3001, "http://127.0.0.1:9/unused");
    let user = Certificate::from_der(&user_der).unwrap();
    let issuer = Certificate::from_der(pki.issuing.der()).unwrap();
    let issuer_name = webpki::EndEntityCert::try_from(&CertificateDer::from(user_der.as_slice()))
        .unwrap()
        .issuer()
        .to_vec();
    let crl = pki.issuing.crl(
        &[
            Revoked::new(0x3001, Some(RevocationReason::KeyCompromise)),
            Revoked::new(0x3005, None),
        ],
        days_from_now(1),
    );
    let target = Target {
        certificate: &user,
        issuer: &issuer,
        issuer_der: pki.issuing.der(),
    };
    let cert_id = ocsp::cert_id(OcspHash::Sha1, target).unwrap();
    let response = pki.responder_files().respond(
        &pki.ocsp_request(&user_der, Some(&[1u8; 32])),
        1,
        pki.dir.path(),
    );
    let policy = Policy::default();
    let deadline = Deadline::after(Duration::from_secs(1));
    let context = ocsp::Context {
        policy: &policy.ocsp,
        algorithms: &policy.signature_algorithms,
        now: unix_now(),
        skew: 300,
        deadline: &deadline,
        cache: None,
    };
    // The unmutated inputs are accepted, so the mutations exercise real parsing.
    let document = tessera_core::pki::crl::CrlDocument::parse(crl.clone(), "crl".into()).unwrap();
    assert!(document
        .webpki()
        .unwrap()
        .find_serial(&serial_of(&user_der))
        .unwrap()
        .is_some());
    ocsp::verify_response(&response, &cert_id, Some(&[1u8; 32]), target, &context).unwrap();

    let mut mutator = Mutator(0x5EED_1234_ABCD_0001);
    let (mut crl_errors, mut ocsp_errors) = (0, 0);
    for _ in 0..3000 {
        let bytes = mutator.mutate(&crl);
        match tessera_core::pki::crl::CrlDocument::parse(bytes, "fuzz".into()) {
            Ok(document) => {
                if let Ok(list) = document.webpki() {
                    let _ = list.find_serial(&serial_of(&user_der));
                    let _ =
                        tessera_core::pki::crl::is_authoritative(&list, &issuer_name, &user, true);
                }
            }
            Err(_) => crl_errors += 1,
        }
        let bytes = mutator.mutate(&response);
        if ocsp::verify_response(&bytes, &cert_id, Some(&[1u8; 32]), target, &context).is_err() {
            ocsp_errors += 1;
        }
    }
    assert!(crl_errors > 1000, "{crl_errors} CRL errors");
    assert!(ocsp_errors > 1000, "{ocsp_errors} OCSP errors");
}
