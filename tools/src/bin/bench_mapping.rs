//! Mapping benchmark (docs/mapping.md, "Cost"): a template rule, a
//! 100,000-line mapfile (load and look-up, and the same file through
//! pam_pkcs11's digest mapper with `pklogin_finder` when it is installed), and
//! LDAP look-ups against a 10,000-user slapd. Run as root with
//! `scripts/bench mapping`.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{KeyPair, PublicKeyData};
use tessera_mappers::{
    map_certificate, Account, Accounts, CertificateFields, LdapConfig, LdapDirectory, MapFile,
    MappingContext, MappingInput, Rule, RuleConfig, TokenInfo,
};
use tessera_testrig::bins::artefact;
use tessera_testrig::pki::{TestCa, UserCert};
use tessera_testrig::slapd::{LdapUser, Slapd, BASE};
use tessera_testrig::softhsm::{KeyType, SoftHsm, SOFTHSM_MODULE};

const MAPFILE_LINES: usize = 100_000;
const LDAP_USERS: usize = 10_000;

struct Everyone;

impl Accounts for Everyone {
    fn lookup(&self, name: &str) -> std::io::Result<Option<Account>> {
        Ok(Some(Account {
            name: name.to_owned(),
            uid: 1,
            home: PathBuf::from("/nonexistent"),
        }))
    }
}

fn open_plain(path: &Path) -> Result<std::fs::File, tessera_mappers::OpenError> {
    Ok(std::fs::File::open(path)?)
}

fn compile(source: &str) -> Vec<Rule> {
    #[derive(serde::Deserialize)]
    struct Tables {
        rule: Vec<RuleConfig>,
    }
    toml::from_str::<Tables>(source)
        .unwrap()
        .rule
        .iter()
        .enumerate()
        .map(|(index, config)| Rule::compile(index, config).unwrap())
        .collect()
}

fn per_call(iterations: usize, mut body: impl FnMut()) -> Duration {
    let started = Instant::now();
    for _ in 0..iterations {
        body();
    }
    started.elapsed() / iterations as u32
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn percentile(mut samples: Vec<Duration>, fraction: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * fraction).round() as usize]
}

fn wall(command: &mut Command, runs: usize) -> (Duration, String) {
    let mut times = Vec::new();
    let mut last = String::new();
    for _ in 0..runs {
        let started = Instant::now();
        let output = command.output().expect("run");
        times.push(started.elapsed());
        last = format!(
            "exit {:?}: {}{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    (median(times), last)
}

fn colon_hex(hex_text: &str) -> String {
    hex_text
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

fn main() {
    let dir = tempfile::Builder::new()
        .prefix("tessera-bench-")
        .tempdir()
        .unwrap();
    let ca = TestCa::new("Tessera Bench CA");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let spki = key.subject_public_key_info();
    let der = ca.issue(&UserCert::valid("alice"), &spki);
    let fields = CertificateFields::from_der(&der).unwrap();
    let token = TokenInfo::default();
    let input = MappingInput {
        certificate: Some(&fields),
        key: fields.public_key.as_ref(),
        token: &token,
        requested_user: Some("alice"),
    };
    println!("| measurement | figure |\n| --- | --- |");

    // A template rule.
    let parse = per_call(10_000, || {
        CertificateFields::from_der(&der).unwrap();
    });
    println!(
        "| parse a certificate into mapping fields | {:.1} µs |",
        parse.as_secs_f64() * 1e6
    );
    let rules = compile("[[rule]]\nuser = \"{cn}\"\neku = [\"msScLogin\"]\n");
    let context = MappingContext::new(&Everyone, &open_plain, None, None, false, 0);
    let template = per_call(100_000, || {
        assert_eq!(map_certificate(&rules, &input, &context).users(), ["alice"]);
    });
    println!(
        "| template rule `{{cn}}` with an EKU condition | {:.2} µs |",
        template.as_secs_f64() * 1e6
    );

    // A 100,000-line mapfile, pam_pkcs11's digest format, the hit on the last line.
    let mapfile = dir.path().join("digest_mapping");
    let mut text = String::with_capacity(MAPFILE_LINES * 80);
    for index in 0..MAPFILE_LINES - 1 {
        let digest = hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            index.to_string().as_bytes(),
        ));
        text.push_str(&format!("{} -> user{index}\n", colon_hex(&digest[..40])));
    }
    text.push_str(&format!("{} -> alice\n", colon_hex(&fields.sha1_hex)));
    std::fs::write(&mapfile, &text).unwrap();
    let loads: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let map = MapFile::read(&mapfile, std::fs::File::open(&mapfile).unwrap()).unwrap();
            assert_eq!(map.len(), MAPFILE_LINES);
            started.elapsed()
        })
        .collect();
    println!(
        "| load a {MAPFILE_LINES}-line mapfile ({} MB) | {:.1} ms (median of 5) |",
        text.len() / 1_000_000,
        median(loads).as_secs_f64() * 1e3
    );
    let map = MapFile::read(&mapfile, std::fs::File::open(&mapfile).unwrap()).unwrap();
    let key = colon_hex(&fields.sha1_hex);
    let hit = per_call(1_000_000, || assert_eq!(map.get(&key).len(), 1));
    let miss = per_call(1_000_000, || assert!(map.get("00:11").is_empty()));
    println!(
        "| look-up in the loaded mapfile, hit / miss | {:.0} ns / {:.0} ns |",
        hit.as_secs_f64() * 1e9,
        miss.as_secs_f64() * 1e9
    );
    let rules = compile(&format!(
        "[[rule]]\nmapfile = \"{}\"\nkey = \"{{sha1!hex_uc}}\"\n",
        mapfile.display()
    ));
    let context = MappingContext::new(&Everyone, &open_plain, None, None, false, 0);
    assert_eq!(map_certificate(&rules, &input, &context).users(), ["alice"]);
    let rule = per_call(100_000, || {
        assert_eq!(map_certificate(&rules, &input, &context).users(), ["alice"]);
    });
    println!(
        "| mapfile rule after load (key expansion + look-up + checks) | {:.2} µs |",
        rule.as_secs_f64() * 1e6
    );

    pam_pkcs11_comparison(dir.path(), &ca, &mapfile);
    ldap(dir.path(), &ca, &fields);
}

/// The same token and the same mapfile through `pklogin_finder` (pam_pkcs11's
/// digest mapper) and `tessera map --token`, whole processes, each also with a
/// one-line mapfile to separate the mapfile's cost from start-up and PKCS#11.
fn pam_pkcs11_comparison(dir: &Path, ca: &TestCa, mapfile: &Path) {
    let hsm = SoftHsm::new(&dir.join("softhsm"));
    hsm.init_token("bench", "123456");
    let spki = hsm.generate_key("bench", "123456", "01", KeyType::P256);
    let der = ca.issue(&UserCert::valid("alice"), &spki);
    hsm.write_object("bench", "123456", "01", "cert", &der);
    let fields = CertificateFields::from_der(&der).unwrap();
    let key_line = format!("{} -> alice\n", colon_hex(&fields.sha1_hex));
    // The token's certificate differs from the in-memory one: put its key last.
    let mut big = std::fs::read_to_string(mapfile).unwrap();
    big.push_str(&key_line);
    let big_file = dir.join("big_mapping");
    std::fs::write(&big_file, big).unwrap();
    let small_file = dir.join("small_mapping");
    std::fs::write(&small_file, &key_line).unwrap();
    let ca_dir = dir.join("ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::write(ca_dir.join("ca.pem"), ca.pem()).unwrap();
    let (env_key, env_value) = hsm.env();
    // Both tools see the user through nss_wrapper, as in the login tests.
    let passwd = dir.join("passwd");
    let group = dir.join("group");
    std::fs::write(
        &passwd,
        "root:x:0:0:root:/root:/bin/sh\nalice:x:20001:20001:alice:/nonexistent:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(&group, "root:x:0:\nalice:x:20001:\n").unwrap();
    let nss = [
        ("LD_PRELOAD", PathBuf::from("libnss_wrapper.so")),
        ("NSS_WRAPPER_PASSWD", passwd),
        ("NSS_WRAPPER_GROUP", group),
    ];

    let finder = Path::new("/usr/bin/pklogin_finder");
    let mut rows = Vec::new();
    for (label, file) in [("1-line", &small_file), ("100,000-line", &big_file)] {
        let tessera_conf = dir.join(format!("tessera-{label}.toml"));
        std::fs::write(
            &tessera_conf,
            format!(
                "version = 1\n[pkcs11]\nmodule = \"{SOFTHSM_MODULE}\"\n[pki]\nca = [\"{}\"]\n[[rule]]\nmapfile = \"{}\"\nkey = \"{{sha1!hex_uc}}\"\n",
                ca_dir.display(),
                file.display()
            ),
        )
        .unwrap();
        let (tessera, tessera_out) = wall(
            Command::new(artefact("tessera"))
                .args(["map", "--token", "--config"])
                .arg(&tessera_conf)
                .env(env_key, &env_value)
                .envs(nss.clone()),
            11,
        );
        assert!(tessera_out.contains("maps to alice"), "{tessera_out}");
        let pam_pkcs11 = if finder.exists() {
            let conf = dir.join(format!("pam_pkcs11-{label}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "pam_pkcs11 {{\n nullok = false;\n debug = false;\n use_first_pass = false;\n use_pkcs11_module = softhsm;\n \
                     pkcs11_module softhsm {{ module = {SOFTHSM_MODULE}; slot_num = 0; ca_dir = {}; crl_dir = {}; cert_policy = none; }}\n \
                     use_mappers = digest;\n mapper digest {{ debug = false; module = internal; algorithm = \"sha1\"; mapfile = file://{}; }}\n}}\n",
                    ca_dir.display(),
                    ca_dir.display(),
                    file.display()
                ),
            )
            .unwrap();
            let (time, out) = wall(
                Command::new(finder)
                    .arg(format!("config_file={}", conf.display()))
                    .env(env_key, &env_value)
                    .envs(nss.clone()),
                11,
            );
            if out.contains("alice") {
                format!("{:.1} ms", time.as_secs_f64() * 1e3)
            } else {
                format!("did not map ({out})")
            }
        } else {
            "pklogin_finder not installed".to_owned()
        };
        rows.push(format!(
            "| whole process, {label} mapfile: `tessera map --token` / `pklogin_finder` (median of 11) | {:.1} ms / {pam_pkcs11} |",
            tessera.as_secs_f64() * 1e3
        ));
    }
    for row in rows {
        println!("{row}");
    }
}

/// 10,000 directory users with a certificate and a mail address each. Each
/// certificate gets its own key: rcgen derives the serial from the key.
fn ldap(dir: &Path, ca: &TestCa, target: &CertificateFields) {
    let started = Instant::now();
    let mut users: Vec<LdapUser> = (0..LDAP_USERS - 1)
        .map(|index| {
            let name = format!("user{index}");
            LdapUser {
                mail: vec![format!("{name}@example.test")],
                certificates: vec![ca.issue(
                    &UserCert::valid(&name),
                    &KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                        .unwrap()
                        .subject_public_key_info(),
                )],
                ..LdapUser::new(&name)
            }
        })
        .collect();
    users.push(LdapUser {
        mail: vec!["alice@example.test".to_owned()],
        certificates: vec![target.der.clone()],
        ..LdapUser::new("alice")
    });
    let slapd = Slapd::start(&dir.join("slapd"), &users);
    let setup = started.elapsed();
    let directory = LdapDirectory::new(LdapConfig {
        uri: vec![slapd.uri()],
        base: BASE.to_owned(),
        scope: "sub".to_owned(),
        starttls: false,
        tls_ca: None,
        bind_dn: None,
        bind_password_file: None,
        connect_timeout: 2.0,
        search_timeout: 5.0,
        user_attribute: "uid".to_owned(),
        max_entries: 16,
        max_reply_bytes: 1 << 20,
        // The rig's slapd listens on 127.0.0.1 without TLS.
        allow_cleartext_i_understand_anyone_on_the_network_can_map_users: true,
    })
    .unwrap();
    let token = TokenInfo::default();
    let input = MappingInput {
        certificate: Some(target),
        key: None,
        token: &token,
        requested_user: None,
    };
    for (label, filter) in [
        (
            "certificate (serial + issuer, GSER)",
            "(userCertificate={ serialNumber {serial_dec}, issuer rdnSequence:\"{issuer}\" })",
        ),
        ("mail", "(mail={email})"),
    ] {
        let rules = compile(&format!("[[rule]]\nldap_filter = '{filter}'\n"));
        let context = MappingContext::new(&Everyone, &open_plain, Some(&directory), None, false, 0);
        let samples: Vec<Duration> = (0..200)
            .map(|_| {
                let started = Instant::now();
                let mapping = map_certificate(&rules, &input, &context);
                let elapsed = started.elapsed();
                assert_eq!(mapping.users(), ["alice"], "{:#?}", mapping.trace);
                elapsed
            })
            .collect();
        println!(
            "| LDAP rule by {label}, {LDAP_USERS} users, new connection per look-up: median / p95 (200 runs) | {:.2} ms / {:.2} ms |",
            median(samples.clone()).as_secs_f64() * 1e3,
            percentile(samples, 0.95).as_secs_f64() * 1e3
        );
    }
    println!(
        "| (setting up the {LDAP_USERS}-user directory: {:.1} s) | |",
        setup.as_secs_f64()
    );
}
