//! What a mapping decided, and the explanation of every rule tried.

use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::source_error::SourceError;
use crate::conditions::Check;
use crate::username::UsernameError;

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
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// The value.
    pub user: String,
    /// Why.
    #[serde(serialize_with = "as_message")]
    pub reason: RefusalReason,
}

/// Why a value from a source is not a user this login may take.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RefusalReason {
    /// Not a valid user name.
    #[error(transparent)]
    BadName(#[from] UsernameError),
    /// The application asked for someone else.
    #[error("not the requested user {requested}")]
    NotRequested {
        /// The user the application asked for.
        requested: String,
    },
    /// NSS has no such account.
    #[error("no such user in NSS")]
    NoSuchUser,
    /// NSS failed.
    #[error("user look-up failed: {0}")]
    LookupFailed(Arc<std::io::Error>),
}

/// What one rule decided.
#[derive(Debug, Clone, Serialize)]
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
        /// What failed (JSON: `message` and `unavailable`).
        #[serde(flatten)]
        error: SourceError,
    },
}

/// The explanation of one rule.
#[derive(Debug, Clone, Serialize)]
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
            Verdict::Error { error } => write!(
                f,
                "  => error{}: {error}; no further rule is tried",
                if error.is_unavailable() {
                    " (source unavailable)"
                } else {
                    ""
                }
            ),
        }
    }
}

/// What a mapping rule vouches for, and so which check the login relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustBasis {
    /// The certificate: it must chain to a trusted CA, be within its
    /// validity period and not be revoked.
    CertificateChain,
    /// The public key alone, listed in the user's authorized files: no chain
    /// validation applies (docs/mapping.md, authorized files).
    AuthorizedKey,
}

/// The result of mapping one certificate or key.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// A rule mapped to these users.
    Matched {
        /// The rule.
        rule: String,
        /// The users (several: the user chooses, never a silent pick).
        users: Vec<String>,
        /// What the rule vouches for (JSON: `key_only`, true for a match
        /// on the public key alone).
        #[serde(rename = "key_only", serialize_with = "is_key_only")]
        basis: TrustBasis,
    },
    /// No rule applied.
    NoMatch,
    /// A rule's source failed.
    Error {
        /// The rule.
        rule: String,
        /// What failed (JSON: `message`, and `unavailable` when the source
        /// could not be reached rather than answered wrong).
        #[serde(flatten, serialize_with = "as_message_and_availability")]
        error: SourceError,
    },
}

/// Outcome and explanation.
#[derive(Debug, Clone, Serialize)]
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

/// An error serialised as its message.
fn is_key_only<S: Serializer>(basis: &TrustBasis, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bool(*basis == TrustBasis::AuthorizedKey)
}

fn as_message_and_availability<S: Serializer>(
    error: &SourceError,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut fields = serializer.serialize_struct("SourceError", 2)?;
    fields.serialize_field("message", &error.to_string())?;
    fields.serialize_field("unavailable", &error.is_unavailable())?;
    fields.end()
}

fn as_message<S: Serializer>(error: &impl fmt::Display, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_keep_their_json_shape() {
        let matched = Outcome::Matched {
            rule: "cn".into(),
            users: vec!["alice".into()],
            basis: TrustBasis::AuthorizedKey,
        };
        assert_eq!(
            serde_json::to_value(&matched).unwrap(),
            serde_json::json!({"result": "matched", "rule": "cn", "users": ["alice"], "key_only": true})
        );
        let error = Outcome::Error {
            rule: "ldap".into(),
            error: SourceError::NoDirectory,
        };
        assert_eq!(
            serde_json::to_value(&error).unwrap(),
            serde_json::json!({"result": "error", "rule": "ldap", "message": "no [ldap] section", "unavailable": false})
        );
    }
}
