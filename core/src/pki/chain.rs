//! The chain step: a path from the certificate to a trusted anchor whose
//! certificates are all within their validity periods (with the clock skew)
//! and allow a login purpose (EKU).

use const_oid::ObjectIdentifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeId, KeyPurposeIdIter};
use x509_cert::time::Validity;

use super::anchors::TrustStore;
use super::policy::Policy;
use super::rejection::Rejection;
use super::x509::format_time;

/// Attempts at shifting the validation time within the clock skew.
const SKEW_ATTEMPTS: usize = 4;

/// "If the certificate has an EKU extension, it must contain one of these."
/// webpki applies this to every certificate of the path, as RFC 5280 intends.
#[derive(Debug, Clone)]
pub(super) struct EkuPolicy {
    pub(super) allowed: Vec<ObjectIdentifier>,
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

/// The path webpki found: indexes into the intermediates given, in order
/// from the end entity's issuer up, the anchor's index in the store, and
/// the time it was checked at (`now`, or an edge of a validity period
/// within the clock skew).
pub(super) struct ChainPath {
    pub(super) intermediates: Vec<usize>,
    pub(super) anchor: usize,
    pub(super) time: UnixTime,
}

/// A webpki path error as a rejection; `validity` is the end entity's, to
/// tell its own expiry from a CA's.
pub(super) fn chain_error(error: webpki::Error, validity: &Validity) -> Rejection {
    match error {
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
    }
}

/// Finds the path of `end_entity` to an anchor of `store` at `now`, using
/// `intermediates` as needed.
pub(super) fn find_path(
    store: &TrustStore,
    policy: &Policy,
    end_entity: &EndEntityCert<'_>,
    validity: &Validity,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    eku: &EkuPolicy,
) -> Result<ChainPath, Rejection> {
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
            eku,
            None,
            None,
        ) {
            Ok(path) => {
                break ChainPath {
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
                    time,
                };
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
            Err(error) => return Err(chain_error(error, validity)),
        }
    };
    if time != now {
        tracing::info!(
            id = "auth.chain.clock_skew_tolerated",
            checked_at = %format_time(time),
            "certificate validity accepted within the clock skew tolerance"
        );
    }
    Ok(path)
}
