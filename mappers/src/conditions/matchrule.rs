//! SSSD's certificate matching rules (sss-certmap(5) `matchrule`), with
//! SSSD's own semantics: tests/rig/tests/sssd.rs evaluates a generated
//! corpus of certificates and rules with tessera and with SSSD's
//! libsss_certmap and requires the same answers.
//!
//! What SSSD does, and so what this does:
//! - an optional `KRB5:` (or empty `:`) type prefix, then `&&` (every test
//!   must hold; the default) or `||` (one suffices);
//! - a component's value runs to the next `<`, whatever follows it, and may
//!   not be empty;
//! - `<SUBJECT>` and `<ISSUER>` regexes (unanchored) run over the DN string
//!   SSSD builds ([`Dn::format_sssd`]), not over RFC 4514;
//! - `<KU>` holds when every listed bit is set, and always when the
//!   certificate has no keyUsage extension (X.509's certificate match);
//! - `<EKU>` lists are one test per OID: all must be present under `&&`, one
//!   under `||`;
//! - `<SAN…>` holds when the certificate has at least one name of that kind
//!   and **every** one matches; `<SAN>` is `<SAN:Principal>` (UPNs and
//!   Kerberos principals); kind names are case-insensitive and may be
//!   abbreviated (`<SAN:rfc>`), the first kind in SSSD's order winning;
//!   `<SAN:1.2.3>` matches otherNames of that type by their DER value.

use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use regex::Regex;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

use super::names::{eku_oid, key_usage_name, oid_name};
use super::pattern::regex;
use crate::certificate::CertificateFields;
use crate::dn::{Dn, DnStyle};

/// Longest matchrule accepted.
pub const MAX_MATCHRULE_LEN: usize = 4096;

/// SAN kinds in SSSD's order, which decides what an abbreviation means.
const SAN_KINDS: &[(&str, Option<SanKind>)] = &[
    ("otherName", None),
    ("rfc822Name", Some(SanKind::Email)),
    ("dNSName", Some(SanKind::Dns)),
    ("x400Address", None),
    ("directoryName", Some(SanKind::DirectoryName)),
    ("ediPartyName", None),
    ("uniformResourceIdentifier", Some(SanKind::Uri)),
    ("iPAddress", None),
    ("registeredID", Some(SanKind::RegisteredId)),
    ("pkinitSAN", Some(SanKind::Pkinit)),
    ("ntPrincipalName", Some(SanKind::Upn)),
    ("Principal", Some(SanKind::Principal)),
    ("stringOtherName", None),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum SanKind {
    Email,
    Dns,
    DirectoryName,
    Uri,
    RegisteredId,
    Pkinit,
    Upn,
    Principal,
    /// `<SAN:OID>`: otherNames of this type, by the DER of their value.
    OtherName(ObjectIdentifier),
}

/// One `<KIND>value` component.
#[derive(Debug, Clone)]
enum Component {
    Subject(Regex),
    Issuer(Regex),
    KeyUsage(Vec<&'static str>),
    Eku(Vec<ObjectIdentifier>),
    San(SanKind, Regex),
}

/// An SSSD certificate matching rule (sss-certmap(5)).
#[derive(Debug, Clone)]
pub struct MatchRule {
    source: String,
    any: bool,
    components: Vec<Component>,
}

/// The certificate as SSSD's rules see it.
struct SssdView {
    subject: String,
    issuer: String,
    sans: Vec<(SanKind, Vec<u8>)>,
}

impl SssdView {
    fn new(fields: &CertificateFields) -> Self {
        Self {
            subject: fields.subject_dn.format_sssd(DnStyle::Ldap),
            issuer: fields.issuer_dn.format_sssd(DnStyle::Ldap),
            sans: sans(fields),
        }
    }

    /// The values of the names of `kind`.
    fn values<'a>(&'a self, kind: &'a SanKind) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.sans
            .iter()
            .filter(move |(found, _)| {
                found == kind
                    || (*kind == SanKind::Principal
                        && matches!(found, SanKind::Upn | SanKind::Pkinit))
            })
            .map(|(_, value)| value.as_slice())
    }
}

/// The subjectAltNames a matchrule can test, as the strings SSSD tests:
/// principals as tessera read them, the other kinds from the DER (the e-mail
/// addresses in `fields.emails` include the subject's, which SSSD's
/// rfc822Name does not).
fn sans(fields: &CertificateFields) -> Vec<(SanKind, Vec<u8>)> {
    let mut out: Vec<(SanKind, Vec<u8>)> = fields
        .upns
        .iter()
        .map(|upn| (SanKind::Upn, upn.as_bytes().to_vec()))
        .chain(
            fields
                .krb_principals
                .iter()
                .map(|principal| (SanKind::Pkinit, principal.as_bytes().to_vec())),
        )
        .collect();
    let Ok(certificate) = Certificate::from_der(&fields.der) else {
        return out;
    };
    let extensions = certificate.tbs_certificate.extensions.unwrap_or_default();
    for extension in extensions {
        if extension.extn_id != const_oid::db::rfc5912::ID_CE_SUBJECT_ALT_NAME {
            continue;
        }
        let Ok(names) = SubjectAltName::from_der(extension.extn_value.as_bytes()) else {
            continue;
        };
        for name in names.0 {
            let text = |kind: SanKind, value: &str| (kind, value.as_bytes().to_vec());
            match name {
                GeneralName::Rfc822Name(value) => out.push(text(SanKind::Email, value.as_str())),
                GeneralName::DnsName(value) => out.push(text(SanKind::Dns, value.as_str())),
                GeneralName::UniformResourceIdentifier(value) => {
                    out.push(text(SanKind::Uri, value.as_str()))
                }
                GeneralName::RegisteredId(oid) => {
                    out.push(text(SanKind::RegisteredId, &oid.to_string()))
                }
                GeneralName::DirectoryName(name) => {
                    if let Ok(dn) = Dn::from_name(&name) {
                        out.push(text(SanKind::DirectoryName, &dn.format_sssd(DnStyle::Ldap)));
                    }
                }
                GeneralName::OtherName(other) => {
                    if let Ok(value) = other.value.to_der() {
                        out.push((SanKind::OtherName(other.type_id), value));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// `is_dotted_decimal` as SSSD has it: digits and dots, at least one dot,
/// starting and ending with a digit.
fn looks_like_oid(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_digit())
        && text.ends_with(|c: char| c.is_ascii_digit())
        && text.contains('.')
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn preview(text: &str) -> String {
    text.chars().take(32).collect()
}

impl MatchRule {
    /// Parses a matchrule; errors say what is wrong, never panic.
    pub fn parse(source: &str) -> Result<Self, String> {
        if source.len() > MAX_MATCHRULE_LEN {
            return Err(format!("longer than {MAX_MATCHRULE_LEN} bytes"));
        }
        let mut rest = source;
        // A type prefix: what precedes the first `:` when it is all digits
        // and upper-case letters (so never `<SAN:…`).
        if let Some((prefix, after)) = source.split_once(':') {
            if prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            {
                if !prefix.is_empty() && prefix != "KRB5" {
                    return Err(format!(
                        "rule type `{prefix}:` is not supported; SSSD knows KRB5: only"
                    ));
                }
                rest = after;
            }
        }
        let any = if let Some(after) = rest.strip_prefix("||") {
            rest = after;
            true
        } else {
            rest = rest.strip_prefix("&&").unwrap_or(rest);
            false
        };
        let mut components = Vec::new();
        while !rest.is_empty() {
            let body = rest
                .strip_prefix('<')
                .ok_or_else(|| format!("expected `<KIND>` at `{}`", preview(rest)))?;
            let (kind, after) = [
                ("ISSUER>", "ISSUER"),
                ("SUBJECT>", "SUBJECT"),
                ("KU>", "KU"),
                ("EKU>", "EKU"),
                ("SAN>", "SAN"),
                ("SAN:", "SAN:"),
            ]
            .iter()
            .find_map(|(prefix, kind)| body.strip_prefix(prefix).map(|after| (*kind, after)))
            .ok_or_else(|| {
                format!(
                    "unknown component at `<{}`; known: <SUBJECT>, <ISSUER>, <KU>, <EKU>, <SAN>, <SAN:kind>",
                    preview(body)
                )
            })?;
            let (san, after) = if kind == "SAN:" {
                let (option, after) = after
                    .split_once('>')
                    .ok_or_else(|| format!("unclosed `<SAN:` at `{}`", preview(rest)))?;
                (Some(san_kind(option)?), after)
            } else {
                (None, after)
            };
            // The value runs to the next `<`, as in SSSD: regexes cannot hold one.
            let end = after.find('<').unwrap_or(after.len());
            let value = &after[..end];
            rest = &after[end..];
            if value.is_empty() {
                return Err(format!("<{kind}> has no value"));
            }
            components.push(match (kind, san) {
                ("SUBJECT", _) => Component::Subject(component_regex(kind, value)?),
                ("ISSUER", _) => Component::Issuer(component_regex(kind, value)?),
                ("KU", _) => Component::KeyUsage(
                    list(value)
                        .map(|name| key_usage_name("matchrule", name).map_err(|e| e.to_string()))
                        .collect::<Result<_, _>>()?,
                ),
                ("EKU", _) => {
                    let oids: Vec<ObjectIdentifier> = list(value)
                        .map(|name| eku_oid("matchrule", name).map_err(|e| e.to_string()))
                        .collect::<Result<_, _>>()?;
                    if oids.is_empty() {
                        return Err("<EKU> lists no extended key usage".to_owned());
                    }
                    Component::Eku(oids)
                }
                (_, san) => Component::San(
                    san.unwrap_or(SanKind::Principal),
                    component_regex("SAN", value)?,
                ),
            });
        }
        if components.is_empty() {
            // SSSD accepts such a rule and it never matches; refuse it.
            return Err("no component; e.g. <ISSUER>^CN=Example CA$<EKU>msScLogin".to_owned());
        }
        Ok(Self {
            source: source.to_owned(),
            any,
            components,
        })
    }

    /// The rule as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the certificate matches the rule.
    pub fn matches(&self, fields: &CertificateFields) -> bool {
        self.evaluate(fields).0
    }

    /// Whether the certificate matches, and what each component saw.
    pub(super) fn evaluate(&self, fields: &CertificateFields) -> (bool, String) {
        let view = SssdView::new(fields);
        // One entry per test: an EKU list is one test per OID.
        let mut tests: Vec<bool> = Vec::new();
        let mut seen = Vec::new();
        for component in &self.components {
            let (name, passed, saw) = match component {
                Component::Subject(re) => {
                    ("SUBJECT", re.is_match(&view.subject), view.subject.clone())
                }
                Component::Issuer(re) => ("ISSUER", re.is_match(&view.issuer), view.issuer.clone()),
                Component::KeyUsage(bits) => match &fields.key_usage {
                    // No keyUsage extension: every usage is allowed.
                    None => ("KU", true, "no keyUsage (all usages)".to_owned()),
                    Some(present) => (
                        "KU",
                        bits.iter().all(|bit| present.contains(bit)),
                        present.join(","),
                    ),
                },
                Component::Eku(oids) => {
                    let results: Vec<bool> =
                        oids.iter().map(|oid| fields.eku.contains(oid)).collect();
                    let passed = if self.any {
                        results.iter().any(|&r| r)
                    } else {
                        results.iter().all(|&r| r)
                    };
                    tests.extend(&results);
                    seen.push(format!(
                        "<EKU> {} on {:?}",
                        if passed { "ok" } else { "failed" },
                        fields
                            .eku
                            .iter()
                            .map(oid_name)
                            .collect::<Vec<_>>()
                            .join(",")
                    ));
                    continue;
                }
                Component::San(kind, re) => {
                    let values: Vec<&[u8]> = view.values(kind).collect();
                    // Every name of the kind must match, and there must be one.
                    let passed = !values.is_empty()
                        && values.iter().all(|value| san_matches(kind, re, value));
                    let saw = values
                        .iter()
                        .map(|value| String::from_utf8_lossy(value).into_owned())
                        .collect::<Vec<_>>()
                        .join(",");
                    ("SAN", passed, saw)
                }
            };
            tests.push(passed);
            seen.push(format!(
                "<{name}> {} on {saw:?}",
                if passed { "ok" } else { "failed" }
            ));
        }
        let passed = if self.any {
            tests.iter().any(|&t| t)
        } else {
            tests.iter().all(|&t| t)
        };
        (passed, seen.join("; "))
    }
}

fn san_matches(kind: &SanKind, re: &Regex, value: &[u8]) -> bool {
    match kind {
        // SSSD reads the DER as a C string: up to the first NUL byte.
        SanKind::OtherName(_) => {
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            std::str::from_utf8(&value[..end]).is_ok_and(|text| re.is_match(text))
        }
        _ => std::str::from_utf8(value).is_ok_and(|text| re.is_match(text)),
    }
}

fn component_regex(kind: &str, value: &str) -> Result<Regex, String> {
    regex(kind, value, false).map_err(|error| error.to_string())
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|v| !v.is_empty())
}

/// `<SAN:option>`: a kind name, case-insensitive, or the start of one; empty
/// is Principal; a dotted OID is an otherName of that type.
fn san_kind(option: &str) -> Result<SanKind, String> {
    if option.is_empty() {
        return Ok(SanKind::Principal);
    }
    let found = SAN_KINDS.iter().find(|(name, _)| {
        option.len() <= name.len() && name[..option.len()].eq_ignore_ascii_case(option)
    });
    match found {
        Some((_, Some(kind))) => Ok(kind.clone()),
        Some((name, None)) => Err(format!(
            "<SAN:{option}> ({name}) is not supported; supported: rfc822Name, dNSName, directoryName, uniformResourceIdentifier, registeredID, pkinitSAN, ntPrincipalName, Principal, or an otherName OID"
        )),
        None if looks_like_oid(option) => crate::oid::parse_oid(option)
            .map(SanKind::OtherName)
            .ok_or_else(|| format!("<SAN:{option}>: not a valid OID")),
        None => Err(format!("unknown SAN kind <SAN:{option}>")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
        OtherNameValue, SanType,
    };

    /// A certificate with `subject` (type, value) entries, `sans`, key usages
    /// (`None`: no extension) and EKUs.
    fn certificate(
        subject: &[(DnType, &str)],
        sans: Vec<SanType>,
        key_usages: Option<Vec<KeyUsagePurpose>>,
        ekus: Vec<ExtendedKeyUsagePurpose>,
    ) -> CertificateFields {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.subject_alt_names = sans;
        params.key_usages = key_usages.unwrap_or_default();
        params.extended_key_usages = ekus;
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        CertificateFields::from_der(&der).unwrap()
    }

    fn upn(value: &str) -> SanType {
        SanType::OtherName((
            vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
            OtherNameValue::Utf8String(value.to_owned()),
        ))
    }

    fn email(value: &str) -> SanType {
        SanType::Rfc822Name(value.try_into().unwrap())
    }

    fn matches(rule: &str, fields: &CertificateFields) -> bool {
        MatchRule::parse(rule)
            .unwrap_or_else(|error| panic!("{rule}: {error}"))
            .matches(fields)
    }

    #[test]
    fn without_a_key_usage_extension_every_usage_matches() {
        let none = certificate(&[(DnType::CommonName, "a")], vec![], None, vec![]);
        assert!(matches("<KU>keyCertSign,decipherOnly", &none));
        let some = certificate(
            &[(DnType::CommonName, "a")],
            vec![],
            Some(vec![KeyUsagePurpose::DigitalSignature]),
            vec![],
        );
        assert!(matches("<KU>digitalSignature", &some));
        assert!(!matches("<KU>digitalSignature,keyCertSign", &some));
    }

    #[test]
    fn an_eku_list_under_or_needs_one_of_its_oids() {
        let fields = certificate(
            &[(DnType::CommonName, "a")],
            vec![],
            None,
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        assert!(!matches("<EKU>clientAuth,serverAuth", &fields));
        assert!(matches("||<EKU>clientAuth,serverAuth", &fields));
        assert!(!matches("||<EKU>codeSigning,serverAuth", &fields));
    }

    #[test]
    fn a_san_component_needs_every_name_of_its_kind_to_match() {
        let two = certificate(
            &[(DnType::CommonName, "a")],
            vec![upn("alice@EXAMPLE.TEST"), upn("mallory@EVIL.TEST")],
            None,
            vec![],
        );
        assert!(!matches("<SAN:ntPrincipalName>@EXAMPLE\\.TEST$", &two));
        assert!(!matches("<SAN>^alice@", &two));
        assert!(matches("<SAN>@[A-Z]+\\.TEST$", &two));
        // No name of the kind: no match, whatever the regex.
        assert!(!matches("<SAN:dNSName>.*", &two));
    }

    #[test]
    fn rfc822name_is_the_san_not_the_subjects_email_attribute() {
        let subject_only = certificate(
            &[
                (DnType::CommonName, "a"),
                (
                    DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
                    "a@example.test",
                ),
            ],
            vec![],
            None,
            vec![],
        );
        assert!(!matches("<SAN:rfc822Name>.*", &subject_only));
        assert!(matches("<SUBJECT>E=a@example\\.test", &subject_only));
        let san = certificate(
            &[(DnType::CommonName, "a")],
            vec![email("a@example.test")],
            None,
            vec![],
        );
        assert!(matches("<SAN:rfc822Name>^a@example\\.test$", &san));
    }

    #[test]
    fn san_kinds_are_case_insensitive_prefixes_and_oids() {
        let fields = certificate(
            &[(DnType::CommonName, "a")],
            vec![email("a@example.test"), upn("alice@EXAMPLE.TEST")],
            None,
            vec![],
        );
        assert!(matches("<SAN:RFC822NAME>^a@", &fields));
        assert!(matches("<SAN:rfc>^a@", &fields));
        assert!(matches("<SAN:ntprincipal>^alice@", &fields));
        // The otherName's DER value: UTF8String tag and length, then the text.
        assert!(matches(
            "<SAN:1.3.6.1.4.1.311.20.2.3>alice@EXAMPLE",
            &fields
        ));
        assert!(!matches("<SAN:1.3.6.1.4.1.311.20.2.3>^alice", &fields));
        for unsupported in [
            "<SAN:otherName>AAAA",
            "<SAN:iPAddress>.",
            "<SAN:x4>x",
            "<SAN:foo>x",
        ] {
            assert!(MatchRule::parse(unsupported).is_err(), "{unsupported}");
        }
    }

    #[test]
    fn subject_regexes_run_over_the_string_sssd_builds() {
        let fields = certificate(
            &[
                (DnType::OrganizationName, "Example, Inc."),
                (DnType::CustomDnType(vec![2, 5, 4, 42]), "Jürgen"),
                (DnType::CommonName, "#1"),
            ],
            vec![],
            None,
            vec![],
        );
        // SSSD: CN=\#1,givenName=J\C3\BCrgen,O=Example\, Inc.
        assert!(matches(
            "<SUBJECT>^CN=\\\\#1,givenName=J\\\\C3\\\\BCrgen,O=Example\\\\, Inc\\.$",
            &fields
        ));
        assert!(!matches("<SUBJECT>GN=", &fields));
        assert!(!matches("<SUBJECT>Jürgen", &fields));
    }

    #[test]
    fn values_end_at_any_angle_bracket_and_may_not_be_empty() {
        for refused in [
            "<SUBJECT>a<b",
            "<KU>",
            "<SUBJECT><ISSUER>x",
            "<EKU>,",
            "&&",
            "",
        ] {
            assert!(MatchRule::parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn the_krb5_type_prefix_is_read() {
        let fields = certificate(&[(DnType::CommonName, "a")], vec![], None, vec![]);
        assert!(matches("KRB5:<SUBJECT>^CN=a$", &fields));
        assert!(matches(":||<SUBJECT>^x<SUBJECT>^CN=a$", &fields));
        assert!(MatchRule::parse("LDAP:<SUBJECT>a").is_err());
    }

    #[test]
    fn a_matchrule_over_4_kib_is_refused() {
        let rule = |length: usize| format!("<SUBJECT>^CN={}$", "a".repeat(length));
        let fixed = rule(0).len();
        assert!(MatchRule::parse(&rule(MAX_MATCHRULE_LEN - fixed)).is_ok());
        let error = MatchRule::parse(&rule(MAX_MATCHRULE_LEN - fixed + 1)).unwrap_err();
        assert_eq!(error, format!("longer than {MAX_MATCHRULE_LEN} bytes"));
    }
}
