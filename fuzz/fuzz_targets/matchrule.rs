//! SSSD certificate matching rules (`matchrule`, as `sss_certmap` writes
//! them), parsed alone and evaluated in a rule against the material's user
//! certificate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_fuzz::{map, rule, USER_DER};
use tessera_mappers::{CertificateFields, MatchRule};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = MatchRule::parse(text);
    if let Some(rule) = rule(0, &[("matchrule", text), ("user", "{cn}")]) {
        assert!(
            parsed.is_ok(),
            "a rule compiled with a matchrule that does not parse"
        );
        let fields = CertificateFields::from_der(USER_DER).unwrap();
        let _ = map(&[rule], &fields);
    }
});
