//! Templates over certificate fields: user names such as `{cn}`, mapfile keys
//! such as `{sha256}`, and LDAP filters such as `(mail={email})`.
//!
//! Syntax: `{field[.local][!conversion]}`; `{{` and `}}` are literal braces.
//! SSSD's `maprule` names (`{subject_dn!nss_x500}`, `{cert!bin}`,
//! `{subject_principal.short_name}` …) are accepted as aliases so that SSSD
//! rules carry over unchanged.
//!
//! The fields and their conversions are in `template/placeholder.rs`.

use std::fmt;

use crate::certificate::CertificateFields;

mod error;
mod placeholder;
pub use error::{TemplateError, MAX_TEMPLATE_LEN};
use placeholder::{parse_placeholder, Conversion, Placeholder};

/// Upper bound on the strings one template may expand to; a certificate
/// with many values in several fields cannot blow up the cartesian product.
pub const MAX_EXPANSIONS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field(Placeholder),
}

/// Where a template's output goes, which decides its escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// A user name or a look-up key: values as they are.
    Plain,
    /// An LDAP search filter: values escaped per RFC 4515, and `"` doubled
    /// inside GSER strings (`issuer rdnSequence:"{issuer}"`).
    LdapFilter,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    kind: TemplateKind,
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses a plain template such as `{cn}` or `ad-{upn.local}`.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        Self::parse_as(source, TemplateKind::Plain)
    }

    /// Parses an LDAP filter template such as `(mail={email})`.
    pub fn parse_ldap_filter(source: &str) -> Result<Self, TemplateError> {
        let template = Self::parse_as(source, TemplateKind::LdapFilter)?;
        let mut depth = 0usize;
        let mut balanced = source.trim_start().starts_with('(');
        for piece in &template.pieces {
            if let Piece::Literal(text) = piece {
                for character in text.chars() {
                    match character {
                        '(' => depth += 1,
                        ')' if depth == 0 => balanced = false,
                        ')' => depth -= 1,
                        _ => {}
                    }
                }
            }
        }
        if !balanced || depth != 0 {
            return Err(TemplateError::BadFilter(source.to_owned()));
        }
        Ok(template)
    }

    fn parse_as(source: &str, kind: TemplateKind) -> Result<Self, TemplateError> {
        if source.len() > MAX_TEMPLATE_LEN {
            return Err(TemplateError::TooLong);
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut quoted = false;
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
                // GSER values in LDAP filters use braces of their own:
                // `{ serialNumber 1, issuer rdnSequence:"…" }`.
                '}' if kind == TemplateKind::LdapFilter => literal.push('}'),
                '{' if kind == TemplateKind::LdapFilter
                    && !looks_like_placeholder(&source[offset + 1..]) =>
                {
                    literal.push('{')
                }
                '}' => return Err(TemplateError::Unmatched(offset)),
                '{' => {
                    let rest = &source[offset + 1..];
                    let end = rest.find('}').ok_or(TemplateError::Unclosed(offset))?;
                    let mut placeholder = parse_placeholder(&rest[..end], offset)?;
                    placeholder.quoted = kind == TemplateKind::LdapFilter && quoted;
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Field(placeholder));
                    // Skip the name and the closing brace.
                    while chars
                        .peek()
                        .is_some_and(|(position, _)| *position <= offset + end + 1)
                    {
                        chars.next();
                    }
                }
                other => {
                    if other == '"' {
                        quoted = !quoted;
                    }
                    literal.push(other);
                }
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        let template = Self {
            source: source.to_owned(),
            kind,
            pieces,
        };
        if template.placeholders().next().is_none() {
            return Err(TemplateError::Constant);
        }
        Ok(template)
    }

    /// The placeholders the template uses, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> + '_ {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Field(placeholder) => Some(placeholder),
            Piece::Literal(_) => None,
        })
    }

    /// The template as written in the configuration.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Expands the template over the certificate's fields: one string per
    /// combination of values, escaped for the template's kind. `Err` names
    /// the first placeholder the certificate has no value for.
    pub fn expand(
        &self,
        fields: &CertificateFields,
        domain: Option<&str>,
    ) -> Result<Vec<String>, Placeholder> {
        let mut expansions = vec![String::new()];
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => expansions.iter_mut().for_each(|e| e.push_str(text)),
                Piece::Field(placeholder) => {
                    let values: Vec<String> = placeholder
                        .values(fields, domain)
                        .into_iter()
                        .map(|value| self.escape(placeholder, value))
                        .collect();
                    if values.is_empty() {
                        return Err(placeholder.clone());
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

    fn escape(&self, placeholder: &Placeholder, value: String) -> String {
        if self.kind == TemplateKind::Plain || placeholder.conversion == Conversion::LdapBinary {
            return value;
        }
        let value = if placeholder.quoted {
            value.replace('"', "\"\"")
        } else {
            value
        };
        escape_filter_value(&value)
    }
}

/// In an LDAP filter, `{name…}` is a placeholder when it starts right
/// after the brace with a field-name character and holds no space.
fn looks_like_placeholder(rest: &str) -> bool {
    rest.starts_with(|c: char| c.is_ascii_alphabetic())
        && rest
            .find('}')
            .is_some_and(|end| !rest[..end].contains(|c: char| c.is_whitespace() || c == '{'))
}

/// RFC 4515 section 3: `*`, `(`, `)`, `\` and NUL become `\2a`, `\28`,
/// `\29`, `\5c`, `\00`; like SSSD, also space, tab, CR and LF (`\20`,
/// `\09`, `\0d`, `\0a`), which RFC 4515 allows, so that a filter is the
/// one SSSD builds.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            ' ' => out.push_str("\\20"),
            '\t' => out.push_str("\\09"),
            '\r' => out.push_str("\\0d"),
            '\n' => out.push_str("\\0a"),
            other => out.push(other),
        }
    }
    out
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dn::Dn;

    #[test]
    fn a_template_over_4_kib_is_refused() {
        let at_bound = format!("{{cn}}{}", "a".repeat(MAX_TEMPLATE_LEN - 4));
        assert!(Template::parse(&at_bound).is_ok());
        let over = "a".repeat(MAX_TEMPLATE_LEN + 1);
        assert!(matches!(
            Template::parse(&over),
            Err(TemplateError::TooLong)
        ));
        assert!(matches!(
            Template::parse_ldap_filter(&format!("(uid={over})")),
            Err(TemplateError::TooLong)
        ));
    }

    fn fields() -> CertificateFields {
        CertificateFields {
            subject: "CN=Alice,O=Example".into(),
            subject_dn: Dn::parse("CN=Alice,O=Example").unwrap(),
            issuer: "CN=Test CA,O=Example\\, Inc.".into(),
            issuer_dn: Dn::parse("CN=Test CA,O=Example\\, Inc.").unwrap(),
            common_names: vec!["alice".into()],
            emails: vec!["alice@example.test".into(), "root@evil.test".into()],
            upns: vec!["alice@EXAMPLE.TEST".into()],
            krb_principals: vec!["alice/admin@EXAMPLE.TEST".into()],
            serial: vec![0x0a, 0x1b, 0xff],
            serial_hex: "0a1bff".into(),
            sha256_hex: "00ff".into(),
            ski: Some(vec![0xde, 0xad]),
            sid: Some("S-1-5-21-1-2-3-1105".into()),
            der: vec![0x30, 0x03, 0x02, 0x01, 0x2a],
            ..CertificateFields::default()
        }
    }

    fn expand(template: &str) -> Vec<String> {
        Template::parse(template)
            .unwrap()
            .expand(&fields(), None)
            .unwrap()
    }

    #[test]
    fn fields_and_literals_expand_in_order() {
        assert_eq!(expand("x-{cn}-{serial}"), ["x-alice-0a1bff"]);
    }

    #[test]
    fn doubled_braces_are_literal() {
        assert_eq!(expand("{{{cn}}}"), ["{alice}"]);
    }

    #[test]
    fn serial_variants() {
        assert_eq!(expand("{serial_dec}"), ["662527"]);
        assert_eq!(expand("{serial!dec}"), ["662527"]);
        assert_eq!(expand("{serial_reversed}"), ["ff1b0a"]);
        assert_eq!(expand("{serial!hex_ur}"), ["FF1B0A"]);
        assert_eq!(expand("{serial_number!HEX_UC}"), ["0A:1B:FF"]);
    }

    #[test]
    fn ski_sid_cert_and_principals() {
        assert_eq!(expand("{ski}"), ["dead"]);
        assert_eq!(expand("{subject_key_id!hex_u}"), ["DEAD"]);
        assert_eq!(expand("{sid}"), ["S-1-5-21-1-2-3-1105"]);
        assert_eq!(expand("{cert!bin}"), ["\\30\\03\\02\\01\\2a"]);
        assert_eq!(expand("{cert!base64}"), ["MAMCASo="]);
        assert_eq!(expand("{krb_principal}"), ["alice/admin@EXAMPLE.TEST"]);
        assert_eq!(
            expand("{subject_principal}"),
            ["alice@EXAMPLE.TEST", "alice/admin@EXAMPLE.TEST"]
        );
    }

    #[test]
    fn dn_styles() {
        assert_eq!(expand("{issuer}"), ["CN=Test CA,O=Example\\, Inc."]);
        assert_eq!(expand("{issuer!x500}"), ["O=Example\\, Inc.,CN=Test CA"]);
        assert_eq!(expand("{subject_dn!nss_x500}"), ["O=Example,CN=Alice"]);
    }

    #[test]
    fn sssd_dn_names_render_as_sssd_and_tessera_names_as_rfc_4514() {
        let mut odd = fields();
        odd.subject_dn = Dn::parse("CN=J\\C3\\BCrgen+UID=j,O=Example\\, Inc.").unwrap();
        let filter = |template: &str| {
            Template::parse_ldap_filter(template)
                .unwrap()
                .expand(&odd, None)
                .unwrap()
        };
        // SSSD: the multi-valued RDN flattened, non-ASCII as \XX, then
        // filter-escaped (`\` and space too).
        assert_eq!(
            filter("(x={subject_dn})"),
            ["(x=UID=j,CN=J\\5cC3\\5cBCrgen,O=Example\\5c,\\20Inc.)"]
        );
        assert_eq!(
            filter("(x={subject_dn!ad_x500})"),
            ["(x=O=Example\\5c,\\20Inc.,CN=J\\5cC3\\5cBCrgen,OID.0.9.2342.19200300.100.1.1=j)"]
        );
        assert_eq!(
            filter("(x={subject})"),
            ["(x=CN=Jürgen+UID=j,O=Example\\5c,\\20Inc.)"]
        );
    }

    #[test]
    fn subject_rfc822_name_is_the_san_only() {
        let mut with_subject_email = fields();
        with_subject_email.subject_dn = Dn::parse("E=subject@example.test,CN=Alice").unwrap();
        with_subject_email.emails = vec!["san@example.test".into(), "subject@example.test".into()];
        let expand = |template: &str, fields: &CertificateFields| {
            Template::parse(template).unwrap().expand(fields, None)
        };
        assert_eq!(
            expand("{subject_rfc822_name}", &with_subject_email),
            Ok(vec!["san@example.test".to_owned()])
        );
        assert_eq!(
            expand("{email}", &with_subject_email),
            Ok(vec![
                "san@example.test".to_owned(),
                "subject@example.test".to_owned()
            ])
        );
        with_subject_email.emails.remove(0);
        assert!(expand("{subject_rfc822_name}", &with_subject_email).is_err());
    }

    #[test]
    fn missing_field_names_the_placeholder() {
        let template = Template::parse("{uid}").unwrap();
        let missing = template.expand(&fields(), None).unwrap_err();
        assert_eq!(missing.to_string(), "{uid}");
    }

    #[test]
    fn domain_filter_keeps_only_addresses_in_the_domain() {
        let template = Template::parse("{email.local}").unwrap();
        assert_eq!(
            template.expand(&fields(), Some("EXAMPLE.test")),
            Ok(vec!["alice".to_owned()])
        );
        assert!(template.expand(&fields(), Some("other.test")).is_err());
        let realm = Template::parse("{subject_pkinit_principal.short_name}").unwrap();
        assert_eq!(
            realm.expand(&fields(), Some("example.test")),
            Ok(vec!["alice/admin".to_owned()])
        );
    }

    #[test]
    fn ldap_filters_escape_values_and_gser_quotes() {
        let mut hostile = fields();
        hostile.emails = vec!["*)(uid=*@example.test".into()];
        hostile.issuer_dn = Dn::parse("CN=Q\\\"CA").unwrap();
        let filter = Template::parse_ldap_filter("(mail={email})").unwrap();
        assert_eq!(
            filter.expand(&hostile, None).unwrap(),
            ["(mail=\\2a\\29\\28uid=\\2a@example.test)"]
        );
        let exact = Template::parse_ldap_filter(
            "(userCertificate={ serialNumber {serial_dec}, issuer rdnSequence:\"{issuer}\" })",
        )
        .unwrap();
        assert_eq!(
            exact.expand(&hostile, None).unwrap(),
            ["(userCertificate={ serialNumber 662527, issuer rdnSequence:\"CN=Q\\5c\"\"CA\" })"]
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
        assert!(matches!(
            Template::parse("{cn.local}"),
            Err(TemplateError::BadModifier(..))
        ));
        assert!(matches!(
            Template::parse("{serial!hex_z}"),
            Err(TemplateError::BadModifier(..))
        ));
        assert!(matches!(
            Template::parse_ldap_filter("(mail={email}"),
            Err(TemplateError::BadFilter(_))
        ));
        // A typo in a filter placeholder is an error, not a literal.
        assert!(matches!(
            Template::parse_ldap_filter("(mail={emial})"),
            Err(TemplateError::UnknownField { .. })
        ));
    }

    #[test]
    fn expansion_count_is_bounded() {
        let mut many = fields();
        many.common_names = (0..100).map(|i| format!("cn{i}")).collect();
        many.uids = (0..100).map(|i| format!("uid{i}")).collect();
        let template = Template::parse("{cn}{uid}").unwrap();
        assert_eq!(template.expand(&many, None).unwrap().len(), MAX_EXPANSIONS);
    }

    #[test]
    fn template_parser_never_panics_on_random_input() {
        for text in crate::fuzz::strings(
            7,
            20_000,
            &[
                '{', '}', '!', '.', '(', ')', '"', '\\', 'c', 'n', 'e', 'm', 'a', 'i', 'l', 's',
                'r', 'x', '_', 'h', 'u', 'é', '\0', ' ', '=',
            ],
        ) {
            if let Ok(template) = Template::parse(&text) {
                let _ = template.expand(&fields(), Some("example.test"));
            }
            if let Ok(template) = Template::parse_ldap_filter(&text) {
                let _ = template.expand(&fields(), None);
            }
        }
    }
}
