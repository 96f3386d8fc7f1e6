//! DNs as SSSD's libsss_certmap prints them, for `matchrule` `<SUBJECT>` and
//! `<ISSUER>` regexes and for `{subject_dn}`/`{issuer_dn}` in maprules.
//!
//! SSSD takes OpenSSL's flat list of name entries (a multi-valued RDN becomes
//! one entry per attribute, in DER order), prints each value with OpenSSL's
//! RFC 2253 string flags (every byte of a non-ASCII character as `\XX`, other
//! string types converted to UTF-8 first, values of unknown types as `#` and
//! the upper-case hex of their DER), names each attribute with OpenSSL's
//! short name turned into NSS's, or Active Directory's, and joins the entries
//! with `,`, in LDAP order (the most specific first) or X.500 order. These
//! strings were checked against SSSD 2.8.2 by `tests/rig/tests/sssd.rs`.

use super::{AttributeValue, Dn, DnStyle};

/// (OID, SSSD's name, SSSD's Active Directory name). SSSD's name is
/// OpenSSL's short name, except where SSSD maps it to NSS's.
const NAMES: &[(&str, &str, &str)] = &[
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
    ("2.5.4.13", "OID.2.5.4.13", "Description"),
    ("2.5.4.15", "businessCategory", "OID.2.5.4.15"),
    ("2.5.4.16", "postalAddress", "OID.2.5.4.16"),
    ("2.5.4.17", "postalCode", "PostalCode"),
    ("2.5.4.18", "postOfficeBox", "POBox"),
    ("2.5.4.20", "telephoneNumber", "telephoneNumber"),
    ("2.5.4.41", "name", "OID.2.5.4.41"),
    ("2.5.4.42", "givenName", "G"),
    ("2.5.4.43", "initials", "I"),
    ("2.5.4.44", "generationQualifier", "OID.2.5.4.44"),
    ("2.5.4.45", "x500UniqueIdentifier", "x500UniqueIdentifier"),
    ("2.5.4.46", "dnQualifier", "dnQualifier"),
    ("2.5.4.51", "houseIdentifier", "OID.2.5.4.51"),
    ("2.5.4.65", "pseudonym", "OID.2.5.4.65"),
    ("2.5.4.72", "role", "role"),
    (
        "2.5.4.97",
        "organizationIdentifier",
        "organizationIdentifier",
    ),
    (
        "0.9.2342.19200300.100.1.1",
        "UID",
        "OID.0.9.2342.19200300.100.1.1",
    ),
    ("0.9.2342.19200300.100.1.25", "DC", "DC"),
    // SSSD's AD name has a comma where a dot belongs; printed as SSSD does.
    (
        "0.9.2342.19200300.100.1.3",
        "MAIL",
        "OID,0.9.2342.19200300.100.1.3",
    ),
    ("1.2.840.113549.1.9.1", "E", "E"),
    (
        "1.2.840.113549.1.9.2",
        "unstructuredName",
        "unstructuredName",
    ),
    ("1.3.6.1.4.1.311.60.2.1.1", "jurisdictionL", "jurisdictionL"),
    (
        "1.3.6.1.4.1.311.60.2.1.2",
        "jurisdictionST",
        "jurisdictionST",
    ),
    ("1.3.6.1.4.1.311.60.2.1.3", "jurisdictionC", "jurisdictionC"),
];

/// What OpenSSL names a type it has no name for.
const UNNAMED: &str = "UNDEF";

/// One value as OpenSSL's `ASN1_STRING_print_ex(…, ASN1_STRFLGS_RFC2253)`
/// prints it.
fn value(value: &AttributeValue) -> String {
    let characters: Vec<u32> = match value {
        AttributeValue::Text(text) => text.chars().map(u32::from).collect(),
        AttributeValue::Binary(der) => match string_characters(der) {
            Some(characters) => characters,
            None => return format!("#{}", hex::encode_upper(der)),
        },
    };
    let mut out = String::new();
    let last = characters.len().saturating_sub(1);
    for (index, &character) in characters.iter().enumerate() {
        let Some(ascii) = u8::try_from(character).ok().filter(u8::is_ascii) else {
            let mut buffer = [0u8; 4];
            let encoded = char::from_u32(character)
                .unwrap_or(char::REPLACEMENT_CHARACTER)
                .encode_utf8(&mut buffer);
            for byte in encoded.bytes() {
                out.push_str(&format!("\\{byte:02X}"));
            }
            continue;
        };
        // OpenSSL marks the last character before the first, so a value of
        // one character is only "last": a lone `#` is not escaped.
        let is_last = index == last;
        let is_first = index == 0 && !is_last;
        match ascii {
            b'"' | b'+' | b',' | b';' | b'<' | b'>' => {
                out.push('\\');
                out.push(char::from(ascii));
            }
            b'#' if is_first => out.push_str("\\#"),
            b' ' if is_first || is_last => out.push_str("\\ "),
            b'\\' => out.push_str("\\\\"),
            byte if byte < 0x20 || byte == 0x7f => out.push_str(&format!("\\{byte:02X}")),
            byte => out.push(char::from(byte)),
        }
    }
    out
}

/// The characters of a DER string value of a type OpenSSL prints as text:
/// one byte per character for the 8-bit types (T61String as Latin-1), two
/// for BMPString, four for UniversalString; UTF8String byte by byte, as
/// OpenSSL does. `None` for any other type.
fn string_characters(der: &[u8]) -> Option<Vec<u32>> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let content = if first < 0x80 {
        rest.get(..usize::from(first))?
    } else {
        let count = usize::from(first & 0x7f);
        let length = rest
            .get(..count)?
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest.get(count..count + length)?
    };
    let width = match tag {
        // UTF8String, NumericString, PrintableString, T61String, IA5String,
        // UTCTime, GeneralizedTime, VisibleString.
        0x0c | 0x12 | 0x13 | 0x14 | 0x16 | 0x17 | 0x18 | 0x1a => 1,
        0x1e => 2,
        0x1c => 4,
        _ => return None,
    };
    if tag == 0x0c {
        // Not valid UTF-8 (or it would be Text): every byte as it is, the
        // high ones escaped.
        return Some(content.iter().map(|&b| u32::from(b)).collect());
    }
    if content.len() % width != 0 {
        return None;
    }
    Some(
        content
            .chunks(width)
            .map(|unit| unit.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
            .collect(),
    )
}

impl Dn {
    /// The DN as SSSD prints it: `Ldap` is SSSD's default (`nss`,
    /// `nss_ldap`), `X500` its `nss_x500`, `Ad` its `ad`/`ad_x500`, `AdLdap`
    /// its `ad_ldap`.
    pub fn format_sssd(&self, style: DnStyle) -> String {
        let ad = matches!(style, DnStyle::Ad | DnStyle::AdLdap);
        let mut entries: Vec<String> = self
            .rdns
            .iter()
            .flatten()
            .map(|attribute| {
                let dotted = attribute.oid.to_string();
                let name = NAMES
                    .iter()
                    .find(|(oid, _, _)| *oid == dotted)
                    .map_or(UNNAMED, |(_, nss, ad_name)| if ad { ad_name } else { nss });
                format!("{name}={}", value(&attribute.value))
            })
            .collect();
        if matches!(style, DnStyle::Ldap | DnStyle::AdLdap) {
            entries.reverse();
        }
        entries.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_as_openssl_does_for_sssd() {
        let text = |s: &str| value(&AttributeValue::Text(s.to_owned()));
        assert_eq!(text("Smith, John"), "Smith\\, John");
        assert_eq!(text("a+b;c<d>e\"f"), "a\\+b\\;c\\<d\\>e\\\"f");
        assert_eq!(text("back\\slash"), "back\\\\slash");
        // `=` is not escaped; `#` only first, space first and last.
        assert_eq!(text("x=y"), "x=y");
        assert_eq!(text("#hash#"), "\\#hash#");
        assert_eq!(text("#"), "#");
        assert_eq!(text(" a b "), "\\ a b\\ ");
        assert_eq!(text(" "), "\\ ");
        assert_eq!(text("tab\there"), "tab\\09here");
        assert_eq!(text("Jürgen"), "J\\C3\\BCrgen");
        assert_eq!(text("😀"), "\\F0\\9F\\98\\80");
    }

    #[test]
    fn string_types_are_read_as_openssl_reads_them() {
        let binary = |der: &[u8]| value(&AttributeValue::Binary(der.to_vec()));
        // T61String as Latin-1.
        assert_eq!(binary(&[0x14, 0x03, b'Z', b'o', 0xeb]), "Zo\\C3\\AB");
        // A PrintableString with `@`, which is not in its alphabet.
        assert_eq!(binary(&[0x13, 0x03, b'a', b'@', b'b']), "a@b");
        // Unknown types are dumped as DER.
        assert_eq!(binary(&[0x02, 0x01, 0x2a]), "#02012A");
    }

    #[test]
    fn multi_valued_rdns_are_flattened_in_der_order() {
        let dn = Dn::parse("CN=alice+UID=a1,OU=IT,O=Example").unwrap();
        assert_eq!(
            dn.format_sssd(DnStyle::Ldap),
            "UID=a1,CN=alice,OU=IT,O=Example"
        );
        assert_eq!(
            dn.format_sssd(DnStyle::X500),
            "O=Example,OU=IT,CN=alice,UID=a1"
        );
        assert_eq!(
            dn.format_sssd(DnStyle::Ad),
            "O=Example,OU=IT,CN=alice,OID.0.9.2342.19200300.100.1.1=a1"
        );
    }

    #[test]
    fn names_are_sssds() {
        let dn = Dn::parse(
            "GN=A,2.5.4.13=d,emailAddress=a@b,0.9.2342.19200300.100.1.3=m,ST=U,1.3.6.1.4.1.99999.7=x",
        )
        .unwrap();
        assert_eq!(
            dn.format_sssd(DnStyle::Ldap),
            "givenName=A,OID.2.5.4.13=d,E=a@b,MAIL=m,ST=U,UNDEF=x"
        );
        assert_eq!(
            dn.format_sssd(DnStyle::AdLdap),
            "G=A,Description=d,E=a@b,OID,0.9.2342.19200300.100.1.3=m,S=U,UNDEF=x"
        );
    }
}
