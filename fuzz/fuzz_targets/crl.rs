//! CRLs as read from a local file, the cache or a distribution point:
//! parsing (PEM or DER), freshness, the serial look-up and the "is this
//! CRL authoritative for that certificate?" rule.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;
use tessera_core::pki::crl;
use tessera_fuzz::{certificates, now, USER_DER};

fuzz_target!(|data: &[u8]| {
    let Ok(documents) = crl::parse_file_contents(data.to_vec(), "fuzz.crl") else {
        return;
    };
    let (user, _) = certificates();
    let issuer = webpki::EndEntityCert::try_from(&CertificateDer::from(USER_DER))
        .unwrap()
        .issuer()
        .to_vec();
    assert!(!documents.is_empty());
    for document in &documents {
        let _ = document.is_fresh(now(), 300);
        // parse() only returns what webpki accepts.
        let list = document.webpki().unwrap();
        let _ = list.find_serial(user.tbs_certificate.serial_number.as_bytes());
        for is_end_entity in [true, false] {
            let _ = crl::is_authoritative(&list, &issuer, user, is_end_entity);
        }
    }
});
