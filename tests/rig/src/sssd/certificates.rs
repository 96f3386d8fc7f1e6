//! The certificate corpus: odd DNs (every string type, escaped specials,
//! non-ASCII), every keyUsage bit, common EKUs and every SAN kind tessera
//! reads, deterministic for a seed.

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

use super::rng::Rng;

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
