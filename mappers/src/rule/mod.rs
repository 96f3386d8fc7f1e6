//! Ordered mapping rules: what a `[[rule]]` table compiles to, and how the
//! rules are tried. Each source of users has its own file; the trace that
//! explains every decision is in `trace`.
//!
//! Files: `context` (what the rules consult), `trace` (verdicts and
//! explanation), `source_error` (why a source failed), `expansion` (template
//! expansion for the certificate sources), and one per source: `mapfile`,
//! `directory` (LDAP and the mapping cache), `authorized`. The template
//! source is the expansion itself.

mod authorized;
mod context;
mod directory;
mod expansion;
mod mapfile;
mod source_error;
mod trace;

use std::path::PathBuf;

use serde::Deserialize;

use self::directory::{DirectorySource, DirectoryUsers};
use self::expansion::{certificate, expand};
use self::mapfile::MapFileSource;
use crate::conditions::{ConditionConfig, ConditionError, Conditions};
use crate::template::{Template, TemplateError};
use crate::username::validate_username;

pub use self::context::{Accounts, MappingContext, MappingInput, OpenError, OpenTrusted};
pub use self::source_error::{CacheFallback, SourceError};
pub use self::trace::{
    Lookup, Mapping, Outcome, Refusal, RefusalReason, RuleTrace, TrustBasis, Verdict,
};

/// One `[[rule]]` table as written in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A name for logs and the explain output; defaults to "rule N".
    pub name: Option<String>,
    /// Condition: the issuer DN, exactly (RFC 4514, compared structurally).
    pub issuer: Option<String>,
    /// Condition: a regex the whole issuer DN string matches.
    pub issuer_regex: Option<String>,
    /// Condition: the subject DN, exactly.
    pub subject: Option<String>,
    /// Condition: a regex the whole subject DN string matches.
    pub subject_regex: Option<String>,
    /// Condition: extendedKeyUsages that must all be present (names or OIDs).
    #[serde(default)]
    pub eku: Vec<String>,
    /// Condition: keyUsage bits that must all be set.
    #[serde(default)]
    pub key_usage: Vec<String>,
    /// Condition: subjectAltName kinds that must all be present.
    #[serde(default)]
    pub san: Vec<String>,
    /// Condition: certificate policy OIDs that must all be present.
    #[serde(default)]
    pub policy: Vec<String>,
    /// Condition: the token label, exactly.
    pub token_label: Option<String>,
    /// Condition: a regex the whole token label matches.
    pub token_label_regex: Option<String>,
    /// Condition: the token serial number, exactly.
    pub token_serial: Option<String>,
    /// Condition: an SSSD matchrule (`<ISSUER>…<EKU>msScLogin`).
    pub matchrule: Option<String>,
    /// Source: the user-name template, e.g. `{cn}`.
    pub user: Option<String>,
    /// Source: a mapfile of `<key> <user>` lines…
    pub mapfile: Option<PathBuf>,
    /// …looked up with this key template, e.g. `{sha256}`.
    pub key: Option<String>,
    /// Source: an LDAP search filter template (SSSD maprule names accepted).
    pub ldap_filter: Option<String>,
    /// The attribute holding the user name (default: `[ldap] user_attribute`).
    pub ldap_user_attribute: Option<String>,
    /// Source: the user's `~/.ssh/authorized_keys` and
    /// `~/.config/tessera/authorized_certificates` (needs the user name).
    #[serde(default)]
    pub authorized_files: bool,
    /// Only e-mail/UPN/principal values in this domain (or realm) are used;
    /// required when a template drops the domain (`{email.local}`).
    pub domain: Option<String>,
}

/// Why a rule could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A template does not parse.
    #[error("in `{0}`: {1}")]
    Template(&'static str, TemplateError),
    /// A condition does not compile.
    #[error("{0}")]
    Condition(#[from] ConditionError),
    /// A template drops an address's domain but the rule names no domain.
    #[error(
        "`{0}` uses {1}, which drops the domain, so the rule must set `domain` \
         (otherwise root@evil.example would map to root)"
    )]
    DomainRequired(&'static str, String),
    /// `domain` is set but no template uses an address field.
    #[error("`domain` is set but `{0}` uses no email, upn, krb_principal or principal field, so it would be ignored")]
    DomainUnused(&'static str),
    /// `domain` is empty or has characters no domain name has.
    #[error("`domain` {0:?} is not a domain name")]
    BadDomain(String),
    /// Not exactly one source.
    #[error("a rule needs exactly one of `user`, `mapfile` (with `key`), `ldap_filter` or `authorized_files = true`")]
    Sources,
    /// `key` without `mapfile`, or the reverse.
    #[error("`mapfile` and `key` go together")]
    MapfileWithoutKey,
    /// `ldap_user_attribute` without `ldap_filter`.
    #[error("`ldap_user_attribute` only applies with `ldap_filter`")]
    AttributeWithoutFilter,
    /// A relative mapfile path.
    #[error("`mapfile` {0:?} must be an absolute path")]
    RelativeMapfile(PathBuf),
}

/// Where a rule finds users.
#[derive(Debug, Clone)]
enum Source {
    /// `user`: the expanded template is the user name.
    Template(Template),
    MapFile(MapFileSource),
    Directory(DirectorySource),
    /// `authorized_files = true`.
    Authorized,
}

/// A compiled mapping rule.
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    conditions: Conditions,
    source: Source,
    domain: Option<String>,
}

impl Rule {
    /// Compiles the `index`-th rule (0-based) of the configuration.
    pub fn compile(index: usize, config: &RuleConfig) -> Result<Self, RuleError> {
        let conditions = Conditions::compile(&ConditionConfig {
            issuer: config.issuer.as_deref(),
            issuer_regex: config.issuer_regex.as_deref(),
            subject: config.subject.as_deref(),
            subject_regex: config.subject_regex.as_deref(),
            eku: &config.eku,
            key_usage: &config.key_usage,
            san: &config.san,
            policy: &config.policy,
            token_label: config.token_label.as_deref(),
            token_label_regex: config.token_label_regex.as_deref(),
            token_serial: config.token_serial.as_deref(),
            matchrule: config.matchrule.as_deref(),
        })?;
        let sources = usize::from(config.user.is_some())
            + usize::from(config.mapfile.is_some())
            + usize::from(config.ldap_filter.is_some())
            + usize::from(config.authorized_files);
        if sources != 1 {
            return Err(RuleError::Sources);
        }
        if config.key.is_some() != config.mapfile.is_some() {
            return Err(RuleError::MapfileWithoutKey);
        }
        if config.ldap_user_attribute.is_some() && config.ldap_filter.is_none() {
            return Err(RuleError::AttributeWithoutFilter);
        }
        let parse = |key: &'static str, text: &str, ldap: bool| {
            let parsed = if ldap {
                Template::parse_ldap_filter(text)
            } else {
                Template::parse(text)
            };
            parsed.map_err(|error| RuleError::Template(key, error))
        };
        let (key_name, source) = if let Some(user) = &config.user {
            ("user", Source::Template(parse("user", user, false)?))
        } else if let (Some(path), Some(key)) = (&config.mapfile, &config.key) {
            if !path.is_absolute() {
                return Err(RuleError::RelativeMapfile(path.clone()));
            }
            (
                "key",
                Source::MapFile(MapFileSource {
                    path: path.clone(),
                    key: parse("key", key, false)?,
                }),
            )
        } else if let Some(filter) = &config.ldap_filter {
            (
                "ldap_filter",
                Source::Directory(DirectorySource {
                    filter: parse("ldap_filter", filter, true)?,
                    attribute: config.ldap_user_attribute.clone(),
                }),
            )
        } else {
            ("authorized_files", Source::Authorized)
        };
        let template = match &source {
            Source::Template(template) => Some(template),
            Source::MapFile(mapfile) => Some(&mapfile.key),
            Source::Directory(directory) => Some(&directory.filter),
            Source::Authorized => None,
        };
        if let Some(domain) = &config.domain {
            let valid = !domain.is_empty()
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            if !valid {
                return Err(RuleError::BadDomain(domain.clone()));
            }
            if !template.is_some_and(|t| t.placeholders().any(|p| p.is_address())) {
                return Err(RuleError::DomainUnused(key_name));
            }
        } else if let Some(placeholder) =
            template.and_then(|t| t.placeholders().find(|p| p.strips_domain()))
        {
            return Err(RuleError::DomainRequired(key_name, placeholder.to_string()));
        }
        Ok(Self {
            name: config
                .name
                .clone()
                .unwrap_or_else(|| format!("rule {}", index + 1)),
            conditions,
            source,
            domain: config.domain.clone(),
        })
    }

    /// The rule's name for logs and explanations.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the rule searches the directory.
    pub fn uses_ldap(&self) -> bool {
        matches!(self.source, Source::Directory(_))
    }

    /// Whether the rule reads the users' authorized files.
    pub fn uses_authorized_files(&self) -> bool {
        matches!(self.source, Source::Authorized)
    }

    /// A one-line description of where the rule finds users.
    pub fn describe_source(&self) -> String {
        match &self.source {
            Source::Template(template) => format!("user = \"{template}\""),
            Source::MapFile(mapfile) => {
                format!(
                    "mapfile {} keyed by \"{}\"",
                    mapfile.path.display(),
                    mapfile.key
                )
            }
            Source::Directory(directory) => format!("ldap_filter = \"{}\"", directory.filter),
            Source::Authorized => {
                "the user's authorized_keys and authorized_certificates".to_owned()
            }
        }
    }

    fn apply(&self, input: &MappingInput<'_>, context: &MappingContext<'_>) -> RuleTrace {
        let mut trace = RuleTrace {
            rule: self.name.clone(),
            source: self.describe_source(),
            checks: self.conditions.evaluate(input.certificate, input.token),
            lookups: Vec::new(),
            verdict: Verdict::ConditionsFailed,
        };
        if trace.checks.iter().any(|check| !check.passed) {
            return trace;
        }
        let found = match self.candidates(input, context, &mut trace.lookups) {
            Ok(found) => found,
            Err(verdict) => {
                trace.verdict = verdict;
                return trace;
            }
        };
        let (candidates, remember) = match found {
            Found::Values(values) => (values, false),
            Found::DirectoryAnswer(values) => (values, true),
        };
        let (users, refused) = final_check(candidates, input.requested_user, context.accounts);
        trace.verdict = if users.is_empty() {
            Verdict::Refused { refused }
        } else {
            if remember {
                directory::remember(&self.name, input, context, &users, &mut trace.lookups);
            }
            Verdict::Users { users, refused }
        };
        trace
    }

    /// The raw values the source gives, before the final check.
    fn candidates(
        &self,
        input: &MappingInput<'_>,
        context: &MappingContext<'_>,
        lookups: &mut Vec<Lookup>,
    ) -> Result<Found, Verdict> {
        let domain = self.domain.as_deref();
        let values = match &self.source {
            Source::Template(template) => expand(template, certificate(input)?, domain)?,
            Source::MapFile(mapfile) => {
                mapfile.candidates(certificate(input)?, domain, context, lookups)?
            }
            Source::Directory(directory) => {
                let fields = certificate(input)?;
                match directory.candidates(&self.name, fields, domain, context, lookups)? {
                    DirectoryUsers::Answered(values) => return Ok(Found::DirectoryAnswer(values)),
                    DirectoryUsers::Cached(values) => values,
                }
            }
            Source::Authorized => authorized::candidates(input, context, lookups)?,
        };
        Ok(Found::Values(values))
    }
}

/// What a source gave.
enum Found {
    /// Values to check.
    Values(Vec<String>),
    /// Values a directory server answered with: the mapping cache remembers
    /// the users among them that pass the final check.
    DirectoryAnswer(Vec<String>),
}

/// Tries `rules` in order. The first rule that yields a valid, existing user
/// (the requested one, when there is a request) decides; a source error stops
/// the search.
pub fn map_certificate(
    rules: &[Rule],
    input: &MappingInput<'_>,
    context: &MappingContext<'_>,
) -> Mapping {
    let mut trace = Vec::new();
    for rule in rules {
        let rule_trace = rule.apply(input, context);
        let outcome = match &rule_trace.verdict {
            Verdict::Users { users, .. } => Some(Outcome::Matched {
                rule: rule.name.clone(),
                users: users.clone(),
                basis: if rule.uses_authorized_files() {
                    TrustBasis::AuthorizedKey
                } else {
                    TrustBasis::CertificateChain
                },
            }),
            Verdict::Error { error } => Some(Outcome::Error {
                rule: rule.name.clone(),
                error: error.clone(),
            }),
            _ => None,
        };
        trace.push(rule_trace);
        if let Some(outcome) = outcome {
            return Mapping { outcome, trace };
        }
    }
    Mapping {
        outcome: Outcome::NoMatch,
        trace,
    }
}

/// User-name syntax, the requested user, and existence in NSS.
fn final_check(
    candidates: Vec<String>,
    requested: Option<&str>,
    accounts: &dyn Accounts,
) -> (Vec<String>, Vec<Refusal>) {
    let mut users: Vec<String> = Vec::new();
    let mut refused = Vec::new();
    for candidate in candidates {
        if users.contains(&candidate) {
            continue;
        }
        let reason = if let Err(error) = validate_username(&candidate) {
            Some(RefusalReason::BadName(error))
        } else if let Some(wanted) = requested.filter(|wanted| *wanted != candidate) {
            Some(RefusalReason::NotRequested {
                requested: wanted.to_owned(),
            })
        } else {
            match accounts.lookup(&candidate) {
                Ok(Some(_)) => None,
                Ok(None) => Some(RefusalReason::NoSuchUser),
                Err(error) => Some(RefusalReason::LookupFailed(error.into())),
            }
        };
        match reason {
            Some(reason) => refused.push(Refusal {
                user: candidate,
                reason,
            }),
            None => users.push(candidate),
        }
    }
    (users, refused)
}
