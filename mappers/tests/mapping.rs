//! Fields, templates and rules over certificates made by the tests.

// Test helpers outside #[test] functions panic on purpose when the fixture is wrong.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use tessera_mappers::{
    map_certificate, Account, Accounts, CertificateFields, Dn, MapFileError, Mapping,
    MappingContext, MappingInput, OpenError, Outcome, PublicKey, RefusalReason, Rule, RuleConfig,
    RuleError, SourceError, TokenInfo, Verdict,
};

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
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

fn oid(dotted: &str) -> Vec<u8> {
    tlv(
        0x06,
        const_oid::ObjectIdentifier::new_unwrap(dotted).as_bytes(),
    )
}

/// otherName inside GeneralNames: [0] { type-id, [0] EXPLICIT value }.
fn other_name(type_id: &str, value: &[u8]) -> Vec<u8> {
    tlv(0xA0, &[oid(type_id), tlv(0xA0, value)].concat())
}

fn krb5_principal(components: &[&str], realm: &str) -> Vec<u8> {
    let names: Vec<u8> = components
        .iter()
        .flat_map(|c| tlv(0x1B, c.as_bytes()))
        .collect();
    let principal = tlv(
        0x30,
        &[tlv(0xA0, &tlv(0x02, &[1])), tlv(0xA1, &tlv(0x30, &names))].concat(),
    );
    tlv(
        0x30,
        &[
            tlv(0xA0, &tlv(0x1B, realm.as_bytes())),
            tlv(0xA1, &principal),
        ]
        .concat(),
    )
}

#[derive(Default)]
struct Spec {
    dn: Vec<(DnType, &'static str)>,
    emails: Vec<&'static str>,
    upns: Vec<&'static str>,
    krb: Option<(Vec<&'static str>, &'static str)>,
    sid: Option<&'static str>,
    serial: Vec<u8>,
    ski: Vec<u8>,
    policies: Vec<&'static str>,
}

fn certificate(spec: Spec) -> CertificateFields {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    for (kind, value) in &spec.dn {
        name.push(kind.clone(), *value);
    }
    params.distinguished_name = name;
    if !spec.serial.is_empty() {
        params.serial_number = Some(SerialNumber::from_slice(&spec.serial));
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // One hand-made SAN so that UPN, e-mail and KRB5 names sit together.
    let mut san = Vec::new();
    for email in &spec.emails {
        san.extend(tlv(0x81, email.as_bytes()));
    }
    for upn in &spec.upns {
        san.extend(other_name(
            "1.3.6.1.4.1.311.20.2.3",
            &tlv(0x0C, upn.as_bytes()),
        ));
    }
    if let Some((components, realm)) = &spec.krb {
        san.extend(other_name(
            "1.3.6.1.5.2.2",
            &krb5_principal(components, realm),
        ));
    }
    let mut extension = |oid: &[u64], content: Vec<u8>| {
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(oid, content));
    };
    if !san.is_empty() {
        extension(&[2, 5, 29, 17], tlv(0x30, &san));
    }
    if let Some(sid) = spec.sid {
        let value = tlv(
            0x30,
            &other_name("1.3.6.1.4.1.311.25.2.1", &tlv(0x04, sid.as_bytes())),
        );
        extension(&[1, 3, 6, 1, 4, 1, 311, 25, 2], value);
    }
    if !spec.ski.is_empty() {
        extension(&[2, 5, 29, 14], tlv(0x04, &spec.ski));
    }
    if !spec.policies.is_empty() {
        let infos: Vec<u8> = spec
            .policies
            .iter()
            .flat_map(|p| tlv(0x30, &oid(p)))
            .collect();
        extension(&[2, 5, 29, 32], tlv(0x30, &infos));
    }
    let der = params.self_signed(&key).unwrap().der().to_vec();
    CertificateFields::from_der(&der).unwrap()
}

fn alice() -> CertificateFields {
    certificate(Spec {
        dn: vec![
            (DnType::OrganizationName, "Example"),
            (DnType::CommonName, "alice"),
        ],
        emails: vec!["alice@example.test"],
        upns: vec!["alice@EXAMPLE.TEST"],
        krb: Some((vec!["alice"], "EXAMPLE.TEST")),
        sid: Some("S-1-5-21-3623811015-3361044348-30300820-1013"),
        serial: vec![0x00, 0x9a, 0x01, 0x02],
        ski: vec![0xAB, 0xCD, 0xEF],
        policies: vec!["1.3.6.1.4.1.99999.1"],
    })
}

#[test]
fn every_field_is_extracted() {
    let fields = alice();
    assert_eq!(fields.subject, "CN=alice,O=Example");
    assert_eq!(fields.common_names, ["alice"]);
    assert_eq!(fields.emails, ["alice@example.test"]);
    assert_eq!(fields.upns, ["alice@EXAMPLE.TEST"]);
    assert_eq!(fields.krb_principals, ["alice@EXAMPLE.TEST"]);
    assert_eq!(
        fields.sid.as_deref(),
        Some("S-1-5-21-3623811015-3361044348-30300820-1013")
    );
    assert_eq!(fields.serial, [0x9a, 0x01, 0x02]);
    assert_eq!(fields.ski.as_deref(), Some(&[0xAB, 0xCD, 0xEF][..]));
    assert_eq!(fields.san_kinds, ["email", "upn", "krb_principal"]);
    assert_eq!(fields.key_usage.as_deref(), Some(&["digitalSignature"][..]));
    assert_eq!(fields.policies[0].to_string(), "1.3.6.1.4.1.99999.1");
    assert!(matches!(fields.public_key, Some(PublicKey::P256(_))));
}

fn expand(fields: &CertificateFields, template: &str) -> Vec<String> {
    tessera_mappers::Template::parse(template)
        .unwrap()
        .expand(fields, None)
        .unwrap()
}

#[test]
fn every_template_field_expands() {
    let fields = alice();
    let cases = [
        ("{cn}", "alice"),
        ("{email}", "alice@example.test"),
        ("{upn}", "alice@EXAMPLE.TEST"),
        ("{krb_principal}", "alice@EXAMPLE.TEST"),
        ("{subject}", "CN=alice,O=Example"),
        ("{subject!x500}", "O=Example,CN=alice"),
        ("{serial}", "9a0102"),
        ("{serial_dec}", "10092802"),
        ("{serial_reversed}", "02019a"),
        ("{serial!hex_ur}", "02019A"),
        ("{ski}", "abcdef"),
        ("{sid}", "S-1-5-21-3623811015-3361044348-30300820-1013"),
        ("X509:<SKI>{ski!hex_u}", "X509:<SKI>ABCDEF"),
    ];
    for (template, expected) in cases {
        assert_eq!(expand(&fields, template), [expected], "{template}");
    }
    assert_eq!(expand(&fields, "{sha256}")[0].len(), 64);
    assert_eq!(expand(&fields, "{sha1}")[0].len(), 40);
    assert_eq!(expand(&fields, "{pubkey_sha1}")[0].len(), 40);
    assert!(expand(&fields, "{cert!base64}")[0].starts_with("MII"));
}

#[test]
fn odd_dns_utf8_escaped_commas_and_long_names() {
    let long = Box::leak("x".repeat(300).into_boxed_str());
    let fields = certificate(Spec {
        dn: vec![
            (DnType::OrganizationName, "Example, Inc."),
            (DnType::OrganizationalUnitName, long),
            (DnType::CommonName, "Jürgen Müller"),
        ],
        ..Spec::default()
    });
    let expected = format!("CN=Jürgen Müller,OU={long},O=Example\\, Inc.");
    assert_eq!(fields.subject, expected);
    assert!(fields.subject.len() > 255, "no truncation at 255");
    assert_eq!(fields.subject_dn, Dn::parse(&expected).unwrap());
    assert_ne!(
        fields.subject_dn,
        Dn::parse(&format!("CN=Jürgen Müller,OU={long},O=Example,O=Inc.")).unwrap()
    );
    assert_eq!(fields.common_names, ["Jürgen Müller"]);
}

#[test]
fn multi_valued_rdn_from_a_real_name() {
    use std::str::FromStr;
    let name = x509_cert::name::Name::from_str("CN=alice+UID=a1,O=Example").unwrap();
    let dn = Dn::from_name(&name).unwrap();
    assert_eq!(dn.len(), 2);
    assert_eq!(dn, Dn::parse("UID=a1+CN=alice,O=Example").unwrap());
}

/// A fake NSS: name -> account. GECOS is not even representable here; the
/// end-to-end test checks it against nss_wrapper.
struct FakeAccounts(HashMap<String, Account>);

impl FakeAccounts {
    fn with(names: &[&str]) -> Self {
        Self(
            names
                .iter()
                .enumerate()
                .map(|(index, name)| {
                    (
                        name.to_string(),
                        Account {
                            name: name.to_string(),
                            uid: 20000 + index as u32,
                            home: PathBuf::from(format!("/nonexistent/{name}")),
                        },
                    )
                })
                .collect(),
        )
    }
}

impl Accounts for FakeAccounts {
    fn lookup(&self, name: &str) -> std::io::Result<Option<Account>> {
        Ok(self.0.get(name).cloned())
    }
}

fn open_plain(path: &Path) -> Result<std::fs::File, OpenError> {
    Ok(std::fs::File::open(path)?)
}

#[derive(serde::Deserialize)]
struct Tables {
    rule: Vec<RuleConfig>,
}

fn configs(tables: &str) -> Vec<RuleConfig> {
    toml::from_str::<Tables>(tables).unwrap().rule
}

fn rules(tables: &str) -> Vec<Rule> {
    configs(tables)
        .iter()
        .enumerate()
        .map(|(index, config)| Rule::compile(index, config).unwrap())
        .collect()
}

fn map(
    rules: &[Rule],
    fields: &CertificateFields,
    accounts: &FakeAccounts,
    user: Option<&str>,
) -> Mapping {
    let context = MappingContext::new(accounts, &open_plain, None, None, false, 0);
    let token = TokenInfo {
        label: "alice-token".into(),
        serial: "0042".into(),
    };
    map_certificate(
        rules,
        &MappingInput {
            certificate: Some(fields),
            key: fields.public_key.as_ref(),
            token: &token,
            requested_user: user,
        },
        &context,
    )
}

/// Alice's certificate under the rules in `tables`, where only alice exists.
fn map_alice(tables: &str) -> Mapping {
    map(
        &rules(tables),
        &alice(),
        &FakeAccounts::with(&["alice"]),
        None,
    )
}

/// A mapfile holding `text`, in a directory that lives as long as the guard.
fn mapfile(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("map");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

/// A `[[rule]]` table that looks `key` up in `file`.
fn mapfile_rule(file: &Path, key: &str) -> String {
    format!("[[rule]]\nmapfile = {file:?}\nkey = \"{key}\"\n")
}

#[test]
fn plain_cn_rule_still_works_exactly() {
    let mapping = map_alice("[[rule]]\nuser = \"{cn}\"");
    assert_eq!(mapping.users(), ["alice"]);
    assert_eq!(mapping.trace[0].rule, "rule 1");
}

#[test]
fn mapfile_hit_miss_and_never_the_key() {
    let fields = alice();
    let (_dir, file) = mapfile(&format!(
        "{} alice\nCN=bob,O=Example bob\n",
        fields.sha256_hex
    ));
    let accounts = FakeAccounts::with(&["alice", "bob", "CN=alice,O=Example"]);
    let mapping = map(
        &rules(&mapfile_rule(&file, "{sha256}")),
        &fields,
        &accounts,
        None,
    );
    assert_eq!(mapping.users(), ["alice"]);
    assert!(mapping.trace[0].lookups[0].result.contains("line 1"));

    // A miss is a miss: the key (the subject) exists as an account name
    // here, and still nothing maps.
    let mapping = map(
        &rules(&mapfile_rule(&file, "{subject}")),
        &fields,
        &accounts,
        None,
    );
    assert!(matches!(mapping.outcome, Outcome::NoMatch));
    assert_eq!(mapping.trace[0].lookups[0].result, "miss");
    assert!(matches!(mapping.trace[0].verdict, Verdict::NoMatch { .. }));
}

#[test]
fn broken_mapfile_stops_mapping_with_file_and_line() {
    let (_dir, file) = mapfile("good alice\nbroken\n");
    let mapping = map_alice(&format!(
        "{}[[rule]]\nuser = \"{{cn}}\"",
        mapfile_rule(&file, "{cn}")
    ));
    match &mapping.outcome {
        Outcome::Error {
            error: SourceError::MapFile(MapFileError::NotKeyAndUser { path, line: 2 }),
            ..
        } => assert_eq!(path, &file),
        other => panic!("{other:?}"),
    }
    assert_eq!(mapping.trace.len(), 1, "later rules are not tried");
}

#[test]
fn a_missing_mapfile_is_an_error_naming_it_not_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("absent.map");
    let mapping = map_alice(&mapfile_rule(&file, "{cn}"));
    assert!(
        matches!(
            &mapping.outcome,
            Outcome::Error {
                error: SourceError::MapFile(MapFileError::Open { path, .. }),
                    ..
            } if path == &file
        ),
        "{mapping:#?}"
    );
}

#[test]
fn email_domain_is_never_ignored() {
    let evil = certificate(Spec {
        dn: vec![(DnType::CommonName, "x")],
        emails: vec!["root@evil.test"],
        ..Spec::default()
    });
    let accounts = FakeAccounts::with(&["root"]);
    let rule = rules("[[rule]]\nuser = \"{email.local}\"\ndomain = \"example.test\"");
    assert!(matches!(
        map(&rule, &evil, &accounts, None).outcome,
        Outcome::NoMatch
    ));
    let config = &configs("[[rule]]\nuser = \"{email.local}\"")[0];
    assert!(matches!(
        Rule::compile(0, config),
        Err(RuleError::DomainRequired("user", _))
    ));
    let unused = &configs("[[rule]]\nuser = \"{cn}\"\ndomain = \"example.test\"")[0];
    assert_eq!(
        Rule::compile(0, unused).unwrap_err(),
        RuleError::DomainUnused("user")
    );
}

#[test]
fn several_users_from_one_rule_are_all_returned_for_the_choice() {
    let (_dir, file) = mapfile("alice alice\nalice alice-admin\n");
    let rule = rules(&mapfile_rule(&file, "{cn}"));
    let accounts = FakeAccounts::with(&["alice", "alice-admin"]);
    assert_eq!(
        map(&rule, &alice(), &accounts, None).users(),
        ["alice", "alice-admin"]
    );
    // With a requested user only that one remains.
    assert_eq!(
        map(&rule, &alice(), &accounts, Some("alice-admin")).users(),
        ["alice-admin"]
    );
}

#[test]
fn unknown_users_are_refused_and_the_next_rule_is_tried() {
    let mapping = map_alice(
        "[[rule]]\nuser = \"{upn}\"\n[[rule]]\nname = \"by cn\"\nuser = \"{cn}\"\nissuer = \"CN=alice,O=Example\"",
    );
    assert!(
        matches!(&mapping.trace[0].verdict, Verdict::Refused { refused } if matches!(refused[0].reason, RefusalReason::NoSuchUser)),
        "{mapping:#?}"
    );
    assert_eq!(mapping.users(), ["alice"]);
    let text = mapping
        .trace
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("ok   issuer = CN=alice,O=Example: saw CN=alice,O=Example"),
        "{text}"
    );
    assert!(text.contains("=> maps to alice"), "{text}");
}

#[test]
fn conditions_gate_the_rule_and_the_trace_shows_what_they_saw() {
    let mapping = map_alice(
        "[[rule]]\nuser = \"{cn}\"\neku = [\"msScLogin\"]\n[[rule]]\nuser = \"{cn}\"\ntoken_label = \"other\"\n[[rule]]\nuser = \"{cn}\"\nmatchrule = \"<SAN:ntPrincipalName>^alice@EXAMPLE\\\\.TEST$<EKU>clientAuth\"",
    );
    assert_eq!(mapping.trace.len(), 3);
    assert!(matches!(
        mapping.trace[0].verdict,
        Verdict::ConditionsFailed
    ));
    assert_eq!(mapping.trace[0].checks[0].saw, "clientAuth");
    assert_eq!(mapping.trace[1].checks[0].saw, "\"alice-token\"");
    assert_eq!(mapping.users(), ["alice"]);
}

#[test]
fn authorized_files_need_the_user_name() {
    let mapping = map_alice("[[rule]]\nauthorized_files = true");
    assert!(matches!(
        mapping.trace[0].verdict,
        Verdict::NotApplicable { .. }
    ));
}

#[test]
fn explain_serialises_to_json() {
    let mapping = map_alice("[[rule]]\nuser = \"{cn}\"");
    let json = serde_json::to_value(&mapping).unwrap();
    assert_eq!(json["outcome"]["result"], "matched");
    assert_eq!(json["trace"][0]["verdict"]["outcome"], "users");

    // A failed source keeps its JSON shape: a message and whether it was
    // unreachable, in the outcome and in the rule's verdict.
    let (_dir, file) = mapfile("broken\n");
    let mapping = map_alice(&mapfile_rule(&file, "{cn}"));
    let json = serde_json::to_value(&mapping).unwrap();
    let message = format!("{}:1: expected `<key> <user>`", file.display());
    assert_eq!(json["outcome"]["result"], "error");
    assert_eq!(json["outcome"]["message"], message.as_str());
    assert_eq!(json["outcome"]["unavailable"], false);
    let verdict = &json["trace"][0]["verdict"];
    assert_eq!(verdict["outcome"], "error");
    assert_eq!(verdict["message"], message.as_str());
    assert_eq!(verdict["unavailable"], false);
}
