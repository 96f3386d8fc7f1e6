//! User-name templates such as `{cn}` or `{upn.local}`.

use std::fmt;

use crate::certificate::CertificateFields;

/// Upper bound on the user names one template may expand to; a certificate
/// with many values in several fields cannot blow up the cartesian product.
pub const MAX_EXPANSIONS: usize = 64;

/// A certificate field a template can refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `{cn}`: the subject's commonName.
    Cn,
    /// `{uid}`: the subject's userid attribute.
    Uid,
    /// `{email}`: an rfc822Name SAN or emailAddress attribute.
    Email,
    /// `{email.local}`: the part of the e-mail address before `@`.
    EmailLocal,
    /// `{upn}`: a Microsoft UPN otherName.
    Upn,
    /// `{upn.local}`: the part of the UPN before `@`.
    UpnLocal,
    /// `{subject}`: the subject DN (RFC 4514).
    Subject,
    /// `{issuer}`: the issuer DN (RFC 4514).
    Issuer,
    /// `{serial}`: the serial number in lower-case hex.
    Serial,
    /// `{sha256}`: the SHA-256 fingerprint of the certificate in lower-case hex.
    Sha256,
}

impl Field {
    const ALL: [Field; 10] = [
        Field::Cn,
        Field::Uid,
        Field::Email,
        Field::EmailLocal,
        Field::Upn,
        Field::UpnLocal,
        Field::Subject,
        Field::Issuer,
        Field::Serial,
        Field::Sha256,
    ];

    /// The name used inside braces.
    pub fn name(self) -> &'static str {
        match self {
            Field::Cn => "cn",
            Field::Uid => "uid",
            Field::Email => "email",
            Field::EmailLocal => "email.local",
            Field::Upn => "upn",
            Field::UpnLocal => "upn.local",
            Field::Subject => "subject",
            Field::Issuer => "issuer",
            Field::Serial => "serial",
            Field::Sha256 => "sha256",
        }
    }

    fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|field| field.name() == name)
    }

    /// Whether the field drops the domain of an address, so that a rule using
    /// it must say which domain it trusts.
    pub fn strips_domain(self) -> bool {
        matches!(self, Field::EmailLocal | Field::UpnLocal)
    }

    /// Values of this field in `fields`. For address fields, `domain` keeps
    /// only addresses in that domain (ASCII case-insensitive).
    pub fn values(self, fields: &CertificateFields, domain: Option<&str>) -> Vec<String> {
        let in_domain = |address: &&String| match domain {
            None => true,
            Some(wanted) => address
                .rsplit_once('@')
                .is_some_and(|(_, found)| found.eq_ignore_ascii_case(wanted)),
        };
        let local_part = |address: &String| {
            address
                .rsplit_once('@')
                .map(|(local, _)| local.to_owned())
                .filter(|local| !local.is_empty())
        };
        match self {
            Field::Cn => fields.common_names.clone(),
            Field::Uid => fields.uids.clone(),
            Field::Email => fields.emails.iter().filter(in_domain).cloned().collect(),
            Field::EmailLocal => fields
                .emails
                .iter()
                .filter(in_domain)
                .filter_map(local_part)
                .collect(),
            Field::Upn => fields.upns.iter().filter(in_domain).cloned().collect(),
            Field::UpnLocal => fields
                .upns
                .iter()
                .filter(in_domain)
                .filter_map(local_part)
                .collect(),
            Field::Subject => vec![fields.subject.clone()],
            Field::Issuer => vec![fields.issuer.clone()],
            Field::Serial => vec![fields.serial_hex.clone()],
            Field::Sha256 => vec![fields.sha256_hex.clone()],
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.name())
    }
}

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
    /// A `{` without its `}`.
    #[error("unclosed '{{' at offset {0}")]
    Unclosed(usize),
    /// A `}` that closes nothing (write `}}` for a literal brace).
    #[error("unmatched '}}' at offset {0} (write '}}}}' for a literal brace)")]
    Unmatched(usize),
    /// The template refers to no field at all, so it would map every certificate to one user.
    #[error("template has no field; it would map every certificate to the same user")]
    Constant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field(Field),
}

/// A parsed user-name template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses a template such as `{cn}` or `ad-{upn.local}`.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((offset, character)) = chars.next() {
            match character {
                '{' if chars.peek().map(|&(_, next)| next) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, next)| next) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError::Unmatched(offset)),
                '{' => {
                    let rest = &source[offset + 1..];
                    let end = rest.find('}').ok_or(TemplateError::Unclosed(offset))?;
                    let name = &rest[..end];
                    let field = Field::from_name(name.trim()).ok_or_else(|| {
                        TemplateError::UnknownField {
                            name: name.to_owned(),
                            offset,
                            known: Field::ALL.map(Field::name).join(", "),
                        }
                    })?;
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Field(field));
                    // Skip the name and the closing brace.
                    while let Some((position, _)) = chars.peek() {
                        if *position > offset + end + 1 {
                            break;
                        }
                        chars.next();
                    }
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        let template = Self {
            source: source.to_owned(),
            pieces,
        };
        if template.fields().next().is_none() {
            return Err(TemplateError::Constant);
        }
        Ok(template)
    }

    /// The fields the template refers to, in order.
    pub fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Field(field) => Some(*field),
            Piece::Literal(_) => None,
        })
    }

    /// The template as written in the configuration.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Expands the template over the certificate's fields: one string per
    /// combination of field values. `Err(field)` names the first field the
    /// certificate has no value for.
    pub fn expand(
        &self,
        fields: &CertificateFields,
        domain: Option<&str>,
    ) -> Result<Vec<String>, Field> {
        let mut expansions = vec![String::new()];
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => expansions.iter_mut().for_each(|e| e.push_str(text)),
                Piece::Field(field) => {
                    let values = field.values(fields, domain);
                    if values.is_empty() {
                        return Err(*field);
                    }
                    expansions = expansions
                        .iter()
                        .flat_map(|prefix| {
                            values.iter().map(move |value| format!("{prefix}{value}"))
                        })
                        .take(MAX_EXPANSIONS)
                        .collect();
                }
            }
        }
        let mut unique = Vec::with_capacity(expansions.len());
        for expansion in expansions {
            if !unique.contains(&expansion) {
                unique.push(expansion);
            }
        }
        Ok(unique)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> CertificateFields {
        CertificateFields {
            subject: "CN=Alice,O=Example".into(),
            issuer: "CN=Test CA".into(),
            common_names: vec!["alice".into()],
            uids: vec![],
            emails: vec!["alice@example.test".into(), "root@evil.test".into()],
            upns: vec!["alice@EXAMPLE.TEST".into()],
            serial_hex: "0a1b".into(),
            sha256_hex: "00ff".into(),
        }
    }

    #[test]
    fn fields_and_literals_expand_in_order() {
        let template = Template::parse("x-{cn}-{serial}").unwrap();
        assert_eq!(
            template.expand(&fields(), None),
            Ok(vec!["x-alice-0a1b".to_owned()])
        );
    }

    #[test]
    fn doubled_braces_are_literal() {
        let template = Template::parse("{{{cn}}}").unwrap();
        assert_eq!(
            template.expand(&fields(), None),
            Ok(vec!["{alice}".to_owned()])
        );
    }

    #[test]
    fn missing_field_names_the_field() {
        let template = Template::parse("{uid}").unwrap();
        assert_eq!(template.expand(&fields(), None), Err(Field::Uid));
    }

    #[test]
    fn domain_filter_keeps_only_addresses_in_the_domain() {
        let template = Template::parse("{email.local}").unwrap();
        assert_eq!(
            template.expand(&fields(), Some("EXAMPLE.test")),
            Ok(vec!["alice".to_owned()])
        );
        assert_eq!(
            template.expand(&fields(), Some("other.test")),
            Err(Field::EmailLocal)
        );
    }

    #[test]
    fn syntax_errors_are_specific() {
        assert!(matches!(
            Template::parse("{nope}"),
            Err(TemplateError::UnknownField { offset: 0, .. })
        ));
        assert_eq!(Template::parse("a{cn"), Err(TemplateError::Unclosed(1)));
        assert_eq!(Template::parse("a}"), Err(TemplateError::Unmatched(1)));
        assert_eq!(Template::parse("root"), Err(TemplateError::Constant));
    }

    #[test]
    fn expansion_count_is_bounded() {
        let mut many = fields();
        many.common_names = (0..100).map(|i| format!("cn{i}")).collect();
        many.uids = (0..100).map(|i| format!("uid{i}")).collect();
        let template = Template::parse("{cn}{uid}").unwrap();
        assert_eq!(template.expand(&many, None).unwrap().len(), MAX_EXPANSIONS);
    }
}
