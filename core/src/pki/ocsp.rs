//! OCSP (RFC 6960): requests built with x509-ocsp, responses checked for
//! the right certificate, signer, nonce and time window. Signatures are
//! verified by webpki (ring).

use const_oid::db::{rfc5280, rfc5912, rfc6960};
use der::asn1::{AnyRef, Null, OctetString};
use der::{Decode, Encode};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AuthorityInfoAccessSyntax, CrlReason};
use x509_cert::ext::Extension;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    OcspResponseStatus, Request, TbsRequest, Version,
};

use super::cache::Cache;
use super::crl::hex_string;
use super::fetch::{self, Deadline};
use super::policy::{OcspHash, OcspPolicy};
use super::x509::extension;

/// id-kp-OCSPSigning, as webpki wants it (DER value without the tag).
static OCSP_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09];

/// Bytes of nonce sent (RFC 8954 recommends 32).
const NONCE_BYTES: usize = 32;

/// A certificate to ask about, and its issuer.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The certificate.
    pub certificate: &'a Certificate,
    /// Its issuer's certificate.
    pub issuer: &'a Certificate,
    /// The issuer's certificate in DER.
    pub issuer_der: &'a [u8],
}

/// What a responder said about the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Not revoked.
    Good,
    /// Revoked at a time, for a reason.
    Revoked {
        /// revocationTime.
        time: UnixTime,
        /// RFC 5280 name of the reason.
        reason: &'static str,
    },
    /// The responder does not know the certificate.
    Unknown,
}

/// A verified answer and its next update.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The certificate's status.
    pub answer: Answer,
    /// nextUpdate, if the response has one.
    pub next_update: Option<UnixTime>,
}

/// Why no answer could be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer at all: no responder, unreachable, HTTP error, malformed
    /// or unsuccessful response. `soft_fail` may let this through.
    Unavailable(String),
    /// An answer that must not be believed: bad signature or signer, wrong
    /// certificate, nonce or time window. Never let through.
    Invalid(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unavailable(why) | Failure::Invalid(why) => f.write_str(why),
        }
    }
}

/// What the check needs besides the certificate.
#[derive(Debug)]
pub struct Context<'a> {
    /// `[pki.ocsp]`.
    pub policy: &'a OcspPolicy,
    /// Accepted signature algorithms.
    pub algorithms: &'a [&'a dyn SignatureVerificationAlgorithm],
    /// The time of the check.
    pub now: UnixTime,
    /// Clock skew tolerance in seconds.
    pub skew: u64,
    /// The revocation time budget.
    pub deadline: &'a Deadline,
    /// The response cache, if usable.
    pub cache: Option<&'a Cache>,
}

/// The responder to ask: the configured override, else the certificate's AIA.
pub fn responder_url(policy: &OcspPolicy, certificate: &Certificate) -> Option<String> {
    if let Some(url) = &policy.url {
        return Some(url.clone());
    }
    let access =
        extension::<AuthorityInfoAccessSyntax>(certificate, rfc5280::ID_PE_AUTHORITY_INFO_ACCESS)
            .ok()
            .flatten()?;
    access
        .0
        .iter()
        .filter(|description| description.access_method == rfc5280::ID_AD_OCSP)
        .find_map(|description| match &description.access_location {
            GeneralName::UniformResourceIdentifier(uri) if fetch::is_http_url(uri.as_str()) => {
                Some(uri.as_str().to_owned())
            }
            _ => None,
        })
}

/// Asks about `target`: a fresh cached response if there is one, else the responder.
pub fn check(context: &Context<'_>, target: Target<'_>) -> Result<(Verified, String), Failure> {
    let url = responder_url(context.policy, target.certificate).ok_or_else(|| {
        Failure::Unavailable(
            "no OCSP responder (no AIA OCSP URL in the certificate, no pki.ocsp.url)".to_owned(),
        )
    })?;
    let cert_id = cert_id(context.policy.hash, target)
        .map_err(|error| Failure::Unavailable(format!("cannot build the OCSP request: {error}")))?;
    let cache_name = cache_name(&url, &cert_id);
    if let Some(cached) = context
        .cache
        .and_then(|cache| cache.read(&cache_name, context.policy.max_bytes))
    {
        match verify_response(&cached, &cert_id, None, target, context) {
            Ok(verified) => {
                tracing::debug!(id = "auth.ocsp.cached", url, "OCSP response from the cache");
                return Ok((verified, format!("OCSP responder {url} (cached)")));
            }
            Err(failure) => {
                tracing::debug!(id = "auth.ocsp.cache_rejected", url, %failure, "cached OCSP response not used")
            }
        }
    }
    let nonce = if context.policy.nonce {
        let mut nonce = vec![0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce)
            .map_err(|error| Failure::Unavailable(format!("no randomness for a nonce: {error}")))?;
        Some(nonce)
    } else {
        None
    };
    let request = request(&cert_id, nonce.as_deref()).map_err(|error| {
        Failure::Unavailable(format!("cannot encode the OCSP request: {error}"))
    })?;
    let response = fetch::fetch(
        &url,
        Some(("application/ocsp-request", &request)),
        context.policy.max_bytes,
        context.deadline,
    )
    .map_err(|error| Failure::Unavailable(format!("OCSP responder {error}")))?;
    let verified = verify_response(&response, &cert_id, nonce.as_deref(), target, context)
        .map_err(|failure| match failure {
            Failure::Unavailable(why) => {
                Failure::Unavailable(format!("OCSP responder {url}: {why}"))
            }
            Failure::Invalid(why) => Failure::Invalid(format!("OCSP response from {url}: {why}")),
        })?;
    // A response without nextUpdate has no stated lifetime: never reused.
    if verified.next_update.is_some() {
        if let Some(cache) = context.cache {
            cache.write(&cache_name, &response);
        }
    }
    Ok((verified, format!("OCSP responder {url}")))
}

fn cache_name(url: &str, cert_id: &CertId) -> String {
    let mut key = url.as_bytes().to_vec();
    key.extend(cert_id.to_der().unwrap_or_default());
    let digest = ring::digest::digest(&ring::digest::SHA256, &key);
    format!("ocsp-{}.der", hex_string(digest.as_ref()))
}

/// The CertID of `target` (RFC 6960 4.1.1).
pub fn cert_id(hash: OcspHash, target: Target<'_>) -> der::Result<CertId> {
    let (algorithm, oid) = match hash {
        OcspHash::Sha1 => (&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, rfc5912::ID_SHA_1),
        OcspHash::Sha256 => (&ring::digest::SHA256, rfc5912::ID_SHA_256),
    };
    let issuer_name = target.issuer.tbs_certificate.subject.to_der()?;
    let issuer_key = target
        .issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    Ok(CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid,
            parameters: Some(Null.into()),
        },
        issuer_name_hash: OctetString::new(ring::digest::digest(algorithm, &issuer_name).as_ref())?,
        issuer_key_hash: OctetString::new(ring::digest::digest(algorithm, issuer_key).as_ref())?,
        serial_number: target.certificate.tbs_certificate.serial_number.clone(),
    })
}

/// A DER OCSPRequest for one certificate, with a nonce extension if given.
pub fn request(cert_id: &CertId, nonce: Option<&[u8]>) -> der::Result<Vec<u8>> {
    let request_extensions = nonce
        .map(|nonce| -> der::Result<Vec<Extension>> {
            Ok(vec![Extension {
                extn_id: rfc6960::ID_PKIX_OCSP_NONCE,
                critical: false,
                extn_value: OctetString::new(OctetString::new(nonce)?.to_der()?)?,
            }])
        })
        .transpose()?;
    OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id.clone(),
                single_request_extensions: None,
            }],
            request_extensions,
        },
        optional_signature: None,
    }
    .to_der()
}

fn same_cert_id(a: &CertId, b: &CertId) -> bool {
    // Parameters are left out: NULL and absent both occur for SHA-1/SHA-256.
    a.hash_algorithm.oid == b.hash_algorithm.oid
        && a.issuer_name_hash == b.issuer_name_hash
        && a.issuer_key_hash == b.issuer_key_hash
        && a.serial_number == b.serial_number
}

fn unix(time: &OcspGeneralizedTime) -> UnixTime {
    UnixTime::since_unix_epoch(time.0.to_unix_duration())
}

/// Parses and checks a DER OCSPResponse about `cert_id`. `nonce` is what
/// was sent, if anything (cached responses are checked without one).
pub fn verify_response(
    bytes: &[u8],
    cert_id: &CertId,
    nonce: Option<&[u8]>,
    target: Target<'_>,
    context: &Context<'_>,
) -> Result<Verified, Failure> {
    let malformed =
        |error: der::Error| Failure::Unavailable(format!("malformed response: {error}"));
    let response = OcspResponse::from_der(bytes).map_err(malformed)?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(Failure::Unavailable(format!(
            "responder could not answer ({:?})",
            response.response_status
        )));
    }
    let body = response
        .response_bytes
        .ok_or_else(|| Failure::Unavailable("successful response without a body".to_owned()))?;
    if body.response_type != rfc6960::ID_PKIX_OCSP_BASIC {
        return Err(Failure::Unavailable(format!(
            "unsupported response type {}",
            body.response_type
        )));
    }
    let basic = BasicOcspResponse::from_der(body.response.as_bytes()).map_err(malformed)?;
    verify_signer(&basic, target, context)?;

    let data = &basic.tbs_response_data;
    let single = data
        .responses
        .iter()
        .find(|single| same_cert_id(&single.cert_id, cert_id))
        .ok_or_else(|| Failure::Invalid("the response is about another certificate".to_owned()))?;

    let now = context.now.as_secs();
    let this_update = unix(&single.this_update);
    if this_update.as_secs() > now.saturating_add(context.skew) {
        return Err(Failure::Invalid(format!(
            "thisUpdate {} is in the future",
            super::x509::format_time(this_update)
        )));
    }
    let next_update = single.next_update.as_ref().map(unix);
    match next_update {
        Some(next) if next.as_secs().saturating_add(context.skew) < now => {
            return Err(Failure::Invalid(format!(
                "stale response: nextUpdate {} has passed",
                super::x509::format_time(next)
            )));
        }
        // No nextUpdate: only a response made just now is current.
        None if this_update.as_secs().saturating_add(context.skew) < now => {
            return Err(Failure::Invalid(format!(
                "stale response: made {} without a nextUpdate",
                super::x509::format_time(this_update)
            )));
        }
        _ => {}
    }

    if let Some(sent) = nonce {
        match basic.nonce() {
            Some(echoed) if echoed.0.as_bytes() == sent => {}
            Some(_) => {
                return Err(Failure::Invalid(
                    "the nonce does not match the request (a replayed response?)".to_owned(),
                ))
            }
            None => {
                return Err(Failure::Invalid(
                    "the responder did not echo the nonce (set pki.ocsp.nonce = false for responders that ignore nonces)".to_owned(),
                ))
            }
        }
    }

    let answer = match &single.cert_status {
        CertStatus::Good(_) => Answer::Good,
        CertStatus::Revoked(info) => Answer::Revoked {
            time: unix(&info.revocation_time),
            reason: reason_name(info.revocation_reason),
        },
        CertStatus::Unknown(_) => Answer::Unknown,
    };
    Ok(Verified {
        answer,
        next_update,
    })
}

/// The response must be signed by the certificate's issuer, or by a
/// responder certificate the issuer gave id-kp-OCSPSigning (RFC 6960 4.2.2.2).
fn verify_signer(
    basic: &BasicOcspResponse,
    target: Target<'_>,
    context: &Context<'_>,
) -> Result<(), Failure> {
    let invalid = |why: String| Failure::Invalid(why);
    let signed = basic
        .tbs_response_data
        .to_der()
        .map_err(|error| invalid(format!("cannot re-encode the signed data: {error}")))?;
    let algorithm = basic
        .signature_algorithm
        .to_der()
        .map_err(|error| invalid(format!("bad signature algorithm: {error}")))?;
    let algorithm = AnyRef::from_der(&algorithm)
        .map_err(|error| invalid(format!("bad signature algorithm: {error}")))?;
    let signature = basic
        .signature
        .as_bytes()
        .ok_or_else(|| invalid("signature is not a whole number of bytes".to_owned()))?;
    let verifies = |signer: &EndEntityCert<'_>| {
        context
            .algorithms
            .iter()
            .filter(|candidate| candidate.signature_alg_id().as_ref() == algorithm.value())
            .any(|candidate| {
                signer
                    .verify_signature(*candidate, &signed, signature)
                    .is_ok()
            })
    };

    let issuer_der = CertificateDer::from(target.issuer_der);
    let issuer = EndEntityCert::try_from(&issuer_der)
        .map_err(|error| invalid(format!("issuer certificate: {error}")))?;
    if verifies(&issuer) {
        return Ok(());
    }
    let anchor = webpki::anchor_from_trusted_cert(&issuer_der)
        .map_err(|error| invalid(format!("issuer certificate: {error}")))?;
    for responder in basic.certs.iter().flatten() {
        let Ok(responder_der) = responder.to_der() else {
            continue;
        };
        let responder_der = CertificateDer::from(responder_der);
        let Ok(responder) = EndEntityCert::try_from(&responder_der) else {
            continue;
        };
        // Issued directly by the certificate's issuer, for OCSP signing.
        let authorized = responder
            .verify_for_usage(
                context.algorithms,
                std::slice::from_ref(&anchor),
                &[],
                context.now,
                KeyUsage::required(OCSP_SIGNING),
                None,
                None,
            )
            .is_ok();
        if authorized && verifies(&responder) {
            return Ok(());
        }
    }
    Err(invalid(
        "not signed by the issuing CA or a responder it authorized (id-kp-OCSPSigning)".to_owned(),
    ))
}

fn reason_name(reason: Option<CrlReason>) -> &'static str {
    match reason {
        None | Some(CrlReason::Unspecified) => "unspecified",
        Some(CrlReason::KeyCompromise) => "keyCompromise",
        Some(CrlReason::CaCompromise) => "cACompromise",
        Some(CrlReason::AffiliationChanged) => "affiliationChanged",
        Some(CrlReason::Superseded) => "superseded",
        Some(CrlReason::CessationOfOperation) => "cessationOfOperation",
        Some(CrlReason::CertificateHold) => "certificateHold",
        Some(CrlReason::RemoveFromCRL) => "removeFromCRL",
        Some(CrlReason::PrivilegeWithdrawn) => "privilegeWithdrawn",
        Some(CrlReason::AaCompromise) => "aACompromise",
    }
}
