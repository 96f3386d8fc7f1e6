//! Trust anchors and certificate path validation (rustls-webpki).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use const_oid::db::rfc5912;
use const_oid::ObjectIdentifier;
use der::Decode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeId, KeyPurposeIdIter};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::Certificate;

use crate::filetrust::{self, TrustError};

/// A CA file larger than this is refused (bundles of a few hundred CAs fit).
const MAX_CA_FILE_SIZE: u64 = 4 * 1024 * 1024;

/// File name extensions read from a CA directory.
const CA_FILE_EXTENSIONS: [&str; 4] = ["pem", "crt", "cer", "der"];

/// id-kp-clientAuth.
pub const EKU_CLIENT_AUTH: ObjectIdentifier = rfc5912::ID_KP_CLIENT_AUTH;
/// Microsoft smart-card logon.
pub const EKU_SMARTCARD_LOGON: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.2");

/// Signature algorithms accepted on certificates in the chain.
static CHAIN_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PKCS1_3072_8192_SHA384,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// Why the trust anchors could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// The file or directory is not protected from non-root writers.
    #[error("refusing CA file: {0}")]
    Untrusted(#[from] TrustError),
    /// The file or directory cannot be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Too large to be a CA file.
    #[error("{0}: larger than {MAX_CA_FILE_SIZE} bytes")]
    TooLarge(PathBuf),
    /// Not PEM or DER certificates.
    #[error("{path}: not a PEM or DER certificate: {reason}")]
    Malformed {
        /// Path.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// A certificate that is not a CA.
    #[error("{path}: certificate {subject} is not a CA (basicConstraints cA is not set)")]
    NotCa {
        /// Path.
        path: PathBuf,
        /// Its subject.
        subject: String,
    },
    /// No certificate at all in the configured paths.
    #[error("no CA certificate found in {0}")]
    Empty(String),
}

/// The configured trust anchors.
#[derive(Debug)]
pub struct TrustStore {
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustStore {
    /// Loads CA certificates from files (PEM bundles or DER) and directories of them.
    pub fn load(paths: &[PathBuf]) -> Result<Self, AnchorError> {
        let mut ders: Vec<CertificateDer<'static>> = Vec::new();
        for path in paths {
            let metadata = fs::metadata(path).map_err(|source| AnchorError::Io {
                path: path.clone(),
                source,
            })?;
            if metadata.is_dir() {
                filetrust::check_trusted_path(path)?;
                let mut files = Vec::new();
                let entries = fs::read_dir(path).map_err(|source| AnchorError::Io {
                    path: path.clone(),
                    source,
                })?;
                for entry in entries {
                    let entry = entry.map_err(|source| AnchorError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    let file = entry.path();
                    let wanted = file
                        .extension()
                        .and_then(|extension| extension.to_str())
                        .is_some_and(|extension| {
                            CA_FILE_EXTENSIONS.contains(&extension.to_ascii_lowercase().as_str())
                        });
                    if wanted && file.is_file() {
                        files.push(file);
                    }
                }
                files.sort();
                for file in files {
                    ders.extend(read_ca_file(&file)?);
                }
            } else {
                ders.extend(read_ca_file(path)?);
            }
        }
        ders.dedup();
        if ders.is_empty() {
            let listed: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            return Err(AnchorError::Empty(listed.join(", ")));
        }
        let anchors = ders
            .iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|anchor| anchor.to_owned())
                    .map_err(|error| AnchorError::Malformed {
                        path: paths.first().cloned().unwrap_or_default(),
                        reason: error.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { anchors })
    }

    /// Number of anchors loaded.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether no anchor is loaded (never true for a store from [`TrustStore::load`]).
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, AnchorError> {
    let file = filetrust::open_trusted_file(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_CA_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| AnchorError::Io {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_CA_FILE_SIZE {
        return Err(AnchorError::TooLarge(path.to_owned()));
    }
    let malformed = |reason: String| AnchorError::Malformed {
        path: path.to_owned(),
        reason,
    };
    let ders: Vec<CertificateDer<'static>> = if bytes.trim_ascii_start().starts_with(b"-----BEGIN")
    {
        CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|error| malformed(error.to_string()))?
    } else {
        vec![CertificateDer::from(bytes)]
    };
    if ders.is_empty() {
        return Err(malformed("no CERTIFICATE block".to_owned()));
    }
    for der in &ders {
        let certificate =
            Certificate::from_der(der).map_err(|error| malformed(error.to_string()))?;
        let is_ca = extension::<BasicConstraints>(&certificate, rfc5912::ID_CE_BASIC_CONSTRAINTS)
            .map_err(|error| malformed(error.to_string()))?
            .is_some_and(|constraints| constraints.ca);
        if !is_ca {
            return Err(AnchorError::NotCa {
                path: path.to_owned(),
                subject: certificate.tbs_certificate.subject.to_string(),
            });
        }
    }
    Ok(ders)
}

/// Decodes the extension `oid` of `certificate`, if present.
fn extension<'a, T: Decode<'a>>(
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

/// "If the certificate has an EKU extension, it must contain one of these."
/// webpki applies this to every certificate of the path, as RFC 5280 intends.
#[derive(Debug, Clone)]
struct EkuPolicy {
    allowed: Vec<ObjectIdentifier>,
}

impl ExtendedKeyUsageValidator for EkuPolicy {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let mut present = false;
        for purpose in iter {
            let purpose = purpose?;
            present = true;
            if self
                .allowed
                .iter()
                .any(|allowed| KeyPurposeId::new(allowed.as_bytes()) == purpose)
            {
                return Ok(());
            }
        }
        if present {
            // The context variant wants a single required EKU; we allow several.
            #[allow(deprecated)]
            Err(webpki::Error::RequiredEkuNotFound)
        } else {
            Ok(())
        }
    }
}

/// Why a certificate was rejected, in words for the log and the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Not a parseable certificate.
    #[error("certificate is malformed: {0}")]
    Malformed(String),
    /// Past notAfter.
    #[error("certificate expired on {0}")]
    Expired(String),
    /// Before notBefore.
    #[error("certificate is not valid before {0}")]
    NotYetValid(String),
    /// No path to a configured anchor.
    #[error("issuer not trusted")]
    UntrustedIssuer,
    /// EKU present but without clientAuth or smartcardLogon.
    #[error(
        "certificate is not for client authentication or smart-card logon (extended key usage)"
    )]
    WrongExtendedKeyUsage,
    /// keyUsage present without digitalSignature.
    #[error("certificate key usage does not allow digital signatures")]
    NoDigitalSignatureUsage,
    /// A signature in the chain does not verify: typically a rogue CA that
    /// copied the name of a trusted one.
    #[error("issuer not trusted (a signature in the chain does not verify against the trusted CA of that name)")]
    BadSignature,
    /// Anything else webpki refuses, with its own words.
    #[error("certificate rejected: {0}")]
    Other(String),
}

/// A certificate that chains to a trusted CA and may sign a login challenge.
pub struct ValidatedCertificate<'a> {
    end_entity: EndEntityCert<'a>,
}

impl std::fmt::Debug for ValidatedCertificate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatedCertificate")
            .finish_non_exhaustive()
    }
}

impl<'a> ValidatedCertificate<'a> {
    /// The webpki view of the certificate, for verifying the challenge signature.
    pub fn end_entity(&self) -> &EndEntityCert<'a> {
        &self.end_entity
    }
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

/// Validates `der` at time `now`: path to a trusted anchor (using
/// `intermediates` as needed), validity, EKU and keyUsage.
pub fn validate<'a>(
    store: &TrustStore,
    der: &'a CertificateDer<'a>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<ValidatedCertificate<'a>, Rejection> {
    let parsed =
        Certificate::from_der(der).map_err(|error| Rejection::Malformed(error.to_string()))?;
    let end_entity =
        EndEntityCert::try_from(der).map_err(|error| Rejection::Malformed(error.to_string()))?;
    let policy = EkuPolicy {
        allowed: vec![EKU_CLIENT_AUTH, EKU_SMARTCARD_LOGON],
    };
    let validity = &parsed.tbs_certificate.validity;
    end_entity
        .verify_for_usage(
            CHAIN_ALGORITHMS,
            &store.anchors,
            intermediates,
            now,
            &policy,
            None,
            None,
        )
        .map_err(|error| match error {
            webpki::Error::CertExpired { .. } => Rejection::Expired(validity.not_after.to_string()),
            webpki::Error::CertNotValidYet { .. } => {
                Rejection::NotYetValid(validity.not_before.to_string())
            }
            webpki::Error::UnknownIssuer => Rejection::UntrustedIssuer,
            #[allow(deprecated)]
            webpki::Error::RequiredEkuNotFound | webpki::Error::RequiredEkuNotFoundContext(_) => {
                Rejection::WrongExtendedKeyUsage
            }
            webpki::Error::InvalidSignatureForPublicKey => Rejection::BadSignature,
            other => Rejection::Other(other.to_string()),
        })?;
    // webpki ignores the end entity's keyUsage; the challenge is a signature.
    let key_usage = extension::<KeyUsage>(&parsed, rfc5912::ID_CE_KEY_USAGE)
        .map_err(|error| Rejection::Malformed(error.to_string()))?;
    if key_usage.is_some_and(|usage| !usage.digital_signature()) {
        return Err(Rejection::NoDigitalSignatureUsage);
    }
    Ok(ValidatedCertificate { end_entity })
}
