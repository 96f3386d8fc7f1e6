//! Why a template does not parse.

/// Longest template accepted.
pub const MAX_TEMPLATE_LEN: usize = 4096;

/// A template syntax error, with the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{name}` with a name that is not a known field.
    #[error("unknown field {{{name}}} at offset {offset}; known fields: {known}")]
    UnknownField {
        /// The name found between the braces.
        name: String,
        /// Byte offset of the opening brace.
        offset: usize,
        /// Comma-separated list of valid names.
        known: String,
    },
    /// A `.part` or `!conversion` that does not apply to the field.
    #[error("{{{0}}} at offset {1}: {2}")]
    BadModifier(String, usize, String),
    /// A `{` without its `}`.
    #[error("unclosed '{{' at offset {0}")]
    Unclosed(usize),
    /// A `}` that closes nothing (write `}}` for a literal brace).
    #[error("unmatched '}}' at offset {0} (write '}}}}' for a literal brace)")]
    Unmatched(usize),
    /// The template refers to no field at all, so it would map every certificate to one user.
    #[error("template has no field; it would map every certificate to the same user")]
    Constant,
    /// Longer than [`MAX_TEMPLATE_LEN`].
    #[error("template is longer than {MAX_TEMPLATE_LEN} bytes")]
    TooLong,
    /// An LDAP filter template that is not a parenthesised filter.
    #[error("LDAP filter must be enclosed in balanced parentheses: {0}")]
    BadFilter(String),
}
