//! `tessera map`: explain how certificates (from a file or from the present
//! tokens) map to users under the configured rules.

use std::io::Write;
use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use tessera_core::config::Config;
use tessera_core::mapping;
use tessera_core::pki::{self, TrustStore};
use tessera_core::token::Pkcs11Module;
use tessera_mappers::{
    certificate_der, CertificateFields, Mapping, MappingInput, Outcome, PublicKey, TokenInfo,
};

/// What `tessera map` was asked.
#[derive(Debug)]
pub struct MapRequest {
    /// The configuration file.
    pub config: PathBuf,
    /// A certificate file (PEM or DER); `None` with `token`.
    pub certificate: Option<PathBuf>,
    /// Map what the present tokens hold.
    pub token: bool,
    /// The user the login would ask for.
    pub user: Option<String>,
    /// Token label the certificate is taken to be on (certificate files only).
    pub token_label: String,
    /// Token serial the certificate is taken to be on (certificate files only).
    pub token_serial: String,
    /// Print JSON.
    pub json: bool,
}

/// One certificate or key and its explanation.
#[derive(Debug, Serialize)]
struct Explained {
    /// `certificate` or `key`.
    kind: &'static str,
    /// Subject DN, or the key's fingerprint.
    subject: String,
    issuer: Option<String>,
    serial: Option<String>,
    sha256: Option<String>,
    token: TokenInfo,
    /// Path validation, for tokens' certificates.
    chain: Option<String>,
    mapping: Mapping,
}

fn explain(
    config: &Config,
    fields: Option<&CertificateFields>,
    key: Option<&PublicKey>,
    token: TokenInfo,
    user: Option<&str>,
    chain: Option<String>,
    context: &tessera_mappers::MappingContext<'_>,
) -> Explained {
    let input = MappingInput {
        certificate: fields,
        key,
        token: &token,
        requested_user: user,
    };
    let mapping = mapping::map(config, context, &input);
    Explained {
        kind: if fields.is_some() {
            "certificate"
        } else {
            "key"
        },
        subject: fields.map(|f| f.subject.clone()).unwrap_or_else(|| {
            key.map(|k| format!("{} key {}", k.kind(), k.fingerprint()))
                .unwrap_or_default()
        }),
        issuer: fields.map(|f| f.issuer.clone()),
        serial: fields.map(|f| f.serial_hex.clone()),
        sha256: fields.map(|f| f.sha256_hex.clone()),
        token,
        chain,
        mapping,
    }
}

fn token_info(identity: &tessera_core::token::TokenIdentity) -> TokenInfo {
    TokenInfo {
        label: identity.label.clone(),
        serial: identity.serial.clone(),
    }
}

fn from_tokens(
    config: &Config,
    user: Option<&str>,
    now: UnixTime,
) -> Result<Vec<Explained>, String> {
    let store = TrustStore::load(&config.ca_paths).map_err(|error| error.to_string())?;
    let module = Pkcs11Module::load(&config.pkcs11_module).map_err(|error| error.to_string())?;
    let tokens = module.tokens().map_err(|error| error.to_string())?;
    if tokens.is_empty() {
        return Err("no token present".to_owned());
    }
    let mut explained = Vec::new();
    mapping::with_context(
        config,
        Some(now.as_secs()),
        |context| -> Result<(), String> {
            for token in &tokens {
                let certificates = module.certificates(token).map_err(|e| e.to_string())?;
                let ders: Vec<CertificateDer<'_>> = certificates
                    .iter()
                    .map(|c| CertificateDer::from(c.der.as_slice()))
                    .collect();
                for (index, certificate) in certificates.iter().enumerate() {
                    let fields = match CertificateFields::from_der(&certificate.der) {
                        Ok(fields) => fields,
                        Err(error) => {
                            eprintln!("certificate {:?} skipped: {error}", certificate.label);
                            continue;
                        }
                    };
                    let others: Vec<CertificateDer<'_>> = ders
                        .iter()
                        .enumerate()
                        .filter(|(other, _)| *other != index)
                        .map(|(_, der)| der.clone())
                        .collect();
                    // The same checks as a login, revocation included.
                    let deadline = pki::Deadline::after(config.pki.revocation_timeout);
                    let chain = match pki::validate(
                        &store,
                        &config.pki,
                        &ders[index],
                        &others,
                        now,
                        &deadline,
                    ) {
                        Ok(_) => "valid".to_owned(),
                        Err(rejection) => format!("rejected: {rejection}"),
                    };
                    explained.push(explain(
                        config,
                        Some(&fields),
                        fields.public_key.as_ref(),
                        token_info(token),
                        user,
                        Some(chain),
                        context,
                    ));
                }
                let keys = module.public_keys(token).map_err(|e| e.to_string())?;
                for bare in keys
                    .iter()
                    .filter(|key| !certificates.iter().any(|c| c.id == key.id))
                {
                    if let Ok(key) = &bare.key {
                        explained.push(explain(
                            config,
                            None,
                            Some(key),
                            token_info(token),
                            user,
                            None,
                            context,
                        ));
                    }
                }
            }
            Ok(())
        },
    )?;
    Ok(explained)
}

fn from_file(
    config: &Config,
    path: &Path,
    request: &MapRequest,
    now: UnixTime,
) -> Result<Vec<Explained>, String> {
    let bytes = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let der = certificate_der(&bytes).map_err(|error| format!("{}: {error}", path.display()))?;
    let fields = CertificateFields::from_der(&der)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    let token = TokenInfo {
        label: request.token_label.clone(),
        serial: request.token_serial.clone(),
    };
    Ok(mapping::with_context(
        config,
        Some(now.as_secs()),
        |context| {
            vec![explain(
                config,
                Some(&fields),
                fields.public_key.as_ref(),
                token,
                request.user.as_deref(),
                None,
                context,
            )]
        },
    ))
}

fn render(item: &Explained) -> String {
    let mut text = format!("{} {}\n", item.kind, item.subject);
    if let (Some(issuer), Some(serial), Some(sha256)) = (&item.issuer, &item.serial, &item.sha256) {
        text.push_str(&format!(
            "  issuer {issuer}\n  serial {serial}\n  sha256 {sha256}\n"
        ));
    }
    text.push_str(&format!(
        "  token label {:?} serial {:?}\n",
        item.token.label, item.token.serial
    ));
    if let Some(chain) = &item.chain {
        text.push_str(&format!("  chain {chain}\n"));
    }
    for step in &item.mapping.trace {
        text.push_str(&format!("{step}\n"));
    }
    text.push_str(&match &item.mapping.outcome {
        Outcome::Matched {
            rule,
            users,
            key_only,
        } => format!(
            "result: maps to {} by rule \"{rule}\"{}{}\n",
            users.join(", "),
            if users.len() > 1 {
                " (the user chooses at login)"
            } else {
                ""
            },
            if *key_only {
                "; key match only, no chain validation"
            } else {
                ""
            }
        ),
        Outcome::NoMatch => "result: no rule maps it\n".to_owned(),
        Outcome::Error {
            rule,
            message,
            unavailable,
        } => format!(
            "result: error in rule \"{rule}\"{}: {message}\n",
            if *unavailable { " (unavailable)" } else { "" }
        ),
    });
    text
}

/// Runs `tessera map`; `Ok(true)` when something mapped.
pub fn run(request: &MapRequest) -> Result<bool, String> {
    let config = Config::load(&request.config).map_err(|error| error.to_string())?;
    // The CLI is an entry point: it reads the clock and hands it down.
    #[allow(clippy::disallowed_methods)]
    let now = UnixTime::now();
    let items = match (&request.certificate, request.token) {
        (Some(path), false) => from_file(&config, path, request, now)?,
        (None, true) => from_tokens(&config, request.user.as_deref(), now)?,
        _ => return Err("give a certificate file or --token".to_owned()),
    };
    let mapped = items
        .iter()
        .any(|item| matches!(item.mapping.outcome, Outcome::Matched { .. }));
    let output = if request.json {
        serde_json::to_string_pretty(&items).map_err(|error| error.to_string())? + "\n"
    } else {
        items.iter().map(render).collect::<Vec<_>>().join("\n")
    };
    std::io::stdout()
        .write_all(output.as_bytes())
        .map_err(|error| error.to_string())?;
    Ok(mapped)
}
