//! SSSD as the reference for certmap semantics (issue 19).
//!
//! A deterministic corpus of certificates (odd DNs, every keyUsage bit,
//! common EKUs, every SAN kind tessera reads) and of SSSD `matchrule` and
//! `maprule` strings, and [`Sssctl`], which evaluates them with SSSD's own
//! libsss_certmap through `sssctl cert-eval-rule`, in a private mount
//! namespace so that the host's `/etc/sssd` and `/var/lib/sss` are never
//! touched.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use const_oid::ObjectIdentifier;
use der::asn1::{Any, BitString, Ia5String, OctetString, SetOfVec, UtcTime};
use der::{Encode, Tag};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::pkix::name::{GeneralName, OtherName};
use x509_cert::ext::pkix::{
    ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

/// splitmix64: small, seedable, good enough to vary a corpus.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// How an attribute value is encoded in the certificate.
#[derive(Clone, Copy)]
enum StringType {
    Utf8,
    Printable,
    Ia5,
    Bmp,
    /// T61String, written as Latin-1 bytes (what OpenSSL reads it as).
    T61,
}

// Attribute types of subjects: the common ones, ones whose SSSD (OpenSSL,
// NSS, AD) names differ from RFC 4514's, and one no library names.
const ATTRIBUTE_TYPES: &[&str] = &[
    "2.5.4.3",                    // CN
    "2.5.4.3",                    // CN (twice as likely)
    "2.5.4.11",                   // OU
    "2.5.4.11",                   // OU
    "2.5.4.10",                   // O
    "2.5.4.6",                    // C
    "2.5.4.8",                    // ST
    "2.5.4.7",                    // L
    "2.5.4.9",                    // street
    "2.5.4.4",                    // SN
    "2.5.4.42",                   // GN
    "2.5.4.43",                   // initials
    "2.5.4.5",                    // serialNumber
    "2.5.4.12",                   // title
    "2.5.4.13",                   // description
    "2.5.4.17",                   // postalCode
    "2.5.4.44",                   // generationQualifier
    "2.5.4.46",                   // dnQualifier
    "2.5.4.65",                   // pseudonym
    "2.5.4.97",                   // organizationIdentifier
    "0.9.2342.19200300.100.1.1",  // UID
    "0.9.2342.19200300.100.1.25", // DC
    "0.9.2342.19200300.100.1.3",  // mail
    "1.2.840.113549.1.9.1",       // emailAddress
    "1.3.6.1.4.1.99999.7",        // unnamed
];

// Values: plain, every character RFC 2253 escapes, leading and trailing
// specials, non-ASCII (Latin-1, beyond Latin-1, beyond the BMP) and long.
const VALUES: &[&str] = &[
    "alice",
    "Alice Smith",
    "bob",
    "IT",
    "Sales",
    "Example",
    "example",
    "test",
    "FI",
    "Smith, John",
    "a+b",
    "say \"hi\"",
    "back\\slash",
    "semi;colon",
    "<angle>",
    "x=y",
    "#hash",
    "#",
    " lead",
    "trail ",
    "Jürgen",
    "Ñoño Åström",
    "Zoë",
    "張三",
    "Ελένη",
    "emoji 😀",
    "alice@example.test",
    "a*b(c)d",
    "tab\there",
    "12345",
];

const ISSUERS: &[&[(&str, &str)]] = &[
    &[("2.5.4.10", "Example"), ("2.5.4.3", "Example CA")],
    &[
        ("0.9.2342.19200300.100.1.25", "test"),
        ("0.9.2342.19200300.100.1.25", "example"),
        ("2.5.4.3", "Example Issuing CA 2"),
    ],
    &[
        ("2.5.4.6", "FI"),
        ("2.5.4.8", "Uusimaa"),
        ("2.5.4.10", "Example, Inc."),
        ("2.5.4.11", "PKI"),
        ("2.5.4.3", "Example Root"),
    ],
    &[("2.5.4.3", "Ünïcode CA")],
];

fn oid(text: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(text)
}

fn encode_value(value: &str, encoding: StringType) -> Any {
    let printable = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b));
    let latin1: Option<Vec<u8>> = value
        .chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect();
    let (tag, bytes) = match encoding {
        StringType::Printable if printable => (Tag::PrintableString, value.as_bytes().to_vec()),
        StringType::Ia5 if value.is_ascii() => (Tag::Ia5String, value.as_bytes().to_vec()),
        StringType::T61 if latin1.is_some() => (Tag::TeletexString, latin1.unwrap_or_default()),
        StringType::Bmp if value.chars().all(|c| u32::from(c) <= 0xffff) => (
            Tag::BmpString,
            value.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        ),
        _ => (Tag::Utf8String, value.as_bytes().to_vec()),
    };
    Any::new(tag, bytes).expect("attribute value")
}

fn attribute(rng: &mut Rng, oid_text: &str, value: &str) -> AttributeTypeAndValue {
    let encoding = match oid_text {
        // The e-mail attribute is an IA5String; C and serialNumber are
        // PrintableStrings by definition.
        "1.2.840.113549.1.9.1" | "0.9.2342.19200300.100.1.25" => StringType::Ia5,
        "2.5.4.6" | "2.5.4.5" => StringType::Printable,
        _ => *rng.pick(&[
            StringType::Utf8,
            StringType::Utf8,
            StringType::Utf8,
            StringType::Printable,
            StringType::Bmp,
            StringType::T61,
        ]),
    };
    AttributeTypeAndValue {
        oid: oid(oid_text),
        value: encode_value(value, encoding),
    }
}

fn rdn(attributes: Vec<AttributeTypeAndValue>) -> RelativeDistinguishedName {
    // SetOfVec keeps DER order, as a certificate must.
    RelativeDistinguishedName(SetOfVec::try_from(attributes).expect("RDN set"))
}

fn fixed_name(parts: &[(&str, &str)]) -> Name {
    RdnSequence(
        parts
            .iter()
            .map(|(kind, value)| {
                rdn(vec![AttributeTypeAndValue {
                    oid: oid(kind),
                    value: encode_value(value, StringType::Utf8),
                }])
            })
            .collect(),
    )
}

fn random_value(rng: &mut Rng, oid_text: &str) -> String {
    match oid_text {
        "2.5.4.6" => rng.pick(&["FI", "DE", "US"]).to_string(),
        "2.5.4.5" => format!("{}", 1000 + rng.below(9000)),
        "1.2.840.113549.1.9.1" | "0.9.2342.19200300.100.1.3" => {
            format!("{}@example.test", rng.pick(&["alice", "bob", "carol"]))
        }
        "0.9.2342.19200300.100.1.25" => rng.pick(&["test", "example", "com"]).to_string(),
        _ if rng.chance(4) => {
            // A long value: DNs must not be cut at 255 characters.
            "L".repeat(120 + rng.below(200))
        }
        _ => rng.pick(VALUES).to_string(),
    }
}

fn random_subject(rng: &mut Rng) -> Name {
    let mut rdns = Vec::new();
    for _ in 0..1 + rng.below(7) {
        let kind = *rng.pick(ATTRIBUTE_TYPES);
        let value = random_value(rng, kind);
        let mut attributes = vec![attribute(rng, kind, &value)];
        if rng.chance(15) {
            // A multi-valued RDN (a set: the second type differs).
            let other = *rng.pick(ATTRIBUTE_TYPES);
            if other != kind {
                let value = random_value(rng, other);
                attributes.push(attribute(rng, other, &value));
            }
        }
        rdns.push(rdn(attributes));
    }
    RdnSequence(rdns)
}

const EKUS: &[&str] = &[
    "1.3.6.1.5.5.7.3.1",
    "1.3.6.1.5.5.7.3.2",
    "1.3.6.1.5.5.7.3.3",
    "1.3.6.1.5.5.7.3.4",
    "1.3.6.1.5.5.7.3.8",
    "1.3.6.1.5.5.7.3.9",
    "1.3.6.1.4.1.311.20.2.2",
    "1.3.6.1.5.2.3.4",
    "1.3.6.1.5.2.3.5",
    "1.3.6.1.4.1.99999.5",
];

const KEY_USAGES: &[KeyUsages] = &[
    KeyUsages::DigitalSignature,
    KeyUsages::NonRepudiation,
    KeyUsages::KeyEncipherment,
    KeyUsages::DataEncipherment,
    KeyUsages::KeyAgreement,
    KeyUsages::KeyCertSign,
    KeyUsages::CRLSign,
    KeyUsages::EncipherOnly,
    KeyUsages::DecipherOnly,
];

/// The OID of Microsoft's UPN otherName.
pub const UPN_OID: &str = "1.3.6.1.4.1.311.20.2.3";
/// The OID of the KRB5PrincipalName otherName.
pub const KRB5_OID: &str = "1.3.6.1.5.2.2";

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let length = content.len();
    if length < 0x80 {
        out.push(length as u8);
    } else if length < 0x100 {
        out.extend([0x81, length as u8]);
    } else {
        out.extend([0x82, (length >> 8) as u8, length as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// RFC 4556 KRB5PrincipalName, as DER.
fn krb5_principal(components: &[&str], realm: &str) -> Vec<u8> {
    let names: Vec<u8> = components
        .iter()
        .flat_map(|name| der_tlv(0x1b, name.as_bytes()))
        .collect();
    let principal_name = der_tlv(
        0x30,
        &[
            der_tlv(0xa0, &der_tlv(0x02, &[1])),
            der_tlv(0xa1, &der_tlv(0x30, &names)),
        ]
        .concat(),
    );
    der_tlv(
        0x30,
        &[
            der_tlv(0xa0, &der_tlv(0x1b, realm.as_bytes())),
            der_tlv(0xa1, &principal_name),
        ]
        .concat(),
    )
}

fn random_san(rng: &mut Rng) -> GeneralName {
    let user = *rng.pick(&["alice", "bob", "jürgen", "a.b", "root"]);
    let domain = *rng.pick(&["example.test", "EXAMPLE.TEST", "evil.test"]);
    let ia5 = |text: String| Ia5String::new(&text).expect("IA5");
    match rng.below(8) {
        0 => GeneralName::Rfc822Name(ia5(format!(
            "{}@{domain}",
            if user.is_ascii() { user } else { "juergen" }
        ))),
        1 => GeneralName::DnsName(ia5(format!(
            "{}.{domain}",
            rng.pick(&["host", "www", "a.b"])
        ))),
        2 => GeneralName::UniformResourceIdentifier(ia5(format!(
            "https://{domain}/{}",
            rng.pick(&["alice", "users/bob"])
        ))),
        3 => GeneralName::IpAddress(
            OctetString::new(vec![127, 0, 0, 1 + rng.below(200) as u8]).expect("IP"),
        ),
        4 | 5 => GeneralName::OtherName(OtherName {
            type_id: oid(UPN_OID),
            value: Any::new(
                Tag::Utf8String,
                format!("{user}@{}", domain.to_uppercase()).into_bytes(),
            )
            .expect("UPN"),
        }),
        6 => {
            let components: &[&str] = if rng.chance(30) {
                &["alice", "admin"]
            } else {
                &[user]
            };
            GeneralName::OtherName(OtherName {
                type_id: oid(KRB5_OID),
                value: <Any as der::Decode>::from_der(&krb5_principal(components, "EXAMPLE.TEST"))
                    .expect("KRB5PrincipalName"),
            })
        }
        _ => GeneralName::RegisteredId(oid("1.3.6.1.4.1.99999.9")),
    }
}

fn extension(id: &str, value: &impl Encode) -> Extension {
    Extension {
        extn_id: oid(id),
        critical: false,
        extn_value: OctetString::new(value.to_der().expect("extension")).expect("extension"),
    }
}

/// One certificate of the corpus: deterministic for `seed` (Ed25519, whose
/// keys and signatures are both deterministic).
pub fn certificate(seed: u64) -> Vec<u8> {
    use der::Decode as _;
    let mut rng = Rng::new(seed);
    let issuer = fixed_name(ISSUERS[rng.below(ISSUERS.len())]);
    let subject = random_subject(&mut rng);
    let mut extensions = Vec::new();
    if rng.chance(70) {
        let mut bits = None;
        for bit in KEY_USAGES {
            if rng.chance(35) || (bits.is_none() && *bit == KeyUsages::DecipherOnly) {
                bits = Some(match bits {
                    None => (*bit).into(),
                    Some(set) => set | *bit,
                });
            }
        }
        extensions.push(extension(
            "2.5.29.15",
            &KeyUsage(bits.expect("at least one bit")),
        ));
    }
    if rng.chance(75) {
        let ekus: Vec<ObjectIdentifier> = EKUS
            .iter()
            .filter(|_| rng.chance(30))
            .map(|text| oid(text))
            .collect();
        if !ekus.is_empty() {
            extensions.push(extension("2.5.29.37", &ExtendedKeyUsage(ekus)));
        }
    }
    if rng.chance(80) {
        let names = (0..1 + rng.below(4))
            .map(|_| random_san(&mut rng))
            .collect();
        extensions.push(extension("2.5.29.17", &SubjectAltName(names)));
    }
    if rng.chance(50) {
        let ski: Vec<u8> = (0..20).map(|_| rng.below(256) as u8).collect();
        extensions.push(extension(
            "2.5.29.14",
            &SubjectKeyIdentifier(OctetString::new(ski).expect("SKI")),
        ));
    }
    let mut serial: Vec<u8> = (0..1 + rng.below(16))
        .map(|_| rng.below(256) as u8)
        .collect();
    // Positive and non-zero: SSSD refuses other serials before any rule.
    serial[0] = 1 + (serial[0] % 0x7f);

    let mut key_seed = [0u8; 32];
    key_seed[..8].copy_from_slice(&seed.to_be_bytes());
    let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&key_seed).expect("key");
    let ed25519 = AlgorithmIdentifierOwned {
        oid: oid("1.3.101.112"),
        parameters: None,
    };
    let time = |year_seconds: u64| {
        Time::UtcTime(UtcTime::from_unix_duration(Duration::from_secs(year_seconds)).expect("time"))
    };
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial).expect("serial"),
        signature: ed25519.clone(),
        issuer,
        // 2025-01-01 to 2035-01-01.
        validity: Validity {
            not_before: time(1_735_689_600),
            not_after: time(2_051_222_400),
        },
        subject,
        subject_public_key_info: SubjectPublicKeyInfoOwned {
            algorithm: ed25519.clone(),
            subject_public_key: BitString::from_bytes(
                ring::signature::KeyPair::public_key(&key).as_ref(),
            )
            .expect("key bits"),
        },
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: (!extensions.is_empty()).then_some(extensions),
    };
    let tbs_der = tbs.to_der().expect("TBS");
    let signature = key.sign(&tbs_der);
    let certificate = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: ed25519,
        signature: BitString::from_bytes(signature.as_ref()).expect("signature"),
    };
    let der = certificate.to_der().expect("certificate");
    // Round trip: what was built is one certificate that parses back.
    Certificate::from_der(&der).expect("the corpus certificate parses");
    der
}

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

/// What SSSD said about one certificate and rule pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SssdAnswer {
    /// `Some(true)`: matches; `Some(false)`: does not; `None`: SSSD refused
    /// the rules (or failed otherwise, see `output`).
    pub matched: Option<bool>,
    /// The mapping filter, when the certificate matched and the filter
    /// could be built.
    pub filter: Option<String>,
    /// sssctl's whole output, for messages.
    pub output: String,
}

/// One evaluation for [`Sssctl::evaluate`].
#[derive(Debug, Clone)]
pub struct Query {
    /// Index of the certificate in the slice given to `evaluate`.
    pub certificate: usize,
    /// The matchrule.
    pub matchrule: String,
    /// The maprule.
    pub maprule: String,
}

/// `sssctl cert-eval-rule` in a private mount namespace: its own
/// `/etc/sssd/sssd.conf` (sssctl wants one domain), `/var/lib/sss` and
/// `/var/log/sssd`.
#[derive(Debug)]
pub struct Sssctl {
    dir: tempfile::TempDir,
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

impl Sssctl {
    /// Prepares the scratch configuration; panics when sssctl is missing
    /// (`scripts/setup` installs it).
    pub fn new() -> Self {
        assert!(
            Path::new("/usr/sbin/sssctl").exists(),
            "sssctl is missing: run scripts/setup (Debian's sssd-tools)"
        );
        let dir = tempfile::tempdir().expect("scratch directory");
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).expect("etc");
        let conf = etc.join("sssd.conf");
        std::fs::write(
            &conf,
            "[sssd]\nservices = nss\ndomains = local\n\n[domain/local]\nid_provider = files\n",
        )
        .expect("sssd.conf");
        std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("sssd.conf mode");
        Self { dir }
    }

    fn script(&self, certificates: usize, queries: &[(usize, &Query)]) -> PathBuf {
        let etc = self.dir.path().join("etc");
        let certs = self.dir.path().join("certs");
        let mut script = format!(
            "set -u\n\
             mount --bind {etc} /etc/sssd || exit 97\n\
             mount -t tmpfs tmpfs /var/lib/sss || exit 97\n\
             mkdir -p /var/lib/sss/db\n\
             mount -t tmpfs tmpfs /var/log/sssd || exit 97\n\
             q() {{ n=$1; shift; printf '\\n@@begin %s\\n' \"$n\"; sssctl cert-eval-rule \"$@\" 2>&1; printf '\\n@@end %s\\n' \"$n\"; }}\n",
            etc = shell_quote(&etc.to_string_lossy())
        );
        // One shell variable per certificate: base64 once, not per query.
        for index in 0..certificates {
            let _ = writeln!(
                script,
                "c{index}=$(base64 -w0 {})",
                shell_quote(&certs.join(format!("{index}.der")).to_string_lossy())
            );
        }
        for (index, query) in queries {
            let _ = writeln!(
                script,
                "q {index} \"$c{}\" --match={} --map={}",
                query.certificate,
                shell_quote(&query.matchrule),
                shell_quote(&query.maprule)
            );
        }
        let path = self
            .dir
            .path()
            .join(format!("batch-{}.sh", queries.first().map_or(0, |q| q.0)));
        std::fs::write(&path, script).expect("batch script");
        path
    }

    /// Evaluates every query, in two parallel batches (one namespace and one
    /// shell each; sssctl itself is one process per query, about 30 ms).
    pub fn evaluate(&self, certificates: &[Vec<u8>], queries: &[Query]) -> Vec<SssdAnswer> {
        let certs = self.dir.path().join("certs");
        std::fs::create_dir_all(&certs).expect("certs directory");
        for (index, der) in certificates.iter().enumerate() {
            std::fs::write(certs.join(format!("{index}.der")), der).expect("certificate file");
        }
        let indexed: Vec<(usize, &Query)> = queries.iter().enumerate().collect();
        let half = indexed.len().div_ceil(2).max(1);
        let outputs: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = indexed
                .chunks(half)
                .map(|chunk| {
                    let script = self.script(certificates.len(), chunk);
                    scope.spawn(move || {
                        let output = Command::new("unshare")
                            .args(["--mount", "--propagation", "private", "sh"])
                            .arg(&script)
                            // Unicode-aware regexes, as sssd runs under a UTF-8 locale.
                            .env("LC_ALL", "C.UTF-8")
                            .output()
                            .expect("unshare sssctl");
                        assert!(
                            output.status.success(),
                            "sssctl batch failed: {}\n{}",
                            output.status,
                            String::from_utf8_lossy(&output.stderr)
                        );
                        String::from_utf8_lossy(&output.stdout).into_owned()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("batch thread"))
                .collect()
        });
        let mut answers = vec![None; queries.len()];
        for output in outputs {
            parse_batch(&output, &mut answers);
        }
        answers
            .into_iter()
            .enumerate()
            .map(|(index, answer)| {
                answer.unwrap_or_else(|| panic!("sssctl gave no answer for query {index}"))
            })
            .collect()
    }
}

impl Default for Sssctl {
    fn default() -> Self {
        Self::new()
    }
}

fn parse_batch(output: &str, answers: &mut [Option<SssdAnswer>]) {
    let mut rest = output;
    while let Some(start) = rest.find("\n@@begin ") {
        let after = &rest[start + "\n@@begin ".len()..];
        let (number, body) = after.split_once('\n').expect("query number");
        let index: usize = number.trim().parse().expect("query number");
        let end_marker = format!("\n@@end {index}\n");
        let end = body.find(&end_marker).expect("end of query output");
        let text = &body[..end];
        rest = &body[end + end_marker.len() - 1..];
        let matched = if text.contains("Certificate matches rule.") {
            Some(true)
        } else if text.contains("Certificate does not match rule.") {
            Some(false)
        } else {
            None
        };
        let filter = text
            .split_once("Mapping filter:\n\n    ")
            .map(|(_, tail)| tail.strip_suffix("\n\n").unwrap_or(tail).to_owned());
        answers[index] = Some(SssdAnswer {
            matched,
            filter,
            output: text.to_owned(),
        });
    }
}

/// The PAM service of the pam_sss stack [`SssdDaemon::start`] writes.
pub const PAM_SSS_SERVICE: &str = "ref-pam-sss";

/// What [`SssdDaemon::start`] needs: one token, one user, their CA.
#[derive(Debug)]
pub struct SssdLogin<'a> {
    /// Scratch directory for sssd's configuration and logs.
    pub dir: &'a Path,
    /// The CA that issued the user's certificate (PEM).
    pub ca_pem: &'a Path,
    /// The token's label (`p11_uri = pkcs11:token=<label>`).
    pub token_label: &'a str,
    /// The user, a local user of the `files` domain, and the CN of their certificate.
    pub user: &'a str,
    /// The name of sssd's one domain.
    pub domain: &'a str,
    /// The keys of its `[domain/…]` section, e.g. [`files_domain`]'s.
    pub domain_keys: String,
    /// The PAM directory the pam_sss service file goes to.
    pub confdir: &'a Path,
    /// Other PAM services that may use certificate authentication (the
    /// bench also runs each stack under the rig's own service name).
    pub also_allowed: &'a [&'a str],
    /// Environment for sssd, which its p11_child inherits (`SOFTHSM2_CONF`,
    /// `OPENSC_CONF`).
    pub env: Vec<(String, std::ffi::OsString)>,
}

/// sssd with `pam_cert_auth`, the smart-card login RHEL, Fedora and Ubuntu
/// document. It runs in a mount namespace of its own, made by `unshare`,
/// where `/etc/sssd`, `/var/lib/sss`, `/var/log/sssd` and `/run` are the
/// rig's: the host's are never touched, and the mounts go when sssd does.
/// PAM clients reach it through [`SssdDaemon::enter`].
#[derive(Debug)]
pub struct SssdDaemon {
    child: std::process::Child,
}

/// Whether sssd and pam_sss are installed (`scripts/setup` installs them).
pub fn sssd_installed() -> bool {
    Path::new("/usr/sbin/sssd").exists()
        && Path::new("/lib/x86_64-linux-gnu/security/pam_sss.so").exists()
}

impl SssdDaemon {
    /// Writes `sssd.conf` (a `files` domain, a certmap rule for the user),
    /// starts `sssd -i` in its namespace and waits for its PAM responder;
    /// writes the [`PAM_SSS_SERVICE`] stack.
    pub fn start(login: &SssdLogin<'_>) -> Self {
        let (user, domain) = (login.user, login.domain);
        Self::start_with_certmap(
            login,
            &format!(
                "[certmap/{domain}/{user}]\nmatchrule = <SUBJECT>.*CN={user}.*\nmaprule = ({user})\n"
            ),
        )
    }

    /// Like [`SssdDaemon::start`], with `certmap` (sssd.conf sections) as
    /// the domain's certificate mapping rules.
    pub fn start_with_certmap(login: &SssdLogin<'_>, certmap: &str) -> Self {
        let etc = login.dir.join("etc");
        std::fs::create_dir_all(&etc).expect("sssd etc");
        let conf = etc.join("sssd.conf");
        let allowed: Vec<String> = std::iter::once(PAM_SSS_SERVICE)
            .chain(login.also_allowed.iter().copied())
            .map(|service| format!("+{service}"))
            .collect();
        std::fs::write(&conf, sssd_conf(login, &allowed.join(", "), certmap)).expect("sssd.conf");
        std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("sssd.conf mode");
        let logs = login.dir.join("log");
        std::fs::create_dir_all(&logs).expect("sssd logs");
        // A private /run too, for sssd's pid file (so that several can run),
        // keeping pcscd's socket directory, which p11_child may need.
        let pcscd = login.dir.join("pcscd-mount");
        let script = format!(
            "set -e\n\
             if [ -d /run/pcscd ]; then mkdir -p {pcscd}; mount --bind /run/pcscd {pcscd}; fi\n\
             mount -t tmpfs tmpfs /run\n\
             if mountpoint -q {pcscd}; then mkdir /run/pcscd; mount --move {pcscd} /run/pcscd; fi\n\
             mount --bind {etc} /etc/sssd\n\
             mount -t tmpfs tmpfs /var/lib/sss\n\
             mkdir -p /var/lib/sss/db /var/lib/sss/pipes/private /var/lib/sss/mc /var/lib/sss/pubconf /var/lib/sss/gpo_cache\n\
             mount --bind {logs} /var/log/sssd\n\
             exec sssd -i --logger=files\n",
            pcscd = shell_quote(&pcscd.to_string_lossy()),
            etc = shell_quote(&etc.to_string_lossy()),
            logs = shell_quote(&logs.to_string_lossy()),
        );
        // unshare and sh exec, so the child's pid is sssd's.
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .envs(login.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start sssd");
        let mut daemon = Self { child };
        let socket = format!("/proc/{}/root/var/lib/sss/pipes/pam", daemon.child.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            // The socket, as seen in sssd's namespace.
            let ready = Command::new("nsenter")
                .args(daemon.enter())
                .args(["test", "-S", "/var/lib/sss/pipes/pam"])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                break;
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("sssd exited ({status}); see {}", logs.display());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sssd's PAM responder ({socket}) did not start; see {}",
                logs.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::write(
            login.confdir.join(PAM_SSS_SERVICE),
            "auth required pam_sss.so require_cert_auth\naccount required pam_permit.so\n",
        )
        .expect("pam_sss service");
        daemon
    }

    /// `nsenter` arguments that put a command in sssd's mount namespace
    /// (`nsenter <these> command…`), where pam_sss finds its socket.
    pub fn enter(&self) -> Vec<String> {
        vec![
            "--target".to_owned(),
            self.child.id().to_string(),
            "--mount".to_owned(),
        ]
    }
}

/// A `files` domain of local users from `passwd` and `group`.
pub fn files_domain(passwd: &Path, group: &Path) -> String {
    format!(
        "id_provider = files\npasswd_files = {}\ngroup_files = {}\n",
        passwd.display(),
        group.display()
    )
}

fn sssd_conf(login: &SssdLogin<'_>, allowed: &str, certmap: &str) -> String {
    format!(
        "[sssd]\nservices = nss, pam\ndomains = {domain}\ncertificate_verification = no_ocsp\n\n\
         [pam]\npam_cert_auth = True\npam_cert_db_path = {ca}\n\
         pam_p11_allowed_services = {allowed}\np11_uri = pkcs11:token={label}\n\n\
         [domain/{domain}]\n{keys}\n\
         {certmap}",
        ca = login.ca_pem.display(),
        label = login.token_label,
        domain = login.domain,
        keys = login.domain_keys,
    )
}

impl Drop for SssdDaemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
