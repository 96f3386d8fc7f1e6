//! `tessera map`: explain how certificates (from a file or from the present
//! tokens) map to users under the configured rules.

use std::io::Write;
use std::path::{Path, PathBuf};

use rustls_pki_types::UnixTime;
use serde::Serialize;
use tessera_core::auth::discover::key_subject;
use tessera_core::auth::{discover, BareKeys, Object, Scope, TokenObjects};
use tessera_core::config::Config;
use tessera_core::mapping;
use tessera_core::pki::TrustStore;
use tessera_core::token::Pkcs11Module;
use tessera_mappers::{
    certificate_der, CertificateFields, Mapping, MappingInput, Outcome, PublicKey, TokenInfo,
    TrustBasis,
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

/// The explanation of one certificate or key, from its mapping.
fn explained(
    fields: Option<&CertificateFields>,
    key: Option<&PublicKey>,
    token: TokenInfo,
    chain: Option<String>,
    mapping: Mapping,
) -> Explained {
    Explained {
        kind: if fields.is_some() {
            "certificate"
        } else {
            "key"
        },
        subject: fields
            .map(|f| f.subject.clone())
            .or_else(|| key.map(key_subject))
            .unwrap_or_default(),
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

/// What the login's discovery makes of the present tokens' certificates and
/// keys, every certificate validated.
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
    let objects = TokenObjects::read(&module, &tokens, BareKeys::Read);
    if let Some((token, error)) = objects.unreadable.first() {
        return Err(format!("{}: {error}", token.describe()));
    }
    let examined = discover(config, &store, &objects, Scope::Explain { user }, now)
        .map_err(|failure| failure.to_string())?;
    let mut explanations = Vec::new();
    for entry in examined {
        let chain = entry.verdict.describe();
        let Some(mapping) = entry.mapping else {
            eprintln!("{:?} skipped: {chain}", entry.label);
            continue;
        };
        explanations.push(match entry.object {
            Object::Certificate { fields, .. } => {
                let fields = fields.as_deref();
                let key = fields.and_then(|f| f.public_key.as_ref());
                explained(fields, key, token_info(entry.token), Some(chain), mapping)
            }
            Object::Key(key) => explained(None, key, token_info(entry.token), None, mapping),
        });
    }
    Ok(explanations)
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
    let mapping = mapping::with_context(config, Some(now.as_secs()), |context| {
        let input = MappingInput {
            certificate: Some(&fields),
            key: fields.public_key.as_ref(),
            token: &token,
            requested_user: request.user.as_deref(),
        };
        mapping::map(config, context, &input)
    });
    Ok(vec![explained(
        Some(&fields),
        fields.public_key.as_ref(),
        token,
        None,
        mapping,
    )])
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
        Outcome::Matched { rule, users, basis } => format!(
            "result: maps to {} by rule \"{rule}\"{}{}\n",
            users.join(", "),
            if users.len() > 1 {
                " (the user chooses at login)"
            } else {
                ""
            },
            if *basis == TrustBasis::AuthorizedKey {
                "; key match only, no chain validation"
            } else {
                ""
            }
        ),
        Outcome::NoMatch => "result: no rule maps it\n".to_owned(),
        Outcome::Error { rule, error } => format!(
            "result: error in rule \"{rule}\"{}: {error}\n",
            if error.is_unavailable() {
                " (unavailable)"
            } else {
                ""
            }
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
