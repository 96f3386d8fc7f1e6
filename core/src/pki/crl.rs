//! Certificate revocation lists: local files, downloads from distribution
//! points, and the question "is this CRL the one for that certificate?".
//!
//! webpki's `RevocationOptions` verifies every CRL used and looks the
//! serials up; this module finds and bounds the input. A downloaded or
//! cached CRL is also verified here, against its issuer, before it is
//! cached or preferred to the network (see [`CrlDocument::verify_signature`]).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use const_oid::db::rfc5280;
use der::asn1::{AnyRef, BitStringRef};
use der::{Decode, Reader, SliceReader};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, SignatureVerificationAlgorithm, UnixTime,
};
use webpki::{BorrowedCertRevocationList, CertRevocationList, EndEntityCert, RevocationReason};
use x509_cert::ext::pkix::crl::dp::{DistributionPoint, IssuingDistributionPoint};
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{CrlDistributionPoints, KeyUsage};
use x509_cert::time::Time;
use x509_cert::Certificate;

use super::x509::extension;
use crate::filetrust;

/// File name extensions read from a CRL directory.
const CRL_FILE_EXTENSIONS: [&str; 4] = ["crl", "pem", "der", "r0"];

/// A CRL that parsed, with the times webpki does not expose.
#[derive(Debug, Clone)]
pub struct CrlDocument {
    /// DER bytes.
    pub der: Vec<u8>,
    /// thisUpdate.
    pub this_update: UnixTime,
    /// nextUpdate (webpki refuses CRLs without one).
    pub next_update: UnixTime,
    /// Where it came from (file or URL), for messages.
    pub source: String,
}

impl CrlDocument {
    /// Checks that `der` is a CRL webpki can use and reads its update times.
    pub fn parse(der: Vec<u8>, source: String) -> Result<Self, String> {
        BorrowedCertRevocationList::from_der(&der).map_err(|error| match error {
            webpki::Error::UnsupportedDeltaCrl => {
                format!("{source}: is a delta CRL; delta CRLs are not supported (configure the base CRL)")
            }
            webpki::Error::UnsupportedIndirectCrl => {
                format!("{source}: is an indirect CRL; indirect CRLs are not supported")
            }
            other => format!("{source}: not a usable CRL: {other}"),
        })?;
        let (this_update, next_update) =
            update_times(&der).map_err(|error| format!("{source}: not a usable CRL: {error}"))?;
        let next_update = next_update.ok_or_else(|| format!("{source}: CRL has no nextUpdate"))?;
        Ok(Self {
            der,
            this_update: unix(this_update),
            next_update: unix(next_update),
            source,
        })
    }

    /// webpki's view of it.
    pub fn webpki(&self) -> Result<CertRevocationList<'_>, webpki::Error> {
        BorrowedCertRevocationList::from_der(&self.der).map(CertRevocationList::from)
    }

    /// Checks that the CRL is signed by `issuer` (its certificate, parsed and
    /// in DER) with one of `algorithms`, and that the issuer's keyUsage, if
    /// present, allows signing CRLs: the checks webpki makes, done before a
    /// CRL is cached or taken from the cache, so that a forged CRL with the
    /// issuer's name is neither.
    pub fn verify_signature(
        &self,
        issuer: &Certificate,
        issuer_der: &[u8],
        algorithms: &[&dyn SignatureVerificationAlgorithm],
    ) -> Result<(), String> {
        let (signed, algorithm, signature) = signed_parts(&self.der)
            .map_err(|error| format!("CRL {}: not a usable CRL: {error}", self.source))?;
        let key_usage =
            extension::<KeyUsage>(issuer, rfc5280::ID_CE_KEY_USAGE).map_err(|error| {
                format!("CRL {}: issuer keyUsage is malformed: {error}", self.source)
            })?;
        if key_usage.is_some_and(|usage| !usage.crl_sign()) {
            return Err(format!(
                "CRL {}: its issuer {} may not sign CRLs (keyUsage without cRLSign)",
                self.source, issuer.tbs_certificate.subject
            ));
        }
        let issuer_der = CertificateDer::from(issuer_der);
        let signer = EndEntityCert::try_from(&issuer_der)
            .map_err(|error| format!("CRL {}: issuer certificate: {error}", self.source))?;
        let verified = algorithms
            .iter()
            .filter(|candidate| candidate.signature_alg_id().as_ref() == algorithm)
            .any(|candidate| {
                signer
                    .verify_signature(*candidate, signed, signature)
                    .is_ok()
            });
        if verified {
            Ok(())
        } else {
            Err(format!(
                "CRL {}: signature does not verify with the key of {} \
                 (forged, or signed with an algorithm outside pki.signature_algorithms)",
                self.source, issuer.tbs_certificate.subject
            ))
        }
    }

    /// Whether `now` is inside [thisUpdate, nextUpdate], widened by `skew` seconds.
    pub fn is_fresh(&self, now: UnixTime, skew: u64) -> bool {
        self.this_update.as_secs() <= now.as_secs().saturating_add(skew)
            && now.as_secs() <= self.next_update.as_secs().saturating_add(skew)
    }
}

fn unix(time: Time) -> UnixTime {
    UnixTime::since_unix_epoch(time.to_unix_duration())
}

/// thisUpdate and nextUpdate, read from the head of tbsCertList without
/// decoding the (possibly huge) list of revoked certificates.
fn update_times(der: &[u8]) -> der::Result<(Time, Option<Time>)> {
    let list = AnyRef::from_der(der)?;
    let mut list = SliceReader::new(list.value())?;
    let tbs: AnyRef<'_> = list.decode()?;
    let mut tbs = SliceReader::new(tbs.value())?;
    let _version: Option<u8> = tbs.decode()?;
    let _signature: AnyRef<'_> = tbs.decode()?;
    let _issuer: AnyRef<'_> = tbs.decode()?;
    let this_update: Time = tbs.decode()?;
    let next_update: Option<Time> = tbs.decode()?;
    Ok((this_update, next_update))
}

/// The signed bytes (tbsCertList, exactly as encoded), the contents of the
/// signatureAlgorithm AlgorithmIdentifier and the signature of a CRL.
fn signed_parts(der: &[u8]) -> der::Result<(&[u8], &[u8], &[u8])> {
    let list = AnyRef::from_der(der)?;
    let mut list = SliceReader::new(list.value())?;
    let signed = list.tlv_bytes()?;
    let algorithm: AnyRef<'_> = list.decode()?;
    let signature: BitStringRef<'_> = list.decode()?;
    list.finish(())?;
    let signature = signature
        .as_bytes()
        .ok_or_else(|| der::Tag::BitString.value_error())?;
    Ok((signed, algorithm.value(), signature))
}

/// Local CRLs, and why the files that could not be used were skipped.
#[derive(Debug, Default)]
pub struct LocalCrls {
    /// The CRLs read.
    pub documents: Vec<CrlDocument>,
    /// One line per unusable file or directory.
    pub problems: Vec<String>,
}

/// Reads the configured local CRL files and directories. A file that cannot
/// be used is logged and skipped: the missing-CRL policy then decides.
pub fn load_local(paths: &[PathBuf], max_bytes: u64) -> LocalCrls {
    let mut local = LocalCrls::default();
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            if let Err(error) = filetrust::check_trusted_path(path) {
                tracing::error!(id = "auth.crl.dir_untrusted", %error, "CRL directory not used");
                local
                    .problems
                    .push(format!("CRL directory not used: {error}"));
                continue;
            }
            match fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .flatten()
                        .map(|entry| entry.path())
                        .filter(|file| {
                            file.extension()
                                .and_then(|extension| extension.to_str())
                                .is_some_and(|extension| {
                                    CRL_FILE_EXTENSIONS
                                        .contains(&extension.to_ascii_lowercase().as_str())
                                })
                                && file.is_file()
                        })
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(error) => {
                    tracing::error!(id = "auth.crl.dir_unreadable", path = %path.display(), %error, "cannot read CRL directory");
                    local
                        .problems
                        .push(format!("{}: cannot read: {error}", path.display()));
                }
            }
        } else {
            files.push(path.clone());
        }
    }
    for file in files {
        match read_crl_file(&file, max_bytes) {
            Ok(found) => local.documents.extend(found),
            Err(error) => {
                tracing::error!(id = "auth.crl.file_unusable", "CRL file not used: {error}");
                local.problems.push(format!("CRL file not used: {error}"));
            }
        }
    }
    local
}

fn read_crl_file(path: &Path, max_bytes: u64) -> Result<Vec<CrlDocument>, String> {
    let shown = path.display().to_string();
    let file = filetrust::open_trusted_file(path).map_err(|error| error.to_string())?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("{shown}: cannot read: {error}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!(
            "{shown}: larger than {max_bytes} bytes (pki.crl.max_bytes)"
        ));
    }
    parse_file_contents(bytes, &shown)
}

/// The CRLs of a local file's contents: one DER CRL, or PEM with one or
/// more `X509 CRL` blocks. `shown` names the file in messages.
pub fn parse_file_contents(bytes: Vec<u8>, shown: &str) -> Result<Vec<CrlDocument>, String> {
    let ders: Vec<Vec<u8>> = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .map(|der| der.map(|der| der.as_ref().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|error| format!("{shown}: bad PEM: {error}"))?
    } else {
        vec![bytes]
    };
    if ders.is_empty() {
        return Err(format!("{shown}: no X509 CRL block"));
    }
    ders.into_iter()
        .map(|der| CrlDocument::parse(der, shown.to_owned()))
        .collect()
}

/// The http:// URLs of the certificate's CRL distribution points (those
/// without reasons or a separate CRL issuer, which are not supported).
pub fn distribution_point_urls(certificate: &Certificate) -> Vec<String> {
    let points = match extension::<CrlDistributionPoints>(
        certificate,
        rfc5280::ID_CE_CRL_DISTRIBUTION_POINTS,
    ) {
        Ok(Some(points)) => points.0,
        Ok(None) => return Vec::new(),
        Err(error) => {
            tracing::warn!(id = "auth.crl.distribution_points_malformed", %error, "malformed CRL distribution points ignored");
            return Vec::new();
        }
    };
    points
        .iter()
        .filter(|point| point.reasons.is_none() && point.crl_issuer.is_none())
        .flat_map(full_name_uris)
        .filter(|url| super::fetch::is_http_url(url))
        .collect()
}

fn full_name_uris(point: &DistributionPoint) -> Vec<String> {
    match &point.distribution_point {
        Some(DistributionPointName::FullName(names)) => uris(names),
        _ => Vec::new(),
    }
}

fn uris(names: &[GeneralName]) -> Vec<String> {
    names
        .iter()
        .filter_map(|name| match name {
            GeneralName::UniformResourceIdentifier(uri) => Some(uri.as_str().to_owned()),
            _ => None,
        })
        .collect()
}

/// Whether `crl` is authoritative for the certificate: the same rules as
/// webpki's own check (same issuer; an issuing distribution point, if any,
/// must cover the certificate's role and name one of its distribution
/// points). Anything malformed counts as "no".
pub fn is_authoritative(
    crl: &CertRevocationList<'_>,
    issuer: &[u8],
    certificate: &Certificate,
    end_entity: bool,
) -> bool {
    if crl.issuer() != issuer {
        return false;
    }
    let Some(idp) = crl.issuing_distribution_point() else {
        return true;
    };
    let Ok(idp) = IssuingDistributionPoint::from_der(idp) else {
        return false;
    };
    if (idp.only_contains_ca_certs && end_entity) || (idp.only_contains_user_certs && !end_entity) {
        return false;
    }
    if idp.only_contains_attribute_certs || idp.indirect_crl || idp.only_some_reasons.is_some() {
        return false;
    }
    let points = match extension::<CrlDistributionPoints>(
        certificate,
        rfc5280::ID_CE_CRL_DISTRIBUTION_POINTS,
    ) {
        Ok(Some(points)) => points.0,
        Ok(None) => return true,
        Err(_) => return false,
    };
    let Some(DistributionPointName::FullName(idp_names)) = &idp.distribution_point else {
        return false;
    };
    let idp_uris = uris(idp_names);
    points
        .iter()
        .filter(|point| point.reasons.is_none() && point.crl_issuer.is_none())
        .flat_map(full_name_uris)
        .any(|uri| idp_uris.contains(&uri))
}

/// RFC 5280's name for a revocation reason.
pub fn reason_name(reason: Option<RevocationReason>) -> &'static str {
    match reason {
        None | Some(RevocationReason::Unspecified) => "unspecified",
        Some(RevocationReason::KeyCompromise) => "keyCompromise",
        Some(RevocationReason::CaCompromise) => "cACompromise",
        Some(RevocationReason::AffiliationChanged) => "affiliationChanged",
        Some(RevocationReason::Superseded) => "superseded",
        Some(RevocationReason::CessationOfOperation) => "cessationOfOperation",
        Some(RevocationReason::CertificateHold) => "certificateHold",
        Some(RevocationReason::RemoveFromCrl) => "removeFromCRL",
        Some(RevocationReason::PrivilegeWithdrawn) => "privilegeWithdrawn",
        Some(RevocationReason::AaCompromise) => "aACompromise",
    }
}

/// Cache file name for the CRL downloaded from `url`.
pub fn cache_name(url: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, url.as_bytes());
    format!("crl-{}.der", hex_string(digest.as_ref()))
}

pub(crate) fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
