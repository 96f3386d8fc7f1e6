//! The fuzz targets' committed seeds (`fuzz/seeds/`) and material
//! (`fuzz/material/`) still reach deep into the parsers: each seed is
//! accepted by the code its target fuzzes, so a fuzz run starts from valid
//! certificates, CRLs, OCSP answers, configs and card sessions rather than
//! from noise. Regenerate with `cargo run -p tessera-tools --bin
//! tessera-fuzz-seeds -- fuzz` (tools/src/bin/fuzz_seeds.rs) when this fails
//! after a format change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use der::Decode;
use rustls_pki_types::{CertificateDer, UnixTime};
use tessera_core::binding::SessionBinding;
use tessera_core::config::Config;
use tessera_core::pkcs11_uri::TokenFilter;
use tessera_core::pki::ocsp::{self, Answer, Context, Target};
use tessera_core::pki::policy::OcspHash;
use tessera_core::pki::{crl, Deadline, Policy};
use tessera_core::policy::parse_duration;
use tessera_mappers::{parse_authorized_keys, CertificateFields, Dn, MapFile, MatchRule, Template};
use tessera_vcard::keys::SlotKey;
use tessera_vcard::pin::{Credentials, Padded};
use tessera_vcard::piv::{PivCard, Slot, SlotId};
use x509_cert::Certificate;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn material(name: &str) -> Vec<u8> {
    std::fs::read(fuzz_dir().join("material").join(name)).unwrap()
}

/// Every seed of `target`, by file name.
fn seeds(target: &str) -> BTreeMap<String, Vec<u8>> {
    let dir = fuzz_dir().join("seeds").join(target);
    let seeds: BTreeMap<_, _> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    assert!(!seeds.is_empty(), "no seeds for {target}");
    seeds
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

fn now() -> UnixTime {
    let seconds = text(&material("now")).trim().parse().unwrap();
    UnixTime::since_unix_epoch(Duration::from_secs(seconds))
}

#[test]
fn certificate_seeds_have_mapping_fields() {
    let seeds = seeds("certificate");
    for (name, der) in &seeds {
        CertificateFields::from_der(der).unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    let bob = CertificateFields::from_der(&seeds["uid-email.der"]).unwrap();
    assert_eq!(bob.uids, ["bob"]);
    assert_eq!(bob.emails, ["bob@example.test"]);
    let alice = CertificateFields::from_der(&seeds["user.der"]).unwrap();
    assert_eq!(alice.upns, ["alice@EXAMPLE.TEST"]);
}

#[test]
fn crl_seeds_are_usable_and_about_the_material_user() {
    let user_der = material("user.der");
    let user = Certificate::from_der(&user_der).unwrap();
    let issuer = webpki::EndEntityCert::try_from(&CertificateDer::from(user_der.as_slice()))
        .unwrap()
        .issuer()
        .to_vec();
    for (name, bytes) in seeds("crl") {
        let documents = crl::parse_file_contents(bytes, &name)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        for document in documents {
            assert!(document.is_fresh(now(), 0), "{name}");
            let list = document.webpki().unwrap();
            assert!(
                crl::is_authoritative(&list, &issuer, &user, true),
                "{name} covers the user"
            );
            let revoked = list.find_serial(&[0x30, 0x02]).unwrap().is_some();
            assert_eq!(revoked, name == "issuing.crl", "{name}");
        }
    }
}

#[test]
fn ocsp_seeds_verify_at_the_material_time() {
    let user_der = material("user.der");
    let issuer_der = material("issuer.der");
    let user = Certificate::from_der(&user_der).unwrap();
    let issuer = Certificate::from_der(&issuer_der).unwrap();
    let target = Target {
        certificate: &user,
        issuer: &issuer,
        issuer_der: &issuer_der,
    };
    let cert_id = ocsp::cert_id(OcspHash::Sha1, target).unwrap();
    let policy = Policy::default();
    let deadline = Deadline::after(Duration::from_secs(60));
    let context = Context {
        policy: &policy.ocsp,
        algorithms: &policy.signature_algorithms,
        now: now(),
        skew: 300,
        deadline: &deadline,
        cache: None,
    };
    let nonce = material("nonce");
    for (name, seed) in seeds("ocsp") {
        let (mode, response) = seed.split_first().unwrap();
        if name.contains("revoked") {
            // About another serial: only re-signed seeds are about that one.
            assert_eq!(mode & 1, 1, "{name}");
            continue;
        }
        let expected = (mode & 2 == 2).then_some(nonce.as_slice());
        let verified = ocsp::verify_response(response, &cert_id, expected, target, &context)
            .unwrap_or_else(|failure| panic!("{name}: {failure}"));
        assert_eq!(verified.answer, Answer::Good, "{name}");
    }
}

#[test]
fn text_seeds_parse() {
    for (name, bytes) in seeds("config") {
        Config::parse(Path::new(&name), text(&bytes))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    for (name, bytes) in seeds("binding") {
        SessionBinding::parse(Path::new(&name), text(&bytes))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    for (name, bytes) in seeds("pkcs11_uri") {
        TokenFilter::parse(text(&bytes)).unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    for (name, bytes) in seeds("duration") {
        parse_duration(text(&bytes)).unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    for (name, bytes) in seeds("template") {
        let source = text(&bytes)
            .lines()
            .find_map(|line| line.strip_prefix("template="))
            .unwrap();
        Template::parse(source).unwrap_or_else(|error| panic!("{name}: {error}"));
    }
}

#[test]
fn mapping_seeds_parse() {
    for (name, bytes) in seeds("matchrule") {
        MatchRule::parse(text(&bytes)).unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    for (name, bytes) in seeds("dn") {
        Dn::parse(text(&bytes)).unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    let map = MapFile::read(Path::new("map"), &seeds("mapfile")["map"][..]).unwrap();
    let users: Vec<&str> = map
        .get("4e2f0c")
        .into_iter()
        .map(|(user, _)| user)
        .collect();
    assert_eq!(users, ["alice", "carol"]);
    let keys =
        parse_authorized_keys(Path::new("keys"), &seeds("authorized")["authorized_keys"]).unwrap();
    // The second line carries options (from=), which no login honours: skipped.
    assert_eq!(keys.len(), 1);
    let user = CertificateFields::from_der(&material("user.der")).unwrap();
    assert_eq!(
        Some(keys[0].key.fingerprint()),
        user.public_key.map(|key| key.fingerprint()),
        "the key is the material user's"
    );
}

#[test]
fn the_apdu_login_seed_signs_with_the_card_key() {
    let key = SlotKey::from_pkcs8_der(&material("card-key.der")).unwrap();
    let slots = BTreeMap::from([(
        SlotId::Authentication,
        Slot {
            key: Some(key),
            certificate: Some(material("card.der")),
        },
    )]);
    let credentials = Credentials::new(
        Padded::from_value(b"123456").unwrap(),
        Padded::from_value(b"12345678").unwrap(),
        3,
        3,
        None,
    )
    .unwrap();
    let mut card = PivCard::new(slots, [7; 16], credentials);
    let seeds = seeds("apdu");
    let mut rest = seeds["login"].as_slice();
    let mut statuses = Vec::new();
    while let Some((&length, tail)) = rest.split_first() {
        let (command, tail) = tail.split_at(usize::from(length));
        rest = tail;
        let response = card.process(command);
        statuses.push(response[response.len() - 2..].to_vec());
    }
    // SELECT, GET DATA, GET RESPONSE (the certificate's last bytes are
    // still pending: 61 xx), the PIN status query (not verified, 3 tries),
    // VERIFY, the chained GENERAL AUTHENTICATE and its signature.
    assert_eq!(statuses[3][0], 0x61, "{statuses:02x?}");
    statuses[3][1] = 0;
    assert_eq!(
        statuses,
        [
            [0x90, 0x00],
            [0x90, 0x00],
            [0x61, 0x00],
            [0x61, 0x00],
            [0x63, 0xC3],
            [0x90, 0x00],
            [0x90, 0x00],
            [0x90, 0x00],
        ]
    );
}
