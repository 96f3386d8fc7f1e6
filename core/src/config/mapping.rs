//! Certificate-to-user mapping: the `[[rule]]`s, the `[ldap]` directory
//! they may search, and the `[mapping]` cache of directory answers.

use std::path::PathBuf;

use serde::Deserialize;
use tessera_mappers::{LdapConfig, LdapDirectory, MappingCache, Rule, RuleConfig};
use toml::Spanned;

use super::error::{ConfigError, ConfigText};
use crate::filetrust;

/// Default lifetime of a cached directory mapping: one week.
pub const DEFAULT_CACHE_TTL: u64 = 7 * 24 * 3600;

/// `[mapping]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MappingSection {
    cache: Option<PathBuf>,
    cache_ttl: Option<u64>,
}

/// The rules, compiled in order.
pub(super) fn compile_rules(
    rules: &[Spanned<RuleConfig>],
    config: ConfigText<'_>,
) -> Result<Vec<Rule>, ConfigError> {
    if rules.is_empty() {
        return Err(config.error(
            None,
            "no [[rule]]: add at least one mapping rule, e.g. user = \"{cn}\"".to_owned(),
        ));
    }
    rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            Rule::compile(index, rule.get_ref()).map_err(|error| {
                config.error(Some(rule.span()), format!("rule {}: {error}", index + 1))
            })
        })
        .collect()
}

/// The directory, when `[ldap]` is configured; without it no rule may
/// search one.
pub(super) fn ldap_directory(
    section: Option<&Spanned<LdapConfig>>,
    rules: &[Rule],
    written_rules: &[Spanned<RuleConfig>],
    config: ConfigText<'_>,
) -> Result<Option<LdapDirectory>, ConfigError> {
    let Some(section) = section else {
        if let Some(index) = rules.iter().position(Rule::uses_ldap) {
            return Err(config.error(
                written_rules.get(index).map(Spanned::span),
                format!("rule {}: `ldap_filter` needs an [ldap] section", index + 1),
            ));
        }
        return Ok(None);
    };
    if let Some(ca) = &section.get_ref().tls_ca {
        filetrust::check_trusted_path(ca)
            .map_err(|error| config.error(Some(section.span()), format!("ldap.tls_ca: {error}")))?;
    }
    LdapDirectory::new(section.get_ref().clone())
        .map(Some)
        .map_err(|error| config.error(Some(section.span()), error.to_string()))
}

/// The cache of directory mappings, when `[mapping] cache` is set.
pub(super) fn mapping_cache(
    section: Option<&Spanned<MappingSection>>,
    config: ConfigText<'_>,
) -> Result<Option<MappingCache>, ConfigError> {
    let span = section.map(Spanned::span);
    let default = MappingSection::default();
    let mapping = section.map_or(&default, Spanned::get_ref);
    match (&mapping.cache, mapping.cache_ttl) {
        (Some(cache), ttl) if cache.is_absolute() => Ok(Some(MappingCache::new(
            cache.clone(),
            ttl.unwrap_or(DEFAULT_CACHE_TTL),
        ))),
        (Some(cache), _) => Err(config.error(
            span,
            format!("mapping.cache: path {cache:?} must be absolute"),
        )),
        (None, Some(_)) => {
            Err(config.error(span, "mapping.cache_ttl without mapping.cache".to_owned()))
        }
        (None, None) => Ok(None),
    }
}
