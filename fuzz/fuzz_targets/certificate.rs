//! A certificate from a token: the mapping fields, every template field and
//! rule over them, and the revocation pointers and validity read from it.
#![no_main]

use der::Decode;
use libfuzzer_sys::fuzz_target;
use tessera_core::pki::{self, crl, ocsp};
use tessera_mappers::{
    map_certificate, validate_username, CertificateFields, Rule, RuleConfig, Template,
};

/// Every field, alone and combined, with and without a domain.
const TEMPLATES: &[&str] = &[
    "{cn}",
    "{uid}",
    "{email}",
    "{email.local}",
    "{upn}",
    "{upn.local}",
    "{subject}",
    "{issuer}",
    "{serial}",
    "{sha256}",
    "{cn}.{uid}-{email.local}@{upn.local}",
];

fuzz_target!(|data: &[u8]| {
    if let Ok(fields) = CertificateFields::from_der(data) {
        assert_eq!(fields.sha256_hex.len(), 64);
        let mut rules = Vec::new();
        for (index, source) in TEMPLATES.iter().enumerate() {
            let template = Template::parse(source).unwrap();
            for domain in [None, Some("example.test")] {
                let _ = template.expand(&fields, domain);
                let config = RuleConfig {
                    name: None,
                    user: (*source).to_owned(),
                    domain: domain.map(str::to_owned),
                };
                if let Ok(rule) = Rule::compile(index, &config) {
                    rules.push(rule);
                }
            }
        }
        // Each rule alone, so that every rule's verdict is computed.
        for rule in &rules {
            let mapping = map_certificate(std::slice::from_ref(rule), &fields);
            for user in mapping.users() {
                assert_eq!(validate_username(user), Ok(()), "mapped {user:?}");
            }
            for trace in &mapping.trace {
                let _ = trace.to_string();
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
