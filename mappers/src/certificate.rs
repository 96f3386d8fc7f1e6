//! The certificate fields that mapping rules can use.

use const_oid::db::{rfc3280, rfc4519, rfc5912};
use const_oid::ObjectIdentifier;
use der::asn1::{Ia5StringRef, PrintableStringRef, TeletexStringRef, Utf8StringRef};
use der::{Decode, Tag, Tagged};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::name::Name;
use x509_cert::Certificate;

/// Certificates larger than this are refused before parsing (a hostile token
/// could hand us anything).
pub const MAX_CERTIFICATE_SIZE: usize = 64 * 1024;

/// Microsoft's User Principal Name otherName (SAN).
const OID_MS_UPN: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.3");

/// Why a certificate could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The encoded certificate exceeds [`MAX_CERTIFICATE_SIZE`].
    #[error("certificate is {size} bytes, more than the limit of {MAX_CERTIFICATE_SIZE}")]
    TooLarge {
        /// Size of the rejected encoding.
        size: usize,
    },
    /// The bytes are not a DER X.509 certificate.
    #[error("certificate is not valid DER: {0}")]
    Der(#[from] der::Error),
}

/// Values extracted from one certificate, as the mapping rules see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFields {
    /// Subject DN in RFC 4514 string form.
    pub subject: String,
    /// Issuer DN in RFC 4514 string form.
    pub issuer: String,
    /// Every commonName attribute of the subject, in certificate order.
    pub common_names: Vec<String>,
    /// Every userid (UID) attribute of the subject.
    pub uids: Vec<String>,
    /// rfc822Name SAN entries, then emailAddress attributes of the subject.
    pub emails: Vec<String>,
    /// Microsoft UPN otherName SAN entries.
    pub upns: Vec<String>,
    /// Serial number, lower-case hex without separators.
    pub serial_hex: String,
    /// SHA-256 of the whole DER certificate, lower-case hex.
    pub sha256_hex: String,
}

impl CertificateFields {
    /// Parses a DER certificate and extracts the mapping fields.
    pub fn from_der(der_bytes: &[u8]) -> Result<Self, CertificateError> {
        if der_bytes.len() > MAX_CERTIFICATE_SIZE {
            return Err(CertificateError::TooLarge {
                size: der_bytes.len(),
            });
        }
        let certificate = Certificate::from_der(der_bytes)?;
        let tbs = &certificate.tbs_certificate;

        let mut emails = Vec::new();
        let mut upns = Vec::new();
        for extension in tbs.extensions.iter().flatten() {
            if extension.extn_id != rfc5912::ID_CE_SUBJECT_ALT_NAME {
                continue;
            }
            let names = SubjectAltName::from_der(extension.extn_value.as_bytes())?;
            for name in names.0 {
                match name {
                    GeneralName::Rfc822Name(email) => emails.push(email.to_string()),
                    GeneralName::OtherName(other) if other.type_id == OID_MS_UPN => {
                        if let Some(upn) = directory_string(&other.value) {
                            upns.push(upn);
                        }
                    }
                    _ => {}
                }
            }
        }
        emails.extend(attribute_values(&tbs.subject, rfc3280::EMAIL_ADDRESS));

        Ok(Self {
            subject: tbs.subject.to_string(),
            issuer: tbs.issuer.to_string(),
            common_names: attribute_values(&tbs.subject, rfc4519::CN),
            uids: attribute_values(&tbs.subject, rfc4519::UID),
            emails,
            upns,
            serial_hex: hex::encode(tbs.serial_number.as_bytes()),
            sha256_hex: hex::encode(ring::digest::digest(&ring::digest::SHA256, der_bytes)),
        })
    }
}

/// All string values of one attribute type in a DN, in DER order.
fn attribute_values(name: &Name, oid: ObjectIdentifier) -> Vec<String> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == oid)
        .filter_map(|atv| directory_string(&atv.value))
        .collect()
}

/// Decodes the string types that appear in DNs and otherNames. Values of other
/// types (BMPString, binary) are skipped rather than guessed at.
fn directory_string(value: &der::Any) -> Option<String> {
    let text = match value.tag() {
        Tag::Utf8String => Utf8StringRef::try_from(value).ok()?.as_str().to_owned(),
        Tag::PrintableString => PrintableStringRef::try_from(value)
            .ok()?
            .as_str()
            .to_owned(),
        Tag::Ia5String => Ia5StringRef::try_from(value).ok()?.as_str().to_owned(),
        Tag::TeletexString => TeletexStringRef::try_from(value).ok()?.as_str().to_owned(),
        _ => return None,
    };
    Some(text)
}
