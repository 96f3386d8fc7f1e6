//! The `[pki]` policy: what a certificate must satisfy, and how revocation is checked.

use std::path::PathBuf;
use std::time::Duration;

use const_oid::ObjectIdentifier;
use rustls_pki_types::SignatureVerificationAlgorithm;

use super::x509::{EKU_CLIENT_AUTH, EKU_PKINIT_CLIENT, EKU_SMARTCARD_LOGON};

/// Where fetched CRLs and OCSP responses are kept between logins.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/tessera";

/// Names accepted in `pki.signature_algorithms`, and the webpki algorithms
/// each stands for. The default accepts them all.
pub const SIGNATURE_ALGORITHMS: &[(&str, &[&dyn SignatureVerificationAlgorithm])] = &[
    ("ecdsa-p256-sha256", &[webpki::ring::ECDSA_P256_SHA256]),
    ("ecdsa-p256-sha384", &[webpki::ring::ECDSA_P256_SHA384]),
    ("ecdsa-p384-sha256", &[webpki::ring::ECDSA_P384_SHA256]),
    ("ecdsa-p384-sha384", &[webpki::ring::ECDSA_P384_SHA384]),
    ("ed25519", &[webpki::ring::ED25519]),
    (
        "rsa-pkcs1-sha256",
        &[webpki::ring::RSA_PKCS1_2048_8192_SHA256],
    ),
    (
        "rsa-pkcs1-sha384",
        &[
            webpki::ring::RSA_PKCS1_2048_8192_SHA384,
            webpki::ring::RSA_PKCS1_3072_8192_SHA384,
        ],
    ),
    (
        "rsa-pkcs1-sha512",
        &[webpki::ring::RSA_PKCS1_2048_8192_SHA512],
    ),
    (
        "rsa-pss-sha256",
        &[webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
    ),
    (
        "rsa-pss-sha384",
        &[webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
    ),
    (
        "rsa-pss-sha512",
        &[webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
    ),
];

/// Named extended key usages accepted in `pki.allowed_eku`.
pub const EKU_NAMES: &[(&str, ObjectIdentifier)] = &[
    ("clientAuth", EKU_CLIENT_AUTH),
    ("smartcardLogon", EKU_SMARTCARD_LOGON),
    ("pkinit", EKU_PKINIT_CLIENT),
];

/// Which revocation sources are asked, in which order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationMode {
    /// No revocation checking (only for PKIs that publish no revocation data).
    None,
    /// CRLs only.
    Crl,
    /// OCSP only.
    Ocsp,
    /// OCSP, and the CRL for a certificate whose OCSP status could not be had.
    OcspThenCrl,
    /// CRL, and OCSP for a certificate whose CRL could not be had.
    CrlThenOcsp,
}

impl RevocationMode {
    /// The config spellings, in the order of [`RevocationMode::parse`].
    pub const NAMES: &'static [&'static str] =
        &["none", "crl", "ocsp", "ocsp-then-crl", "crl-then-ocsp"];

    /// Parses a config spelling.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Self::None,
            "crl" => Self::Crl,
            "ocsp" => Self::Ocsp,
            "ocsp-then-crl" => Self::OcspThenCrl,
            "crl-then-ocsp" => Self::CrlThenOcsp,
            _ => return None,
        })
    }

    pub(crate) fn methods(self) -> &'static [Method] {
        match self {
            Self::None => &[],
            Self::Crl => &[Method::Crl],
            Self::Ocsp => &[Method::Ocsp],
            Self::OcspThenCrl => &[Method::Ocsp, Method::Crl],
            Self::CrlThenOcsp => &[Method::Crl, Method::Ocsp],
        }
    }
}

/// One revocation source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Crl,
    Ocsp,
}

/// What to do when no CRL can be had for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingPolicy {
    /// Reject the certificate (fail closed).
    Deny,
    /// Accept it, with a warning in the log.
    Allow,
}

impl MissingPolicy {
    /// Parses `deny` or `allow`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "deny" => Some(Self::Deny),
            "allow" => Some(Self::Allow),
            _ => None,
        }
    }
}

/// The hash in an OCSP request's CertID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspHash {
    /// SHA-1: what every responder understands (RFC 5019). It only names
    /// the certificate; the response's signature is what is trusted.
    Sha1,
    /// SHA-256.
    Sha256,
}

/// CRL settings (`[pki.crl]`).
#[derive(Debug, Clone)]
pub struct CrlPolicy {
    /// Local CRL files (PEM or DER) and directories of them.
    pub paths: Vec<PathBuf>,
    /// Whether CRLs are downloaded from the certificates' distribution points.
    pub fetch: bool,
    /// Largest CRL read from disk or the network.
    pub max_bytes: u64,
    /// No CRL for the user's certificate.
    pub missing: MissingPolicy,
    /// No CRL for an intermediate CA's certificate.
    pub missing_intermediate: MissingPolicy,
}

/// OCSP settings (`[pki.ocsp]`).
#[derive(Debug, Clone)]
pub struct OcspPolicy {
    /// Responder that overrides the certificates' AIA (an `http://` URL).
    pub url: Option<String>,
    /// The CertID hash.
    pub hash: OcspHash,
    /// Send a nonce and require the response to echo it.
    pub nonce: bool,
    /// An unreachable responder (or one that cannot answer) lets the
    /// certificate through with a warning instead of rejecting it.
    pub soft_fail: bool,
    /// Largest response accepted.
    pub max_bytes: u64,
}

/// The whole `[pki]` policy except the trust anchors.
#[derive(Debug, Clone)]
pub struct Policy {
    /// An EKU extension, when present, must contain one of these.
    pub allowed_eku: Vec<ObjectIdentifier>,
    /// The user's certificate must have an EKU extension.
    pub require_eku: bool,
    /// Most intermediate CA certificates between the user's certificate and the anchor.
    pub max_chain_depth: usize,
    /// Signature algorithms accepted on certificates, CRLs and OCSP responses.
    pub signature_algorithms: Vec<&'static dyn SignatureVerificationAlgorithm>,
    /// Tolerance for clocks that disagree, applied to validity periods and
    /// CRL/OCSP update times.
    pub clock_skew: Duration,
    /// Revocation sources.
    pub revocation: RevocationMode,
    /// Total time revocation checking may take for one login.
    pub revocation_timeout: Duration,
    /// Cache of fetched CRLs and OCSP responses; `None` disables it.
    pub cache_dir: Option<PathBuf>,
    /// CRL settings.
    pub crl: CrlPolicy,
    /// OCSP settings.
    pub ocsp: OcspPolicy,
}

impl Default for Policy {
    /// The defaults documented in docs/pki.md.
    fn default() -> Self {
        Self {
            allowed_eku: vec![EKU_CLIENT_AUTH, EKU_SMARTCARD_LOGON],
            require_eku: false,
            max_chain_depth: 4,
            signature_algorithms: SIGNATURE_ALGORITHMS
                .iter()
                .flat_map(|(_, algorithms)| algorithms.iter().copied())
                .collect(),
            clock_skew: Duration::from_secs(300),
            revocation: RevocationMode::OcspThenCrl,
            revocation_timeout: Duration::from_secs(5),
            cache_dir: Some(PathBuf::from(DEFAULT_CACHE_DIR)),
            crl: CrlPolicy {
                paths: Vec::new(),
                fetch: true,
                max_bytes: 32 * 1024 * 1024,
                missing: MissingPolicy::Deny,
                missing_intermediate: MissingPolicy::Deny,
            },
            ocsp: OcspPolicy {
                url: None,
                hash: OcspHash::Sha1,
                nonce: true,
                soft_fail: false,
                max_bytes: 256 * 1024,
            },
        }
    }
}
