//! What the fuzz targets share: the fixed test PKI they check inputs
//! against (`material/`, written by `tessera-fuzz-seeds` of `tools/`
//! together with the seed corpora in `seeds/`).

use std::sync::OnceLock;
use std::time::Duration;

use der::Decode;
use rustls_pki_types::UnixTime;
use x509_cert::Certificate;

/// The issuing CA's certificate (DER).
pub const ISSUER_DER: &[u8] = include_bytes!("../material/issuer.der");
/// The issuing CA's private key (PKCS#8 DER, P-256).
pub const ISSUER_KEY: &[u8] = include_bytes!("../material/issuer-key.der");
/// The user certificate the CRL and OCSP seeds are about (DER).
pub const USER_DER: &[u8] = include_bytes!("../material/user.der");
/// The nonce the OCSP seeds that carry one echo.
pub const NONCE: &[u8] = include_bytes!("../material/nonce");
/// The virtual card's P-256 key (PKCS#8 DER) and certificate.
pub const CARD_KEY: &[u8] = include_bytes!("../material/card-key.der");
/// The virtual card's certificate (DER).
pub const CARD_DER: &[u8] = include_bytes!("../material/card.der");
const NOW: &str = include_str!("../material/now");

/// When the material was made: inside every seed's validity window, so a
/// run is deterministic whatever the clock says.
pub fn now() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(NOW.trim().parse().unwrap()))
}

/// The parsed user and issuer certificates.
pub fn certificates() -> &'static (Certificate, Certificate) {
    static PARSED: OnceLock<(Certificate, Certificate)> = OnceLock::new();
    PARSED.get_or_init(|| {
        (
            Certificate::from_der(USER_DER).unwrap(),
            Certificate::from_der(ISSUER_DER).unwrap(),
        )
    })
}

/// No accounts, no files: the mapping sources that need them answer "none".
#[derive(Debug)]
pub struct NoAccounts;

impl tessera_mappers::Accounts for NoAccounts {
    fn lookup(&self, _name: &str) -> std::io::Result<Option<tessera_mappers::Account>> {
        Ok(None)
    }
}

fn no_files(_path: &std::path::Path) -> Result<std::fs::File, tessera_mappers::OpenError> {
    Err("no files while fuzzing".into())
}

/// A rule from `[[rule]]` keys, if it compiles.
pub fn rule(index: usize, keys: &[(&str, &str)]) -> Option<tessera_mappers::Rule> {
    let table: toml::Table = keys
        .iter()
        .map(|(key, value)| ((*key).to_owned(), toml::Value::from(*value)))
        .collect();
    let config: tessera_mappers::RuleConfig = toml::Value::Table(table).try_into().ok()?;
    tessera_mappers::Rule::compile(index, &config).ok()
}

/// `rules` over `fields` on a token, with no accounts, files, LDAP or cache.
pub fn map(
    rules: &[tessera_mappers::Rule],
    fields: &tessera_mappers::CertificateFields,
) -> tessera_mappers::Mapping {
    let context =
        tessera_mappers::MappingContext::new(&NoAccounts, &no_files, None, None, false, 0);
    let token = tessera_mappers::TokenInfo {
        label: "alice-token".to_owned(),
        serial: "0042".to_owned(),
    };
    let input = tessera_mappers::MappingInput {
        certificate: Some(fields),
        key: fields.public_key.as_ref(),
        token: &token,
        requested_user: None,
    };
    tessera_mappers::map_certificate(rules, &input, &context)
}
