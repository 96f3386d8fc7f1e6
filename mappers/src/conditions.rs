//! Rule conditions: what a certificate (and the token it sits on) must look
//! like for a rule to apply. SSSD's `matchrule` language is in
//! `conditions/matchrule.rs`; both build on the leaves `error.rs`,
//! `names.rs` (EKU and keyUsage names) and `pattern.rs` (bounded regexes).

use const_oid::ObjectIdentifier;
use regex::Regex;
use serde::Serialize;

use crate::certificate::{CertificateFields, SAN_KINDS};
use crate::dn::Dn;

mod error;
mod matchrule;
mod names;
mod pattern;
pub use error::ConditionError;
pub use matchrule::MatchRule;
use names::{eku_oid, key_usage_name, oid_name};
use pattern::regex;

/// The token a certificate or key was found on, as conditions see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// CKA token label.
    pub label: String,
    /// Token serial number.
    pub serial: String,
}

/// Exact text or an anchored regex.
#[derive(Debug, Clone)]
pub enum TextMatcher {
    /// Equal, byte for byte.
    Exact(String),
    /// The whole text matches.
    Regex(Regex),
}

impl TextMatcher {
    fn new(
        key: &'static str,
        exact: Option<&str>,
        pattern: Option<&str>,
    ) -> Result<Option<Self>, ConditionError> {
        match (exact, pattern) {
            (Some(_), Some(_)) => Err(ConditionError::Both(key)),
            (Some(text), None) => Ok(Some(TextMatcher::Exact(text.to_owned()))),
            (None, Some(pattern)) => Ok(Some(TextMatcher::Regex(regex(
                &format!("{key}_regex"),
                pattern,
                true,
            )?))),
            (None, None) => Ok(None),
        }
    }

    fn matches(&self, text: &str) -> bool {
        match self {
            TextMatcher::Exact(wanted) => wanted == text,
            TextMatcher::Regex(pattern) => pattern.is_match(text),
        }
    }

    fn describe(&self) -> String {
        match self {
            TextMatcher::Exact(wanted) => format!("= {wanted:?}"),
            TextMatcher::Regex(pattern) => format!("matches /{}/", pattern.as_str()),
        }
    }
}

/// An exact DN (compared structurally) or an anchored regex over its RFC 4514 form.
#[derive(Debug, Clone)]
pub enum DnMatcher {
    /// Structurally equal.
    Exact(Dn),
    /// The RFC 4514 string matches as a whole.
    Regex(Regex),
}

impl DnMatcher {
    fn new(
        key: &'static str,
        exact: Option<&str>,
        pattern: Option<&str>,
    ) -> Result<Option<Self>, ConditionError> {
        match (exact, pattern) {
            (Some(_), Some(_)) => Err(ConditionError::Both(key)),
            (Some(text), None) => Dn::parse(text)
                .map(|dn| Some(DnMatcher::Exact(dn)))
                .map_err(|error| ConditionError::Dn { key, error }),
            (None, Some(pattern)) => Ok(Some(DnMatcher::Regex(regex(
                &format!("{key}_regex"),
                pattern,
                true,
            )?))),
            (None, None) => Ok(None),
        }
    }

    fn matches(&self, dn: &Dn) -> bool {
        match self {
            DnMatcher::Exact(wanted) => wanted == dn,
            DnMatcher::Regex(pattern) => pattern.is_match(&dn.to_string()),
        }
    }

    fn describe(&self) -> String {
        match self {
            DnMatcher::Exact(wanted) => format!("= {wanted}"),
            DnMatcher::Regex(pattern) => format!("matches /{}/", pattern.as_str()),
        }
    }
}

/// The conditions of one rule, as written in its `[[rule]]` table.
#[derive(Debug, Clone, Default)]
pub struct ConditionConfig<'a> {
    /// `issuer`.
    pub issuer: Option<&'a str>,
    /// `issuer_regex`.
    pub issuer_regex: Option<&'a str>,
    /// `subject`.
    pub subject: Option<&'a str>,
    /// `subject_regex`.
    pub subject_regex: Option<&'a str>,
    /// `eku`.
    pub eku: &'a [String],
    /// `key_usage`.
    pub key_usage: &'a [String],
    /// `san`.
    pub san: &'a [String],
    /// `policy`.
    pub policy: &'a [String],
    /// `token_label`.
    pub token_label: Option<&'a str>,
    /// `token_label_regex`.
    pub token_label_regex: Option<&'a str>,
    /// `token_serial`.
    pub token_serial: Option<&'a str>,
    /// `matchrule` (SSSD).
    pub matchrule: Option<&'a str>,
}

/// Compiled conditions; all must hold.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    issuer: Option<DnMatcher>,
    subject: Option<DnMatcher>,
    eku: Vec<ObjectIdentifier>,
    key_usage: Vec<&'static str>,
    san: Vec<&'static str>,
    policies: Vec<ObjectIdentifier>,
    token_label: Option<TextMatcher>,
    token_serial: Option<TextMatcher>,
    matchrule: Option<MatchRule>,
}

/// One condition and what it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The condition, e.g. `issuer = CN=CA,O=Example`.
    pub condition: String,
    /// What the certificate or token had.
    pub saw: String,
    /// Whether it held.
    pub passed: bool,
}

impl Conditions {
    /// Compiles the conditions of a rule.
    pub fn compile(config: &ConditionConfig<'_>) -> Result<Self, ConditionError> {
        let oids = |key: &'static str, values: &[String]| {
            values
                .iter()
                .map(|value| eku_oid(key, value))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            issuer: DnMatcher::new("issuer", config.issuer, config.issuer_regex)?,
            subject: DnMatcher::new("subject", config.subject, config.subject_regex)?,
            eku: oids("eku", config.eku)?,
            key_usage: config
                .key_usage
                .iter()
                .map(|name| key_usage_name("key_usage", name))
                .collect::<Result<_, _>>()?,
            san: config
                .san
                .iter()
                .map(|name| {
                    SAN_KINDS
                        .iter()
                        .find(|known| **known == name.as_str())
                        .copied()
                        .ok_or_else(|| ConditionError::Unknown {
                            key: "san",
                            value: name.clone(),
                            known: SAN_KINDS.join(", "),
                        })
                })
                .collect::<Result<_, _>>()?,
            policies: oids("policy", config.policy)?,
            token_label: TextMatcher::new(
                "token_label",
                config.token_label,
                config.token_label_regex,
            )?,
            token_serial: TextMatcher::new("token_serial", config.token_serial, None)?,
            matchrule: config
                .matchrule
                .map(MatchRule::parse)
                .transpose()
                .map_err(ConditionError::MatchRule)?,
        })
    }

    /// Whether any condition looks at the certificate (and so cannot hold for
    /// a bare key).
    pub fn need_certificate(&self) -> bool {
        self.issuer.is_some()
            || self.subject.is_some()
            || !self.eku.is_empty()
            || !self.key_usage.is_empty()
            || !self.san.is_empty()
            || !self.policies.is_empty()
            || self.matchrule.is_some()
    }

    /// Evaluates every condition; the rule applies when all passed.
    pub fn evaluate(
        &self,
        certificate: Option<&CertificateFields>,
        token: &TokenInfo,
    ) -> Vec<Check> {
        let mut checks = Vec::new();
        let mut check = |condition: String, saw: String, passed: bool| {
            checks.push(Check {
                condition,
                saw,
                passed,
            })
        };
        if let Some(matcher) = &self.token_label {
            check(
                format!("token_label {}", matcher.describe()),
                format!("{:?}", token.label),
                matcher.matches(&token.label),
            );
        }
        if let Some(matcher) = &self.token_serial {
            check(
                format!("token_serial {}", matcher.describe()),
                format!("{:?}", token.serial),
                matcher.matches(&token.serial),
            );
        }
        let Some(fields) = certificate else {
            if self.need_certificate() {
                check(
                    "certificate conditions".to_owned(),
                    "a key without a certificate".to_owned(),
                    false,
                );
            }
            return checks;
        };
        if let Some(matcher) = &self.issuer {
            check(
                format!("issuer {}", matcher.describe()),
                fields.issuer.clone(),
                matcher.matches(&fields.issuer_dn),
            );
        }
        if let Some(matcher) = &self.subject {
            check(
                format!("subject {}", matcher.describe()),
                fields.subject.clone(),
                matcher.matches(&fields.subject_dn),
            );
        }
        let eku_list = || {
            if fields.eku.is_empty() {
                "no extendedKeyUsage".to_owned()
            } else {
                fields
                    .eku
                    .iter()
                    .map(oid_name)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        if !self.eku.is_empty() {
            check(
                format!(
                    "eku includes {}",
                    self.eku.iter().map(oid_name).collect::<Vec<_>>().join(", ")
                ),
                eku_list(),
                self.eku.iter().all(|oid| fields.eku.contains(oid)),
            );
        }
        if !self.key_usage.is_empty() {
            let present = fields.key_usage.clone().unwrap_or_default();
            check(
                format!("key_usage includes {}", self.key_usage.join(", ")),
                match &fields.key_usage {
                    None => "no keyUsage".to_owned(),
                    Some(bits) => bits.join(", "),
                },
                self.key_usage.iter().all(|bit| present.contains(bit)),
            );
        }
        if !self.san.is_empty() {
            check(
                format!("san has {}", self.san.join(", ")),
                if fields.san_kinds.is_empty() {
                    "no subjectAltName".to_owned()
                } else {
                    fields.san_kinds.join(", ")
                },
                self.san.iter().all(|kind| fields.san_kinds.contains(kind)),
            );
        }
        if !self.policies.is_empty() {
            check(
                format!(
                    "policy includes {}",
                    self.policies
                        .iter()
                        .map(|o| o.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                if fields.policies.is_empty() {
                    "no certificatePolicies".to_owned()
                } else {
                    fields
                        .policies
                        .iter()
                        .map(|o| o.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                self.policies
                    .iter()
                    .all(|oid| fields.policies.contains(oid)),
            );
        }
        if let Some(rule) = &self.matchrule {
            let (passed, saw) = rule.evaluate(fields);
            check(format!("matchrule {}", rule.source()), saw, passed);
        }
        checks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> CertificateFields {
        CertificateFields {
            subject: "CN=alice,O=Example".into(),
            subject_dn: Dn::parse("CN=alice,O=Example").unwrap(),
            issuer: "CN=Example CA,O=Example".into(),
            issuer_dn: Dn::parse("CN=Example CA,O=Example").unwrap(),
            upns: vec!["alice@EXAMPLE.TEST".into()],
            eku: vec![
                eku_oid("eku", "clientAuth").unwrap(),
                eku_oid("eku", "msScLogin").unwrap(),
            ],
            key_usage: Some(vec!["digitalSignature"]),
            san_kinds: vec!["upn"],
            policies: vec![ObjectIdentifier::new_unwrap("1.2.3.4")],
            ..CertificateFields::default()
        }
    }

    fn passes(config: ConditionConfig<'_>) -> bool {
        let token = TokenInfo {
            label: "alice-token".into(),
            serial: "0042".into(),
        };
        Conditions::compile(&config)
            .unwrap()
            .evaluate(Some(&fields()), &token)
            .iter()
            .all(|check| check.passed)
    }

    #[test]
    fn each_condition_passes_and_fails() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(passes(ConditionConfig {
            issuer: Some("cn=Example CA, o=Example"),
            ..Default::default()
        }));
        assert!(!passes(ConditionConfig {
            issuer: Some("CN=Example CA"),
            ..Default::default()
        }));
        assert!(passes(ConditionConfig {
            subject_regex: Some("CN=[a-z]+,O=Example"),
            ..Default::default()
        }));
        // Anchored: a prefix match is not enough.
        assert!(!passes(ConditionConfig {
            subject_regex: Some("CN=alice"),
            ..Default::default()
        }));
        let eku = strings(&["msScLogin"]);
        assert!(passes(ConditionConfig {
            eku: &eku,
            ..Default::default()
        }));
        let eku = strings(&["emailProtection"]);
        assert!(!passes(ConditionConfig {
            eku: &eku,
            ..Default::default()
        }));
        let ku = strings(&["digitalSignature"]);
        assert!(passes(ConditionConfig {
            key_usage: &ku,
            ..Default::default()
        }));
        let ku = strings(&["keyEncipherment"]);
        assert!(!passes(ConditionConfig {
            key_usage: &ku,
            ..Default::default()
        }));
        let san = strings(&["upn"]);
        assert!(passes(ConditionConfig {
            san: &san,
            ..Default::default()
        }));
        let san = strings(&["email"]);
        assert!(!passes(ConditionConfig {
            san: &san,
            ..Default::default()
        }));
        let policy = strings(&["1.2.3.4"]);
        assert!(passes(ConditionConfig {
            policy: &policy,
            ..Default::default()
        }));
        let policy = strings(&["1.2.3.5"]);
        assert!(!passes(ConditionConfig {
            policy: &policy,
            ..Default::default()
        }));
        assert!(passes(ConditionConfig {
            token_label: Some("alice-token"),
            token_serial: Some("0042"),
            ..Default::default()
        }));
        assert!(!passes(ConditionConfig {
            token_label_regex: Some("bob-.*"),
            ..Default::default()
        }));
    }

    #[test]
    fn sssd_matchrules() {
        let matches = |rule: &str| {
            passes(ConditionConfig {
                matchrule: Some(rule),
                ..Default::default()
            })
        };
        assert!(matches("<ISSUER>^CN=Example CA,O=Example$<EKU>msScLogin"));
        assert!(matches(
            "&&<SUBJECT>alice<SAN:ntPrincipalName>^alice@EXAMPLE\\.TEST$"
        ));
        assert!(!matches("<SUBJECT>bob<EKU>clientAuth"));
        assert!(matches("||<SUBJECT>bob<EKU>clientAuth"));
        assert!(matches("<KU>digitalSignature<SAN>alice"));
        assert!(!matches("<KU>digitalSignature,keyEncipherment"));
        assert!(!matches("<SAN:rfc822Name>.*"));
    }

    #[test]
    fn bad_matchrules_are_errors() {
        for rule in [
            "",
            "<ISSUER",
            "ISSUER>x",
            "<FOO>x",
            "<SAN:x400Address>x",
            "<EKU>nope",
            "<SUBJECT>(",
            "<KU>bogus",
        ] {
            assert!(MatchRule::parse(rule).is_err(), "{rule}");
        }
    }

    #[test]
    fn both_exact_and_regex_is_an_error() {
        let error = Conditions::compile(&ConditionConfig {
            issuer: Some("CN=a"),
            issuer_regex: Some("CN=a"),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(error, ConditionError::Both("issuer"));
    }

    #[test]
    fn bare_keys_fail_certificate_conditions_but_not_token_ones() {
        let conditions = Conditions::compile(&ConditionConfig {
            token_label: Some("t"),
            ..Default::default()
        })
        .unwrap();
        let token = TokenInfo {
            label: "t".into(),
            serial: String::new(),
        };
        assert!(conditions.evaluate(None, &token).iter().all(|c| c.passed));
        let conditions = Conditions::compile(&ConditionConfig {
            issuer: Some("CN=CA"),
            ..Default::default()
        })
        .unwrap();
        assert!(!conditions.evaluate(None, &token).iter().all(|c| c.passed));
    }

    #[test]
    fn matchrule_parser_never_panics_on_random_input() {
        for text in crate::fuzz::strings(
            11,
            20_000,
            &[
                '<', '>', '&', '|', ':', 'S', 'U', 'B', 'J', 'E', 'C', 'T', 'K', 'A', 'N', 'I',
                '.', '*', '(', ')', 'x', ',',
            ],
        ) {
            let _ = MatchRule::parse(&text).map(|rule| rule.evaluate(&fields()));
        }
        assert!(
            MatchRule::parse("<SUBJECT>x<ISSUER>y<KU>digitalSignature<EKU>clientAuth<SAN>z")
                .is_ok()
        );
    }
}
