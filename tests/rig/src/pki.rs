//! A test PKI made with rcgen: CAs (an RSA or EC root, EC intermediates),
//! user certificates for public keys that live on tokens, OCSP signers and
//! CRLs, with CRL distribution points and AIA OCSP URLs.

use std::path::Path;
use std::process::Command;

use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, PublicKeyData, RevocationReason, RevokedCertParams, SanType,
    SerialNumber, SignatureAlgorithm, SigningKey,
};
use time::{Duration, OffsetDateTime};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
use x509_cert::spki::SubjectPublicKeyInfoOwned;

use crate::run;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A public key from a token's SubjectPublicKeyInfo, for rcgen to certify.
#[derive(Debug)]
pub struct TokenPublicKey {
    algorithm: &'static SignatureAlgorithm,
    key: Vec<u8>,
}

impl TokenPublicKey {
    /// Parses a DER SubjectPublicKeyInfo.
    pub fn from_spki(spki: &[u8]) -> Self {
        let info = SubjectPublicKeyInfoOwned::from_der(spki).expect("SPKI parses");
        let curve = info
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        let algorithm = if info.algorithm.oid == RSA_ENCRYPTION {
            &rcgen::PKCS_RSA_SHA256
        } else if info.algorithm.oid == ED25519 {
            &rcgen::PKCS_ED25519
        } else if curve == Some(SECP256R1) {
            &rcgen::PKCS_ECDSA_P256_SHA256
        } else if curve == Some(SECP384R1) {
            &rcgen::PKCS_ECDSA_P384_SHA384
        } else {
            panic!("unsupported SPKI algorithm {}", info.algorithm.oid)
        };
        Self {
            algorithm,
            key: info.subject_public_key.raw_bytes().to_vec(),
        }
    }
}

impl PublicKeyData for TokenPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

/// Microsoft smart-card logon EKU.
pub const SMARTCARD_LOGON: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 20, 2, 2];
const UPN_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 311, 20, 2, 3];

/// What to put in a user certificate.
#[derive(Debug, Clone)]
pub struct UserCert {
    /// Subject CN.
    pub cn: String,
    /// rfc822Name SAN.
    pub email: Option<String>,
    /// UPN otherName SAN.
    pub upn: Option<String>,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// EKUs (empty: no EKU extension).
    pub eku: Vec<ExtendedKeyUsagePurpose>,
    /// keyUsage bits (empty: no keyUsage extension).
    pub key_usage: Vec<KeyUsagePurpose>,
    /// Serial number (None: random).
    pub serial: Option<u64>,
    /// Where revocation information is published.
    pub pointers: Pointers,
}

/// A certificate's CRL distribution point and AIA OCSP responder.
#[derive(Debug, Clone, Default)]
pub struct Pointers {
    /// CRL distribution point URL.
    pub crl_url: Option<String>,
    /// OCSP responder URL (AIA).
    pub ocsp_url: Option<String>,
}

impl Pointers {
    fn apply(&self, params: &mut CertificateParams) {
        if let Some(url) = &self.crl_url {
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        if let Some(url) = &self.ocsp_url {
            let access = AuthorityInfoAccessSyntax(vec![AccessDescription {
                access_method: const_oid::db::rfc5280::ID_AD_OCSP,
                access_location: GeneralName::UniformResourceIdentifier(
                    der::asn1::Ia5String::new(url).expect("IA5 URL"),
                ),
            }]);
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 5, 5, 7, 1, 1],
                    access.to_der().expect("encode AIA"),
                ));
        }
    }
}

impl UserCert {
    /// A valid smart-card login certificate for `cn`, valid from yesterday for a year.
    pub fn valid(cn: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            cn: cn.to_owned(),
            email: Some(format!("{cn}@example.test")),
            upn: Some(format!("{cn}@EXAMPLE.TEST")),
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(365),
            eku: vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::Other(SMARTCARD_LOGON.to_vec()),
            ],
            key_usage: vec![KeyUsagePurpose::DigitalSignature],
            serial: None,
            pointers: Pointers::default(),
        }
    }

    fn params(&self) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Example Test");
        name.push(DnType::CommonName, self.cn.as_str());
        params.distinguished_name = name;
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        params.extended_key_usages = self.eku.clone();
        params.key_usages = self.key_usage.clone();
        params.use_authority_key_identifier_extension = true;
        if let Some(serial) = self.serial {
            params.serial_number = Some(SerialNumber::from(serial_bytes(serial)));
        }
        self.pointers.apply(&mut params);
        if let Some(email) = &self.email {
            params.subject_alt_names.push(SanType::Rfc822Name(
                email.clone().try_into().expect("IA5 email"),
            ));
        }
        if let Some(upn) = &self.upn {
            params.subject_alt_names.push(SanType::OtherName((
                UPN_OID.to_vec(),
                rcgen::OtherNameValue::Utf8String(upn.clone()),
            )));
        }
        params
    }
}

/// A certificate authority of the test PKI.
#[derive(Debug)]
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
    certificate_pem: String,
    certificate_der: Vec<u8>,
}

fn ca_params(cn: &str, pointers: &Pointers) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Example Test");
    name.push(DnType::CommonName, cn);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(30);
    params.not_after = now + Duration::days(3650);
    pointers.apply(&mut params);
    params
}

/// A certificate to be revoked in a CRL.
#[derive(Debug, Clone)]
pub struct Revoked {
    /// Its serial number (big-endian, as in the certificate).
    pub serial: Vec<u8>,
    /// The reason (None: no reasonCode extension).
    pub reason: Option<RevocationReason>,
}

impl Revoked {
    /// Serial `serial`, revoked for `reason`.
    pub fn new(serial: u64, reason: Option<RevocationReason>) -> Self {
        Self {
            serial: serial_bytes(serial),
            reason,
        }
    }
}

/// A serial number's minimal big-endian bytes (keep the top bit clear).
pub fn serial_bytes(serial: u64) -> Vec<u8> {
    let bytes = serial.to_be_bytes();
    let first = bytes.iter().position(|byte| *byte != 0).unwrap_or(7);
    bytes[first..].to_vec()
}

/// `der` in PEM with `label` ("CERTIFICATE", "X509 CRL"), 64-column lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).expect("PEM encoding")
}

/// The serial number of a DER certificate, as its DER INTEGER value.
pub fn serial_of(certificate: &[u8]) -> Vec<u8> {
    x509_cert::Certificate::from_der(certificate)
        .expect("certificate parses")
        .tbs_certificate
        .serial_number
        .as_bytes()
        .to_vec()
}

impl TestCa {
    /// A self-signed root CA (ECDSA P-256) named `cn`.
    pub fn new(cn: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        Self::self_signed(ca_params(cn, &Pointers::default()), key)
    }

    /// A self-signed RSA-2048 root CA named `cn` (the key comes from openssl:
    /// ring cannot generate RSA keys).
    pub fn new_rsa(cn: &str) -> Self {
        let output = run(Command::new("openssl").args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ]));
        let pem = String::from_utf8(output.stdout).expect("PEM key");
        let key =
            KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).expect("RSA CA key");
        Self::self_signed(ca_params(cn, &Pointers::default()), key)
    }

    fn self_signed(params: CertificateParams, key: KeyPair) -> Self {
        let certificate = params.self_signed(&key).expect("self-sign CA");
        Self {
            key_pem: key.serialize_pem(),
            certificate_pem: certificate.pem(),
            certificate_der: certificate.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA (ECDSA P-256) named `cn`, issued by this CA, whose
    /// own certificate publishes revocation data at `pointers`.
    pub fn intermediate(&self, cn: &str, pointers: &Pointers) -> TestCa {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        let params = ca_params(cn, pointers);
        let certificate = params.signed_by(&key, &self.issuer).expect("issue CA");
        TestCa {
            key_pem: key.serialize_pem(),
            certificate_pem: certificate.pem(),
            certificate_der: certificate.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A cross-certificate: a CA certificate named `cn` for `subject`'s key,
    /// issued by this CA. With `cn` the name of `subject`, it is a second
    /// certificate of the same CA (same name, same key) under another issuer.
    pub fn cross_certify(&self, cn: &str, subject: &TestCa, pointers: &Pointers) -> Vec<u8> {
        ca_params(cn, pointers)
            .signed_by(subject.issuer.key(), &self.issuer)
            .expect("cross-certify CA")
            .der()
            .to_vec()
    }

    /// The CA certificate in PEM.
    pub fn pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The CA certificate in DER.
    pub fn der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// The CA's private key in PEM (PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a certificate for a token's public key (DER SPKI).
    pub fn issue(&self, spec: &UserCert, spki: &[u8]) -> Vec<u8> {
        spec.params()
            .signed_by(&TokenPublicKey::from_spki(spki), &self.issuer)
            .expect("issue certificate")
            .der()
            .to_vec()
    }

    /// Issues a certificate with a fresh P-256 key; returns it and the key (PKCS#8 DER).
    pub fn issue_with_new_key(&self, spec: &UserCert) -> (Vec<u8>, Vec<u8>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let certificate = spec.params().signed_by(&key, &self.issuer).expect("issue");
        (certificate.der().to_vec(), key.serialize_der())
    }

    /// A delegated OCSP responder: a certificate with id-kp-OCSPSigning
    /// issued by this CA, as (certificate PEM, key PEM).
    pub fn ocsp_signer(&self, cn: &str) -> (String, String) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut spec = UserCert::valid(cn);
        spec.email = None;
        spec.upn = None;
        spec.eku = vec![ExtendedKeyUsagePurpose::OcspSigning];
        let certificate = spec.params().signed_by(&key, &self.issuer).expect("issue");
        (certificate.pem(), key.serialize_pem())
    }

    /// A CRL revoking `revoked`, issued an hour ago, valid until `next_update`.
    pub fn crl(&self, revoked: &[Revoked], next_update: OffsetDateTime) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update,
            crl_number: SerialNumber::from(vec![1]),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|entry| RevokedCertParams {
                    serial_number: SerialNumber::from(entry.serial.clone()),
                    revocation_time: now - Duration::hours(2),
                    reason_code: entry.reason,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        self.sign_crl(params).der().to_vec()
    }

    /// The CRL `params` describe, signed by this CA.
    pub fn sign_crl(
        &self,
        params: CertificateRevocationListParams,
    ) -> rcgen::CertificateRevocationList {
        params.signed_by(&self.issuer).expect("sign CRL")
    }

    /// A delta CRL (a base CRL plus a critical deltaCRLIndicator), signed by this CA.
    pub fn delta_crl(&self) -> Vec<u8> {
        use x509_cert::crl::CertificateList;
        use x509_cert::ext::Extension;
        let base = self.crl(&[], OffsetDateTime::now_utc() + Duration::days(1));
        let mut list = CertificateList::from_der(&base).expect("parse CRL");
        list.tbs_cert_list
            .crl_extensions
            .get_or_insert_with(Vec::new)
            .push(Extension {
                extn_id: ObjectIdentifier::new_unwrap("2.5.29.27"),
                critical: true,
                extn_value: der::asn1::OctetString::new(
                    der::asn1::Uint::new(&[1]).unwrap().to_der().unwrap(),
                )
                .unwrap(),
            });
        let tbs = list.tbs_cert_list.to_der().expect("encode TBS");
        let key = KeyPair::from_pem(&self.key_pem).expect("CA key");
        let signature = key.sign(&tbs).expect("sign");
        list.signature = der::asn1::BitString::from_bytes(&signature).unwrap();
        list.to_der().expect("encode CRL")
    }

    /// Writes the CA certificate and key as PEM files `<name>.pem` and `<name>.key` in `dir`.
    pub fn write_pem(&self, dir: &Path, name: &str) {
        std::fs::write(dir.join(format!("{name}.pem")), self.pem()).expect("write CA PEM");
        std::fs::write(dir.join(format!("{name}.key")), self.key_pem()).expect("write CA key");
    }
}

/// A self-signed certificate and its private key (PKCS#8 DER), as an
/// attacker would make one with a victim's name.
pub fn self_signed(spec: &UserCert) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let certificate = spec.params().self_signed(&key).expect("self-sign");
    (certificate.der().to_vec(), key.serialize_der())
}
