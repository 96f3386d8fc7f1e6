//! The policy step: what the path and the certificate must satisfy beyond
//! webpki's checks (chain depth, keyUsage, `require_eku`).

use const_oid::db::rfc5912;
use x509_cert::ext::pkix::KeyUsage;
use x509_cert::Certificate;

use super::chain::ChainPath;
use super::policy::Policy;
use super::rejection::Rejection;
use super::x509::extension;

/// Checks `certificate` and its `path` against `policy`.
pub(super) fn check(
    policy: &Policy,
    certificate: &Certificate,
    path: &ChainPath,
) -> Result<(), Rejection> {
    if path.intermediates.len() > policy.max_chain_depth {
        return Err(Rejection::ChainTooLong {
            depth: path.intermediates.len(),
            max: policy.max_chain_depth,
        });
    }

    // webpki ignores the end entity's keyUsage; the challenge is a signature.
    let key_usage = extension::<KeyUsage>(certificate, rfc5912::ID_CE_KEY_USAGE)
        .map_err(|error| Rejection::Malformed(error.to_string()))?;
    if key_usage.is_some_and(|usage| !usage.digital_signature()) {
        return Err(Rejection::NoDigitalSignatureUsage);
    }
    if policy.require_eku
        && !certificate
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .any(|extension| extension.extn_id == rfc5912::ID_CE_EXT_KEY_USAGE)
    {
        return Err(Rejection::MissingExtendedKeyUsage);
    }
    Ok(())
}
