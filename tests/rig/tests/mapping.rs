//! Certificate-to-user mapping against real components: slapd on 127.0.0.1,
//! and whole logins through real libpam with mapfile, directory and
//! authorized-keys rules.

// Fixture helpers outside #[test] functions panic on purpose when the rig is broken.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{KeyPair, PublicKeyData};
use tessera_mappers::{
    map_certificate, Account, Accounts, CacheFallback, CertificateFields, LdapConfig,
    LdapDirectory, Mapping, MappingCache, MappingContext, MappingInput, OpenError, Outcome,
    PasswordFileError, Rule, RuleConfig, SearchError, ServerError, ServerFailure, SourceError,
    TokenInfo, LDAP_CLEARTEXT_KEY,
};
use tessera_testrig::bins::artefact;
use tessera_testrig::login::{LoginRig, PIN};
use tessera_testrig::pki::{TestCa, UserCert};
use tessera_testrig::slapd::{free_port, LdapUser, SilentServer, Slapd, SlapdTls, BASE};
use tessera_testrig::softhsm::KeyType;

/// Every name exists: the directory tests are about the directory.
struct EveryoneExists;

impl Accounts for EveryoneExists {
    fn lookup(&self, name: &str) -> std::io::Result<Option<Account>> {
        Ok(Some(Account {
            name: name.to_owned(),
            uid: 30000,
            home: PathBuf::from("/nonexistent"),
        }))
    }
}

fn open_plain(path: &Path) -> Result<std::fs::File, OpenError> {
    Ok(std::fs::File::open(path)?)
}

/// The bounds (max_entries, max_reply_bytes) a refused reply broke.
fn broken_bounds(failure: &SearchError) -> Option<(usize, usize)> {
    match failure {
        SearchError::Refused {
            refusal:
                ServerFailure {
                    error:
                        ServerError::ReplyTooLarge {
                            max_entries,
                            max_reply_bytes,
                        },
                    ..
                },
            ..
        } => Some((*max_entries, *max_reply_bytes)),
        _ => None,
    }
}

/// Whether the mapping failed closed because a server said no with `error`.
fn refused_with(mapping: &Mapping, error: impl Fn(&ServerError) -> bool) -> bool {
    matches!(
        &mapping.outcome,
        Outcome::Error {
            error: SourceError::DirectoryRefused(ServerFailure { error: found, .. }),
            ..
        } if error(found)
    )
}

/// A certificate from `ca` for a fresh key.
fn issue(ca: &TestCa, cn: &str) -> (Vec<u8>, CertificateFields) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let der = ca.issue(&UserCert::valid(cn), &key.subject_public_key_info());
    let fields = CertificateFields::from_der(&der).unwrap();
    (der, fields)
}

fn rule(table: &str) -> Vec<Rule> {
    #[derive(serde::Deserialize)]
    struct Tables {
        rule: Vec<RuleConfig>,
    }
    toml::from_str::<Tables>(table)
        .unwrap()
        .rule
        .iter()
        .enumerate()
        .map(|(index, config)| Rule::compile(index, config).unwrap())
        .collect()
}

fn directory(uris: Vec<String>, search_timeout: f64) -> LdapDirectory {
    LdapDirectory::new(LdapConfig {
        uri: uris,
        base: BASE.to_owned(),
        scope: "sub".to_owned(),
        starttls: false,
        tls_ca: None,
        bind_dn: None,
        bind_password_file: None,
        connect_timeout: 1.0,
        search_timeout,
        user_attribute: "uid".to_owned(),
        max_entries: 16,
        max_reply_bytes: 1024 * 1024,
        // The rig's slapd listens on 127.0.0.1 without TLS.
        allow_cleartext_i_understand_anyone_on_the_network_can_map_users: true,
    })
    .unwrap()
}

fn map(
    rules: &[Rule],
    fields: &CertificateFields,
    ldap: &LdapDirectory,
    cache: Option<&MappingCache>,
    now: u64,
) -> Mapping {
    let context = MappingContext::new(&EveryoneExists, &open_plain, Some(ldap), cache, true, now);
    let token = TokenInfo::default();
    map_certificate(
        rules,
        &MappingInput {
            certificate: Some(fields),
            key: fields.public_key.as_ref(),
            token: &token,
            requested_user: None,
        },
        &context,
    )
}

const EXACT: &str = "[[rule]]\nname = \"exact\"\nldap_filter = '(userCertificate={ serialNumber {serial_dec}, issuer rdnSequence:\"{issuer}\" })'";

struct Directory {
    _dir: tempfile::TempDir,
    slapd: Slapd,
    ca: TestCa,
    alice: CertificateFields,
}

/// slapd with alice (certificate, mail, UPN, altSecurityIdentities), bob,
/// and two entries sharing one mail address.
fn directory_with_users() -> Directory {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Tessera Test Root CA");
    let (alice_der, alice) = issue(&ca, "alice");
    let (bob_der, _) = issue(&ca, "bob");
    let strong = format!(
        "X509:<I>{}<SR>{}",
        alice.issuer_dn.format(tessera_mappers::DnStyle::Ad),
        {
            let mut serial = alice.serial.clone();
            serial.reverse();
            hex::encode_upper(serial)
        }
    );
    let users = [
        LdapUser {
            mail: vec!["alice@example.test".into()],
            upn: Some("alice@EXAMPLE.TEST".into()),
            alt_security_identities: vec![strong],
            certificates: vec![alice_der],
            ..LdapUser::new("alice")
        },
        LdapUser {
            certificates: vec![bob_der],
            ..LdapUser::new("bob")
        },
        LdapUser {
            mail: vec!["shared@example.test".into()],
            ..LdapUser::new("carol")
        },
        LdapUser {
            mail: vec!["shared@example.test".into()],
            ..LdapUser::new("carol-admin")
        },
    ];
    let slapd = Slapd::start(dir.path(), &users);
    Directory {
        _dir: dir,
        slapd,
        ca,
        alice,
    }
}

#[test]
fn directory_rules_find_users_by_certificate_upn_mail_and_ad_strong_mapping() {
    let d = directory_with_users();
    let ldap = directory(vec![d.slapd.uri()], 5.0);

    let mapping = map(&rule(EXACT), &d.alice, &ldap, None, 0);
    assert_eq!(mapping.users(), ["alice"], "{mapping:#?}");
    let lookup = &mapping.trace[0].lookups[0];
    assert!(
        lookup
            .result
            .contains("uid=alice,ou=people,dc=example,dc=test"),
        "{lookup:?}"
    );
    assert!(
        lookup.key.starts_with("(userCertificate={ serialNumber "),
        "{lookup:?}"
    );

    let either = rule("[[rule]]\nldap_filter = \"(|(userPrincipalName={upn})(mail={email}))\"");
    assert_eq!(map(&either, &d.alice, &ldap, None, 0).users(), ["alice"]);

    let strong = rule("[[rule]]\nldap_filter = \"(altSecurityIdentities=X509:<I>{issuer!ad}<SR>{serial!hex_ur})\"");
    assert_eq!(map(&strong, &d.alice, &ldap, None, 0).users(), ["alice"]);
    // The same rule in SSSD's maprule spelling.
    let sssd = rule("[[rule]]\nldap_filter = \"(altSecurityIdentities=X509:<I>{issuer_dn!ad_x500}<SR>{serial_number!hex_ur})\"");
    assert_eq!(map(&sssd, &d.alice, &ldap, None, 0).users(), ["alice"]);
}

#[test]
fn directory_without_an_entry_is_no_match_and_two_entries_go_to_the_choice() {
    let d = directory_with_users();
    let ldap = directory(vec![d.slapd.uri()], 5.0);
    let (_, stranger) = issue(&d.ca, "stranger");
    let mapping = map(&rule(EXACT), &stranger, &ldap, None, 0);
    assert!(matches!(mapping.outcome, Outcome::NoMatch), "{mapping:#?}");
    assert_eq!(mapping.trace[0].lookups[0].result, "no entry");

    let shared = rule(
        "[[rule]]\nldap_filter = \"(mail=shared@{email.local}.test)\"\ndomain = \"example.test\"",
    );
    let mut fields = d.alice.clone();
    fields.emails = vec!["example@example.test".into()];
    let mapping = map(&shared, &fields, &ldap, None, 0);
    let mut users = mapping.users().to_vec();
    users.sort();
    assert_eq!(users, ["carol", "carol-admin"], "{mapping:#?}");
}

#[test]
fn replies_over_max_entries_or_max_reply_bytes_are_refused_and_the_rule_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<LdapUser> = (0..20)
        .map(|n| LdapUser {
            mail: vec!["flood@example.test".into()],
            ..LdapUser::new(&format!("flood{n:02}"))
        })
        .collect();
    let slapd = Slapd::start(dir.path(), &users);
    let bounded = |max_entries: usize, max_reply_bytes: usize| {
        let config = directory(vec![slapd.uri()], 5.0).config().clone();
        LdapDirectory::new(LdapConfig {
            max_entries,
            max_reply_bytes,
            ..config
        })
        .unwrap()
    };
    let filter = "(mail=flood@example.test)";

    let answer = bounded(20, 1024 * 1024).search(filter, "uid").unwrap();
    assert_eq!(answer.entries.len(), 20);
    let failure = bounded(16, 1024 * 1024).search(filter, "uid").unwrap_err();
    assert_eq!(
        broken_bounds(&failure),
        Some((16, 1024 * 1024)),
        "{failure:?}"
    );

    // The reply bytes the bound counts: DNs and the user attribute's values.
    let reply: usize = answer
        .entries
        .iter()
        .map(|entry| entry.dn.len() + entry.users.iter().map(String::len).sum::<usize>())
        .sum();
    assert_eq!(
        bounded(20, reply)
            .search(filter, "uid")
            .unwrap()
            .entries
            .len(),
        20
    );
    let failure = bounded(20, reply - 1).search(filter, "uid").unwrap_err();
    assert_eq!(
        broken_bounds(&failure),
        Some((20, reply - 1)),
        "{failure:?}"
    );

    // A rule whose search breaks the bound is an error, not a match.
    let (_, fields) = issue(&TestCa::new("Tessera Test Root CA"), "example");
    let mapping = map(
        &rule("[[rule]]\nldap_filter = \"(mail=flood@{cn}.test)\""),
        &fields,
        &bounded(16, 1024 * 1024),
        None,
        0,
    );
    assert!(
        refused_with(&mapping, |error| matches!(
            error,
            ServerError::ReplyTooLarge {
                max_entries: 16,
                ..
            }
        )),
        "{mapping:#?}"
    );
}

#[test]
fn a_down_server_fails_over_to_the_next_uri() {
    let d = directory_with_users();
    let closed = format!("ldap://127.0.0.1:{}", free_port());
    let ldap = directory(vec![closed.clone(), d.slapd.uri()], 5.0);
    let mapping = map(&rule(EXACT), &d.alice, &ldap, None, 0);
    assert_eq!(mapping.users(), ["alice"]);
    let lookups = &mapping.trace[0].lookups;
    assert_eq!(lookups[0].source, format!("ldap {closed}"));
    assert!(lookups[0].result.starts_with("failed: "), "{lookups:?}");
    assert_eq!(lookups[1].source, format!("ldap {}", d.slapd.uri()));
}

#[test]
fn a_hung_server_times_out_and_the_next_one_answers() {
    let d = directory_with_users();
    let silent = SilentServer::start();
    let ldap = directory(vec![silent.uri(), d.slapd.uri()], 1.0);
    let started = Instant::now();
    let mapping = map(&rule(EXACT), &d.alice, &ldap, None, 0);
    assert_eq!(mapping.users(), ["alice"], "{mapping:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(
        mapping.trace[0].lookups[0].result.contains("timed out")
            || mapping.trace[0].lookups[0].result.contains("imeout"),
        "{:?}",
        mapping.trace[0].lookups
    );

    let only_silent = directory(vec![silent.uri()], 1.0);
    let mapping = map(&rule(EXACT), &d.alice, &only_silent, None, 0);
    assert!(
        matches!(
            &mapping.outcome,
            Outcome::Error {
                error: SourceError::DirectoryUnreachable {
                    failures,
                    cache: CacheFallback::NotConfigured,
                },
                ..
            } if matches!(failures.as_slice(), [ServerFailure { error: ServerError::Unreachable(_), .. }])
        ),
        "{mapping:#?}"
    );
}

#[test]
fn the_cache_stands_in_while_the_directory_is_down_until_it_expires() {
    let mut d = directory_with_users();
    let ldap = directory(vec![d.slapd.uri()], 2.0);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = MappingCache::new(cache_dir.path().join("mapping"), 3600);
    let rules = rule(EXACT);

    let mapping = map(&rules, &d.alice, &ldap, Some(&cache), 1000);
    assert_eq!(mapping.users(), ["alice"]);
    assert!(mapping.trace[0]
        .lookups
        .iter()
        .any(|l| l.source.starts_with("cache ") && l.result == "stored"));
    let mode = std::fs::metadata(cache.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    d.slapd.stop();
    let mapping = map(&rules, &d.alice, &ldap, Some(&cache), 1060);
    assert_eq!(mapping.users(), ["alice"], "{mapping:#?}");
    let text = mapping.trace[0].to_string();
    assert!(text.contains("alice (stored 60 s ago)"), "{text}");

    let mapping = map(&rules, &d.alice, &ldap, Some(&cache), 1000 + 3601);
    assert!(
        matches!(
            &mapping.outcome,
            Outcome::Error {
                error: SourceError::DirectoryUnreachable {
                    cache: CacheFallback::Expired { age: 3601 },
                    ..
                },
                ..
            }
        ),
        "{mapping:#?}"
    );
}

#[test]
fn tls_starttls_and_an_authenticated_bind_work_and_a_wrong_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Tessera Test Root CA");
    let (alice_der, alice) = issue(&ca, "alice");
    let (tls, tls_ca) = SlapdTls::for_localhost(&dir.path().join("tls"));
    let slapd = Slapd::start_with(
        &dir.path().join("slapd"),
        &[LdapUser {
            certificates: vec![alice_der],
            ..LdapUser::new("alice")
        }],
        Some(&tls),
    );
    let password = dir.path().join("password");
    std::fs::write(&password, "secret\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = |uri: String, starttls: bool| LdapConfig {
        uri: vec![uri],
        base: BASE.to_owned(),
        scope: "sub".to_owned(),
        starttls,
        tls_ca: Some(tls_ca.clone()),
        bind_dn: Some(format!("cn=admin,{BASE}")),
        bind_password_file: Some(password.clone()),
        connect_timeout: 2.0,
        search_timeout: 5.0,
        user_attribute: "uid".to_owned(),
        max_entries: 16,
        max_reply_bytes: 1 << 20,
        allow_cleartext_i_understand_anyone_on_the_network_can_map_users: false,
    };
    let ldaps = LdapDirectory::new(config(slapd.ldaps_uri().unwrap(), false)).unwrap();
    assert_eq!(
        map(&rule(EXACT), &alice, &ldaps, None, 0).users(),
        ["alice"]
    );
    let starttls = LdapDirectory::new(config(slapd.uri(), true)).unwrap();
    assert_eq!(
        map(&rule(EXACT), &alice, &starttls, None, 0).users(),
        ["alice"]
    );

    // A server whose certificate is not signed by tls_ca is not talked to.
    let (_, other_ca) = SlapdTls::for_localhost(&dir.path().join("other"));
    let mut untrusted = config(slapd.ldaps_uri().unwrap(), false);
    untrusted.tls_ca = Some(other_ca);
    let mapping = map(
        &rule(EXACT),
        &alice,
        &LdapDirectory::new(untrusted).unwrap(),
        None,
        0,
    );
    assert!(
        matches!(mapping.outcome, Outcome::Error { .. }),
        "{mapping:#?}"
    );

    std::fs::write(&password, "wrong\n").unwrap();
    let mapping = map(&rule(EXACT), &alice, &ldaps, None, 0);
    assert!(
        refused_with(&mapping, |error| matches!(
            error,
            ServerError::BindRefused(_)
        )),
        "{mapping:#?}"
    );
    // A password file others can read is refused before any bind.
    std::fs::write(&password, "secret\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mapping = map(&rule(EXACT), &alice, &ldaps, None, 0);
    assert!(
        refused_with(&mapping, |error| matches!(
            error,
            ServerError::Password(PasswordFileError::NotPrivate { .. })
        )),
        "{mapping:#?}"
    );
}

#[test]
fn mapfile_rule_logs_in_through_libpam() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    // The CN is not a login name; only the mapfile links the two.
    let enrolled = rig.enroll_with(
        "alice-token",
        KeyType::P256,
        &UserCert::valid("Alice Smith"),
        &rig.ca,
    );
    let fields = CertificateFields::from_der(&enrolled.certificate).unwrap();
    let mapfile = rig.path().join("users.map");
    std::fs::write(
        &mapfile,
        format!("# sha256 user\n{} alice\n", fields.sha256_hex),
    )
    .unwrap();
    rig.write_config(&rig.config_with_rules(&format!(
        "[[rule]]\nname = \"by digest\"\nmapfile = \"{}\"\nkey = \"{{sha256}}\"\n",
        mapfile.display()
    )));
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    let run = rig.authenticate(None, &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert_eq!(run.user().as_deref(), Some("alice"));
    assert!(run.logged("auth.mapping.step", "by digest"), "{run}");
}

#[test]
fn a_mapfile_miss_never_falls_back_to_the_key() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let mapfile = rig.path().join("users.map");
    std::fs::write(&mapfile, "someone-else bob\n").unwrap();
    rig.write_config(&rig.config_with_rules(&format!(
        "[[rule]]\nmapfile = \"{}\"\nkey = \"{{cn}}\"\n",
        mapfile.display()
    )));
    // The key, "alice", is a user; pam_pkcs11 would have logged her in.
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTHINFO_UNAVAIL", "{run}");
    assert!(run.logged("auth.mapping.step", "\"alice\": miss"), "{run}");
}

#[test]
fn gecos_is_never_matched() {
    let mut rig = LoginRig::new();
    rig.add_user_with_gecos("alice", "Alice Smith");
    rig.enroll_with(
        "alice-token",
        KeyType::P256,
        &UserCert::valid("Alice Smith"),
        &rig.ca,
    );
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTHINFO_UNAVAIL", "{run}");
    let run = rig.authenticate(None, &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTHINFO_UNAVAIL", "{run}");
}

#[test]
fn a_bare_key_in_authorized_keys_logs_in_with_a_signature() {
    let rig = LoginRig::with_bare_key(0o600);
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert!(
        run.logged("auth.proof.verified", "challenge signature verified"),
        "{run}"
    );
    // Without a user name there is no home to look in.
    let run = rig.authenticate(None, &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTHINFO_UNAVAIL", "{run}");
}

#[test]
fn a_world_writable_authorized_keys_file_is_refused() {
    let rig = LoginRig::with_bare_key(0o666);
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTHINFO_UNAVAIL", "{run}");
    assert!(
        run.logged("auth.mapping.step", "group or others can write it"),
        "{run}"
    );
}

#[test]
fn a_directory_rule_logs_in_through_libpam_and_fails_closed_when_down() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let enrolled = rig.enroll_with(
        "alice-token",
        KeyType::P256,
        &UserCert::valid("Alice Smith"),
        &rig.ca,
    );
    let mut slapd = Slapd::start(
        &rig.path().join("slapd"),
        &[LdapUser {
            certificates: vec![enrolled.certificate.clone()],
            ..LdapUser::new("alice")
        }],
    );
    rig.write_config(&rig.config_with_rules(&format!(
        "{EXACT}\n[ldap]\nuri = [\"{}\"]\nbase = \"{BASE}\"\nsearch_timeout = 2.0\n{LDAP_CLEARTEXT_KEY} = true\n",
        slapd.uri()
    )));
    let run = rig.authenticate(None, &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert_eq!(run.user().as_deref(), Some("alice"));
    slapd.stop();
    let run = rig.authenticate(None, &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTHINFO_UNAVAIL", "{run}");
    assert!(
        run.logged("auth.login.failed", "no LDAP server answered"),
        "{run}"
    );
}

#[test]
fn tessera_map_explains_a_certificate_file() {
    let mut rig = LoginRig::new();
    let enrolled = rig.enroll("alice", KeyType::P256);
    let pem = rig.path().join("alice.der");
    std::fs::write(&pem, &enrolled.certificate).unwrap();
    rig.write_config(&rig.config_with_rules("[[rule]]\nuser = \"{uid}\"\n[[rule]]\nname = \"by cn\"\nuser = \"{cn}\"\neku = [\"msScLogin\"]\n"));
    let output = Command::new(artefact("tessera"))
        .args(["map", "--config"])
        .arg(rig.config_path())
        .arg(&pem)
        .envs(rig.env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(
            "rule 1 (user = \"{uid}\"):\n  => not applicable: the certificate has no {uid}"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok   eku includes msScLogin: saw clientAuth, msScLogin"),
        "{stdout}"
    );
    assert!(
        stdout.contains("result: maps to alice by rule \"by cn\""),
        "{stdout}"
    );

    let output = Command::new(artefact("tessera"))
        .args(["map", "--json", "--token", "--config"])
        .arg(rig.config_path())
        .envs(rig.env())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json[0]["chain"], "valid");
    assert_eq!(json[0]["token"]["label"], "alice-token");
    assert_eq!(json[0]["mapping"]["outcome"]["users"][0], "alice");
}

#[test]
fn tessera_migrate_prints_a_usable_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pam_pkcs11.conf");
    std::fs::write(
        &file,
        "pam_pkcs11 {\n use_mappers = mail;\n mapper mail { mapfile = none; ignoredomain = true; }\n}\n",
    )
    .unwrap();
    let output = Command::new(artefact("tessera"))
        .arg("migrate")
        .arg("pam_pkcs11")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        stdout.contains("UNSAFE in pam_pkcs11: ignoredomain"),
        "{stdout}"
    );
}

#[test]
fn a_key_listed_with_options_in_authorized_keys_does_not_log_in() {
    let rig = LoginRig::with_bare_key(0o600);
    let file = rig.home("alice").join(".ssh/authorized_keys");
    let plain = std::fs::read_to_string(&file).unwrap();
    // A CA key, a forced-command backup key, a restricted key: sshd would
    // limit them, a login through tessera could not.
    for options in [
        "cert-authority",
        "command=\"/usr/bin/backup --x\",no-pty",
        "restrict",
    ] {
        std::fs::write(&file, format!("{options} {plain}")).unwrap();
        let run = rig.authenticate(Some("alice"), &[PIN]);
        assert_eq!(
            run.result("authenticate"),
            "PAM_AUTHINFO_UNAVAIL",
            "{options}: {run}"
        );
        assert!(
            run.log
                .contains(&format!("{}:1: key with options", file.display())),
            "{options}: {run}"
        );
    }
    // The same key on a plain line still logs in.
    std::fs::write(&file, format!("cert-authority {plain}{plain}")).unwrap();
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
}
