//! Writes the seed corpora of the fuzz targets (`fuzz/seeds/<target>/`) and
//! the fixed material the targets are built with (`fuzz/material/`): a test
//! PKI's certificates, CRLs and OCSP responses, configs, session bindings,
//! PKCS#11 URIs, durations and APDU sequences.
//!
//! Usage, from the workspace root: `cargo run -p tessera-tools --bin
//! tessera-fuzz-seeds -- fuzz`. The committed output is what the fuzz targets
//! and `tests/rig/tests/fuzz_seeds.rs` expect, so regenerate both together.
// A generator run by hand: a failure is a panic with its reason.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};

use clap::Parser;
use der::Decode;
use rcgen::{
    CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    CrlIssuingDistributionPoint, CrlScope, DistinguishedName, DnType, DnValue, KeyIdMethod,
    KeyPair, RevocationReason, SerialNumber,
};
use tessera_core::binding::{BoundToken, SessionBinding, BINDING_VERSION};
use tessera_core::pki::ocsp::{self, Target};
use tessera_core::pki::policy::OcspHash;
use tessera_testrig::ocsp::{write_index, IndexEntry, ResponderFiles};
use tessera_testrig::pki::{Pointers, Revoked, TestCa, UserCert};
use time::{Duration, OffsetDateTime};
use x509_cert::Certificate;

/// The serial of the material's user certificate: good in the OCSP index.
const USER_SERIAL: u64 = 0x3001;
/// The serial the seed CRLs and one OCSP response revoke.
const REVOKED_SERIAL: u64 = 0x3002;
/// The nonce of the seed OCSP responses that carry one.
const NONCE: [u8; 32] = [0x4e; 32];

#[derive(Debug, Parser)]
#[command(about = "Write the fuzz targets' seed corpora and material")]
struct Cli {
    /// The fuzz crate directory (`fuzz` at the workspace root).
    dir: PathBuf,
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create seed directory");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let cli = Cli::parse();
    let seeds = cli.dir.join("seeds");
    let material = cli.dir.join("material");
    let scratch = tempfile::tempdir().expect("scratch directory");
    let now = OffsetDateTime::now_utc();

    let root = TestCa::new("Tessera Fuzz Root");
    let issuing = root.intermediate(
        "Tessera Fuzz Issuing CA",
        &Pointers {
            crl_url: Some("http://crl.example.test/root.crl".to_owned()),
            ocsp_url: None,
        },
    );
    let mut spec = UserCert::valid("alice");
    spec.serial = Some(USER_SERIAL);
    spec.pointers = Pointers {
        crl_url: Some("http://crl.example.test/issuing.crl".to_owned()),
        ocsp_url: Some("http://ocsp.example.test/".to_owned()),
    };
    let (user, _) = issuing.issue_with_new_key(&spec);
    let issuing_key = KeyPair::from_pem(issuing.key_pem()).expect("issuing CA key");

    write(&material, "issuer.der", issuing.der());
    write(&material, "issuer-key.der", &issuing_key.serialize_der());
    write(&material, "user.der", &user);
    write(
        &material,
        "now",
        now.unix_timestamp().to_string().as_bytes(),
    );
    write(&material, "nonce", &NONCE);
    let (card_certificate, card_key) = issuing.issue_with_new_key(&UserCert::valid("card"));
    write(&material, "card-key.der", &card_key);
    write(&material, "card.der", &card_certificate);

    certificates(&seeds.join("certificate"), &user, root.der());
    mapping(&seeds, &user);
    crls(&seeds.join("crl"), &issuing, now);
    ocsp_responses(&seeds.join("ocsp"), &issuing, &user, scratch.path());
    texts(&seeds);
    apdus(&seeds.join("apdu"));
}

fn certificates(dir: &Path, user: &[u8], root: &[u8]) {
    write(dir, "user.der", user);
    write(dir, "root.der", root);
    // UID and emailAddress attributes, which the test PKI's certificates lack.
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Bob Example");
    name.push(
        DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 1]),
        DnValue::Utf8String("bob".to_owned()),
    );
    name.push(
        DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
        DnValue::Ia5String("bob@example.test".try_into().expect("IA5")),
    );
    params.distinguished_name = name;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let certificate = params.self_signed(&key).expect("self-sign");
    write(dir, "uid-email.der", certificate.der());
}

/// Seeds of the mapping parsers: SSSD matchrules, DNs, a mapfile and an
/// authorized_keys file with the user certificate's key.
fn mapping(seeds: &Path, user: &[u8]) {
    let matchrules = seeds.join("matchrule");
    write(
        &matchrules,
        "subject",
        b"<SUBJECT>^CN=alice,O=Example Test$",
    );
    write(
        &matchrules,
        "and",
        b"&&<ISSUER>^CN=Tessera Fuzz Issuing CA,O=Example Test$<EKU>clientAuth<KU>digitalSignature",
    );
    write(
        &matchrules,
        "or",
        b"||<SAN:rfc822Name>^alice@example\\.test$<SAN:ntPrincipalName>.*@EXAMPLE.TEST<EKU>1.3.6.1.4.1.311.20.2.2",
    );
    let dns = seeds.join("dn");
    write(&dns, "simple", b"CN=alice,O=Example Test");
    write(
        &dns,
        "escaped",
        b"CN=Smith\\, John+UID=jsmith,OU=Users,DC=example,DC=test",
    );
    write(
        &dns,
        "hex",
        b"1.2.840.113549.1.9.1=#1610616c696365406578616d706c652e74657374,CN=a\\20b",
    );
    write(
        &seeds.join("mapfile"),
        "map",
        b"# digest mapfile\n4e2f0c alice\nab12cd  bob\n\n4e2f0c carol\n",
    );
    let fields = tessera_mappers::CertificateFields::from_der(user).expect("user fields");
    let key = fields.public_key.expect("user key");
    write(
        &seeds.join("authorized"),
        "authorized_keys",
        format!(
            "# alice's card\n{}\nfrom=\"10.0.0.1\" {} with options\n",
            key.authorized_keys_line(),
            key.authorized_keys_line()
        )
        .as_bytes(),
    );
}

fn crls(dir: &Path, issuing: &TestCa, now: OffsetDateTime) {
    let revoked = [
        Revoked::new(REVOKED_SERIAL, Some(RevocationReason::KeyCompromise)),
        Revoked::new(0x3005, None),
    ];
    let crl = issuing.crl(&revoked, now + Duration::days(1));
    write(dir, "issuing.crl", &crl);
    write(dir, "empty.crl", &issuing.crl(&[], now + Duration::days(1)));
    // An issuing distribution point naming the user's distribution point.
    let partitioned = issuing.sign_crl(CertificateRevocationListParams {
        this_update: now - Duration::hours(1),
        next_update: now + Duration::days(1),
        crl_number: SerialNumber::from(vec![2]),
        issuing_distribution_point: Some(CrlIssuingDistributionPoint {
            distribution_point: CrlDistributionPoint {
                uris: vec!["http://crl.example.test/issuing.crl".to_owned()],
            },
            scope: Some(CrlScope::UserCertsOnly),
        }),
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    });
    write(dir, "partitioned.crl", partitioned.der());
    // PEM, which local CRL files may be.
    let pem = partitioned.pem().expect("PEM");
    write(dir, "partitioned.pem", pem.as_bytes());
}

fn ocsp_responses(dir: &Path, issuing: &TestCa, user: &[u8], scratch: &Path) {
    let certificate = Certificate::from_der(user).expect("user certificate");
    let issuer = Certificate::from_der(issuing.der()).expect("issuing CA");
    let target = Target {
        certificate: &certificate,
        issuer: &issuer,
        issuer_der: issuing.der(),
    };
    let cert_id = ocsp::cert_id(OcspHash::Sha1, target).expect("CertID");
    let request = ocsp::request(&cert_id, Some(&NONCE)).expect("request");
    let mut revoked_id = cert_id.clone();
    revoked_id.serial_number =
        x509_cert::serial_number::SerialNumber::new(&[0x30, 0x02]).expect("serial");
    let revoked_request = ocsp::request(&revoked_id, None).expect("request");
    let index = [
        IndexEntry {
            serial: USER_SERIAL,
            subject: "/O=Example Test/CN=alice".to_owned(),
            revoked: None,
        },
        IndexEntry {
            serial: REVOKED_SERIAL,
            subject: "/O=Example Test/CN=mallory".to_owned(),
            revoked: Some("keyCompromise"),
        },
    ];
    let delegated = ResponderFiles::write(
        scratch,
        "delegated",
        issuing.pem(),
        &issuing.ocsp_signer("Tessera Fuzz OCSP Responder"),
    );
    write_index(&delegated.index, &index);
    let by_ca = ResponderFiles::write(
        scratch,
        "by-ca",
        issuing.pem(),
        &(issuing.pem().to_owned(), issuing.key_pem().to_owned()),
    );
    write_index(&by_ca.index, &index);
    // The first byte is the target's mode: bit 0 re-signs the response
    // with the issuing CA's key first, bit 1 expects the nonce.
    let seed = |mode: u8, response: Vec<u8>| [vec![mode], response].concat();
    write(
        dir,
        "delegated-good",
        &seed(2, delegated.respond(&request, 1, scratch)),
    );
    let by_ca_good = by_ca.respond(&request, 1, scratch);
    write(dir, "by-ca-good", &seed(2, by_ca_good.clone()));
    write(dir, "by-ca-good-resigned", &seed(3, by_ca_good));
    write(
        dir,
        "by-ca-revoked-resigned",
        &seed(1, by_ca.respond(&revoked_request, 0, scratch)),
    );
}

fn texts(seeds: &Path) {
    let config = seeds.join("config");
    write(
        &config,
        "example.toml",
        include_bytes!("../../../etc/tessera.toml"),
    );
    write(
        &config,
        "every-key.toml",
        br#"version = 1
[pkcs11]
module = "/usr/lib/softhsm/libsofthsm2.so"
token = "pkcs11:token=Alice%27s%20card;slot-id=3"
[pki]
ca = ["/etc/tessera/ca"]
allowed_eku = ["pkinit", "1.3.6.1.5.5.7.3.2"]
require_eku = true
max_chain_depth = 2
signature_algorithms = ["ecdsa-p256-sha256", "rsa-pkcs1-sha384"]
clock_skew_seconds = 30
revocation = "crl-then-ocsp"
revocation_timeout_ms = 2500
cache_dir = "/var/cache/tessera"
[pki.crl]
files = ["/etc/tessera/crl"]
fetch = false
max_bytes = 4096
missing = "allow"
missing_intermediate = "deny"
[pki.ocsp]
url = "http://ocsp.example.test/"
hash = "sha256"
nonce = false
soft_fail = true
max_bytes = 8192
[auth]
card = "optional"
wait_for_card = "30s"
pin_source = "try_first_pass"
export_pin_as_authtok = true
unblock_pin = true
[service.sudo]
card = "required"
[session]
bindings_dir = "/run/tessera/sessions"
[[rule]]
name = "by upn"
user = "{upn.local}"
domain = "example.test"
[[rule]]
user = "x-{cn}-{{{serial}}}"
"#,
    );

    let binding = SessionBinding {
        version: BINDING_VERSION,
        session_id: "c1".to_owned(),
        uid: 1000,
        user: "alice".to_owned(),
        service: "gdm-smartcard".to_owned(),
        tty: "tty1".to_owned(),
        pid: 4242,
        created: 1_763_900_000,
        certificate_sha256: "ab".repeat(32),
        token: BoundToken {
            label: "alice's \"card\"".to_owned(),
            manufacturer: "piv_II".to_owned(),
            model: "PKCS#15 emulated".to_owned(),
            serial: "0123456789abcdef".to_owned(),
            slot_description: "Virtual PCD 00 00".to_owned(),
        },
    };
    write(
        &seeds.join("binding"),
        "c1.toml",
        toml::to_string(&binding).expect("binding").as_bytes(),
    );

    let uris = seeds.join("pkcs11_uri");
    write(
        &uris,
        "all",
        b"pkcs11:token=Alice%27s%20card;manufacturer=piv_II;serial=42;model=PKCS%2315;slot-description=Virtual%20PCD%2000%2000;slot-id=3",
    );
    write(&uris, "empty", b"pkcs11:");

    let durations = seeds.join("duration");
    for text in ["30s", "500ms", "2m", "0"] {
        write(&durations, text, text.as_bytes());
    }

    let templates = seeds.join("template");
    write(
        &templates,
        "upn",
        b"template={upn.local}\ndomain=example.test\ncn=Alice\nupn=alice@EXAMPLE.TEST\nupn=root@evil.test\nserial=0a1b\nsha256=00ff\nsubject=CN=Alice\nissuer=CN=CA\n",
    );
    write(
        &templates,
        "product",
        b"template={{{cn}-{uid}}}.{email}\ncn=a\ncn=b\nuid=1\nuid=2\nemail=a@x.test\n",
    );
}

/// APDU sequences as OpenSC sends them: each command is a length byte and
/// the command.
fn apdus(dir: &Path) {
    let frame = |commands: &[&[u8]]| -> Vec<u8> {
        commands
            .iter()
            .flat_map(|command| std::iter::once(command.len() as u8).chain(command.iter().copied()))
            .collect()
    };
    let select: &[u8] = &[
        0x00, 0xA4, 0x04, 0x00, 0x09, 0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x00,
    ];
    let discovery: &[u8] = &[0x00, 0xCB, 0x3F, 0xFF, 0x03, 0x5C, 0x01, 0x7E, 0x00];
    let certificate: &[u8] = &[
        0x00, 0xCB, 0x3F, 0xFF, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x05, 0x00,
    ];
    let get_response: &[u8] = &[0x00, 0xC0, 0x00, 0x00, 0x00];
    let verify: &[u8] = &[
        0x00, 0x20, 0x00, 0x80, 0x08, b'1', b'2', b'3', b'4', b'5', b'6', 0xFF, 0xFF,
    ];
    let wrong_pin: &[u8] = &[
        0x00, 0x20, 0x00, 0x80, 0x08, b'0', b'0', b'0', b'0', b'0', b'0', 0xFF, 0xFF,
    ];
    let pin_status: &[u8] = &[0x00, 0x20, 0x00, 0x80];
    // GENERAL AUTHENTICATE with slot 9A's P-256 key (algorithm 11) over a
    // 32-byte digest, sent in two chained parts.
    let mut template = vec![0x7C, 0x24, 0x82, 0x00, 0x81, 0x20];
    template.extend([0x5A; 32]);
    let (first, second) = template.split_at(20);
    let mut chained = vec![0x10, 0x87, 0x11, 0x9A, first.len() as u8];
    chained.extend(first);
    let mut last = vec![0x00, 0x87, 0x11, 0x9A, second.len() as u8];
    last.extend(second);
    last.push(0x00);
    write(
        dir,
        "login",
        &frame(&[
            select,
            discovery,
            certificate,
            get_response,
            pin_status,
            verify,
            &chained,
            &last,
        ]),
    );
    write(
        dir,
        "wrong-pin",
        &frame(&[select, wrong_pin, wrong_pin, pin_status, verify]),
    );
}
