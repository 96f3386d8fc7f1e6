//! The rule corpus: SSSD `matchrule` strings (fixed and generated) and the
//! `maprule` forms tessera accepts.

use std::fmt::Write as _;

use super::rng::Rng;

/// The fixed part of the matchrule corpus: every component kind, both
/// relations, SAN kinds by full, abbreviated and odd-cased names, and rules
/// that both sides must refuse.
pub const FIXED_MATCH_RULES: &[&str] = &[
    // Refused by both.
    "<SUBJECT>",
    "<FOO>x",
    "SUBJECT>x",
    "<SUBJECT>(",
    "<SUBJECT>[a",
    "<SUBJECT>a<b",
    "<ISSUER",
    "<KU>bogus",
    "<KU>",
    "<EKU>nope",
    "<SAN:foo>x",
    "FOO:<SUBJECT>x",
    "<subject>x",
    // Accepted by SSSD, refused by tessera (docs/mapping.md, "Differences
    // from SSSD"). Not `<EKU>,`: sssctl 2.8.2 crashes on it.
    "",
    "&&",
    "KRB5:",
    "<SAN:otherName>DAVhbGljZQ==",
    "<SAN:iPAddress>.",
    "<SAN:stringOtherName>.",
    "<EKU>01.3.6",
    "<EKU>1..3",
    // Type prefixes SSSD reads.
    "KRB5:<SUBJECT>.",
    ":<ISSUER>Example",
    "KRB5:||<KU>digitalSignature<EKU>clientAuth",
    // Key usage: names are case-insensitive, lists need every bit; a
    // certificate without the extension has every bit.
    "<KU>digitalSignature",
    "<KU>DIGITALSIGNATURE",
    "<KU>nonRepudiation",
    "<KU>keyEncipherment",
    "<KU>dataEncipherment",
    "<KU>keyAgreement",
    "<KU>keyCertSign",
    "<KU>cRLSign",
    "<KU>encipherOnly",
    "<KU>decipherOnly",
    "<KU>digitalSignature,keyEncipherment",
    "<KU> digitalSignature , nonRepudiation ",
    "<KU>,",
    "||<KU>keyCertSign,cRLSign",
    // EKU: names (case-insensitive) and OIDs; under || one OID suffices.
    "<EKU>clientAuth",
    "<EKU>CLIENTAUTH",
    "<EKU>serverAuth",
    "<EKU>codeSigning",
    "<EKU>emailProtection",
    "<EKU>timeStamping",
    "<EKU>OCSPSigning",
    "<EKU>msScLogin",
    "<EKU>pkinit",
    "<EKU>KPClientAuth",
    "<EKU>1.3.6.1.5.2.3.5",
    "<EKU>1.3.6.1.4.1.99999.5",
    "<EKU>1.3.6.1.5.5.7.3.2,1.3.6.1.4.1.311.20.2.2",
    "<EKU>clientAuth,msScLogin",
    "||<EKU>clientAuth,msScLogin",
    "||<EKU>serverAuth,codeSigning,timeStamping",
    "&&<EKU>clientAuth<KU>digitalSignature",
    // SAN kinds.
    "<SAN>alice",
    "<SAN>^alice@",
    "<SAN>.*",
    "<SAN:Principal>@EXAMPLE\\.TEST$",
    "<SAN:ntPrincipalName>^alice@EXAMPLE\\.TEST$",
    "<SAN:ntPrincipalName>.*",
    "<SAN:ntprincipalname>alice",
    "<SAN:pkinitSAN>.*",
    "<SAN:pkinitSAN>^alice/admin@",
    "<SAN:rfc822Name>.*",
    "<SAN:rfc822Name>@example\\.test$",
    "<SAN:RFC822NAME>alice",
    "<SAN:rfc>.",
    "<SAN:dNSName>.*",
    "<SAN:dNSName>^host\\.",
    "<SAN:dns>example",
    "<SAN:uniformResourceIdentifier>.*",
    "<SAN:uniformResourceIdentifier>^https://",
    "<SAN:uri>.*",
    "<SAN:registeredID>^1\\.3\\.6",
    "<SAN:>.*",
    // Relations.
    "&&<SUBJECT>CN=<ISSUER>Example",
    "||<SUBJECT>^nothing$<ISSUER>Example CA$",
    "||<SUBJECT>^nothing$<SAN:rfc822Name>^nothing$",
    "<ISSUER>^CN=Example CA,O=Example$<EKU>msScLogin",
    "<ISSUER>CN=Example Issuing CA 2,DC=example,DC=test",
    "<ISSUER>O=Example\\\\, Inc\\.",
    "<ISSUER>CN=\\\\C3\\\\9Cn\\\\C3\\\\AFcode CA",
    "<ISSUER>^CN=Example Root,OU=PKI,O=Example\\\\, Inc\\.,ST=Uusimaa,C=FI$",
];

// Fragments of subject regexes: attribute names as SSSD prints them (and
// as it does not), escaped specials and non-ASCII bytes, anchors, classes.
const SUBJECT_PATTERNS: &[&str] = &[
    "CN=",
    "^CN=",
    "^CN=alice",
    "^CN=alice,",
    "CN=alice$",
    "CN=Alice Smith",
    "OU=IT",
    "OU=Sales,OU=IT",
    "OU=[^,]*,OU=",
    "O=Example$",
    "O=Example",
    "C=FI",
    "ST=",
    "S=",
    "L=",
    "STREET=",
    "street=",
    "SN=",
    "GN=",
    "givenName=",
    "initials=",
    "serialNumber=",
    "SERIALNUMBER=",
    "title=",
    "OID\\.2\\.5\\.4\\.13=",
    "description=",
    "postalCode=",
    "generationQualifier=",
    "dnQualifier=",
    "pseudonym=",
    "organizationIdentifier=",
    "UID=",
    "DC=example",
    "DC=test$",
    "MAIL=",
    "mail=",
    "E=",
    "emailAddress=",
    "UNDEF=",
    "1\\.3\\.6\\.1\\.4\\.1\\.99999\\.7=",
    "Smith\\\\, John",
    "Smith, John",
    "a\\\\\\+b",
    "a\\+b",
    "\\\\\"hi\\\\\"",
    "back\\\\\\\\slash",
    "semi\\\\;colon",
    "\\\\<angle\\\\>",
    "x=y",
    "=\\\\#hash",
    "=#hash",
    "=#,",
    "=#$",
    "=\\\\ lead",
    "trail\\\\ ",
    "J\\\\C3\\\\BCrgen",
    "Jürgen",
    "J.rgen",
    "\\\\E5\\\\BC\\\\B5",
    "\\\\F0\\\\9F\\\\98\\\\80",
    "a\\*b\\(c\\)d",
    "tab\\\\09here",
    "tab\there",
    "L{200}",
    "L{300}",
    "=[0-9]+(,|$)",
    "[[:digit:]]{4}",
    "alice|bob",
    "(CN|UID)=bob",
    "^[^,]+$",
    "^$",
    "",
];

/// The matchrule corpus: [`FIXED_MATCH_RULES`], then `generated` random
/// combinations of subject, issuer, KU, EKU and SAN components.
pub fn match_rules(seed: u64, generated: usize) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut rules: Vec<String> = FIXED_MATCH_RULES.iter().map(|r| r.to_string()).collect();
    rules.extend(SUBJECT_PATTERNS.iter().map(|p| format!("<SUBJECT>{p}")));
    for _ in 0..generated {
        let mut rule = rng.pick(&["", "", "&&", "||"]).to_string();
        for _ in 0..1 + rng.below(3) {
            match rng.below(6) {
                0 | 1 => {
                    let pattern = rng.pick(SUBJECT_PATTERNS);
                    // An empty regex is an empty value: SSSD refuses it.
                    let pattern = if pattern.is_empty() { "." } else { pattern };
                    let _ = write!(rule, "<SUBJECT>{pattern}");
                }
                2 => {
                    let _ = write!(
                        rule,
                        "<ISSUER>{}",
                        rng.pick(&["Example", "^CN=Example CA", "DC=test$", "Root", "C=FI$"])
                    );
                }
                3 => {
                    let names = [
                        "digitalSignature",
                        "nonRepudiation",
                        "keyEncipherment",
                        "keyAgreement",
                        "keyCertSign",
                        "decipherOnly",
                    ];
                    let count = 1 + rng.below(2);
                    let list: Vec<&str> = (0..count).map(|_| *rng.pick(&names)).collect();
                    let _ = write!(rule, "<KU>{}", list.join(","));
                }
                4 => {
                    let names = [
                        "clientAuth",
                        "serverAuth",
                        "emailProtection",
                        "msScLogin",
                        "pkinit",
                        "1.3.6.1.5.2.3.5",
                        "1.3.6.1.4.1.99999.5",
                    ];
                    let count = 1 + rng.below(3);
                    let list: Vec<&str> = (0..count).map(|_| *rng.pick(&names)).collect();
                    let _ = write!(rule, "<EKU>{}", list.join(","));
                }
                _ => {
                    let kind = rng.pick(&[
                        "SAN>",
                        "SAN:Principal>",
                        "SAN:ntPrincipalName>",
                        "SAN:pkinitSAN>",
                        "SAN:rfc822Name>",
                        "SAN:dNSName>",
                        "SAN:uniformResourceIdentifier>",
                    ]);
                    let pattern = rng.pick(&[
                        "alice",
                        "^alice@",
                        "@EXAMPLE\\.TEST$",
                        "example\\.test",
                        "^j.rgen",
                        "jürgen",
                        "admin",
                        ".",
                    ]);
                    let _ = write!(rule, "<{kind}{pattern}");
                }
            }
        }
        rules.push(rule);
    }
    rules
}

/// SSSD maprule forms tessera accepts, each valid for SSSD as written
/// (`LDAPU1:` where SSSD needs it).
pub const MAP_RULES: &[&str] = &[
    "(userCertificate;binary={cert!bin})",
    "LDAP:(userCertificate;binary={cert!bin})",
    "(x={cert!base64})",
    "(x={subject_dn})",
    "(x={subject_dn!nss_ldap})",
    "(x={subject_dn!nss})",
    "(x={subject_dn!nss_x500})",
    "(x={subject_dn!ad})",
    "(x={subject_dn!ad_x500})",
    "(x={subject_dn!ad_ldap})",
    "(x={issuer_dn})",
    "(x={issuer_dn!nss_x500})",
    "LDAPU1:(altSecurityIdentities=X509:<I>{issuer_dn!ad_x500}<S>{subject_dn!ad_x500})",
    "LDAPU1:(altSecurityIdentities=X509:<I>{issuer_dn!ad_x500}<SR>{serial_number!hex_ur})",
    "LDAPU1:(x={serial_number})",
    "LDAPU1:(x={serial_number!hex_c})",
    "LDAPU1:(x={serial_number!HEX_UC})",
    "LDAPU1:(x={serial_number!dec})",
    "LDAPU1:(x={subject_key_id!hex_u})",
    "(|(mail={subject_rfc822_name})(uid={subject_rfc822_name.short_name}))",
    "(x={subject_nt_principal})",
    "(x={subject_nt_principal.short_name})",
    "(x={subject_pkinit_principal})",
    "(x={subject_pkinit_principal.short_name})",
    "(|(userPrincipalName={subject_principal})(samAccountName={subject_principal.short_name}))",
];
