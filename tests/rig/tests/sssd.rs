//! SSSD as the reference (issue 19): tessera's `matchrule` conditions and
//! SSSD-form templates, evaluated over a generated corpus by tessera and by
//! SSSD's own libsss_certmap (`sssctl cert-eval-rule`), must agree.
//!
//! The corpus is deterministic: `TESSERA_SSSD_SEED` (default 19) picks it
//! and `TESSERA_SSSD_CERTS` (default 40) sizes it; the default takes about a
//! minute on two cores. A longer run:
//!
//! ```sh
//! TESSERA_SSSD_CERTS=400 TESSERA_SSSD_SEED=7 cargo test -p tessera-testrig --test sssd -- --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;

use rcgen::ExtendedKeyUsagePurpose;
use tessera_mappers::{CertificateFields, MatchRule, Template};
use tessera_testrig::bins::artefact;
use tessera_testrig::login::{LoginRig, PIN};
use tessera_testrig::pki::UserCert;
use tessera_testrig::slapd::{LdapUser, Slapd, SlapdTls, BASE};
use tessera_testrig::softhsm::KeyType;
use tessera_testrig::sssd::{
    certificate, files_domain, match_rules, Query, Sssctl, SssdDaemon, SssdLogin, MAP_RULES,
    PAM_SSS_SERVICE,
};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|text| text.parse().unwrap_or_else(|_| panic!("{name}={text:?}")))
        .unwrap_or(default)
}

struct Corpus {
    seed: u64,
    certificates: Vec<Vec<u8>>,
    fields: Vec<CertificateFields>,
}

fn corpus() -> Corpus {
    let seed = env_number("TESSERA_SSSD_SEED", 19);
    let count = env_number("TESSERA_SSSD_CERTS", 40);
    let certificates: Vec<Vec<u8>> = (0..count)
        .map(|index| certificate(seed.wrapping_mul(1_000_003).wrapping_add(index)))
        .collect();
    let fields = certificates
        .iter()
        .map(|der| CertificateFields::from_der(der).expect("tessera reads the corpus certificate"))
        .collect();
    Corpus {
        seed,
        certificates,
        fields,
    }
}

/// Matchrules tessera refuses at load time that SSSD accepts, each named in
/// docs/mapping.md ("Differences from SSSD").
fn documented_refusal(rule: &str) -> Option<&'static str> {
    const REFUSED: &[(&str, &str)] = &[
        (
            "<SAN:otherName>",
            "SSSD matches a base64 blob inside the DER",
        ),
        (
            "<SAN:x400Address>",
            "SSSD matches a base64 blob inside the DER",
        ),
        (
            "<SAN:ediPartyName>",
            "SSSD matches a base64 blob inside the DER",
        ),
        ("<SAN:iPAddress>", "SSSD matches the raw address bytes"),
        ("<SAN:stringOtherName>", "never matches in SSSD"),
        ("<EKU>01.", "an OID that is not well-formed"),
        ("<EKU>1..", "an OID that is not well-formed"),
    ];
    if rule.is_empty() || rule == "&&" || rule == "||" || rule == "KRB5:" {
        return Some("a rule with no component");
    }
    REFUSED
        .iter()
        .find(|(prefix, _)| rule.starts_with(prefix))
        .map(|(_, why)| *why)
}

#[test]
fn matchrules_agree_with_sssd() {
    let corpus = corpus();
    let rules = match_rules(corpus.seed, 120);
    // Each certificate meets a window of the rule list that moves on from
    // one certificate to the next, so every rule meets several certificates.
    let per_certificate = 36.min(rules.len());
    let mut queries = Vec::new();
    for certificate in 0..corpus.certificates.len() {
        for offset in 0..per_certificate {
            queries.push(Query {
                certificate,
                matchrule: rules[(certificate * per_certificate + offset) % rules.len()].clone(),
                maprule: "(x={subject_dn})".to_owned(),
            });
        }
    }
    let answers = Sssctl::new().evaluate(&corpus.certificates, &queries);

    let mut report = String::new();
    let mut disagreements = 0;
    let mut matched = 0;
    let mut refused = 0;
    let mut documented_refusals = 0;
    for (query, answer) in queries.iter().zip(&answers) {
        let fields = &corpus.fields[query.certificate];
        let ours = MatchRule::parse(&query.matchrule).map(|rule| rule.matches(fields));
        let sssd = match answer.matched {
            Some(verdict) => Ok(verdict),
            None if answer
                .output
                .contains("Failed to add mapping and matching rules") =>
            {
                Err(())
            }
            None => panic!(
                "sssctl failed on certificate {}: {}",
                query.certificate, answer.output
            ),
        };
        matched += usize::from(sssd == Ok(true));
        refused += usize::from(sssd.is_err());
        let agree = match (&ours, &sssd) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(())) => true,
            (Err(_), Ok(_)) => {
                let documented = documented_refusal(&query.matchrule).is_some();
                documented_refusals += usize::from(documented);
                documented
            }
            (Ok(_), Err(())) => false,
        };
        if !agree {
            disagreements += 1;
            if disagreements <= 40 {
                let _ = writeln!(
                    report,
                    "certificate {} (subject {:?}) rule {:?}: tessera {:?}, SSSD {}",
                    query.certificate,
                    fields.subject,
                    query.matchrule,
                    ours,
                    answer.output.trim().replace('\n', " | ")
                );
            }
        }
    }
    eprintln!(
        "matchrules: {} evaluations ({} certificates, {} rules), SSSD matched {matched}, refused {refused}, {documented_refusals} documented refusals by tessera, {disagreements} disagreements",
        queries.len(),
        corpus.certificates.len(),
        rules.len()
    );
    assert_eq!(disagreements, 0, "tessera and SSSD disagree:\n{report}");
}

#[test]
fn maprules_render_what_sssd_renders() {
    let corpus = corpus();
    let mut queries = Vec::new();
    for certificate in 0..corpus.certificates.len() {
        for maprule in MAP_RULES {
            queries.push(Query {
                certificate,
                matchrule: "<SUBJECT>.*".to_owned(),
                maprule: (*maprule).to_owned(),
            });
        }
    }
    let answers = Sssctl::new().evaluate(&corpus.certificates, &queries);

    let mut report = String::new();
    let mut disagreements = 0;
    let mut rendered = 0;
    let mut several = 0;
    for (query, answer) in queries.iter().zip(&answers) {
        assert_eq!(answer.matched, Some(true), "{}", answer.output);
        let fields = &corpus.fields[query.certificate];
        // migrate drops these prefixes: tessera's templates are the LDAPU1 set.
        let source = query
            .maprule
            .strip_prefix("LDAPU1:")
            .or_else(|| query.maprule.strip_prefix("LDAP:"))
            .unwrap_or(&query.maprule);
        let template = Template::parse_ldap_filter(source)
            .unwrap_or_else(|error| panic!("tessera refuses {source:?}: {error}"));
        let ours = template.expand(fields, None).ok();
        let agree = match (&ours, &answer.filter) {
            (None, None) => true,
            // Several values (two UPNs): SSSD uses one, tessera offers
            // each (docs/mapping.md); SSSD's must be among them.
            (Some(values), Some(filter)) => {
                several += usize::from(values.len() > 1);
                values.contains(filter)
            }
            _ => false,
        };
        rendered += usize::from(answer.filter.is_some());
        if !agree {
            disagreements += 1;
            if disagreements <= 40 {
                let _ = writeln!(
                    report,
                    "certificate {} (subject {:?}) maprule {:?}:\n  tessera {:?}\n  SSSD    {:?}",
                    query.certificate, fields.subject, query.maprule, ours, answer.filter
                );
            }
        }
    }
    eprintln!(
        "maprules: {} evaluations, SSSD rendered {rendered}, {several} with several values, {disagreements} disagreements",
        queries.len()
    );
    assert_eq!(
        disagreements, 0,
        "tessera and SSSD render differently:\n{report}"
    );
}

/// sssd.conf's certmap for local users of the files domain `example.test`:
/// clientAuth certificates with an address in that domain log in as its
/// local part.
const FILES_CERTMAP: &str = "[certmap/example.test/mail]\n\
    matchrule = <EKU>clientAuth<SAN:rfc822Name>@example\\.test$\n\
    maprule = ({subject_rfc822_name.short_name})\n";

/// Logs in with the rig's one token through SSSD (running with `domain` and
/// `certmap`) and through tessera configured by `tessera migrate sssd` from
/// that same sssd.conf (its `[ldap]` section, if any, and its rules, which
/// must contain `expected`): (tessera's result and user, SSSD's).
fn both_stacks(
    rig: &mut LoginRig,
    token: &str,
    domain_keys: String,
    certmap: &str,
    expected: &[&str],
) -> [(String, Option<String>); 2] {
    let dir = rig.path().join("sssd");
    let ca = rig.ca_dir().join("root.pem");
    // p11_child sees removable slots only.
    let (key, conf) = rig.hsm.env();
    let removable = rig.path().join("softhsm2-removable.conf");
    std::fs::write(
        &removable,
        std::fs::read_to_string(conf)
            .unwrap()
            .replace("slots.removable = false", "slots.removable = true"),
    )
    .unwrap();
    let sssd = SssdDaemon::start_with_certmap(
        &SssdLogin {
            dir: &dir,
            ca_pem: &ca,
            token_label: token,
            user: "alice",
            domain: "example.test",
            domain_keys,
            confdir: &rig.confdir(),
            also_allowed: &[tessera_testrig::login::SERVICE],
            env: vec![(key.to_owned(), removable.into_os_string())],
        },
        certmap,
    );
    let migrated = tessera_testrig::run(
        std::process::Command::new(artefact("tessera"))
            .args(["migrate", "sssd"])
            .arg(dir.join("etc/sssd.conf")),
    );
    let migrated = String::from_utf8(migrated.stdout).unwrap();
    // The [ldap] section when there is one, then the rules.
    let start = migrated
        .find("\n[ldap]\n")
        .or_else(|| migrated.find("[[rule]]"))
        .expect(&migrated);
    let config = rig.config_with_rules(&migrated[start..]);
    assert!(
        expected.iter().all(|line| config.contains(line)) && !config.contains("user = \"{cn}\""),
        "the migrated rules replace the rig's:\n{config}"
    );
    rig.write_config(&config);
    let ours = rig.authenticate(Some("alice"), &[PIN]);
    let ours = (ours.result("authenticate"), ours.user());

    let own_stack =
        std::fs::read_to_string(rig.confdir().join(tessera_testrig::login::SERVICE)).unwrap();
    rig.write_service(&std::fs::read_to_string(rig.confdir().join(PAM_SSS_SERVICE)).unwrap());
    rig.run_under(std::iter::once("nsenter".to_owned()).chain(sssd.enter()));
    let theirs = rig.authenticate(Some("alice"), &[PIN]);
    let theirs = (theirs.result("authenticate"), theirs.user());
    rig.run_under(Vec::<String>::new());
    rig.write_service(&own_stack);
    eprintln!("token {token}: tessera {ours:?}, SSSD {theirs:?}");
    if ours != theirs {
        for entry in std::fs::read_dir(dir.join("log")).unwrap().flatten() {
            let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("{}:", entry.path().display());
            tail.iter().rev().for_each(|line| eprintln!("  {line}"));
        }
    }
    [ours, theirs]
}

#[test]
fn a_migrated_files_domain_logs_in_as_sssd_does() {
    // A token SSSD's rule maps: both log alice in.
    let files =
        |rig: &LoginRig| files_domain(&rig.path().join("passwd"), &rig.path().join("group"));
    let expected = [
        "user = \"{subject_rfc822_name.short_name}\"",
        "domain = \"example.test\"",
    ];
    let mut rig = LoginRig::new();
    let enrolled = rig.enroll("alice", KeyType::P256);
    let keys = files(&rig);
    let [ours, theirs] = both_stacks(&mut rig, &enrolled.token, keys, FILES_CERTMAP, &expected);
    assert_eq!(ours.0, "PAM_SUCCESS", "tessera: {ours:?}");
    assert_eq!(ours, theirs, "tessera, then SSSD");

    // A token whose certificate the matchrule refuses (no clientAuth): both
    // refuse it.
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let mut spec = UserCert::valid("alice");
    spec.eku = vec![ExtendedKeyUsagePurpose::EmailProtection];
    let enrolled = rig.enroll_with("alice-mail", KeyType::P256, &spec, &rig.ca);
    let keys = files(&rig);
    let [ours, theirs] = both_stacks(&mut rig, &enrolled.token, keys, FILES_CERTMAP, &expected);
    assert_ne!(ours.0, "PAM_SUCCESS", "tessera: {ours:?}");
    assert_eq!(ours, theirs, "tessera, then SSSD");
}

#[test]
fn a_migrated_ldap_domain_with_ad_style_rules_logs_in_as_sssd_does() {
    // alice in the directory with an AD-style strong mapping (issuer and
    // reversed serial), the form SSSD's LDAPU1 maprule searches.
    let mut rig = LoginRig::new();
    let enrolled = rig.enroll("alice", KeyType::P256);
    let fields = CertificateFields::from_der(&enrolled.certificate).unwrap();
    let mut serial = fields.serial.clone();
    serial.reverse();
    let strong = format!(
        "X509:<I>{}<SR>{}",
        fields.issuer_dn.format_sssd(tessera_mappers::DnStyle::Ad),
        hex::encode_upper(serial)
    );
    let (tls, tls_ca) = SlapdTls::for_localhost(&rig.path().join("tls"));
    let slapd = Slapd::start_with(
        &rig.path().join("slapd"),
        &[LdapUser {
            alt_security_identities: vec![strong],
            ..LdapUser::new("alice")
        }],
        Some(&tls),
    );
    let keys = format!(
        "id_provider = ldap\nldap_uri = {}\nldap_search_base = {BASE}\nldap_tls_cacert = {}\n",
        slapd.ldaps_uri().unwrap(),
        tls_ca.display()
    );
    let certmap = "[certmap/example.test/strong]\nmatchrule = <EKU>clientAuth\n\
        maprule = LDAPU1:(altSecurityIdentities=X509:<I>{issuer_dn!ad_x500}<SR>{serial_number!hex_ur})\n";
    let expected = [
        "ldap_filter = \"(altSecurityIdentities=X509:<I>{issuer_dn!ad_x500}<SR>{serial_number!hex_ur})\"",
        "uri = [\"ldaps://127.0.0.1:",
    ];
    let [ours, theirs] = both_stacks(&mut rig, &enrolled.token, keys.clone(), certmap, &expected);
    assert_eq!(ours.0, "PAM_SUCCESS", "tessera: {ours:?}");
    assert_eq!(ours, theirs, "tessera, then SSSD");

    // Another CA's certificate for alice: the directory has no such
    // mapping, and both refuse it.
    let mut other = LoginRig::new();
    let enrolled = other.enroll("alice", KeyType::P256);
    let [ours, theirs] = both_stacks(&mut other, &enrolled.token, keys, certmap, &expected);
    assert_ne!(ours.0, "PAM_SUCCESS", "tessera: {ours:?}");
    assert_eq!(ours, theirs, "tessera, then SSSD");
}
