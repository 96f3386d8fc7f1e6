//! Ordered mapping rules, their sources, and the trace that explains every
//! decision.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::authorized::{read_authorized, Account, FileOutcome};
use crate::cache::{CacheLookup, MappingCache};
use crate::certificate::CertificateFields;
use crate::conditions::{Check, ConditionConfig, ConditionError, Conditions, TokenInfo};
use crate::ldap::LdapDirectory;
use crate::mapfile::MapFile;
use crate::public_key::PublicKey;
use crate::template::{Template, TemplateError};
use crate::username::validate_username;

/// Most LDAP searches one rule may run (one per expansion of its filter).
const MAX_SEARCHES_PER_RULE: usize = 4;

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
    /// `key` without `mapfile` or the reverse, or an LDAP attribute without a filter.
    #[error("{0}")]
    Pairing(&'static str),
    /// A relative mapfile path.
    #[error("`mapfile` {0:?} must be an absolute path")]
    RelativeMapfile(PathBuf),
}

#[derive(Debug, Clone)]
enum Source {
    Template(Template),
    MapFile {
        path: PathBuf,
        key: Template,
    },
    Ldap {
        filter: Template,
        attribute: Option<String>,
    },
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
            return Err(RuleError::Pairing("`mapfile` and `key` go together"));
        }
        if config.ldap_user_attribute.is_some() && config.ldap_filter.is_none() {
            return Err(RuleError::Pairing(
                "`ldap_user_attribute` only applies with `ldap_filter`",
            ));
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
                Source::MapFile {
                    path: path.clone(),
                    key: parse("key", key, false)?,
                },
            )
        } else if let Some(filter) = &config.ldap_filter {
            (
                "ldap_filter",
                Source::Ldap {
                    filter: parse("ldap_filter", filter, true)?,
                    attribute: config.ldap_user_attribute.clone(),
                },
            )
        } else {
            ("authorized_files", Source::Authorized)
        };
        let template = match &source {
            Source::Template(template) => Some(template),
            Source::MapFile { key, .. } => Some(key),
            Source::Ldap { filter, .. } => Some(filter),
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
        matches!(self.source, Source::Ldap { .. })
    }

    /// Whether the rule reads the users' authorized files.
    pub fn uses_authorized_files(&self) -> bool {
        matches!(self.source, Source::Authorized)
    }

    /// A one-line description of where the rule finds users.
    pub fn describe_source(&self) -> String {
        match &self.source {
            Source::Template(template) => format!("user = \"{template}\""),
            Source::MapFile { path, key } => {
                format!("mapfile {} keyed by \"{key}\"", path.display())
            }
            Source::Ldap { filter, .. } => format!("ldap_filter = \"{filter}\""),
            Source::Authorized => {
                "the user's authorized_keys and authorized_certificates".to_owned()
            }
        }
    }
}

/// NSS, as the mapping sees it.
pub trait Accounts {
    /// The account called `name`, `Ok(None)` when there is none.
    fn lookup(&self, name: &str) -> Result<Option<Account>, String>;
}

/// Opens files that only root may have written (mapfiles).
pub type OpenTrusted<'a> = &'a dyn Fn(&Path) -> Result<std::fs::File, String>;

/// What the rules can consult besides the certificate.
pub struct MappingContext<'a> {
    accounts: &'a dyn Accounts,
    open_trusted: OpenTrusted<'a>,
    ldap: Option<&'a LdapDirectory>,
    cache: Option<&'a MappingCache>,
    privileged: bool,
    now: u64,
    mapfiles: RefCell<HashMap<PathBuf, Rc<Result<MapFile, String>>>>,
}

impl fmt::Debug for MappingContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappingContext")
            .field("ldap", &self.ldap.is_some())
            .field("cache", &self.cache)
            .field("privileged", &self.privileged)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl<'a> MappingContext<'a> {
    /// A context. `privileged` says whether the caller runs as root (the
    /// cache is written only then); `now` is Unix time in seconds.
    pub fn new(
        accounts: &'a dyn Accounts,
        open_trusted: OpenTrusted<'a>,
        ldap: Option<&'a LdapDirectory>,
        cache: Option<&'a MappingCache>,
        privileged: bool,
        now: u64,
    ) -> Self {
        Self {
            accounts,
            open_trusted,
            ldap,
            cache,
            privileged,
            now,
            mapfiles: RefCell::new(HashMap::new()),
        }
    }

    /// The mapfile at `path`, loaded on first use and kept for this context.
    pub fn mapfile(&self, path: &Path) -> Rc<Result<MapFile, String>> {
        if let Some(loaded) = self.mapfiles.borrow().get(path) {
            return loaded.clone();
        }
        let loaded = Rc::new(
            (self.open_trusted)(path)
                .and_then(|file| MapFile::read(path, file).map_err(|error| error.to_string())),
        );
        self.mapfiles
            .borrow_mut()
            .insert(path.to_owned(), loaded.clone());
        loaded
    }
}

/// What is being mapped: a certificate, or a bare key, on a token.
#[derive(Debug, Clone, Copy)]
pub struct MappingInput<'a> {
    /// The certificate; `None` for a token key without a certificate.
    pub certificate: Option<&'a CertificateFields>,
    /// The public key (the certificate's, or the bare key's).
    pub key: Option<&'a PublicKey>,
    /// The token it is on.
    pub token: &'a TokenInfo,
    /// The user the application asked for, if any.
    pub requested_user: Option<&'a str>,
}

/// One look-up a rule made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lookup {
    /// Where: `mapfile /etc/tessera/map`, `ldap ldap://…`, `cache …`, a file.
    pub source: String,
    /// What was looked up.
    pub key: String,
    /// What came back.
    pub result: String,
}

/// A value refused as a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The value.
    pub user: String,
    /// Why.
    pub reason: String,
}

/// What one rule decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Verdict {
    /// A condition did not hold.
    ConditionsFailed,
    /// The rule cannot look at this input (no such field, no certificate, no user name).
    NotApplicable {
        /// Why.
        reason: String,
    },
    /// The source was consulted and had nothing.
    NoMatch {
        /// Why.
        reason: String,
    },
    /// The source gave values, but none is a usable, existing (requested) user.
    Refused {
        /// Each value and why it was refused.
        refused: Vec<Refusal>,
    },
    /// The rule maps to these users.
    Users {
        /// The users, in order.
        users: Vec<String>,
        /// Values refused on the way.
        refused: Vec<Refusal>,
    },
    /// The source failed; mapping stops here (fail closed).
    Error {
        /// What failed.
        message: String,
        /// Whether the source was unreachable (rather than broken).
        unavailable: bool,
    },
}

/// The explanation of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleTrace {
    /// The rule's name.
    pub rule: String,
    /// Where it looks for users.
    pub source: String,
    /// Each condition and what it saw.
    pub checks: Vec<Check>,
    /// Each look-up.
    pub lookups: Vec<Lookup>,
    /// The decision.
    pub verdict: Verdict,
}

fn refusals(refused: &[Refusal]) -> String {
    refused
        .iter()
        .map(|r| format!("{:?} refused: {}", r.user, r.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

impl fmt::Display for RuleTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} ({}):", self.rule, self.source)?;
        for check in &self.checks {
            writeln!(
                f,
                "  {} {}: saw {}",
                if check.passed { "ok  " } else { "FAIL" },
                check.condition,
                check.saw
            )?;
        }
        for lookup in &self.lookups {
            writeln!(f, "  {} {:?}: {}", lookup.source, lookup.key, lookup.result)?;
        }
        match &self.verdict {
            Verdict::ConditionsFailed => write!(f, "  => not applicable: a condition failed"),
            Verdict::NotApplicable { reason } => write!(f, "  => not applicable: {reason}"),
            Verdict::NoMatch { reason } => write!(f, "  => no match: {reason}"),
            Verdict::Refused { refused } => write!(f, "  => no usable user: {}", refusals(refused)),
            Verdict::Users { users, refused } if refused.is_empty() => {
                write!(f, "  => maps to {}", users.join(", "))
            }
            Verdict::Users { users, refused } => write!(
                f,
                "  => maps to {} ({})",
                users.join(", "),
                refusals(refused)
            ),
            Verdict::Error {
                message,
                unavailable,
            } => write!(
                f,
                "  => error{}: {message}; no further rule is tried",
                if *unavailable {
                    " (source unavailable)"
                } else {
                    ""
                }
            ),
        }
    }
}

/// The result of mapping one certificate or key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// A rule mapped to these users.
    Matched {
        /// The rule.
        rule: String,
        /// The users (several: the user chooses, never a silent pick).
        users: Vec<String>,
        /// The match is on the public key alone (authorized files): no
        /// chain validation applies.
        key_only: bool,
    },
    /// No rule applied.
    NoMatch,
    /// A rule's source failed.
    Error {
        /// The rule.
        rule: String,
        /// What failed.
        message: String,
        /// Whether the source was unreachable.
        unavailable: bool,
    },
}

/// Outcome and explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mapping {
    /// The decision.
    pub outcome: Outcome,
    /// Every rule tried, in order, up to the one that decided.
    pub trace: Vec<RuleTrace>,
}

impl Mapping {
    /// The mapped users (empty unless matched).
    pub fn users(&self) -> &[String] {
        match &self.outcome {
            Outcome::Matched { users, .. } => users,
            _ => &[],
        }
    }
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
                key_only: rule.uses_authorized_files(),
            }),
            Verdict::Error {
                message,
                unavailable,
            } => Some(Outcome::Error {
                rule: rule.name.clone(),
                message: message.clone(),
                unavailable: *unavailable,
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

impl Rule {
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
        let candidates = match self.candidates(input, context, &mut trace.lookups) {
            Ok(candidates) => candidates,
            Err(verdict) => {
                trace.verdict = verdict;
                return trace;
            }
        };
        let (users, refused) = final_check(candidates, input.requested_user, context.accounts);
        trace.verdict = if users.is_empty() {
            Verdict::Refused { refused }
        } else {
            if self.uses_ldap() {
                self.remember(input, context, &users, &mut trace.lookups);
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
    ) -> Result<Vec<String>, Verdict> {
        let domain = self.domain.as_deref();
        let certificate = || {
            input.certificate.ok_or_else(|| Verdict::NotApplicable {
                reason: "a key without a certificate; only authorized_files rules apply".to_owned(),
            })
        };
        let expand = |template: &Template, fields: &CertificateFields| {
            template.expand(fields, domain).map_err(|missing| {
                let why = if missing.is_address() && domain.is_some() {
                    format!(" in domain {}", domain.unwrap_or_default())
                } else {
                    String::new()
                };
                Verdict::NotApplicable {
                    reason: format!("the certificate has no {missing}{why}"),
                }
            })
        };
        match &self.source {
            Source::Template(template) => expand(template, certificate()?),
            Source::MapFile { path, key } => {
                let keys = expand(key, certificate()?)?;
                let loaded = context.mapfile(path);
                let map = match loaded.as_ref() {
                    Ok(map) => map,
                    Err(message) => {
                        return Err(Verdict::Error {
                            message: message.clone(),
                            unavailable: false,
                        })
                    }
                };
                let mut users = Vec::new();
                for key in keys {
                    let found = map.get(&key);
                    lookups.push(Lookup {
                        source: format!("mapfile {}", path.display()),
                        key: key.clone(),
                        result: if found.is_empty() {
                            "miss".to_owned()
                        } else {
                            found
                                .iter()
                                .map(|(user, line)| format!("{user} (line {line})"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                    });
                    users.extend(found.iter().map(|(user, _)| (*user).to_owned()));
                }
                if users.is_empty() {
                    return Err(Verdict::NoMatch {
                        reason: "no key is in the mapfile".to_owned(),
                    });
                }
                Ok(users)
            }
            Source::Ldap { filter, attribute } => {
                let fields = certificate()?;
                let filters = expand(filter, fields)?;
                let Some(directory) = context.ldap else {
                    return Err(Verdict::Error {
                        message: "no [ldap] section".to_owned(),
                        unavailable: false,
                    });
                };
                let attribute = attribute
                    .clone()
                    .unwrap_or_else(|| directory.config().user_attribute.clone());
                let mut users = Vec::new();
                for filter in filters.iter().take(MAX_SEARCHES_PER_RULE) {
                    match directory.search(filter, &attribute) {
                        Ok(answer) => {
                            for attempt in &answer.attempts {
                                lookups.push(Lookup {
                                    source: format!("ldap {}", attempt.uri),
                                    key: filter.clone(),
                                    result: if attempt.outcome == "answered" {
                                        match answer.entries.as_slice() {
                                            [] => "no entry".to_owned(),
                                            entries => entries
                                                .iter()
                                                .map(|e| {
                                                    format!(
                                                        "{} {attribute}={}",
                                                        e.dn,
                                                        e.users.join("|")
                                                    )
                                                })
                                                .collect::<Vec<_>>()
                                                .join("; "),
                                        }
                                    } else {
                                        format!("failed: {}", attempt.outcome)
                                    },
                                });
                            }
                            users.extend(answer.entries.into_iter().flat_map(|e| e.users));
                        }
                        Err(failure) => {
                            for attempt in &failure.attempts {
                                lookups.push(Lookup {
                                    source: format!("ldap {}", attempt.uri),
                                    key: filter.clone(),
                                    result: format!("failed: {}", attempt.outcome),
                                });
                            }
                            if failure.unreachable {
                                return self.cached(fields, context, lookups, &failure.message);
                            }
                            return Err(Verdict::Error {
                                message: failure.message,
                                unavailable: false,
                            });
                        }
                    }
                }
                if users.is_empty() {
                    return Err(Verdict::NoMatch {
                        reason: "the directory has no entry with a user name".to_owned(),
                    });
                }
                Ok(users)
            }
            Source::Authorized => {
                let Some(user) = input.requested_user else {
                    return Err(Verdict::NotApplicable {
                        reason: "authorized files need the user name (none was given)".to_owned(),
                    });
                };
                let Some(key) = input.key else {
                    return Err(Verdict::NotApplicable {
                        reason: "no public key of a supported type".to_owned(),
                    });
                };
                let account = match context.accounts.lookup(user) {
                    Ok(Some(account)) => account,
                    Ok(None) => {
                        return Err(Verdict::NoMatch {
                            reason: format!("no user {user} in NSS"),
                        })
                    }
                    Err(error) => {
                        return Err(Verdict::NoMatch {
                            reason: format!("user look-up failed: {error}"),
                        })
                    }
                };
                let mut matched = false;
                for outcome in read_authorized(&account) {
                    let (path, result) = match outcome {
                        FileOutcome::Absent(path) => (path, "absent".to_owned()),
                        FileOutcome::Refused(path, reason) => (path, format!("refused: {reason}")),
                        FileOutcome::Read(path, keys) => {
                            let hit = keys.iter().find(|listed| listed.key == *key);
                            matched |= hit.is_some();
                            let result = match hit {
                                Some(listed) => format!("listed at line {}", listed.line),
                                None => format!("not among {} key(s)", keys.len()),
                            };
                            (path, result)
                        }
                    };
                    lookups.push(Lookup {
                        source: path.display().to_string(),
                        key: format!("{} {}", key.kind(), key.fingerprint()),
                        result,
                    });
                }
                if matched {
                    Ok(vec![user.to_owned()])
                } else {
                    Err(Verdict::NoMatch {
                        reason: format!("the key is not in {user}'s authorized files"),
                    })
                }
            }
        }
    }

    fn cached(
        &self,
        fields: &CertificateFields,
        context: &MappingContext<'_>,
        lookups: &mut Vec<Lookup>,
        message: &str,
    ) -> Result<Vec<String>, Verdict> {
        let unavailable = |detail: String| Verdict::Error {
            message: format!("{message}; {detail}"),
            unavailable: true,
        };
        let Some(cache) = context.cache else {
            return Err(unavailable("no mapping cache configured".to_owned()));
        };
        let source = format!("cache {}", cache.path().display());
        let result = cache.lookup(&self.name, &fields.sha256_hex, context.now);
        let (text, users) = match result {
            CacheLookup::Hit { users, age } => {
                tracing::info!(rule = %self.name, age, "directory unreachable; using the cached mapping");
                (
                    format!("{} (stored {age} s ago)", users.join(", ")),
                    Some(users),
                )
            }
            CacheLookup::Expired { age } => (format!("expired (stored {age} s ago)"), None),
            CacheLookup::Miss => ("miss".to_owned(), None),
            CacheLookup::Unusable(reason) => {
                tracing::debug!(rule = %self.name, "mapping cache skipped: {reason}");
                (format!("skipped: {reason}"), None)
            }
        };
        lookups.push(Lookup {
            source,
            key: fields.sha256_hex.clone(),
            result: text.clone(),
        });
        users.ok_or_else(|| unavailable(format!("cache: {text}")))
    }

    fn remember(
        &self,
        input: &MappingInput<'_>,
        context: &MappingContext<'_>,
        users: &[String],
        lookups: &mut Vec<Lookup>,
    ) {
        let (Some(cache), Some(fields)) = (context.cache, input.certificate) else {
            return;
        };
        // Entries that came from the cache are not refreshed by reading them.
        if lookups.iter().any(|l| l.source.starts_with("cache ")) {
            return;
        }
        if !context.privileged {
            tracing::debug!(rule = %self.name, "mapping cache not written: not running as root");
            return;
        }
        let result = match cache.store(&self.name, &fields.sha256_hex, users, context.now) {
            Ok(()) => "stored".to_owned(),
            Err(error) => {
                tracing::warn!(rule = %self.name, "mapping cache not written: {error}");
                format!("not stored: {error}")
            }
        };
        lookups.push(Lookup {
            source: format!("cache {}", cache.path().display()),
            key: fields.sha256_hex.clone(),
            result,
        });
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
            Some(error.to_string())
        } else if requested.is_some_and(|wanted| wanted != candidate) {
            Some(format!(
                "not the requested user {}",
                requested.unwrap_or_default()
            ))
        } else {
            match accounts.lookup(&candidate) {
                Ok(Some(_)) => None,
                Ok(None) => Some("no such user in NSS".to_owned()),
                Err(error) => Some(format!("user look-up failed: {error}")),
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
