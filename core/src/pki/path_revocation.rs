//! The revocation step: every certificate of the path below the anchor is
//! asked about (CRL and OCSP, by [`super::revocation::check`]), then webpki
//! verifies the CRLs chosen on exactly that path.

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{
    EndEntityCert, ExpirationPolicy, RevocationCheckDepth, RevocationOptionsBuilder,
    UnknownStatusPolicy,
};
use x509_cert::Certificate;

use super::anchors::TrustStore;
use super::chain::{chain_error, ChainPath, EkuPolicy};
use super::crl;
use super::fetch::Deadline;
use super::policy::Policy;
use super::rejection::Rejection;
use super::revocation::{self, Level};
use super::x509::format_time;

/// Checks the revocation of every certificate of `path` below the anchor,
/// within `deadline`.
#[allow(clippy::too_many_arguments)] // the path and its parts, as the chain step found them
pub(super) fn check(
    store: &TrustStore,
    policy: &Policy,
    der: &CertificateDer<'_>,
    certificate: &Certificate,
    end_entity: &EndEntityCert<'_>,
    intermediates: &[CertificateDer<'_>],
    path: &ChainPath,
    eku: &EkuPolicy,
    now: UnixTime,
    deadline: &Deadline,
) -> Result<(), Rejection> {
    if policy.revocation.methods().is_empty() {
        return Ok(());
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
        return Ok(());
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
        path.time,
        eku,
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
            Ok(())
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
        Err(error) => Err(chain_error(error, &certificate.tbs_certificate.validity)),
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
