//! What the fuzz targets share: the fixed test PKI they check inputs
//! against (`material/`, written by `tessera-fuzz-seeds` together with the
//! seed corpora in `seeds/`).

use std::sync::OnceLock;
use std::time::Duration;

use der::Decode;
use rustls_pki_types::UnixTime;
use x509_cert::Certificate;

/// The issuing CA's certificate (DER).
pub const ISSUER_DER: &[u8] = include_bytes!("../material/issuer.der");
/// The issuing CA's private key (PKCS#8 DER, P-256).
pub const ISSUER_KEY: &[u8] = include_bytes!("../material/issuer-key.der");
/// The user certificate the CRL and OCSP seeds are about (DER).
pub const USER_DER: &[u8] = include_bytes!("../material/user.der");
/// The nonce the OCSP seeds that carry one echo.
pub const NONCE: &[u8] = include_bytes!("../material/nonce");
/// The virtual card's P-256 key (PKCS#8 DER) and certificate.
pub const CARD_KEY: &[u8] = include_bytes!("../material/card-key.der");
/// The virtual card's certificate (DER).
pub const CARD_DER: &[u8] = include_bytes!("../material/card.der");
const NOW: &str = include_str!("../material/now");

/// When the material was made: inside every seed's validity window, so a
/// run is deterministic whatever the clock says.
pub fn now() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(NOW.trim().parse().unwrap()))
}

/// The parsed user and issuer certificates.
pub fn certificates() -> &'static (Certificate, Certificate) {
    static PARSED: OnceLock<(Certificate, Certificate)> = OnceLock::new();
    PARSED.get_or_init(|| {
        (
            Certificate::from_der(USER_DER).unwrap(),
            Certificate::from_der(ISSUER_DER).unwrap(),
        )
    })
}
