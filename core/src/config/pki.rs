//! `[pki]`: the trust anchors, certificate policy and revocation checking.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, ConfigText};
use crate::pki::policy::{
    MissingPolicy, OcspHash, Policy as PkiPolicy, RevocationMode, EKU_NAMES, SIGNATURE_ALGORITHMS,
};

/// The checked `[pki]` section.
pub(super) struct PkiSettings {
    /// Trust anchor files or directories.
    pub(super) ca_paths: Vec<PathBuf>,
    /// Everything else.
    pub(super) policy: PkiPolicy,
}

/// Checks `[pki]`.
pub(super) fn pki_settings(
    section: &Spanned<PkiSection>,
    config: ConfigText<'_>,
) -> Result<PkiSettings, ConfigError> {
    if section.get_ref().ca.is_empty() {
        return Err(config.error(
            Some(section.span()),
            "pki.ca is empty: name at least one trusted CA file or directory".to_owned(),
        ));
    }
    let ca_paths = section
        .get_ref()
        .ca
        .iter()
        .map(|ca| config.absolute_path(ca, "pki.ca"))
        .collect::<Result<Vec<_>, _>>()?;
    let policy = pki_policy(section.get_ref(), config)?;
    Ok(PkiSettings { ca_paths, policy })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PkiSection {
    ca: Vec<Spanned<PathBuf>>,
    allowed_eku: Option<Vec<Spanned<String>>>,
    require_eku: Option<bool>,
    max_chain_depth: Option<Spanned<u32>>,
    signature_algorithms: Option<Vec<Spanned<String>>>,
    clock_skew_seconds: Option<Spanned<u32>>,
    revocation: Option<Spanned<String>>,
    revocation_timeout_ms: Option<Spanned<u32>>,
    cache: Option<bool>,
    cache_dir: Option<Spanned<PathBuf>>,
    #[serde(default)]
    crl: CrlSection,
    #[serde(default)]
    ocsp: OcspSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CrlSection {
    #[serde(default)]
    files: Vec<Spanned<PathBuf>>,
    fetch: Option<bool>,
    max_bytes: Option<Spanned<u64>>,
    missing: Option<Spanned<String>>,
    missing_intermediate: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OcspSection {
    url: Option<Spanned<String>>,
    hash: Option<Spanned<String>>,
    nonce: Option<bool>,
    soft_fail: Option<bool>,
    max_bytes: Option<Spanned<u64>>,
}

/// The `[pki]` keys besides `ca`, checked, with defaults from [`PkiPolicy::default`].
fn pki_policy(section: &PkiSection, config: ConfigText<'_>) -> Result<PkiPolicy, ConfigError> {
    let mut policy = PkiPolicy::default();
    if let Some(names) = &section.allowed_eku {
        if names.is_empty() {
            return Err(config.error(
                None,
                "pki.allowed_eku is empty: name at least one purpose".to_owned(),
            ));
        }
        policy.allowed_eku = names
            .iter()
            .map(|name| {
                EKU_NAMES
                    .iter()
                    .find(|(known, _)| known == name.get_ref())
                    .map(|(_, oid)| *oid)
                    .or_else(|| tessera_mappers::parse_oid(name.get_ref()))
                    .ok_or_else(|| {
                        config.error(
                            Some(name.span()),
                            format!(
                                "pki.allowed_eku: {:?} is neither clientAuth, smartcardLogon, pkinit nor a dotted OID",
                                name.get_ref()
                            ),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(require) = section.require_eku {
        policy.require_eku = require;
    }
    if let Some(depth) = &section.max_chain_depth {
        if !(1..=6).contains(depth.get_ref()) {
            return Err(config.error(
                Some(depth.span()),
                "pki.max_chain_depth must be between 1 and 6 (webpki's own limit)".to_owned(),
            ));
        }
        policy.max_chain_depth = *depth.get_ref() as usize;
    }
    if let Some(names) = &section.signature_algorithms {
        let known: Vec<&str> = SIGNATURE_ALGORITHMS.iter().map(|(name, _)| *name).collect();
        let mut algorithms = Vec::new();
        for name in names {
            let (_, found) = SIGNATURE_ALGORITHMS
                .iter()
                .find(|(known, _)| known == name.get_ref())
                .ok_or_else(|| config.unknown_choice(name, "pki.signature_algorithms", &known))?;
            algorithms.extend(found.iter().copied());
        }
        if algorithms.is_empty() {
            return Err(config.error(
                None,
                "pki.signature_algorithms is empty: name at least one algorithm".to_owned(),
            ));
        }
        policy.signature_algorithms = algorithms;
    }
    if let Some(skew) = &section.clock_skew_seconds {
        policy.clock_skew = std::time::Duration::from_secs(u64::from(*skew.get_ref()));
    }
    if let Some(mode) = &section.revocation {
        policy.revocation = RevocationMode::parse(mode.get_ref())
            .ok_or_else(|| config.unknown_choice(mode, "pki.revocation", RevocationMode::NAMES))?;
    }
    if let Some(timeout) = &section.revocation_timeout_ms {
        if !(100..=60_000).contains(timeout.get_ref()) {
            return Err(config.error(
                Some(timeout.span()),
                "pki.revocation_timeout_ms must be between 100 and 60000".to_owned(),
            ));
        }
        policy.revocation_timeout = std::time::Duration::from_millis(u64::from(*timeout.get_ref()));
    }
    if let Some(dir) = &section.cache_dir {
        policy.cache_dir = Some(config.absolute_path(dir, "pki.cache_dir")?);
    }
    if section.cache == Some(false) {
        policy.cache_dir = None;
    }

    let crl = &section.crl;
    policy.crl.paths = crl
        .files
        .iter()
        .map(|file| config.absolute_path(file, "pki.crl.files"))
        .collect::<Result<_, _>>()?;
    if let Some(fetch) = crl.fetch {
        policy.crl.fetch = fetch;
    }
    let missing = |value: &Option<Spanned<String>>, key: &str, default: MissingPolicy| {
        value.as_ref().map_or(Ok(default), |value| {
            MissingPolicy::parse(value.get_ref())
                .ok_or_else(|| config.unknown_choice(value, key, &["deny", "allow"]))
        })
    };
    policy.crl.missing = missing(&crl.missing, "pki.crl.missing", policy.crl.missing)?;
    policy.crl.missing_intermediate = missing(
        &crl.missing_intermediate,
        "pki.crl.missing_intermediate",
        policy.crl.missing_intermediate,
    )?;
    let bytes = |value: &Spanned<u64>, key: &str| {
        if *value.get_ref() < 1024 {
            Err(config.error(
                Some(value.span()),
                format!("{key} must be at least 1024 bytes"),
            ))
        } else {
            Ok(*value.get_ref())
        }
    };
    if let Some(max) = &crl.max_bytes {
        policy.crl.max_bytes = bytes(max, "pki.crl.max_bytes")?;
    }

    let ocsp = &section.ocsp;
    if let Some(url) = &ocsp.url {
        if !crate::pki::fetch::is_http_url(url.get_ref()) {
            return Err(config.error(
                Some(url.span()),
                format!(
                    "pki.ocsp.url: {:?} must be an http:// URL (OCSP responses are signed)",
                    url.get_ref()
                ),
            ));
        }
        policy.ocsp.url = Some(url.get_ref().clone());
    }
    if let Some(hash) = &ocsp.hash {
        policy.ocsp.hash = match hash.get_ref().as_str() {
            "sha1" => OcspHash::Sha1,
            "sha256" => OcspHash::Sha256,
            _ => return Err(config.unknown_choice(hash, "pki.ocsp.hash", &["sha1", "sha256"])),
        };
    }
    if let Some(nonce) = ocsp.nonce {
        policy.ocsp.nonce = nonce;
    }
    if let Some(soft_fail) = ocsp.soft_fail {
        policy.ocsp.soft_fail = soft_fail;
    }
    if let Some(max) = &ocsp.max_bytes {
        policy.ocsp.max_bytes = bytes(max, "pki.ocsp.max_bytes")?;
    }
    Ok(policy)
}
