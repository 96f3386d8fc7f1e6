//! Why a rule's conditions do not compile.

/// Why a condition does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    /// A bad DN string.
    #[error("`{key}`: {error}")]
    Dn {
        /// The config key.
        key: &'static str,
        /// What is wrong.
        error: crate::dn::DnError,
    },
    /// A bad regular expression.
    #[error("`{key}`: {error}")]
    Regex {
        /// The config key.
        key: String,
        /// What is wrong.
        error: String,
    },
    /// An unknown EKU, keyUsage or SAN name.
    #[error("`{key}`: unknown value `{value}`; known: {known}")]
    Unknown {
        /// The config key.
        key: &'static str,
        /// The value.
        value: String,
        /// What is known.
        known: String,
    },
    /// Both the exact and the regex form were given.
    #[error("`{0}` and `{0}_regex` are alternatives; give one")]
    Both(&'static str),
    /// An SSSD matchrule that does not parse.
    #[error("`matchrule`: {0}")]
    MatchRule(String),
}
