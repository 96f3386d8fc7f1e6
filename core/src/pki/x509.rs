//! What several validation steps read from certificates: extensions,
//! validity periods, times in words, and the EKUs a login accepts.

use const_oid::db::rfc5912;
use const_oid::ObjectIdentifier;
use der::Decode;
use rustls_pki_types::UnixTime;
use x509_cert::Certificate;

/// id-kp-clientAuth.
pub const EKU_CLIENT_AUTH: ObjectIdentifier = rfc5912::ID_KP_CLIENT_AUTH;
/// Microsoft smart-card logon.
pub const EKU_SMARTCARD_LOGON: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.2");
/// id-pkinit-KPClientAuth (RFC 4556).
pub const EKU_PKINIT_CLIENT: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.2.3.4");

/// Decodes the extension `oid` of `certificate`, if present.
pub(crate) fn extension<'a, T: Decode<'a>>(
    certificate: &'a Certificate,
    oid: ObjectIdentifier,
) -> der::Result<Option<T>> {
    certificate
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|extension| extension.extn_id == oid)
        .map(|extension| T::from_der(extension.extn_value.as_bytes()))
        .transpose()
}

/// notBefore and notAfter of a certificate in seconds since the epoch;
/// (0, 0) for a certificate that does not parse (it never validates anyway).
pub fn validity_window(der: &[u8]) -> (u64, u64) {
    Certificate::from_der(der).map_or((0, 0), |certificate| {
        let validity = &certificate.tbs_certificate.validity;
        (
            validity.not_before.to_unix_duration().as_secs(),
            validity.not_after.to_unix_duration().as_secs(),
        )
    })
}

/// `time` as `2026-03-01 12:00:00 UTC`.
pub fn format_time(time: UnixTime) -> String {
    let seconds = std::time::Duration::from_secs(time.as_secs());
    match der::DateTime::from_unix_duration(seconds) {
        Ok(date) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            date.year(),
            date.month(),
            date.day(),
            date.hour(),
            date.minutes(),
            date.seconds()
        ),
        Err(_) => format!("{} seconds after 1970", time.as_secs()),
    }
}
