//! A certificate from a token: the mapping fields, every template field and
//! its conversions, rules over them, and the revocation pointers and
//! validity read from it.
#![no_main]

use der::Decode;
use libfuzzer_sys::fuzz_target;
use tessera_core::pki::{self, crl, ocsp};
use tessera_fuzz::{map, rule};
use tessera_mappers::{validate_username, CertificateFields, Template};

/// Every field name and conversion, alone and combined.
const TEMPLATES: &[&str] = &[
    "{cn}",
    "{uid}",
    "{email}",
    "{email.local}",
    "{upn}",
    "{upn.local}",
    "{krb_principal}",
    "{principal}",
    "{subject}",
    "{subject_dn}",
    "{issuer}",
    "{serial}",
    "{serial_dec}",
    "{serial_reversed}",
    "{sha256}",
    "{sha1}",
    "{pubkey_sha1}",
    "{ski}",
    "{sid}",
    "{cn}.{uid}-{email.local}@{upn.local}",
];

fuzz_target!(|data: &[u8]| {
    if let Ok(fields) = CertificateFields::from_der(data) {
        assert_eq!(fields.sha256_hex.len(), 64);
        for (index, source) in TEMPLATES.iter().enumerate() {
            if let Ok(template) = Template::parse(source) {
                for domain in [None, Some("example.test")] {
                    let _ = template.expand(&fields, domain);
                }
            }
            for keys in [
                &[("user", *source)][..],
                &[("user", *source), ("domain", "example.test")][..],
            ] {
                // Each rule alone, so that every rule's verdict is computed.
                if let Some(rule) = rule(index, keys) {
                    let mapping = map(std::slice::from_ref(&rule), &fields);
                    for user in mapping.users() {
                        assert_eq!(validate_username(user), Ok(()), "mapped {user:?}");
                    }
                    let _ = format!("{:?}", mapping.trace);
                }
            }
        }
    }
    if let Ok(certificate) = x509_cert::Certificate::from_der(data) {
        for url in crl::distribution_point_urls(&certificate) {
            assert!(url.to_ascii_lowercase().starts_with("http://"), "{url}");
        }
        let policy = pki::Policy::default();
        if let Some(url) = ocsp::responder_url(&policy.ocsp, &certificate) {
            assert!(url.to_ascii_lowercase().starts_with("http://"), "{url}");
        }
        let _ = pki::validity_window(data);
    }
});
