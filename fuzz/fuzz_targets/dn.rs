//! Distinguished names as rules write them (`issuer = "CN=…,O=…"`), and
//! every way they are formatted back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_mappers::{Dn, DnError, DnStyle};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(dn) = Dn::parse(text) {
        // What a DN formats to in RFC 4514 parses back to the same DN,
        // unless escaping took it past the 4 KiB bound on DN strings.
        let ldap = dn.format(DnStyle::Ldap);
        match Dn::parse(&ldap) {
            Err(DnError::TooLong) => {}
            again => assert_eq!(again.as_ref(), Ok(&dn), "{text:?} -> {ldap:?}"),
        }
        for style in [DnStyle::X500, DnStyle::Ad, DnStyle::AdLdap] {
            let _ = dn.format(style);
        }
    }
});
