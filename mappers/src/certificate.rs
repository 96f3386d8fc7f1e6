//! The certificate fields that mapping rules can use.

use const_oid::db::{rfc3280, rfc4519, rfc5912};
use const_oid::ObjectIdentifier;
use der::asn1::OctetStringRef;
use der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    CertificatePolicies, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::Certificate;

use crate::dn::{directory_string, Dn};
use crate::public_key::PublicKey;

/// Certificates larger than this are refused before parsing (a hostile token
/// could hand us anything).
pub const MAX_CERTIFICATE_SIZE: usize = 64 * 1024;

/// Microsoft's User Principal Name otherName (SAN).
pub const OID_MS_UPN: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.3");
/// KRB5PrincipalName otherName (RFC 4556, PKINIT).
pub const OID_KRB5_PRINCIPAL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.2.2");
/// Microsoft's NTDS CA security extension, which carries the account SID.
pub const OID_MS_SID_EXTENSION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.25.2");
const OID_MS_SID_OTHER_NAME: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.25.2.1");

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

/// The kinds of subjectAltName entry, as rule conditions name them.
pub const SAN_KINDS: &[&str] = &[
    "email",
    "dns",
    "uri",
    "ip",
    "upn",
    "krb_principal",
    "other_name",
    "directory_name",
    "registered_id",
    "x400_address",
    "edi_party_name",
];

/// keyUsage bit names, in bit order.
pub const KEY_USAGE_NAMES: &[&str] = &[
    "digitalSignature",
    "nonRepudiation",
    "keyEncipherment",
    "dataEncipherment",
    "keyAgreement",
    "keyCertSign",
    "cRLSign",
    "encipherOnly",
    "decipherOnly",
];

/// Values extracted from one certificate, as the mapping rules see them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateFields {
    /// Subject DN in RFC 4514 string form.
    pub subject: String,
    /// Issuer DN in RFC 4514 string form.
    pub issuer: String,
    /// The subject DN's structure, for exact comparison.
    pub subject_dn: Dn,
    /// The issuer DN's structure.
    pub issuer_dn: Dn,
    /// Every commonName attribute of the subject, in certificate order.
    pub common_names: Vec<String>,
    /// Every userid (UID) attribute of the subject.
    pub uids: Vec<String>,
    /// rfc822Name SAN entries, then emailAddress attributes of the subject.
    pub emails: Vec<String>,
    /// Microsoft UPN otherName SAN entries.
    pub upns: Vec<String>,
    /// KRB5PrincipalName otherName SAN entries as `name/instance@REALM`.
    pub krb_principals: Vec<String>,
    /// dNSName SAN entries.
    pub dns_names: Vec<String>,
    /// uniformResourceIdentifier SAN entries.
    pub uris: Vec<String>,
    /// The kinds of SAN entry present (see [`SAN_KINDS`]).
    pub san_kinds: Vec<&'static str>,
    /// Serial number magnitude, big-endian, without leading zero bytes
    /// (at least one byte).
    pub serial: Vec<u8>,
    /// Serial number, lower-case hex of [`CertificateFields::serial`].
    pub serial_hex: String,
    /// SHA-256 of the whole DER certificate, lower-case hex.
    pub sha256_hex: String,
    /// SHA-1 of the whole DER certificate, lower-case hex (pam_pkcs11's digest mapper).
    pub sha1_hex: String,
    /// SHA-1 of the DER SubjectPublicKeyInfo, lower-case hex (AD's `X509:<SHA1-PUKEY>`).
    pub public_key_sha1_hex: String,
    /// subjectKeyIdentifier, if present.
    pub ski: Option<Vec<u8>>,
    /// The account SID from Microsoft's security extension, if present.
    pub sid: Option<String>,
    /// extendedKeyUsage OIDs (empty: no extension).
    pub eku: Vec<ObjectIdentifier>,
    /// keyUsage bit names set (`None`: no extension).
    pub key_usage: Option<Vec<&'static str>>,
    /// Certificate policy OIDs.
    pub policies: Vec<ObjectIdentifier>,
    /// The subject public key, when its type is one tokens sign with.
    pub public_key: Option<PublicKey>,
    /// The DER certificate.
    pub der: Vec<u8>,
}

/// The DER bytes of a certificate file, PEM (the first CERTIFICATE block)
/// or DER.
pub fn certificate_der(bytes: &[u8]) -> Result<Vec<u8>, CertificateError> {
    if bytes.len() > 4 * MAX_CERTIFICATE_SIZE {
        return Err(CertificateError::TooLarge { size: bytes.len() });
    }
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let chain = Certificate::load_pem_chain(bytes)?;
        let first = chain
            .first()
            .ok_or(der::Error::from(der::ErrorKind::Failed))?;
        return Ok(first.to_der()?);
    }
    Ok(bytes.to_vec())
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
        let subject_dn = Dn::from_name(&tbs.subject)?;
        let issuer_dn = Dn::from_name(&tbs.issuer)?;

        let mut fields = Self {
            subject: subject_dn.to_string(),
            issuer: issuer_dn.to_string(),
            common_names: subject_dn.values(&rfc4519::CN),
            uids: subject_dn.values(&rfc4519::UID),
            subject_dn,
            issuer_dn,
            der: der_bytes.to_vec(),
            ..Self::default()
        };

        for extension in tbs.extensions.iter().flatten() {
            let value = extension.extn_value.as_bytes();
            match extension.extn_id {
                rfc5912::ID_CE_SUBJECT_ALT_NAME => {
                    for name in SubjectAltName::from_der(value)?.0 {
                        fields.add_san(name)?;
                    }
                }
                rfc5912::ID_CE_EXT_KEY_USAGE => {
                    fields.eku = ExtendedKeyUsage::from_der(value)?.0;
                }
                rfc5912::ID_CE_KEY_USAGE => {
                    let usage = KeyUsage::from_der(value)?;
                    fields.key_usage = Some(key_usage_names(&usage));
                }
                rfc5912::ID_CE_CERTIFICATE_POLICIES => {
                    fields.policies = CertificatePolicies::from_der(value)?
                        .0
                        .into_iter()
                        .map(|policy| policy.policy_identifier)
                        .collect();
                }
                rfc5912::ID_CE_SUBJECT_KEY_IDENTIFIER => {
                    fields.ski = Some(SubjectKeyIdentifier::from_der(value)?.0.as_bytes().to_vec());
                }
                OID_MS_SID_EXTENSION => fields.sid = sid_from_extension(value)?,
                _ => {}
            }
        }
        let subject_emails = subject_dn_emails(&fields.subject_dn);
        fields.emails.extend(subject_emails);

        let serial = tbs.serial_number.as_bytes();
        let start = serial
            .iter()
            .position(|&byte| byte != 0)
            .unwrap_or(serial.len().saturating_sub(1));
        fields.serial = serial[start..].to_vec();
        fields.serial_hex = hex::encode(&fields.serial);
        fields.sha256_hex = hex::encode(ring::digest::digest(&ring::digest::SHA256, der_bytes));
        #[allow(deprecated)] // A name for matching, not a security decision.
        let sha1 = &ring::digest::SHA1_FOR_LEGACY_USE_ONLY;
        fields.sha1_hex = hex::encode(ring::digest::digest(sha1, der_bytes));
        let spki_der = tbs.subject_public_key_info.to_der()?;
        fields.public_key_sha1_hex = hex::encode(ring::digest::digest(sha1, &spki_der));
        fields.public_key = match crate::public_key::PublicKey::from_spki_der(&spki_der) {
            Ok(key) => Some(key),
            Err(error) => {
                tracing::debug!(id = "auth.mapping.key_unusable", %error, "certificate key not usable for key matching");
                None
            }
        };
        Ok(fields)
    }

    fn add_san(&mut self, name: GeneralName) -> Result<(), der::Error> {
        let kind = match name {
            GeneralName::Rfc822Name(email) => {
                self.emails.push(email.to_string());
                "email"
            }
            GeneralName::DnsName(name) => {
                self.dns_names.push(name.to_string());
                "dns"
            }
            GeneralName::UniformResourceIdentifier(uri) => {
                self.uris.push(uri.to_string());
                "uri"
            }
            GeneralName::IpAddress(_) => "ip",
            GeneralName::DirectoryName(_) => "directory_name",
            GeneralName::RegisteredId(_) => "registered_id",
            GeneralName::EdiPartyName(_) => "edi_party_name",
            GeneralName::OtherName(other) if other.type_id == OID_MS_UPN => {
                if let Some(upn) = directory_string(&other.value) {
                    self.upns.push(upn);
                }
                "upn"
            }
            GeneralName::OtherName(other) if other.type_id == OID_KRB5_PRINCIPAL => {
                match krb5_principal(&other.value.to_der()?) {
                    Ok(principal) => self.krb_principals.push(principal),
                    // A broken name is not a principal; the rest of the
                    // certificate stays usable.
                    Err(error) => {
                        tracing::debug!(id = "auth.mapping.principal_malformed", %error, "malformed KRB5PrincipalName skipped")
                    }
                }
                "krb_principal"
            }
            GeneralName::OtherName(_) => "other_name",
        };
        if !self.san_kinds.contains(&kind) {
            self.san_kinds.push(kind);
        }
        Ok(())
    }
}

fn subject_dn_emails(dn: &Dn) -> Vec<String> {
    dn.values(&rfc3280::EMAIL_ADDRESS)
}

fn key_usage_names(usage: &KeyUsage) -> Vec<&'static str> {
    let bits = [
        KeyUsages::DigitalSignature,
        KeyUsages::NonRepudiation,
        KeyUsages::KeyEncipherment,
        KeyUsages::DataEncipherment,
        KeyUsages::KeyAgreement,
        KeyUsages::KeyCertSign,
        KeyUsages::CRLSign,
        KeyUsages::EncipherOnly,
        KeyUsages::DecipherOnly,
    ];
    bits.iter()
        .zip(KEY_USAGE_NAMES)
        .filter(|(bit, _)| usage.0.contains(**bit))
        .map(|(_, name)| *name)
        .collect()
}

/// RFC 4556: `KRB5PrincipalName ::= SEQUENCE { realm [0] Realm,
/// principalName [1] PrincipalName }`, `PrincipalName ::= SEQUENCE {
/// name-type [0] Int32, name-string [1] SEQUENCE OF KerberosString }`.
/// Read with a small TLV walker: der 0.7 has no GeneralString type.
fn krb5_principal(encoded: &[u8]) -> Result<String, der::Error> {
    fn malformed() -> der::Error {
        der::Error::from(der::ErrorKind::Failed)
    }
    fn expect(bytes: &[u8], tag: u8) -> Result<(&[u8], &[u8]), der::Error> {
        match read_tlv(bytes) {
            Some((found, content, rest)) if found == tag => Ok((content, rest)),
            _ => Err(malformed()),
        }
    }
    let text = |bytes: &[u8]| -> Result<String, der::Error> {
        let (content, _) = expect(bytes, 0x1B)?;
        std::str::from_utf8(content)
            .map(str::to_owned)
            .map_err(|error| der::Error::from(der::ErrorKind::Utf8(error)))
    };
    let (sequence, _) = expect(encoded, 0x30)?;
    let (realm, rest) = expect(sequence, 0xA0)?;
    let realm = text(realm)?;
    let (principal, _) = expect(rest, 0xA1)?;
    let (principal, _) = expect(principal, 0x30)?;
    let (_name_type, rest) = expect(principal, 0xA0)?;
    let (names, _) = expect(rest, 0xA1)?;
    let (mut names, _) = expect(names, 0x30)?;
    let mut components = Vec::new();
    while !names.is_empty() {
        let (_, _, rest) = read_tlv(names).ok_or_else(malformed)?;
        components.push(text(&names[..names.len() - rest.len()])?);
        names = rest;
    }
    if components.is_empty() {
        return Err(malformed());
    }
    Ok(format!("{}@{realm}", components.join("/")))
}

/// One DER TLV with a definite length of at most 4 length bytes:
/// (tag, content, rest).
fn read_tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (length, &rest[count..])
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

/// The SID in Microsoft's NTDS CA security extension: a SEQUENCE OF
/// GeneralName holding an otherName 1.3.6.1.4.1.311.25.2.1 whose value is an
/// OCTET STRING with the SID in text form (`S-1-5-21-…`).
fn sid_from_extension(value: &[u8]) -> Result<Option<String>, der::Error> {
    let names = SubjectAltName::from_der(value)?;
    for name in names.0 {
        if let GeneralName::OtherName(other) = name {
            if other.type_id != OID_MS_SID_OTHER_NAME {
                continue;
            }
            let octets = OctetStringRef::try_from(&other.value)?;
            let text = String::from_utf8_lossy(octets.as_bytes()).into_owned();
            let valid = text.starts_with("S-")
                && text[2..].split('-').all(|part| {
                    !part.is_empty() && part.len() <= 20 && part.bytes().all(|b| b.is_ascii_digit())
                });
            return Ok(valid.then_some(text));
        }
    }
    Ok(None)
}

/// Decimal representation of a big-endian unsigned integer.
pub fn decimal(bytes: &[u8]) -> String {
    let mut digits: Vec<u8> = Vec::new(); // little-endian base-10 digits
    for &byte in bytes {
        let mut carry = u32::from(byte);
        for digit in digits.iter_mut() {
            let value = u32::from(*digit) * 256 + carry;
            *digit = (value % 10) as u8;
            carry = value / 10;
        }
        while carry > 0 {
            digits.push((carry % 10) as u8);
            carry /= 10;
        }
    }
    if digits.is_empty() {
        return "0".to_owned();
    }
    digits.iter().rev().map(|d| char::from(b'0' + d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_of_big_serials() {
        assert_eq!(decimal(&[]), "0");
        assert_eq!(decimal(&[0x01, 0x00]), "256");
        assert_eq!(decimal(&[0xff; 8]), u64::MAX.to_string());
        assert_eq!(
            decimal(&[0x01, 0, 0, 0, 0, 0, 0, 0, 0]),
            "18446744073709551616"
        );
    }
}
