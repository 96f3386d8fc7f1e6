//! `tessera inspect`: tokens, their certificates, the validation verdict and
//! the user each certificate maps to.

use std::path::Path;

use der::Decode;
use rustls_pki_types::UnixTime;
use serde::Serialize;
use tessera_core::auth::{discover, BareKeys, Examined, Object, Scope, TokenObjects};
use tessera_core::pkcs11_uri::TokenFilter;
use tessera_core::pki::TrustStore;
use tessera_core::token::{hex_id, Pkcs11Module};
use tessera_core::Config;
use tessera_mappers::Outcome;
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::Certificate;

/// Everything `inspect` found.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The PKCS#11 module.
    pub module: String,
    /// The tokens present (after the filter).
    pub tokens: Vec<TokenReport>,
}

/// One token.
#[derive(Debug, Serialize)]
pub struct TokenReport {
    /// Slot ID.
    pub slot_id: u64,
    /// Slot description (reader).
    pub slot_description: String,
    /// Label.
    pub label: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// PIN state: "ok", "count low", "final try" or "locked".
    pub pin: &'static str,
    /// The token has a PIN pad.
    pub pin_pad: bool,
    /// Its certificates.
    pub certificates: Vec<CertificateReport>,
}

/// One certificate.
#[derive(Debug, Serialize)]
pub struct CertificateReport {
    /// CKA_LABEL.
    pub label: String,
    /// CKA_ID in hex.
    pub id: String,
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// notBefore.
    pub not_before: String,
    /// notAfter.
    pub not_after: String,
    /// Extended key usages (names where known).
    pub extended_key_usage: Vec<String>,
    /// rfc822Name SANs and emailAddress attributes.
    pub emails: Vec<String>,
    /// UPN SANs.
    pub upns: Vec<String>,
    /// SHA-256 fingerprint.
    pub sha256: String,
    /// "valid", or "rejected: <reason>".
    pub verdict: String,
    /// The users the mapping rules give (after the NSS check).
    pub users: Vec<String>,
    /// The rule that mapped it.
    pub rule: Option<String>,
    /// Each rule tried, in order, and what it made of the certificate.
    pub mapping_trace: Vec<String>,
}

fn eku_names(certificate: &Certificate) -> Vec<String> {
    certificate
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|extension| extension.extn_id == const_oid::db::rfc5912::ID_CE_EXT_KEY_USAGE)
        .filter_map(|extension| ExtendedKeyUsage::from_der(extension.extn_value.as_bytes()).ok())
        .flat_map(|usage| usage.0)
        .map(|oid| match oid.to_string().as_str() {
            "1.3.6.1.4.1.311.20.2.2" => "smartcardLogon".to_owned(),
            "1.3.6.1.5.2.3.4" => "pkinit".to_owned(),
            _ => const_oid::db::DB
                .by_oid(&oid)
                .map(|name| name.trim_start_matches("id-kp-").to_owned())
                .unwrap_or_else(|| oid.to_string()),
        })
        .collect()
}

/// The report of one certificate, from what the login's discovery made of it.
fn certificate_report(examined: &Examined<'_>) -> CertificateReport {
    let (der, fields) = match &examined.object {
        Object::Certificate { der, fields } => (*der, fields.as_deref()),
        Object::Key(_) => (&[][..], None),
    };
    let parsed = Certificate::from_der(der).ok();
    let (not_before, not_after) = parsed
        .as_ref()
        .map(|c| {
            (
                c.tbs_certificate.validity.not_before.to_string(),
                c.tbs_certificate.validity.not_after.to_string(),
            )
        })
        .unwrap_or_default();
    let mapping = examined.mapping.as_ref();
    CertificateReport {
        label: examined.label.to_owned(),
        id: hex_id(examined.id),
        subject: fields.map(|f| f.subject.clone()).unwrap_or_default(),
        issuer: fields.map(|f| f.issuer.clone()).unwrap_or_default(),
        not_before,
        not_after,
        extended_key_usage: parsed.as_ref().map(eku_names).unwrap_or_default(),
        emails: fields.map(|f| f.emails.clone()).unwrap_or_default(),
        upns: fields.map(|f| f.upns.clone()).unwrap_or_default(),
        sha256: fields.map(|f| f.sha256_hex.clone()).unwrap_or_default(),
        verdict: examined.verdict.describe(),
        users: mapping.map(|m| m.users().to_vec()).unwrap_or_default(),
        rule: mapping.and_then(|m| match &m.outcome {
            Outcome::Matched { rule, .. } => Some(rule.clone()),
            _ => None,
        }),
        mapping_trace: mapping
            .map(|m| m.trace.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
    }
}

/// Builds the report for the tokens of `config`'s module (optionally
/// filtered by `uri`): the certificates as a login's discovery sees them,
/// each validated, with one revocation budget for them all.
pub fn inspect(config_path: &Path, uri: Option<&str>) -> Result<Report, String> {
    let config = Config::load(config_path).map_err(|error| error.to_string())?;
    let filter = match uri {
        Some(uri) => Some(TokenFilter::parse(uri).map_err(|error| format!("--token: {error}"))?),
        None => config.token_filter.clone(),
    };
    let store = TrustStore::load(&config.ca_paths).map_err(|error| error.to_string())?;
    let module = Pkcs11Module::load(&config.pkcs11_module).map_err(|error| error.to_string())?;
    // The CLI is an entry point: it reads the clock.
    #[allow(clippy::disallowed_methods)]
    let now = UnixTime::now();
    let tokens: Vec<_> = module
        .tokens()
        .map_err(|error| error.to_string())?
        .into_iter()
        .filter(|token| filter.as_ref().is_none_or(|filter| filter.matches(token)))
        .collect();
    let objects = TokenObjects::read(&module, &tokens, BareKeys::Skip);
    if let Some((token, error)) = objects.unreadable.first() {
        return Err(format!("{}: {error}", token.describe()));
    }
    let examined = discover(
        &config,
        &store,
        &objects,
        Scope::Explain { user: None },
        now,
    )
    .map_err(|failure| failure.to_string())?;
    let tokens = tokens
        .iter()
        .map(|token| TokenReport {
            slot_id: token.slot_id,
            slot_description: token.slot_description.clone(),
            label: token.label.clone(),
            manufacturer: token.manufacturer.clone(),
            model: token.model.clone(),
            serial: token.serial.clone(),
            pin: if token.pin_locked {
                "locked"
            } else if token.pin_final_try {
                "final try"
            } else if token.pin_count_low {
                "count low"
            } else {
                "ok"
            },
            pin_pad: token.protected_authentication_path,
            certificates: examined
                .iter()
                .filter(|entry| entry.token == token)
                .map(certificate_report)
                .collect(),
        })
        .collect();
    Ok(Report {
        module: config.pkcs11_module.display().to_string(),
        tokens,
    })
}

/// The report as text for a terminal.
pub fn render(report: &Report) -> String {
    let mut text = format!("PKCS#11 module: {}\n", report.module);
    if report.tokens.is_empty() {
        text.push_str("no token present\n");
    }
    for token in &report.tokens {
        text.push_str(&format!(
            "\ntoken \"{}\" (serial {}) in slot {} \"{}\"\n  manufacturer {}, model {}, PIN {}{}\n",
            token.label,
            token.serial,
            token.slot_id,
            token.slot_description,
            token.manufacturer,
            token.model,
            token.pin,
            if token.pin_pad { ", PIN pad" } else { "" }
        ));
        for certificate in &token.certificates {
            text.push_str(&format!(
                "  certificate \"{}\" (id {})\n    subject  {}\n    issuer   {}\n    valid    {} to {}\n    EKU      {}\n    email    {}\n    UPN      {}\n    sha256   {}\n    verdict  {}\n",
                certificate.label,
                certificate.id,
                certificate.subject,
                certificate.issuer,
                certificate.not_before,
                certificate.not_after,
                certificate.extended_key_usage.join(", "),
                certificate.emails.join(", "),
                certificate.upns.join(", "),
                certificate.sha256,
                certificate.verdict
            ));
            match &certificate.rule {
                Some(rule) => text.push_str(&format!(
                    "    maps to  {} (rule \"{rule}\")\n",
                    certificate.users.join(", ")
                )),
                None => text.push_str("    maps to  nobody\n"),
            }
            for step in &certificate.mapping_trace {
                // A step is several lines (rule, conditions, look-ups, verdict).
                for line in step.lines() {
                    text.push_str(&format!("      {line}\n"));
                }
            }
        }
    }
    text
}
