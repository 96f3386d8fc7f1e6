//! Trust anchors, certificate path validation (rustls-webpki) and
//! revocation (CRL and OCSP).

pub mod cache;
pub mod crl;
pub mod fetch;
pub mod ocsp;
pub mod policy;
pub mod revocation;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use const_oid::db::rfc5912;
use const_oid::ObjectIdentifier;
use der::Decode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{
    EndEntityCert, ExpirationPolicy, ExtendedKeyUsageValidator, KeyPurposeId, KeyPurposeIdIter,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::Certificate;

use crate::filetrust::{self, TrustError};
pub use fetch::Deadline;
pub use policy::Policy;
use revocation::Level;

/// A CA file larger than this is refused (bundles of a few hundred CAs fit).
const MAX_CA_FILE_SIZE: u64 = 4 * 1024 * 1024;

/// File name extensions read from a CA directory.
const CA_FILE_EXTENSIONS: [&str; 4] = ["pem", "crt", "cer", "der"];

/// id-kp-clientAuth.
pub const EKU_CLIENT_AUTH: ObjectIdentifier = rfc5912::ID_KP_CLIENT_AUTH;
/// Microsoft smart-card logon.
pub const EKU_SMARTCARD_LOGON: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.20.2.2");
/// id-pkinit-KPClientAuth (RFC 4556).
pub const EKU_PKINIT_CLIENT: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.2.3.4");

/// Attempts at shifting the validation time within the clock skew.
const SKEW_ATTEMPTS: usize = 4;

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
    /// The anchors' certificates, same order: OCSP needs the issuer's
    /// name and key as encoded in its certificate.
    certificates: Vec<CertificateDer<'static>>,
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
        // Keep the first of duplicates, wherever they are in the list.
        let mut seen = std::collections::HashSet::new();
        ders.retain(|der| seen.insert(der.clone()));
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
        Ok(Self {
            anchors,
            certificates: ders,
        })
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
    /// A CA certificate of the path is outside its validity period.
    #[error("an issuing CA certificate is not valid on this date (valid until or from {0})")]
    CaNotValid(String),
    /// No path to a configured anchor.
    #[error("issuer not trusted")]
    UntrustedIssuer,
    /// EKU present but without an allowed purpose.
    #[error(
        "certificate is not for client authentication or smart-card logon (extended key usage)"
    )]
    WrongExtendedKeyUsage,
    /// `require_eku` and no EKU extension.
    #[error("certificate has no extended key usage, and pki.require_eku is set")]
    MissingExtendedKeyUsage,
    /// keyUsage present without digitalSignature.
    #[error("certificate key usage does not allow digital signatures")]
    NoDigitalSignatureUsage,
    /// A signature in the chain does not verify: typically a rogue CA that
    /// copied the name of a trusted one.
    #[error("issuer not trusted (a signature in the chain does not verify against the trusted CA of that name)")]
    BadSignature,
    /// A signature algorithm outside `pki.signature_algorithms`.
    #[error("certificate chain uses a signature algorithm that is not allowed (pki.signature_algorithms)")]
    DisallowedAlgorithm,
    /// More intermediates than `pki.max_chain_depth`.
    #[error("certificate chain has {depth} intermediate CA certificates; at most {max} are allowed (pki.max_chain_depth)")]
    ChainTooLong {
        /// Intermediates in the path.
        depth: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Revoked according to a CRL or an OCSP responder.
    #[error("{who} revoked ({reason}) on {since}; source: {origin}")]
    Revoked {
        /// "certificate" or the issuing CA.
        who: String,
        /// RFC 5280 reason name.
        reason: String,
        /// Revocation time.
        since: String,
        /// The CRL or responder that said so.
        origin: String,
    },
    /// No source could tell, and policy says deny.
    #[error("revocation status of the {who} is unknown: {why}")]
    RevocationUnknown {
        /// "certificate" or the issuing CA.
        who: String,
        /// What each source said.
        why: String,
    },
    /// A source answered with something that must not be believed, or
    /// with "unknown".
    #[error("revocation check failed: {0}")]
    RevocationFailed(String),
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

/// The path webpki found: indexes into the intermediates given, in order
/// from the end entity's issuer up, and the anchor's index in the store.
struct PathIndexes {
    intermediates: Vec<usize>,
    anchor: usize,
}

/// Validates `der` at time `now`: path to a trusted anchor (using
/// `intermediates` as needed), validity (with the clock skew), EKU,
/// keyUsage, chain depth, and revocation of every certificate of the path
/// below the anchor, within `deadline`.
pub fn validate<'a>(
    store: &TrustStore,
    policy: &Policy,
    der: &'a CertificateDer<'a>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    deadline: &Deadline,
) -> Result<ValidatedCertificate<'a>, Rejection> {
    let parsed =
        Certificate::from_der(der).map_err(|error| Rejection::Malformed(error.to_string()))?;
    let end_entity =
        EndEntityCert::try_from(der).map_err(|error| Rejection::Malformed(error.to_string()))?;
    let eku = EkuPolicy {
        allowed: policy.allowed_eku.clone(),
    };
    let validity = &parsed.tbs_certificate.validity;
    let chain_error = |error: webpki::Error| match error {
        webpki::Error::CertExpired { not_after, .. } => {
            if not_after.as_secs() == validity.not_after.to_unix_duration().as_secs() {
                Rejection::Expired(format_time(not_after))
            } else {
                Rejection::CaNotValid(format_time(not_after))
            }
        }
        webpki::Error::CertNotValidYet { not_before, .. } => {
            if not_before.as_secs() == validity.not_before.to_unix_duration().as_secs() {
                Rejection::NotYetValid(format_time(not_before))
            } else {
                Rejection::CaNotValid(format_time(not_before))
            }
        }
        webpki::Error::UnknownIssuer => Rejection::UntrustedIssuer,
        #[allow(deprecated)]
        webpki::Error::RequiredEkuNotFound | webpki::Error::RequiredEkuNotFoundContext(_) => {
            Rejection::WrongExtendedKeyUsage
        }
        webpki::Error::InvalidSignatureForPublicKey => Rejection::BadSignature,
        #[allow(deprecated)]
        webpki::Error::UnsupportedSignatureAlgorithm
        | webpki::Error::UnsupportedSignatureAlgorithmContext(_)
        | webpki::Error::UnsupportedSignatureAlgorithmForPublicKey
        | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            Rejection::DisallowedAlgorithm
        }
        other => Rejection::Other(other.to_string()),
    };

    // The clock skew: a certificate just outside its validity period is
    // checked at the edge of that period instead, if the edge is within
    // the tolerance of `now`.
    let skew = policy.clock_skew.as_secs();
    let mut time = now;
    let mut attempts = 0;
    let path = loop {
        attempts += 1;
        match end_entity.verify_for_usage(
            &policy.signature_algorithms,
            &store.anchors,
            intermediates,
            time,
            &eku,
            None,
            None,
        ) {
            Ok(path) => {
                let indexes = PathIndexes {
                    intermediates: path
                        .intermediate_certificates()
                        .filter_map(|used| {
                            intermediates
                                .iter()
                                .position(|given| given.as_ref() == used.der().as_ref())
                        })
                        .collect(),
                    anchor: store
                        .anchors
                        .iter()
                        .position(|anchor| {
                            anchor.subject == path.anchor().subject
                                && anchor.subject_public_key_info
                                    == path.anchor().subject_public_key_info
                        })
                        .unwrap_or(usize::MAX),
                };
                break indexes;
            }
            Err(webpki::Error::CertExpired { not_after, .. })
                if attempts < SKEW_ATTEMPTS
                    && not_after.as_secs() < time.as_secs()
                    && now.as_secs() <= not_after.as_secs().saturating_add(skew) =>
            {
                time = not_after;
            }
            Err(webpki::Error::CertNotValidYet { not_before, .. })
                if attempts < SKEW_ATTEMPTS
                    && not_before.as_secs() > time.as_secs()
                    && not_before.as_secs() <= now.as_secs().saturating_add(skew) =>
            {
                time = not_before;
            }
            Err(error) => return Err(chain_error(error)),
        }
    };
    if time != now {
        tracing::info!(
            checked_at = %format_time(time),
            "certificate validity accepted within the clock skew tolerance"
        );
    }

    if path.intermediates.len() > policy.max_chain_depth {
        return Err(Rejection::ChainTooLong {
            depth: path.intermediates.len(),
            max: policy.max_chain_depth,
        });
    }

    // webpki ignores the end entity's keyUsage; the challenge is a signature.
    let key_usage = extension::<KeyUsage>(&parsed, rfc5912::ID_CE_KEY_USAGE)
        .map_err(|error| Rejection::Malformed(error.to_string()))?;
    if key_usage.is_some_and(|usage| !usage.digital_signature()) {
        return Err(Rejection::NoDigitalSignatureUsage);
    }
    if policy.require_eku
        && !parsed
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .any(|extension| extension.extn_id == rfc5912::ID_CE_EXT_KEY_USAGE)
    {
        return Err(Rejection::MissingExtendedKeyUsage);
    }

    if policy.revocation.methods().is_empty() {
        return Ok(ValidatedCertificate { end_entity });
    }
    let anchor_missing = || Rejection::Other("trust anchor of the path not found".to_owned());
    let anchor = store
        .certificates
        .get(path.anchor)
        .ok_or_else(anchor_missing)?;
    let path_anchor = store.anchors.get(path.anchor).ok_or_else(anchor_missing)?;
    // The intermediates of the path chosen, from the end entity's issuer up.
    let path_intermediates = path
        .intermediates
        .iter()
        .map(|index| intermediates.get(*index).cloned())
        .collect::<Option<Vec<CertificateDer<'_>>>>()
        .ok_or_else(|| Rejection::Other("intermediate of the path not found".to_owned()))?;
    // The path from the end entity up, each with its issuer's certificate.
    let mut chain: Vec<&[u8]> = vec![der.as_ref()];
    chain.extend(
        path_intermediates
            .iter()
            .map(|intermediate| intermediate.as_ref()),
    );
    chain.push(anchor.as_ref());
    let levels = chain
        .windows(2)
        .enumerate()
        .map(|(index, pair)| match pair {
            [certificate, issuer] => Level::new(certificate, issuer, index == 0),
            _ => Err("path window".to_owned()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(Rejection::Malformed)?;

    let plan = revocation::check(policy, &levels, now, deadline)?;
    if plan.levels.is_empty() {
        return Ok(ValidatedCertificate { end_entity });
    }

    // webpki verifies the CRLs found (signature, the issuer's cRLSign) and
    // looks the serials up. When CRLs answer for every level it checks, it
    // is also the judge of which CRL covers which certificate (Deny);
    // otherwise the levels answered by OCSP must not need a CRL (Allow),
    // and revocation::check has already made sure a CRL covers the others.
    // This pass gets exactly the path whose revocation was checked, its
    // intermediates and its anchor: given every certificate of the token,
    // webpki would backtrack from a revoked level to another path (say, a
    // cross-certificate of the same CA) whose status nobody asked about.
    let lists = plan
        .documents
        .iter()
        .map(|document| document.webpki())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Rejection::RevocationFailed(format!("CRL: {error}")))?;
    let list_refs: Vec<_> = lists.iter().collect();
    let (depth, unknown) = if plan.levels == [0] {
        (RevocationCheckDepth::EndEntity, UnknownStatusPolicy::Deny)
    } else if plan.levels.len() == levels.len() {
        (RevocationCheckDepth::Chain, UnknownStatusPolicy::Deny)
    } else {
        (RevocationCheckDepth::Chain, UnknownStatusPolicy::Allow)
    };
    let options = RevocationOptionsBuilder::new(&list_refs)
        .map_err(|_| Rejection::RevocationFailed("no CRL to check".to_owned()))?
        .with_depth(depth)
        .with_status_policy(unknown)
        // Freshness, with the clock skew, was checked when the CRLs were chosen.
        .with_expiration_policy(ExpirationPolicy::Ignore)
        .build();
    match end_entity.verify_for_usage(
        &policy.signature_algorithms,
        std::slice::from_ref(path_anchor),
        &path_intermediates,
        time,
        &eku,
        Some(options),
        None,
    ) {
        Ok(verified) => {
            let same_path = verified
                .intermediate_certificates()
                .map(|used| used.der())
                .eq(path_intermediates.iter().cloned());
            if !same_path {
                return Err(Rejection::RevocationFailed(
                    "the CRL check validated another certification path than the one checked"
                        .to_owned(),
                ));
            }
            Ok(ValidatedCertificate { end_entity })
        }
        Err(webpki::Error::CertRevoked) => Err(revoked_reason(&levels, &plan)),
        Err(webpki::Error::UnknownRevocationStatus) => Err(Rejection::RevocationUnknown {
            who: "certificate chain".to_owned(),
            why: "no CRL found covers every certificate of the path".to_owned(),
        }),
        Err(
            error @ (webpki::Error::InvalidCrlSignatureForPublicKey
            | webpki::Error::IssuerNotCrlSigner
            | webpki::Error::UnsupportedCrlSignatureAlgorithmContext(_)
            | webpki::Error::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_)),
        ) => {
            let sources: Vec<&str> = plan
                .documents
                .iter()
                .map(|document| document.source.as_str())
                .collect();
            Err(Rejection::RevocationFailed(format!(
                "CRL from {} refused: {error}",
                sources.join(", ")
            )))
        }
        Err(error) => Err(chain_error(error)),
    }
}

/// Which certificate of the path a CRL revoked, when and why.
fn revoked_reason(levels: &[Level<'_>], plan: &revocation::CrlPlan) -> Rejection {
    for index in &plan.levels {
        let Some(level) = levels.get(*index) else {
            continue;
        };
        let serial = level.certificate.tbs_certificate.serial_number.as_bytes();
        for document in &plan.documents {
            let Ok(list) = document.webpki() else {
                continue;
            };
            if list.issuer() != level.issuer_name.as_slice() {
                continue;
            }
            if let Ok(Some(entry)) = list.find_serial(serial) {
                return Rejection::Revoked {
                    who: level.who(),
                    reason: crl::reason_name(entry.reason_code).to_owned(),
                    since: format_time(entry.revocation_date),
                    origin: format!("CRL {}", document.source),
                };
            }
        }
    }
    Rejection::Revoked {
        who: "certificate".to_owned(),
        reason: "unspecified".to_owned(),
        since: "an unknown date".to_owned(),
        origin: "CRL".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_over_4_mib_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: CA files must be root-owned");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        std::fs::write(&path, vec![b'\n'; MAX_CA_FILE_SIZE as usize + 1]).unwrap();
        let error = TrustStore::load(std::slice::from_ref(&path)).unwrap_err();
        assert!(matches!(error, AnchorError::TooLarge(_)), "{error}");
        assert!(
            error.to_string().ends_with("larger than 4194304 bytes"),
            "{error}"
        );
    }
}
