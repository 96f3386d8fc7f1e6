//! Distinguished names as structures, not strings.
//!
//! pam_pkcs11 compared DNs as "oneline" strings, so a CN containing
//! `/O=Trusted` could pass for another DN. Here a DN is a sequence of RDNs,
//! each a set of (attribute OID, value) pairs; two DNs are equal when they have
//! the same RDNs in the same order with the same attributes and byte-equal
//! values. RFC 4514 strings from the configuration are parsed into the same
//! structure, with every escape resolved, before they are compared.

use std::fmt;

use const_oid::ObjectIdentifier;
use der::asn1::{BmpString, Ia5StringRef, PrintableStringRef, TeletexStringRef, Utf8StringRef};
use der::{Encode, Tag, Tagged};
use x509_cert::name::Name;

mod sssd;

/// Attribute names understood in DN strings and used when printing, with the
/// Active Directory spelling where it differs.
const ATTRIBUTES: &[(&str, &str, &str)] = &[
    // (OID, RFC 4514/NSS name, AD name)
    ("2.5.4.3", "CN", "CN"),
    ("2.5.4.4", "SN", "SN"),
    ("2.5.4.5", "serialNumber", "SERIALNUMBER"),
    ("2.5.4.6", "C", "C"),
    ("2.5.4.7", "L", "L"),
    ("2.5.4.8", "ST", "S"),
    ("2.5.4.9", "STREET", "STREET"),
    ("2.5.4.10", "O", "O"),
    ("2.5.4.11", "OU", "OU"),
    ("2.5.4.12", "title", "T"),
    ("2.5.4.17", "postalCode", "PostalCode"),
    ("2.5.4.42", "GN", "G"),
    ("2.5.4.43", "initials", "I"),
    ("2.5.4.44", "generationQualifier", "generationQualifier"),
    ("2.5.4.46", "dnQualifier", "dnQualifier"),
    ("2.5.4.65", "pseudonym", "pseudonym"),
    (
        "2.5.4.97",
        "organizationIdentifier",
        "organizationIdentifier",
    ),
    ("0.9.2342.19200300.100.1.25", "DC", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID", "UID"),
    ("1.2.840.113549.1.9.1", "emailAddress", "E"),
];

/// Extra names accepted when parsing (never printed).
const ALIASES: &[(&str, &str)] = &[
    ("E", "1.2.840.113549.1.9.1"),
    ("email", "1.2.840.113549.1.9.1"),
    ("S", "2.5.4.8"),
    ("givenName", "2.5.4.42"),
    ("surname", "2.5.4.4"),
    ("userid", "0.9.2342.19200300.100.1.1"),
    ("domainComponent", "0.9.2342.19200300.100.1.25"),
    ("commonName", "2.5.4.3"),
    ("organizationName", "2.5.4.10"),
    ("organizationalUnitName", "2.5.4.11"),
    ("countryName", "2.5.4.6"),
    ("localityName", "2.5.4.7"),
    ("stateOrProvinceName", "2.5.4.8"),
];

/// Longest DN string accepted from the configuration.
pub const MAX_DN_STRING: usize = 4096;

/// One attribute value: decoded text for the string types, the DER encoding
/// for anything else (printed as `#hex`, as RFC 4514 says).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttributeValue {
    /// A directory string (UTF8String, PrintableString, IA5String, TeletexString, BMPString).
    Text(String),
    /// The DER encoding of a value of another type.
    Binary(Vec<u8>),
}

/// An attribute type and value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attribute {
    /// The attribute type.
    pub oid: ObjectIdentifier,
    /// Its value.
    pub value: AttributeValue,
}

/// A distinguished name: RDNs in DER order (the most general first), each a
/// set of attributes in the order they were written (a certificate's DER
/// order, which SSSD's strings follow); multi-valued RDNs compare as sets.
#[derive(Debug, Clone, Default)]
pub struct Dn {
    rdns: Vec<Vec<Attribute>>,
}

impl Dn {
    /// The RDNs with each attribute set sorted, for comparison.
    fn canonical(&self) -> Vec<Vec<&Attribute>> {
        self.rdns
            .iter()
            .map(|rdn| {
                let mut sorted: Vec<&Attribute> = rdn.iter().collect();
                sorted.sort();
                sorted
            })
            .collect()
    }
}

impl PartialEq for Dn {
    fn eq(&self, other: &Self) -> bool {
        self.canonical() == other.canonical()
    }
}

impl Eq for Dn {}

impl std::hash::Hash for Dn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.canonical().hash(state);
    }
}

/// How to print a DN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnStyle {
    /// RFC 4514: the most specific RDN first (`CN=alice,O=Example`).
    Ldap,
    /// X.500 order: the most general RDN first (`O=Example,CN=alice`), as
    /// `openssl -nameopt` and Active Directory's `X509:<I>` show it.
    X500,
    /// X.500 order with Active Directory's attribute names (`S`, `E`).
    Ad,
    /// RFC 4514 order with Active Directory's attribute names.
    AdLdap,
}

/// Why a DN string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnError {
    /// Longer than [`MAX_DN_STRING`].
    #[error("DN is longer than {MAX_DN_STRING} bytes")]
    TooLong,
    /// An attribute without `=`.
    #[error("`{0}` is not TYPE=VALUE")]
    NoEquals(String),
    /// An attribute type that is neither a known name nor a dotted OID.
    #[error("unknown attribute type `{0}` (use a dotted OID for unlisted types)")]
    UnknownType(String),
    /// A bad backslash escape.
    #[error("bad escape in `{0}`")]
    BadEscape(String),
    /// A `#hex` value that is not hex.
    #[error("bad #hex value in `{0}`")]
    BadHex(String),
    /// An escape that produces invalid UTF-8.
    #[error("escapes in `{0}` do not form UTF-8")]
    NotUtf8(String),
}

fn oid_of_name(name: &str) -> Result<ObjectIdentifier, DnError> {
    let known = ATTRIBUTES
        .iter()
        .find(|(_, ldap, ad)| ldap.eq_ignore_ascii_case(name) || ad.eq_ignore_ascii_case(name))
        .map(|(oid, _, _)| *oid)
        .or_else(|| {
            ALIASES
                .iter()
                .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
                .map(|(_, oid)| *oid)
        });
    let text = known.unwrap_or(name);
    let text = text
        .strip_prefix("OID.")
        .or_else(|| text.strip_prefix("oid."))
        .unwrap_or(text);
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(DnError::UnknownType(name.to_owned()));
    }
    crate::oid::parse_oid(text).ok_or_else(|| DnError::UnknownType(name.to_owned()))
}

fn name_of_oid(oid: &ObjectIdentifier, ad: bool) -> String {
    let dotted = oid.to_string();
    ATTRIBUTES
        .iter()
        .find(|(known, _, _)| *known == dotted)
        .map(|(_, ldap, ad_name)| if ad { *ad_name } else { *ldap }.to_owned())
        .unwrap_or(dotted)
}

/// Decodes the string types used in names; `None` for anything else.
pub(crate) fn directory_string(value: &der::Any) -> Option<String> {
    let text = match value.tag() {
        Tag::Utf8String => Utf8StringRef::try_from(value).ok()?.as_str().to_owned(),
        Tag::PrintableString => PrintableStringRef::try_from(value)
            .ok()?
            .as_str()
            .to_owned(),
        Tag::Ia5String => Ia5StringRef::try_from(value).ok()?.as_str().to_owned(),
        Tag::TeletexString => TeletexStringRef::try_from(value).ok()?.as_str().to_owned(),
        Tag::BmpString => BmpString::from_ucs2(value.value()).ok()?.to_string(),
        _ => return None,
    };
    Some(text)
}

impl Dn {
    /// The structure of a certificate's name.
    pub fn from_name(name: &Name) -> Result<Self, der::Error> {
        let mut rdns = Vec::with_capacity(name.0.len());
        for rdn in name.0.iter() {
            let mut attributes = Vec::with_capacity(rdn.0.len());
            for atv in rdn.0.iter() {
                let value = match directory_string(&atv.value) {
                    Some(text) => AttributeValue::Text(text),
                    None => AttributeValue::Binary(atv.value.to_der()?),
                };
                attributes.push(Attribute {
                    oid: atv.oid,
                    value,
                });
            }
            rdns.push(attributes);
        }
        Ok(Self { rdns })
    }

    /// Parses an RFC 4514 string such as `CN=Alice\, Jr.,O=Example+OU=IT`.
    pub fn parse(text: &str) -> Result<Self, DnError> {
        if text.len() > MAX_DN_STRING {
            return Err(DnError::TooLong);
        }
        let mut rdns = Vec::new();
        if text.trim().is_empty() {
            return Ok(Self { rdns });
        }
        for rdn_text in split_unescaped(text, ',') {
            let mut attributes = Vec::new();
            for atv_text in split_unescaped(rdn_text, '+') {
                let (kind, value) = atv_text
                    .split_once('=')
                    .ok_or_else(|| DnError::NoEquals(atv_text.to_owned()))?;
                let oid = oid_of_name(kind.trim())?;
                let value = parse_value(value.trim_start(), atv_text)?;
                attributes.push(Attribute { oid, value });
            }
            rdns.push(attributes);
        }
        // RFC 4514 writes the most specific RDN first; DER order is the reverse.
        rdns.reverse();
        Ok(Self { rdns })
    }

    /// Number of RDNs.
    pub fn len(&self) -> usize {
        self.rdns.len()
    }

    /// Whether the DN has no RDN.
    pub fn is_empty(&self) -> bool {
        self.rdns.is_empty()
    }

    /// All text values of attribute `oid`, in DER order.
    pub fn values(&self, oid: &ObjectIdentifier) -> Vec<String> {
        self.rdns
            .iter()
            .flatten()
            .filter(|attribute| attribute.oid == *oid)
            .filter_map(|attribute| match &attribute.value {
                AttributeValue::Text(text) => Some(text.clone()),
                AttributeValue::Binary(_) => None,
            })
            .collect()
    }

    /// The DN printed in `style`, with RFC 4514 escaping.
    pub fn format(&self, style: DnStyle) -> String {
        let ad_names = matches!(style, DnStyle::Ad | DnStyle::AdLdap);
        let rdn_strings = self.rdns.iter().map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let name = name_of_oid(&attribute.oid, ad_names);
                    match &attribute.value {
                        AttributeValue::Text(text) => format!("{name}={}", escape_value(text)),
                        AttributeValue::Binary(der) => format!("{name}=#{}", hex::encode(der)),
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        });
        let mut parts: Vec<String> = rdn_strings.collect();
        if matches!(style, DnStyle::Ldap | DnStyle::AdLdap) {
            parts.reverse();
        }
        parts.join(",")
    }
}

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format(DnStyle::Ldap))
    }
}

/// Splits at `separator` where it is not escaped by a backslash.
fn split_unescaped(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (index, character) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if character == '\\' {
            escaped = true;
        } else if character == separator {
            parts.push(&text[start..index]);
            start = index + 1;
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_value(raw: &str, context: &str) -> Result<AttributeValue, DnError> {
    if let Some(hex_text) = raw.strip_prefix('#') {
        return hex::decode(hex_text.trim_end())
            .map(AttributeValue::Binary)
            .map_err(|_| DnError::BadHex(context.to_owned()));
    }
    // Unescaped trailing spaces are insignificant; an escaped one is kept.
    let mut end = raw.len();
    while end > 0 && raw.as_bytes()[end - 1] == b' ' {
        let backslashes = raw.as_bytes()[..end - 1]
            .iter()
            .rev()
            .take_while(|&&byte| byte == b'\\')
            .count();
        if backslashes % 2 == 1 {
            break;
        }
        end -= 1;
    }
    let raw = &raw[..end];
    let mut bytes = Vec::with_capacity(raw.len());
    let mut iter = raw.bytes().peekable();
    while let Some(byte) = iter.next() {
        if byte != b'\\' {
            bytes.push(byte);
            continue;
        }
        let next = iter
            .next()
            .ok_or_else(|| DnError::BadEscape(context.to_owned()))?;
        if next.is_ascii_hexdigit() {
            let low = iter
                .next()
                .filter(u8::is_ascii_hexdigit)
                .ok_or_else(|| DnError::BadEscape(context.to_owned()))?;
            let pair = [next, low];
            let decoded = std::str::from_utf8(&pair)
                .ok()
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| DnError::BadEscape(context.to_owned()))?;
            bytes.push(decoded);
        } else if b" \"#+,;<=>\\".contains(&next) {
            bytes.push(next);
        } else {
            return Err(DnError::BadEscape(context.to_owned()));
        }
    }
    String::from_utf8(bytes)
        .map(AttributeValue::Text)
        .map_err(|_| DnError::NotUtf8(context.to_owned()))
}

/// RFC 4514 section 2.4 escaping, plus hex escapes for control characters so
/// that a DN never carries a newline into a log line.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    let last = value.chars().count().saturating_sub(1);
    for (index, character) in value.chars().enumerate() {
        match character {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(character);
            }
            '#' if index == 0 => out.push_str("\\#"),
            ' ' if index == 0 || index == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buffer = [0u8; 4];
                for byte in c.encode_utf8(&mut buffer).bytes() {
                    out.push_str(&format!("\\{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn attribute_types_const_oid_cannot_hold_are_unknown_not_a_panic() {
        // Found by the dn fuzz target: Display panicked on the 2^30 arc.
        for text in [
            "1.2.840.1065786140=#0403616263",
            "1.2.840.4294967298=x",
            "1.2.840.128=x",
        ] {
            assert!(
                matches!(Dn::parse(text), Err(DnError::UnknownType(_))),
                "{text}"
            );
        }
    }

    use super::*;

    #[test]
    fn parse_reverses_into_der_order_and_prints_back() {
        let dn = Dn::parse("CN=alice,OU=IT,O=Example,C=FI").unwrap();
        assert_eq!(dn.len(), 4);
        assert_eq!(dn.format(DnStyle::Ldap), "CN=alice,OU=IT,O=Example,C=FI");
        assert_eq!(dn.format(DnStyle::X500), "C=FI,O=Example,OU=IT,CN=alice");
    }

    #[test]
    fn names_are_case_insensitive_and_oids_accepted() {
        assert_eq!(
            Dn::parse("cn=alice,o=Example").unwrap(),
            Dn::parse("2.5.4.3=alice, OID.2.5.4.10=Example").unwrap()
        );
    }

    #[test]
    fn values_compare_exactly() {
        assert_ne!(
            Dn::parse("CN=alice").unwrap(),
            Dn::parse("CN=Alice").unwrap()
        );
    }

    #[test]
    fn escaped_comma_is_one_value_not_two_rdns() {
        let escaped = Dn::parse("CN=Smith\\, John,O=Example").unwrap();
        assert_eq!(escaped.len(), 2);
        assert_eq!(escaped.values(&const_oid::db::rfc4519::CN), ["Smith, John"]);
        let hex = Dn::parse("CN=Smith\\2C John,O=Example").unwrap();
        assert_eq!(escaped, hex);
        assert_eq!(escaped.format(DnStyle::Ldap), "CN=Smith\\, John,O=Example");
    }

    #[test]
    fn multi_valued_rdn_is_a_set() {
        let one = Dn::parse("CN=alice+UID=a1,O=Example").unwrap();
        let other = Dn::parse("UID=a1+CN=alice,O=Example").unwrap();
        assert_eq!(one, other);
        assert_eq!(one.len(), 2);
        // Not the same as two separate RDNs.
        assert_ne!(one, Dn::parse("CN=alice,UID=a1,O=Example").unwrap());
    }

    #[test]
    fn a_cn_that_looks_like_a_dn_does_not_match_the_dn() {
        // pam_pkcs11's oneline matching hazard: the value carries separators.
        let tricky = Dn::parse("CN=x\\,O=Trusted").unwrap();
        assert_eq!(tricky.len(), 1);
        assert_ne!(tricky, Dn::parse("CN=x,O=Trusted").unwrap());
    }

    #[test]
    fn utf8_and_hex_escapes_and_spaces() {
        let dn = Dn::parse("CN=J\\C3\\BCrgen,O= Spaced\\ ").unwrap();
        assert_eq!(dn, Dn::parse("CN=Jürgen,O=Spaced\\ ").unwrap());
        assert_eq!(dn.format(DnStyle::Ldap), "CN=Jürgen,O=Spaced\\ ");
    }

    #[test]
    fn errors_never_panic() {
        for bad in ["CN", "CN=\\", "CN=\\Z", "FOO=bar", "CN=#zz", "CN=\\ff\\fe"] {
            assert!(Dn::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Dn::parse(&"a".repeat(5000)), Err(DnError::TooLong));
    }

    #[test]
    fn ad_style_uses_ad_names() {
        let dn = Dn::parse("CN=CA,ST=Uusimaa,DC=example,DC=com").unwrap();
        assert_eq!(dn.format(DnStyle::Ad), "DC=com,DC=example,S=Uusimaa,CN=CA");
    }

    #[test]
    fn control_characters_are_hex_escaped() {
        assert_eq!(escape_value("a\nb"), "a\\0Ab");
        assert_eq!(escape_value("#x "), "\\#x\\ ");
    }
}
