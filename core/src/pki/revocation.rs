//! Revocation, level by level: for each certificate of the validated path
//! below the anchor, ask the configured sources in order until one answers.
//!
//! OCSP answers are final here. A CRL that covers a level is only found
//! here; webpki's `RevocationOptions` then verifies it and looks the serial
//! up (see [`super::validate`]). A downloaded CRL is verified against the
//! level's issuer before it is cached, and a cached one before it is
//! preferred to the network: a forged CRL is never kept.

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::EndEntityCert;
use x509_cert::Certificate;

use super::cache::Cache;
use super::crl::{self, CrlDocument};
use super::fetch::{self, Deadline};
use super::ocsp::{self, Answer, Failure};
use super::policy::{Method, MissingPolicy, Policy};
use super::rejection::Rejection;
use super::x509::format_time;

/// One certificate of the path whose status is checked.
#[derive(Debug)]
pub struct Level<'a> {
    /// Its certificate.
    pub certificate: Certificate,
    /// Its issuer's certificate and DER.
    pub issuer: Certificate,
    /// The issuer's DER.
    pub issuer_der: &'a [u8],
    /// The issuer name as webpki compares it with CRL issuers.
    pub issuer_name: Vec<u8>,
    /// Whether this is the user's certificate.
    pub end_entity: bool,
}

impl<'a> Level<'a> {
    /// Builds a level from DER certificates.
    pub fn new(der: &'a [u8], issuer_der: &'a [u8], end_entity: bool) -> Result<Self, String> {
        use der::Decode;
        let certificate = Certificate::from_der(der).map_err(|error| error.to_string())?;
        let issuer = Certificate::from_der(issuer_der).map_err(|error| error.to_string())?;
        let certificate_der = CertificateDer::from(der);
        let issuer_name = EndEntityCert::try_from(&certificate_der)
            .map_err(|error| error.to_string())?
            .issuer()
            .to_vec();
        Ok(Self {
            certificate,
            issuer,
            issuer_der,
            issuer_name,
            end_entity,
        })
    }

    /// How messages name this certificate.
    pub fn who(&self) -> String {
        if self.end_entity {
            "certificate".to_owned()
        } else {
            format!(
                "issuing CA certificate {}",
                self.certificate.tbs_certificate.subject
            )
        }
    }

    fn missing_policy(&self, policy: &Policy) -> MissingPolicy {
        if self.end_entity {
            policy.crl.missing
        } else {
            policy.crl.missing_intermediate
        }
    }
}

/// The CRLs webpki must check, and for which levels.
#[derive(Debug, Default)]
pub struct CrlPlan {
    /// The CRLs, newest first (webpki uses the first authoritative one).
    pub documents: Vec<CrlDocument>,
    /// Indexes of the levels whose answer is to come from a CRL.
    pub levels: Vec<usize>,
}

/// Asks the sources about every level. Returns the CRL work left for
/// webpki, or the rejection.
pub fn check(
    policy: &Policy,
    levels: &[Level<'_>],
    now: UnixTime,
    deadline: &Deadline,
) -> Result<CrlPlan, Rejection> {
    let cache = policy.cache_dir.as_deref().and_then(Cache::open);
    let skew = policy.clock_skew.as_secs();
    let mut local: Option<crl::LocalCrls> = None;
    let mut plan = CrlPlan::default();
    for (index, level) in levels.iter().enumerate() {
        let mut failures = Vec::new();
        let mut allowed = true;
        let mut invalid = false;
        let mut answered = false;
        for method in policy.revocation.methods() {
            match method {
                Method::Ocsp => {
                    let context = ocsp::Context {
                        policy: &policy.ocsp,
                        algorithms: &policy.signature_algorithms,
                        now,
                        skew,
                        deadline,
                        cache: cache.as_ref(),
                    };
                    let target = ocsp::Target {
                        certificate: &level.certificate,
                        issuer: &level.issuer,
                        issuer_der: level.issuer_der,
                    };
                    match ocsp::check(&context, target) {
                        Ok((verified, source)) => match verified.answer {
                            Answer::Good => {
                                tracing::debug!(id = "auth.ocsp.good", who = %level.who(), %source, "OCSP: good");
                                answered = true;
                                break;
                            }
                            Answer::Revoked { time, reason } => {
                                return Err(Rejection::Revoked {
                                    who: level.who(),
                                    reason: reason.to_owned(),
                                    since: format_time(time),
                                    origin: source,
                                })
                            }
                            Answer::Unknown => {
                                return Err(Rejection::RevocationFailed(format!(
                                    "{source} does not know the {} (status unknown)",
                                    level.who()
                                )))
                            }
                        },
                        Err(Failure::Unavailable(why)) => {
                            tracing::info!(id = "auth.ocsp.unavailable", who = %level.who(), "OCSP unavailable: {why}");
                            allowed &= policy.ocsp.soft_fail;
                            failures.push(why);
                        }
                        Err(Failure::Invalid(why)) => {
                            tracing::warn!(id = "auth.ocsp.rejected", who = %level.who(), "OCSP response rejected: {why}");
                            invalid = true;
                            failures.push(why);
                        }
                    }
                }
                Method::Crl => {
                    let local = local.get_or_insert_with(|| {
                        crl::load_local(&policy.crl.paths, policy.crl.max_bytes)
                    });
                    match find_crls(policy, level, local, cache.as_ref(), now, skew, deadline) {
                        Ok(found) => {
                            plan.documents.extend(found);
                            plan.levels.push(index);
                            answered = true;
                            break;
                        }
                        Err(NoCrl { why, forged: true }) => {
                            tracing::warn!(id = "auth.crl.rejected", who = %level.who(), "CRL rejected: {why}");
                            invalid = true;
                            failures.push(why);
                        }
                        Err(NoCrl { why, forged: false }) => {
                            tracing::info!(id = "auth.crl.missing", who = %level.who(), "no CRL: {why}");
                            allowed &= level.missing_policy(policy) == MissingPolicy::Allow;
                            failures.push(why);
                        }
                    }
                }
            }
        }
        if !answered {
            let summary = failures.join("; ");
            if invalid {
                return Err(Rejection::RevocationFailed(format!(
                    "{}: {summary}",
                    level.who()
                )));
            }
            if !allowed {
                return Err(Rejection::RevocationUnknown {
                    who: level.who(),
                    why: summary,
                });
            }
            tracing::warn!(id = "auth.revocation.unknown_allowed", who = %level.who(), "revocation status unknown, allowed by policy: {summary}");
        }
    }
    plan.documents
        .sort_by_key(|document| std::cmp::Reverse(document.this_update));
    Ok(plan)
}

/// Why no CRL answers for a level.
struct NoCrl {
    /// What each place said.
    why: String,
    /// A downloaded CRL for the level did not verify against its issuer:
    /// an answer that must not be believed, not a missing one.
    forged: bool,
}

/// Fresh CRLs authoritative for `level`: local ones first, else the cached
/// or downloaded CRL of one of its distribution points, whose signature
/// verifies against the level's issuer. A downloaded CRL is cached only
/// once verified; a cached one that does not verify is evicted and the CRL
/// downloaded again.
fn find_crls(
    policy: &Policy,
    level: &Level<'_>,
    local: &crl::LocalCrls,
    cache: Option<&Cache>,
    now: UnixTime,
    skew: u64,
    deadline: &Deadline,
) -> Result<Vec<CrlDocument>, NoCrl> {
    let mut reasons = Vec::new();
    let mut forged = false;
    let verify = |document: &CrlDocument| {
        document.verify_signature(
            &level.issuer,
            level.issuer_der,
            &policy.signature_algorithms,
        )
    };
    // Err(None): not for this certificate; Err(Some(why)): for it, but stale.
    let usable = |document: &CrlDocument| -> Result<(), Option<String>> {
        let authoritative = document.webpki().is_ok_and(|list| {
            crl::is_authoritative(
                &list,
                &level.issuer_name,
                &level.certificate,
                level.end_entity,
            )
        });
        if !authoritative {
            return Err(None);
        }
        if !document.is_fresh(now, skew) {
            return Err(Some(format!(
                "CRL {} is outside its validity (thisUpdate {}, nextUpdate {})",
                document.source,
                format_time(document.this_update),
                format_time(document.next_update)
            )));
        }
        Ok(())
    };
    let mut found = Vec::new();
    for document in &local.documents {
        match usable(document) {
            Ok(()) => found.push(document.clone()),
            Err(Some(why)) => reasons.push(why),
            Err(None) => {}
        }
    }
    if !found.is_empty() {
        return Ok(found);
    }
    let urls = crl::distribution_point_urls(&level.certificate);
    if !policy.crl.fetch {
        reasons.push("CRL download is off (pki.crl.fetch = false)".to_owned());
    } else if urls.is_empty() {
        reasons.push("the certificate has no http:// CRL distribution point".to_owned());
    } else {
        for url in urls {
            let name = crl::cache_name(&url);
            if let Some(bytes) = cache.and_then(|cache| cache.read(&name, policy.crl.max_bytes)) {
                match CrlDocument::parse(bytes, format!("{url} (cached)")) {
                    Ok(document) if usable(&document).is_ok() => match verify(&document) {
                        Ok(()) => {
                            tracing::debug!(id = "auth.crl.cached", url, "CRL from the cache");
                            return Ok(vec![document]);
                        }
                        Err(why) => {
                            tracing::warn!(
                                id = "auth.crl.cache_evicted",
                                url,
                                "cached CRL evicted: {why}"
                            );
                            if let Some(cache) = cache {
                                cache.remove(&name);
                            }
                        }
                    },
                    Ok(_) => {
                        tracing::debug!(
                            id = "auth.crl.cache_stale",
                            url,
                            "cached CRL is stale or not for this certificate"
                        )
                    }
                    Err(error) => {
                        tracing::debug!(id = "auth.crl.cache_malformed", url, %error, "cached CRL not used; evicted");
                        if let Some(cache) = cache {
                            cache.remove(&name);
                        }
                    }
                }
            }
            let bytes = match fetch::fetch(&url, None, policy.crl.max_bytes, deadline) {
                Ok(bytes) => bytes,
                Err(error) => {
                    reasons.push(format!("CRL {error}"));
                    continue;
                }
            };
            match CrlDocument::parse(bytes, url.clone()) {
                Ok(document) => match usable(&document) {
                    Ok(()) => match verify(&document) {
                        Ok(()) => {
                            if let Some(cache) = cache {
                                cache.write(&name, &document.der);
                            }
                            return Ok(vec![document]);
                        }
                        Err(why) => {
                            forged = true;
                            reasons.push(why);
                        }
                    },
                    Err(Some(why)) => reasons.push(why),
                    Err(None) => reasons.push(format!(
                        "CRL {url} is not from this certificate's issuer or does not cover it"
                    )),
                },
                Err(error) => reasons.push(error),
            }
        }
    }
    if policy.crl.paths.is_empty() {
        reasons.insert(0, "no local CRL configured".to_owned());
    } else {
        reasons.insert(0, "no local CRL covers it".to_owned());
        reasons.extend(local.problems.iter().cloned());
    }
    Err(NoCrl {
        why: reasons.join("; "),
        forged,
    })
}
