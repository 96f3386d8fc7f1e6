//! Template parsing and expansion, and rules, over arbitrary field values.
//! The input is text: `key=value` lines, with keys `template`, `domain`
//! and the certificate fields (`cn`, `uid`, `email`, `upn` may repeat).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_mappers::{
    map_certificate, validate_username, CertificateFields, Rule, RuleConfig, Template,
};

/// tessera_mappers' bound on the user names one template expands to.
const MAX_EXPANSIONS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut source = String::new();
    let mut domain = None;
    let mut fields = CertificateFields {
        subject: String::new(),
        issuer: String::new(),
        common_names: Vec::new(),
        uids: Vec::new(),
        emails: Vec::new(),
        upns: Vec::new(),
        serial_hex: String::new(),
        sha256_hex: String::new(),
    };
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
            "subject" => fields.subject = value,
            "issuer" => fields.issuer = value,
            "serial" => fields.serial_hex = value,
            "sha256" => fields.sha256_hex = value,
            _ => {}
        }
    }
    if let Ok(template) = Template::parse(&source) {
        assert_eq!(template.source(), source);
        assert!(template.fields().next().is_some(), "a template has a field");
        if let Ok(expansions) = template.expand(&fields, domain.as_deref()) {
            assert!(expansions.len() <= MAX_EXPANSIONS, "{}", expansions.len());
            for (index, expansion) in expansions.iter().enumerate() {
                assert!(
                    !expansions[..index].contains(expansion),
                    "duplicate {expansion:?}"
                );
            }
        }
    }
    let config = RuleConfig {
        name: None,
        user: source,
        domain,
    };
    if let Ok(rule) = Rule::compile(0, &config) {
        let mapping = map_certificate(&[rule], &fields);
        for user in mapping.users() {
            assert_eq!(validate_username(user), Ok(()), "mapped {user:?}");
        }
        let _ = mapping.trace.iter().map(ToString::to_string).count();
    }
});
