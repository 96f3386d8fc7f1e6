//! A test PKI made with rcgen: CAs and user certificates for public keys
//! that live on tokens.

use const_oid::ObjectIdentifier;
use der::Decode;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SignatureAlgorithm,
};
use time::{Duration, OffsetDateTime};
use x509_cert::spki::SubjectPublicKeyInfoOwned;

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
    certificate_pem: String,
    certificate_der: Vec<u8>,
}

impl TestCa {
    /// A self-signed root CA (ECDSA P-256) named `cn`.
    pub fn new(cn: &str) -> Self {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Example Test");
        name.push(DnType::CommonName, cn);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(30);
        params.not_after = now + Duration::days(3650);
        let certificate = params.self_signed(&key).expect("self-sign CA");
        Self {
            certificate_pem: certificate.pem(),
            certificate_der: certificate.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate in PEM.
    pub fn pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The CA certificate in DER.
    pub fn der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// Issues a certificate for a token's public key (DER SPKI).
    pub fn issue(&self, spec: &UserCert, spki: &[u8]) -> Vec<u8> {
        spec.params()
            .signed_by(&TokenPublicKey::from_spki(spki), &self.issuer)
            .expect("issue certificate")
            .der()
            .to_vec()
    }
}

/// A self-signed certificate and its private key (PKCS#8 DER), as an
/// attacker would make one with a victim's name.
pub fn self_signed(spec: &UserCert) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let certificate = spec.params().self_signed(&key).expect("self-sign");
    (certificate.der().to_vec(), key.serialize_der())
}
