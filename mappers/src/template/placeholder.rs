//! One `{field[.local][!conversion]}` of a template: the fields a template
//! can name (with SSSD's aliases), how each is written, and the values a
//! certificate gives it.

use std::fmt;

use base64ct::{Base64, Encoding};

use super::error::TemplateError;
use crate::certificate::{decimal, CertificateFields};
use crate::dn::DnStyle;

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
    pub(super) conversion: Conversion,
    /// Inside a double-quoted GSER string of an LDAP filter.
    pub(super) quoted: bool,
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

/// Parses the body of one `{…}` found at byte `offset`.
pub(super) fn parse_placeholder(body: &str, offset: usize) -> Result<Placeholder, TemplateError> {
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
