//! Certificate validation for a login, in steps: trust anchors
//! ([`anchors`]), a path to one of them (`chain`), the policy's further
//! constraints (`constraints`) and the revocation of the path
//! (`path_revocation`, with CRL and OCSP in [`revocation`], [`crl`],
//! [`ocsp`]). The leaves [`x509`] and [`rejection`] hold what the steps share.

pub mod anchors;
pub mod cache;
mod chain;
mod constraints;
pub mod crl;
pub mod fetch;
pub mod ocsp;
mod path_revocation;
pub mod policy;
pub mod rejection;
pub mod revocation;
pub mod x509;

use der::Decode;
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::EndEntityCert;
use x509_cert::Certificate;

pub use anchors::{AnchorError, TrustStore};
pub use fetch::Deadline;
pub use policy::Policy;
pub use rejection::Rejection;
pub use x509::{
    format_time, validity_window, EKU_CLIENT_AUTH, EKU_PKINIT_CLIENT, EKU_SMARTCARD_LOGON,
};

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
    let eku = chain::EkuPolicy {
        allowed: policy.allowed_eku.clone(),
    };
    let validity = &parsed.tbs_certificate.validity;
    let path = chain::find_path(
        store,
        policy,
        &end_entity,
        validity,
        intermediates,
        now,
        &eku,
    )?;
    constraints::check(policy, &parsed, &path)?;
    path_revocation::check(
        store,
        policy,
        der,
        &parsed,
        &end_entity,
        intermediates,
        &path,
        &eku,
        now,
        deadline,
    )?;
    Ok(ValidatedCertificate { end_entity })
}
