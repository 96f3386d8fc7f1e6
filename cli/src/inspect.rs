//! `tessera inspect`: tokens, their certificates, the validation verdict and
//! the user each certificate maps to.

use std::path::Path;

use der::Decode;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use tessera_core::mapping;
use tessera_core::pkcs11_uri::TokenFilter;
use tessera_core::pki::{self, TrustStore};
use tessera_core::token::{hex_id, Pkcs11Module, TokenCertificate};
use tessera_core::Config;
use tessera_mappers::{CertificateFields, MappingInput, Outcome, TokenInfo};
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

fn certificate_report(
    config: &Config,
    store: &TrustStore,
    certificate: &TokenCertificate,
    siblings: &[TokenCertificate],
    now: UnixTime,
) -> CertificateReport {
    let der = CertificateDer::from(certificate.der.as_slice());
    let intermediates: Vec<CertificateDer<'_>> = siblings
        .iter()
        .filter(|other| other.token == certificate.token && other.der != certificate.der)
        .map(|other| CertificateDer::from(other.der.as_slice()))
        .collect();
    // The same checks as a login, revocation included, each with its own budget.
    let deadline = pki::Deadline::after(config.pki.revocation_timeout);
    let verdict = match pki::validate(store, &config.pki, &der, &intermediates, now, &deadline) {
        Ok(_) => "valid".to_owned(),
        Err(rejection) => format!("rejected: {rejection}"),
    };
    let parsed = Certificate::from_der(&certificate.der).ok();
    let (not_before, not_after) = parsed
        .as_ref()
        .map(|c| {
            (
                c.tbs_certificate.validity.not_before.to_string(),
                c.tbs_certificate.validity.not_after.to_string(),
            )
        })
        .unwrap_or_default();
    let mut report = CertificateReport {
        label: certificate.label.clone(),
        id: hex_id(&certificate.id),
        subject: String::new(),
        issuer: String::new(),
        not_before,
        not_after,
        extended_key_usage: parsed.as_ref().map(eku_names).unwrap_or_default(),
        emails: Vec::new(),
        upns: Vec::new(),
        sha256: String::new(),
        verdict,
        users: Vec::new(),
        rule: None,
        mapping_trace: Vec::new(),
    };
    match CertificateFields::from_der(&certificate.der) {
        Ok(fields) => {
            let token = TokenInfo {
                label: certificate.token.label.clone(),
                serial: certificate.token.serial.clone(),
            };
            let input = MappingInput {
                certificate: Some(&fields),
                key: fields.public_key.as_ref(),
                token: &token,
                requested_user: None,
            };
            let mapping = mapping::with_context(config, Some(now.as_secs()), |context| {
                mapping::map(config, context, &input)
            });
            report.users = mapping.users().to_vec();
            report.rule = match &mapping.outcome {
                Outcome::Matched { rule, .. } => Some(rule.clone()),
                _ => None,
            };
            report.mapping_trace = mapping.trace.iter().map(ToString::to_string).collect();
            report.subject = fields.subject;
            report.issuer = fields.issuer;
            report.emails = fields.emails;
            report.upns = fields.upns;
            report.sha256 = fields.sha256_hex;
        }
        Err(error) => report.verdict = format!("rejected: {error}"),
    }
    report
}

/// Builds the report for the tokens of `config`'s module (optionally filtered by `uri`).
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
    let mut tokens = Vec::new();
    for token in module.tokens().map_err(|error| error.to_string())? {
        if filter
            .as_ref()
            .is_some_and(|filter| !filter.matches(&token))
        {
            continue;
        }
        let certificates = module
            .certificates(&token)
            .map_err(|error| format!("{}: {error}", token.describe()))?;
        let reports = certificates
            .iter()
            .map(|certificate| certificate_report(&config, &store, certificate, &certificates, now))
            .collect();
        tokens.push(TokenReport {
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
            certificates: reports,
        });
    }
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
