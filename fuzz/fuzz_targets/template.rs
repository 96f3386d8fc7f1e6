//! Template parsing and expansion (user names and LDAP filters), and rules,
//! over arbitrary field values. The input is text: `key=value` lines, with
//! keys `template`, `domain` and the certificate fields (`cn`, `uid`,
//! `email`, `upn`, `principal` may repeat).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_fuzz::{map, rule};
use tessera_mappers::{validate_username, CertificateFields, Template};

/// tessera_mappers' bound on the user names one template expands to.
const MAX_EXPANSIONS: usize = 64;

fn check(template: &Template, fields: &CertificateFields, domain: Option<&str>) {
    assert!(
        template.placeholders().next().is_some(),
        "a template has a field"
    );
    if let Ok(expansions) = template.expand(fields, domain) {
        assert!(expansions.len() <= MAX_EXPANSIONS, "{}", expansions.len());
        for (index, expansion) in expansions.iter().enumerate() {
            assert!(
                !expansions[..index].contains(expansion),
                "duplicate {expansion:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut source = String::new();
    let mut domain = None;
    let mut fields = CertificateFields::default();
    for line in text.split('\n') {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.to_owned();
        match key {
            "template" => source = value,
            "domain" => domain = Some(value),
            "cn" => fields.common_names.push(value),
            "uid" => fields.uids.push(value),
            "email" => fields.emails.push(value),
            "upn" => fields.upns.push(value),
            "principal" => fields.krb_principals.push(value),
            "subject" => fields.subject = value,
            "issuer" => fields.issuer = value,
            "serial" => fields.serial = value.into_bytes(),
            "sha256" => fields.sha256_hex = value,
            _ => {}
        }
    }
    if let Ok(template) = Template::parse(&source) {
        assert_eq!(template.source(), source);
        check(&template, &fields, domain.as_deref());
    }
    if let Ok(template) = Template::parse_ldap_filter(&source) {
        check(&template, &fields, domain.as_deref());
    }
    let mut keys = vec![("user", source.as_str())];
    if let Some(domain) = &domain {
        keys.push(("domain", domain));
    }
    if let Some(rule) = rule(0, &keys) {
        for user in map(&[rule], &fields).users() {
            assert_eq!(validate_username(user), Ok(()), "mapped {user:?}");
        }
    }
});
