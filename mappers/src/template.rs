//! Templates over certificate fields: user names such as `{cn}`, mapfile keys
//! such as `{sha256}`, and LDAP filters such as `(mail={email})`.
//!
//! Syntax: `{field[.local][!conversion]}`; `{{` and `}}` are literal braces.
//! SSSD's `maprule` names (`{subject_dn!nss_x500}`, `{cert!bin}`,
//! `{subject_principal.short_name}` …) are accepted as aliases so that SSSD
//! rules carry over unchanged.

use std::fmt;

use base64ct::{Base64, Encoding};

use crate::certificate::{decimal, CertificateFields};
use crate::dn::DnStyle;

/// Upper bound on the strings one template may expand to; a certificate
/// with many values in several fields cannot blow up the cartesian product.
pub const MAX_EXPANSIONS: usize = 64;

/// Longest template accepted.
pub const MAX_TEMPLATE_LEN: usize = 4096;

/// A certificate field a template can refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `{cn}`: the subject's commonName.
    Cn,
    /// `{uid}`: the subject's userid attribute.
    Uid,
    /// `{email}`: an rfc822Name SAN or emailAddress attribute.
    Email,
    /// `{subject_rfc822_name}`: an rfc822Name SAN only, as SSSD has it.
    SanEmail,
    /// `{upn}`: a Microsoft UPN otherName.
    Upn,
    /// `{krb_principal}`: a KRB5PrincipalName otherName (`name@REALM`).
    KrbPrincipal,
    /// `{principal}`: a UPN or a Kerberos principal (SSSD's `subject_principal`).
    Principal,
    /// `{subject}`: the subject DN.
    Subject,
    /// `{issuer}`: the issuer DN.
    Issuer,
    /// `{serial}`: the serial number.
    Serial,
    /// `{sha256}`: SHA-256 of the certificate.
    Sha256,
    /// `{sha1}`: SHA-1 of the certificate.
    Sha1,
    /// `{pubkey_sha1}`: SHA-1 of the SubjectPublicKeyInfo.
    PublicKeySha1,
    /// `{ski}`: the subjectKeyIdentifier.
    Ski,
    /// `{sid}`: the SID from Microsoft's security extension.
    Sid,
    /// `{cert}`: the whole certificate.
    Cert,
}

/// (name, field, conversion implied by the name)
const NAMES: &[(&str, Field, Conversion)] = &[
    ("cn", Field::Cn, Conversion::Plain),
    ("uid", Field::Uid, Conversion::Plain),
    ("email", Field::Email, Conversion::Plain),
    ("subject_rfc822_name", Field::SanEmail, Conversion::Plain),
    ("upn", Field::Upn, Conversion::Plain),
    ("subject_nt_principal", Field::Upn, Conversion::Plain),
    ("krb_principal", Field::KrbPrincipal, Conversion::Plain),
    (
        "subject_pkinit_principal",
        Field::KrbPrincipal,
        Conversion::Plain,
    ),
    ("principal", Field::Principal, Conversion::Plain),
    ("subject_principal", Field::Principal, Conversion::Plain),
    ("subject", Field::Subject, Conversion::Dn(DnStyle::Ldap)),
    (
        "subject_dn",
        Field::Subject,
        Conversion::SssdDn(DnStyle::Ldap),
    ),
    ("issuer", Field::Issuer, Conversion::Dn(DnStyle::Ldap)),
    (
        "issuer_dn",
        Field::Issuer,
        Conversion::SssdDn(DnStyle::Ldap),
    ),
    ("serial", Field::Serial, Conversion::Hex(Hex::LOWER)),
    ("serial_number", Field::Serial, Conversion::Hex(Hex::LOWER)),
    ("serial_dec", Field::Serial, Conversion::Decimal),
    (
        "serial_reversed",
        Field::Serial,
        Conversion::Hex(Hex::REVERSED),
    ),
    ("sha256", Field::Sha256, Conversion::Hex(Hex::LOWER)),
    ("sha1", Field::Sha1, Conversion::Hex(Hex::LOWER)),
    (
        "pubkey_sha1",
        Field::PublicKeySha1,
        Conversion::Hex(Hex::LOWER),
    ),
    ("ski", Field::Ski, Conversion::Hex(Hex::LOWER)),
    ("subject_key_id", Field::Ski, Conversion::Hex(Hex::LOWER)),
    ("sid", Field::Sid, Conversion::Plain),
    ("cert", Field::Cert, Conversion::LdapBinary),
];

/// The names a template may use, for error messages and docs.
pub fn field_names() -> String {
    NAMES
        .iter()
        .map(|(name, _, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Field {
    /// Whether `.local` (SSSD: `.short_name`) applies: the field is an address.
    fn is_address(self) -> bool {
        matches!(
            self,
            Field::Email | Field::SanEmail | Field::Upn | Field::KrbPrincipal | Field::Principal
        )
    }

    fn is_binary(self) -> bool {
        matches!(
            self,
            Field::Serial | Field::Sha256 | Field::Sha1 | Field::PublicKeySha1 | Field::Ski
        )
    }

    fn bytes(self, fields: &CertificateFields) -> Option<Vec<u8>> {
        let from_hex = |text: &str| hex::decode(text).ok().filter(|b| !b.is_empty());
        match self {
            Field::Serial => Some(fields.serial.clone()).filter(|b| !b.is_empty()),
            Field::Sha256 => from_hex(&fields.sha256_hex),
            Field::Sha1 => from_hex(&fields.sha1_hex),
            Field::PublicKeySha1 => from_hex(&fields.public_key_sha1_hex),
            Field::Ski => fields.ski.clone(),
            _ => None,
        }
    }
}

/// Hex formatting flags (SSSD's `!hex_ucr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex {
    upper: bool,
    colons: bool,
    reversed: bool,
}

impl Hex {
    const LOWER: Hex = Hex {
        upper: false,
        colons: false,
        reversed: false,
    };
    const REVERSED: Hex = Hex {
        upper: false,
        colons: false,
        reversed: true,
    };

    fn format(self, bytes: &[u8]) -> String {
        let mut bytes = bytes.to_vec();
        if self.reversed {
            bytes.reverse();
        }
        let parts: Vec<String> = bytes
            .iter()
            .map(|byte| {
                if self.upper {
                    format!("{byte:02X}")
                } else {
                    format!("{byte:02x}")
                }
            })
            .collect();
        parts.join(if self.colons { ":" } else { "" })
    }
}

/// How a value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// As it is.
    Plain,
    /// A DN in the given style.
    Dn(DnStyle),
    /// A DN in the given style, as SSSD prints it (`{subject_dn}`, `{issuer_dn}`).
    SssdDn(DnStyle),
    /// Bytes in hex.
    Hex(Hex),
    /// The serial number in decimal.
    Decimal,
    /// Bytes as an LDAP filter escape (`\30\82…`), SSSD's `!bin`.
    LdapBinary,
    /// Bytes in base64.
    Base64,
}

/// One `{…}` of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    source: String,
    field: Field,
    local: bool,
    conversion: Conversion,
    /// Inside a double-quoted GSER string of an LDAP filter.
    quoted: bool,
}

impl Placeholder {
    /// The field.
    pub fn field(&self) -> Field {
        self.field
    }

    /// Whether this drops an address's domain (`.local`), so that the rule
    /// must say which domain it trusts.
    pub fn strips_domain(&self) -> bool {
        self.local
    }

    /// Whether this uses an address field (then a rule's `domain` filters it).
    pub fn is_address(&self) -> bool {
        self.field.is_address()
    }

    /// Values of this placeholder in `fields`, unescaped. For address
    /// fields, `domain` keeps only addresses in that domain (or Kerberos
    /// realm), compared ASCII case-insensitively.
    pub fn values(&self, fields: &CertificateFields, domain: Option<&str>) -> Vec<String> {
        let addresses: Vec<&String> = match self.field {
            Field::Email => fields.emails.iter().collect(),
            Field::SanEmail => san_emails(fields).iter().collect(),
            Field::Upn => fields.upns.iter().collect(),
            Field::KrbPrincipal => fields.krb_principals.iter().collect(),
            Field::Principal => fields.upns.iter().chain(&fields.krb_principals).collect(),
            _ => Vec::new(),
        };
        if self.field.is_address() {
            return addresses
                .into_iter()
                .filter_map(|address| {
                    let (local, found) = address.rsplit_once('@')?;
                    if domain.is_some_and(|wanted| !found.eq_ignore_ascii_case(wanted)) {
                        return None;
                    }
                    let value = if self.local { local } else { address.as_str() };
                    Some(value.to_owned()).filter(|value| !value.is_empty())
                })
                .collect();
        }
        if let Some(bytes) = self.field.bytes(fields) {
            return vec![match self.conversion {
                Conversion::Decimal => decimal(&bytes),
                Conversion::Hex(hex) => hex.format(&bytes),
                _ => Hex::LOWER.format(&bytes),
            }];
        }
        match self.field {
            Field::Cn => fields.common_names.clone(),
            Field::Uid => fields.uids.clone(),
            Field::Subject | Field::Issuer => {
                let dn = if self.field == Field::Subject {
                    &fields.subject_dn
                } else {
                    &fields.issuer_dn
                };
                match self.conversion {
                    _ if dn.is_empty() => Vec::new(),
                    Conversion::SssdDn(style) => vec![dn.format_sssd(style)],
                    Conversion::Dn(style) => vec![dn.format(style)],
                    _ => vec![dn.format(DnStyle::Ldap)],
                }
            }
            Field::Sid => fields.sid.iter().cloned().collect(),
            Field::Cert if fields.der.is_empty() => Vec::new(),
            Field::Cert => vec![match self.conversion {
                Conversion::Base64 => Base64::encode_string(&fields.der),
                Conversion::Hex(hex) => hex.format(&fields.der),
                _ => fields.der.iter().map(|b| format!("\\{b:02x}")).collect(),
            }],
            _ => Vec::new(),
        }
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.source)
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

/// SSSD's names for the DNs (`subject_dn`, `issuer_dn`) print them as SSSD
/// does; tessera's (`subject`, `issuer`) keep RFC 4514's structure.
fn dn_conversion(sssd: bool, style: DnStyle) -> Conversion {
    if sssd {
        Conversion::SssdDn(style)
    } else {
        Conversion::Dn(style)
    }
}

/// The rfc822Name SANs alone: `CertificateFields::emails` lists them first,
/// then the subject's emailAddress attributes.
fn san_emails(fields: &CertificateFields) -> &[String] {
    let in_subject = fields
        .subject_dn
        .values(&const_oid::db::rfc3280::EMAIL_ADDRESS)
        .len();
    &fields.emails[..fields.emails.len().saturating_sub(in_subject)]
}

fn parse_placeholder(body: &str, offset: usize) -> Result<Placeholder, TemplateError> {
    let (name_part, conversion_text) = match body.split_once('!') {
        Some((name, conversion)) => (name.trim(), Some(conversion.trim())),
        None => (body.trim(), None),
    };
    let (name, local) = match name_part.rsplit_once('.') {
        Some((name, "local" | "short_name")) => (name, true),
        _ => (name_part, false),
    };
    let unknown = || TemplateError::UnknownField {
        name: body.to_owned(),
        offset,
        known: field_names(),
    };
    let (_, field, implied) = NAMES
        .iter()
        .find(|(known, _, _)| *known == name)
        .ok_or_else(unknown)?;
    let bad = |why: &str| TemplateError::BadModifier(body.to_owned(), offset, why.to_owned());
    if local && !field.is_address() {
        return Err(bad(
            "`.local` applies to email, upn, krb_principal and principal only",
        ));
    }
    let sssd_dn = matches!(implied, Conversion::SssdDn(_));
    let conversion = match conversion_text {
        None => *implied,
        Some(text) => {
            let lower = text.to_ascii_lowercase();
            match (field, lower.as_str()) {
                (Field::Subject | Field::Issuer, "ldap" | "nss" | "nss_ldap") => {
                    dn_conversion(sssd_dn, DnStyle::Ldap)
                }
                (Field::Subject | Field::Issuer, "x500" | "nss_x500") => {
                    dn_conversion(sssd_dn, DnStyle::X500)
                }
                (Field::Subject | Field::Issuer, "ad" | "ad_x500") => {
                    dn_conversion(sssd_dn, DnStyle::Ad)
                }
                (Field::Subject | Field::Issuer, "ad_ldap") => {
                    dn_conversion(sssd_dn, DnStyle::AdLdap)
                }
                (Field::Serial, "dec") => Conversion::Decimal,
                (Field::Cert, "bin") => Conversion::LdapBinary,
                (Field::Cert, "base64") => Conversion::Base64,
                (field, hex) if field.is_binary() || *field == Field::Cert => {
                    let flags = hex.strip_prefix("hex").ok_or_else(|| {
                        bad("conversions: hex, hex_u (upper), hex_c (colons), hex_r (reversed), combined as hex_ucr; dec for serials; bin, base64 for cert")
                    })?;
                    let flags = flags.strip_prefix('_').unwrap_or(flags);
                    if !flags.chars().all(|c| matches!(c, 'u' | 'c' | 'r')) {
                        return Err(bad("hex flags are u, c and r"));
                    }
                    let mut parsed = if name == "serial_reversed" {
                        Hex::REVERSED
                    } else {
                        Hex::LOWER
                    };
                    parsed.upper |= flags.contains('u');
                    parsed.colons |= flags.contains('c');
                    parsed.reversed |= flags.contains('r');
                    Conversion::Hex(parsed)
                }
                (Field::Subject | Field::Issuer, _) => {
                    return Err(bad("DN conversions: ldap, x500, ad, ad_ldap (SSSD: nss, nss_ldap, nss_x500, ad_x500)"))
                }
                _ => return Err(bad("this field takes no conversion")),
            }
        }
    };
    let mut source = name.to_owned();
    if local {
        source.push_str(".local");
    }
    if let Some(text) = conversion_text {
        source.push('!');
        source.push_str(text);
    }
    Ok(Placeholder {
        source,
        field: *field,
        local,
        conversion,
        quoted: false,
    })
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
