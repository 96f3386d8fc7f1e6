//! Ordered mapping rules and the trace that explains their decision.

use serde::Deserialize;

use crate::certificate::CertificateFields;
use crate::template::{Field, Template, TemplateError};
use crate::username::{validate_username, UsernameError};

/// One `[[rule]]` table as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A name for logs and the explain output; defaults to "rule N".
    pub name: Option<String>,
    /// The user-name template, e.g. `{cn}`.
    pub user: String,
    /// Only e-mail/UPN values in this domain are used; required when the
    /// template strips the domain (`{email.local}`, `{upn.local}`).
    pub domain: Option<String>,
}

/// Why a rule could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The `user` template does not parse.
    #[error("in `user`: {0}")]
    Template(#[from] TemplateError),
    /// The template drops an address's domain but the rule names no domain.
    #[error(
        "`user` uses {0}, which drops the domain, so the rule must set `domain` \
         (otherwise root@evil.example would map to root)"
    )]
    DomainRequired(Field),
    /// `domain` is empty or has characters no domain name has.
    #[error("`domain` {0:?} is not a domain name")]
    BadDomain(String),
}

/// A compiled mapping rule.
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    user: Template,
    domain: Option<String>,
}

impl Rule {
    /// Compiles the `index`-th rule (0-based) of the configuration.
    pub fn compile(index: usize, config: &RuleConfig) -> Result<Self, RuleError> {
        let user = Template::parse(&config.user)?;
        if let Some(domain) = &config.domain {
            let valid = !domain.is_empty()
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            if !valid {
                return Err(RuleError::BadDomain(domain.clone()));
            }
        } else if let Some(field) = user.fields().find(|field| field.strips_domain()) {
            return Err(RuleError::DomainRequired(field));
        }
        Ok(Self {
            name: config
                .name
                .clone()
                .unwrap_or_else(|| format!("rule {}", index + 1)),
            user,
            domain: config.domain.clone(),
        })
    }

    /// The rule's name for logs and explanations.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user template.
    pub fn user_template(&self) -> &Template {
        &self.user
    }

    fn apply(&self, fields: &CertificateFields) -> RuleVerdict {
        let expansions = match self.user.expand(fields, self.domain.as_deref()) {
            Ok(expansions) => expansions,
            Err(field) => return RuleVerdict::MissingField(field),
        };
        let mut users = Vec::new();
        let mut refused = Vec::new();
        for value in expansions {
            match validate_username(&value) {
                Ok(()) => users.push(value),
                Err(error) => refused.push((value, error)),
            }
        }
        if users.is_empty() {
            RuleVerdict::InvalidUsernames(refused)
        } else {
            RuleVerdict::Users { users, refused }
        }
    }
}

/// What one rule made of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleVerdict {
    /// The certificate has no value for a field the template uses.
    MissingField(Field),
    /// Every value the template produced is unusable as a user name.
    InvalidUsernames(Vec<(String, UsernameError)>),
    /// The rule produced these user names (and refused the others listed).
    Users {
        /// Accepted user names, in order.
        users: Vec<String>,
        /// Values refused as user names, with the reason.
        refused: Vec<(String, UsernameError)>,
    },
}

/// One line of the explanation: a rule and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTrace {
    /// The rule's name.
    pub rule: String,
    /// The rule's template as configured.
    pub template: String,
    /// What the rule made of the certificate.
    pub verdict: RuleVerdict,
}

impl std::fmt::Display for RuleTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (user = \"{}\"): ", self.rule, self.template)?;
        let refused_list = |refused: &[(String, UsernameError)]| {
            refused
                .iter()
                .map(|(value, error)| format!("{value:?} refused: {error}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        match &self.verdict {
            RuleVerdict::MissingField(field) => {
                write!(f, "not applicable, the certificate has no {field}")
            }
            RuleVerdict::InvalidUsernames(refused) => {
                write!(f, "no usable user name ({})", refused_list(refused))
            }
            RuleVerdict::Users { users, refused } if refused.is_empty() => {
                write!(f, "maps to {}", users.join(", "))
            }
            RuleVerdict::Users { users, refused } => write!(
                f,
                "maps to {} ({})",
                users.join(", "),
                refused_list(refused)
            ),
        }
    }
}

/// The outcome of mapping one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The users of the first rule that produced any, with that rule's name;
    /// `None` when no rule applied.
    pub matched: Option<(String, Vec<String>)>,
    /// Every rule tried, in order, up to and including the one that matched.
    pub trace: Vec<RuleTrace>,
}

impl Mapping {
    /// The mapped user names (empty when no rule applied).
    pub fn users(&self) -> &[String] {
        self.matched
            .as_ref()
            .map(|(_, users)| users.as_slice())
            .unwrap_or_default()
    }
}

/// Tries `rules` in order; the first rule that yields a valid user name wins.
pub fn map_certificate(rules: &[Rule], fields: &CertificateFields) -> Mapping {
    let mut trace = Vec::new();
    for rule in rules {
        let verdict = rule.apply(fields);
        let users = match &verdict {
            RuleVerdict::Users { users, .. } => Some(users.clone()),
            _ => None,
        };
        trace.push(RuleTrace {
            rule: rule.name.clone(),
            template: rule.user.source().to_owned(),
            verdict,
        });
        if let Some(users) = users {
            return Mapping {
                matched: Some((rule.name.clone(), users)),
                trace,
            };
        }
    }
    Mapping {
        matched: None,
        trace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(user: &str, domain: Option<&str>) -> RuleConfig {
        RuleConfig {
            name: None,
            user: user.into(),
            domain: domain.map(str::to_owned),
        }
    }

    fn fields(cn: &str, emails: &[&str]) -> CertificateFields {
        CertificateFields {
            subject: format!("CN={cn}"),
            issuer: "CN=CA".into(),
            common_names: vec![cn.into()],
            uids: vec![],
            emails: emails.iter().map(|e| e.to_string()).collect(),
            upns: vec![],
            serial_hex: "01".into(),
            sha256_hex: "ab".into(),
        }
    }

    #[test]
    fn first_applicable_rule_wins_and_the_trace_shows_the_skipped_ones() {
        let rules = [
            Rule::compile(0, &config("{uid}", None)).unwrap(),
            Rule::compile(1, &config("{cn}", None)).unwrap(),
            Rule::compile(2, &config("{email}", None)).unwrap(),
        ];
        let mapping = map_certificate(&rules, &fields("alice", &[]));
        assert_eq!(mapping.users(), ["alice"]);
        assert_eq!(mapping.trace.len(), 2);
        assert_eq!(
            mapping.trace[0].to_string(),
            "rule 1 (user = \"{uid}\"): not applicable, the certificate has no {uid}"
        );
        assert_eq!(
            mapping.trace[1].to_string(),
            "rule 2 (user = \"{cn}\"): maps to alice"
        );
    }

    #[test]
    fn local_part_without_domain_is_a_config_error() {
        assert_eq!(
            Rule::compile(0, &config("{email.local}", None)).unwrap_err(),
            RuleError::DomainRequired(Field::EmailLocal)
        );
    }

    #[test]
    fn root_at_evil_does_not_map_to_root() {
        let rule = Rule::compile(0, &config("{email.local}", Some("example.test"))).unwrap();
        let mapping = map_certificate(&[rule], &fields("x", &["root@evil.test"]));
        assert_eq!(mapping.matched, None);
    }

    #[test]
    fn hostile_cn_values_are_refused_as_user_names() {
        let rule = Rule::compile(0, &config("{cn}", None)).unwrap();
        let mapping = map_certificate(&[rule], &fields("../../root", &[]));
        assert_eq!(mapping.matched, None);
        assert!(matches!(
            mapping.trace[0].verdict,
            RuleVerdict::InvalidUsernames(_)
        ));
    }
}
