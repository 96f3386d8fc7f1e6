//! The directory source: LDAP searches with the filter template's values,
//! and the mapping cache that stands in while no server answers.

use super::context::{MappingContext, MappingInput};
use super::expansion::expand;
use super::source_error::{CacheFallback, SourceError};
use super::trace::{Lookup, Verdict};
use crate::cache::CacheLookup;
use crate::certificate::CertificateFields;
use crate::ldap::{SearchError, ServerFailure};
use crate::template::Template;

/// Most LDAP searches one rule may run (one per expansion of its filter).
const MAX_SEARCHES_PER_RULE: usize = 4;

/// `ldap_filter`, with the rule's `ldap_user_attribute`.
#[derive(Debug, Clone)]
pub(super) struct DirectorySource {
    /// The filter template (values RFC 4515-escaped).
    pub(super) filter: Template,
    /// The attribute holding the user name; `None`: `[ldap] user_attribute`.
    pub(super) attribute: Option<String>,
}

/// Where the users came from.
pub(super) enum DirectoryUsers {
    /// A server answered: store what passes the final check.
    Answered(Vec<String>),
    /// The cache stood in for an unreachable directory: nothing to store.
    Cached(Vec<String>),
}

impl DirectorySource {
    /// Searches the directory, or asks the cache when no server answers.
    pub(super) fn candidates(
        &self,
        rule: &str,
        fields: &CertificateFields,
        domain: Option<&str>,
        context: &MappingContext<'_>,
        lookups: &mut Vec<Lookup>,
    ) -> Result<DirectoryUsers, Verdict> {
        let filters = expand(&self.filter, fields, domain)?;
        let Some(directory) = context.ldap else {
            return Err(Verdict::Error {
                error: SourceError::NoDirectory,
            });
        };
        let attribute = self
            .attribute
            .as_deref()
            .unwrap_or(&directory.config().user_attribute);
        let failed = |failure: &ServerFailure, filter: &str| Lookup {
            source: format!("ldap {}", failure.uri),
            key: filter.to_owned(),
            result: format!("failed: {}", failure.error),
        };
        let mut users = Vec::new();
        for filter in filters.iter().take(MAX_SEARCHES_PER_RULE) {
            match directory.search(filter, attribute) {
                Ok(answer) => {
                    lookups.extend(answer.unreachable.iter().map(|f| failed(f, filter)));
                    lookups.push(Lookup {
                        source: format!("ldap {}", answer.uri),
                        key: filter.clone(),
                        result: match answer.entries.as_slice() {
                            [] => "no entry".to_owned(),
                            entries => entries
                                .iter()
                                .map(|e| format!("{} {attribute}={}", e.dn, e.users.join("|")))
                                .collect::<Vec<_>>()
                                .join("; "),
                        },
                    });
                    users.extend(answer.entries.into_iter().flat_map(|e| e.users));
                }
                Err(SearchError::Unreachable { failures }) => {
                    lookups.extend(failures.iter().map(|f| failed(f, filter)));
                    return cached(rule, fields, context, lookups, failures)
                        .map(DirectoryUsers::Cached);
                }
                Err(SearchError::Refused {
                    unreachable,
                    refusal,
                }) => {
                    lookups.extend(unreachable.iter().map(|f| failed(f, filter)));
                    lookups.push(failed(&refusal, filter));
                    return Err(Verdict::Error {
                        error: SourceError::DirectoryRefused(refusal),
                    });
                }
            }
        }
        if users.is_empty() {
            return Err(Verdict::NoMatch {
                reason: "the directory has no entry with a user name".to_owned(),
            });
        }
        Ok(DirectoryUsers::Answered(users))
    }
}

/// The users stored for this certificate and rule, while no server answers.
fn cached(
    rule: &str,
    fields: &CertificateFields,
    context: &MappingContext<'_>,
    lookups: &mut Vec<Lookup>,
    failures: Vec<ServerFailure>,
) -> Result<Vec<String>, Verdict> {
    let unavailable = |cache| Verdict::Error {
        error: SourceError::DirectoryUnreachable { failures, cache },
    };
    let Some(cache) = context.cache else {
        return Err(unavailable(CacheFallback::NotConfigured));
    };
    let (result, found) = match cache.lookup(rule, &fields.sha256_hex, context.now) {
        CacheLookup::Hit { users, age } => {
            tracing::info!(
                id = "auth.mapping.cache_used",
                rule,
                age,
                "directory unreachable; using the cached mapping"
            );
            (
                format!("{} (stored {age} s ago)", users.join(", ")),
                Ok(users),
            )
        }
        CacheLookup::Expired { age } => (
            format!("expired (stored {age} s ago)"),
            Err(CacheFallback::Expired { age }),
        ),
        CacheLookup::Miss => ("miss".to_owned(), Err(CacheFallback::Miss)),
        CacheLookup::Unusable(error) => {
            tracing::debug!(
                id = "auth.mapping.cache_skipped",
                rule,
                "mapping cache skipped: {error}"
            );
            (
                format!("skipped: {error}"),
                Err(CacheFallback::Skipped(error)),
            )
        }
    };
    lookups.push(Lookup {
        source: format!("cache {}", cache.path().display()),
        key: fields.sha256_hex.clone(),
        result,
    });
    found.map_err(unavailable)
}

/// Stores the users a directory answer mapped to (root only), so that the
/// cache can stand in while the directory is unreachable.
pub(super) fn remember(
    rule: &str,
    input: &MappingInput<'_>,
    context: &MappingContext<'_>,
    users: &[String],
    lookups: &mut Vec<Lookup>,
) {
    let (Some(cache), Some(fields)) = (context.cache, input.certificate) else {
        return;
    };
    if !context.privileged {
        tracing::debug!(
            id = "auth.mapping.cache_unprivileged",
            rule,
            "mapping cache not written: not running as root"
        );
        return;
    }
    let result = match cache.store(rule, &fields.sha256_hex, users, context.now) {
        Ok(()) => "stored".to_owned(),
        Err(error) => {
            tracing::warn!(
                id = "auth.mapping.cache_write_failed",
                rule,
                "mapping cache not written: {error}"
            );
            format!("not stored: {error}")
        }
    };
    lookups.push(Lookup {
        source: format!("cache {}", cache.path().display()),
        key: fields.sha256_hex.clone(),
        result,
    });
}
