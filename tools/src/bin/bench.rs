//! `tessera-bench` (run it with `scripts/bench`): tessera side by side with
//! Debian 12's pam_pkcs11 and pam_p11 on the same token, user and PKI, in
//! one interleaved run. Prints markdown tables (see docs/benchmarks.md).
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::{Command, ExitCode};
use std::time::Duration;

use tessera_testrig::bins::pam_module;
use tessera_testrig::login::{LoginRig, PIN, SERVICE};
use tessera_testrig::pcscd::{Pcscd, OPENSC_PKCS11};
use tessera_testrig::pki::{pem_encode, serial_of, Revoked, UserCert};
use tessera_testrig::references::{self, PAM_P11_SERVICE, PAM_PKCS11_SERVICE};
use tessera_testrig::softhsm::{KeyType, SOFTHSM_MODULE};
use tessera_testrig::sssd::{self, SssdDaemon, SssdLogin, PAM_SSS_SERVICE};
use tessera_testrig::vcard::CardSpec;

/// The PAM service of the baseline module, when there is one.
const BASELINE_SERVICE: &str = "tessera-baseline";

/// The row name of the baseline module.
fn baseline_label() -> String {
    format!(
        "pam_tessera at {}",
        std::env::var("TESSERA_BENCH_BASELINE").unwrap_or_else(|_| "baseline".to_owned())
    )
}

/// The pam_tessera.so of an earlier commit, named by
/// `TESSERA_BENCH_BASELINE_MODULE` (scripts/bench builds it from the git ref
/// `TESSERA_BENCH_BASELINE`), as service [`BASELINE_SERVICE`]: the rig's
/// current config. A build from before the helper (scripts/bench sets
/// `TESSERA_BENCH_BASELINE_HELPER=no`) loaded the token stack in the PAM
/// application and read its variables there (the harness sets them), so
/// its config has no `[pkcs11] environment`.
fn baseline_service(rig: &LoginRig) -> Option<&'static str> {
    let module = std::env::var_os("TESSERA_BENCH_BASELINE_MODULE")?;
    let mut config = std::fs::read_to_string(rig.config_path()).unwrap();
    if std::env::var("TESSERA_BENCH_BASELINE_HELPER").as_deref() == Ok("no") {
        config = config.replace(&rig.environment_line(), "");
    }
    let path = rig.path().join("baseline.toml");
    std::fs::write(&path, config).unwrap();
    std::fs::write(
        rig.confdir().join(BASELINE_SERVICE),
        format!(
            "auth required {} config={}\naccount required pam_permit.so\n",
            std::path::Path::new(&module).display(),
            path.display()
        ),
    )
    .unwrap();
    Some(BASELINE_SERVICE)
}

/// The row name of the pam_sss stack.
const PAM_SSS_LABEL: &str = "pam_sss (sssd 2.8.2, pam_cert_auth)";

/// sssd for the pam_sss row, logging `user` in with `token`, when sssd is
/// installed (otherwise a note says why the row is missing). `env` is
/// sssd's, which its p11_child inherits. The rig's PAM application then runs
/// in sssd's mount namespace, where pam_sss finds its socket.
fn start_sssd(
    rig: &mut LoginRig,
    token: &str,
    env: Vec<(String, std::ffi::OsString)>,
    notes: &mut Vec<String>,
) -> Option<SssdDaemon> {
    if !sssd::sssd_installed() {
        notes.push("pam_sss row left out: sssd is not installed (scripts/setup).".to_owned());
        return None;
    }
    let dir = rig.path().join("sssd");
    let daemon = SssdDaemon::start(&SssdLogin {
        dir: &dir,
        ca_pem: &rig.ca_dir().join("root.pem"),
        token_label: token,
        user: "alice",
        domain: "local",
        domain_keys: sssd::files_domain(&rig.path().join("passwd"), &rig.path().join("group")),
        confdir: &rig.confdir(),
        also_allowed: &[SERVICE],
        env,
    });
    rig.run_under(std::iter::once("nsenter".to_owned()).chain(daemon.enter()));
    Some(daemon)
}

/// `SOFTHSM2_CONF` for sssd: the rig's tokens, shown as removable, since
/// p11_child looks at removable slots only.
fn removable_softhsm(rig: &LoginRig) -> Vec<(String, std::ffi::OsString)> {
    let (key, conf) = rig.hsm.env();
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("slots.removable = false", "slots.removable = true");
    let removable = rig.path().join("softhsm2-removable.conf");
    std::fs::write(&removable, text).unwrap();
    vec![(key.to_owned(), removable.into_os_string())]
}

/// Rounds per interleaved chunk, and chunks (the first is warm-up).
const ROUNDS: usize = 10;
const CHUNKS: usize = 6;

#[derive(Default)]
struct Samples(BTreeMap<String, Vec<u64>>);

impl Samples {
    fn add(&mut self, name: &str, micros: &[u64]) {
        self.0.entry(name.to_owned()).or_default().extend(micros);
    }
}

fn stats(samples: &[u64]) -> (f64, f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let at = |fraction: f64| {
        let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
        sorted[index] as f64 / 1000.0
    };
    (at(0.0), at(0.5), at(0.9))
}

fn table(title: &str, samples: &Samples, floor: Option<&str>, notes: &[String]) -> String {
    let mut text = format!("### {title}\n\n| module | min ms | median ms | p90 ms | median / floor | rounds |\n|---|---|---|---|---|---|\n");
    let floor_median = floor
        .and_then(|name| samples.0.get(name))
        .map(|values| stats(values).1);
    for (name, values) in &samples.0 {
        let (min, median, p90) = stats(values);
        let ratio = floor_median.map_or("".to_owned(), |floor| format!("{:.2}", median / floor));
        let _ = writeln!(
            text,
            "| {name} | {min:.2} | {median:.2} | {p90:.2} | {ratio} | {} |",
            values.len()
        );
    }
    for note in notes {
        let _ = writeln!(text, "\n{note}");
    }
    text
}

/// One floor process doing `rounds` iterations, each loading the module,
/// like the harness process that runs a chunk of PAM logins: in both, the
/// first iteration also pays for loading libcrypto (which OpenSSL 3 never
/// unloads) and the rest do not.
fn floor_micros(rig: &LoginRig, token: &str, id: &str, rounds: usize) -> Vec<u64> {
    let line = rig.hsm.bench_sign(token, PIN, id, rounds);
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    value["micros"]
        .as_array()
        .unwrap()
        .iter()
        .map(|micros| micros.as_u64().unwrap())
        .collect()
}

/// Section 1: SoftHSM2, tessera vs pam_pkcs11 vs the floor, per key type.
fn softhsm_logins(key_type: KeyType, name: &str) -> String {
    let mut rig = LoginRig::new();
    let enrolled = rig.enroll("alice", key_type);
    rig.quiet_service();
    references::pam_pkcs11_service(&rig, SOFTHSM_MODULE, "");
    let mut services = vec![PAM_PKCS11_SERVICE];
    let mut notes = Vec::new();
    // pam_pkcs11 may not support the key type: find out before measuring.
    let probe = rig.bench_services("alice", PIN, 1, &services);
    if probe.len() < 2 {
        notes.push(format!(
            "pam_pkcs11 could not log in with {name}; row left out."
        ));
        services.clear();
    }
    services.extend(baseline_service(&rig));
    let env = removable_softhsm(&rig);
    let sssd = start_sssd(&mut rig, &enrolled.token, env, &mut notes);
    if sssd.is_some() {
        services.push(PAM_SSS_SERVICE);
    }
    notes.push(
        "pam_p11 0.3.1 hangs on SoftHSM2 2.6.1 (libp11 0.4.12 waits forever on the \
         uninitialised token SoftHSM always shows, cf. OpenSC/libp11#525), so it is measured \
         with the virtual card only."
            .to_owned(),
    );
    let mut samples = Samples::default();
    for chunk in 0..CHUNKS {
        let results = if services.is_empty() {
            let mut only = BTreeMap::new();
            only.insert(
                SERVICE.to_owned(),
                rig.bench_authenticate("alice", PIN, ROUNDS),
            );
            only
        } else {
            rig.bench_services("alice", PIN, ROUNDS, &services)
        };
        let floor = floor_micros(&rig, &enrolled.token, &enrolled.id, ROUNDS);
        if chunk == 0 {
            continue;
        }
        for (service, micros) in &results {
            let label = match service.as_str() {
                SERVICE => "pam_tessera".to_owned(),
                PAM_PKCS11_SERVICE => "pam_pkcs11 (ca,signature; cn mapper)".to_owned(),
                PAM_SSS_SERVICE => PAM_SSS_LABEL.to_owned(),
                BASELINE_SERVICE => baseline_label(),
                other => other.to_owned(),
            };
            samples.add(&label, micros);
        }
        samples.add("floor: C_Initialize+C_Login+C_Sign", &floor);
    }
    let timeline = login_timeline(&rig, ROUNDS * (CHUNKS - 1));
    let mut text = table(
        &format!("Login through libpam, SoftHSM2, {name} (pam_start + pam_authenticate + pam_end)"),
        &samples,
        Some("floor: C_Initialize+C_Login+C_Sign"),
        &notes,
    );
    text.push_str(&fresh_process_logins(&rig, &services, &enrolled, name));
    text.push_str(&timeline);
    text
}

/// The same logins, one per fresh process, as `su`, `sudo` and `login`
/// make them: every module and the floor load their libraries (libcrypto
/// through SoftHSM, or linked) in each round, where the chunked table above
/// lets a process keep them. Interleaved; the first chunk is dropped.
fn fresh_process_logins(
    rig: &LoginRig,
    others: &[&str],
    enrolled: &tessera_testrig::login::Enrolled,
    name: &str,
) -> String {
    let ours = std::fs::read_to_string(rig.confdir().join(SERVICE)).unwrap();
    let stacks: Vec<(String, String)> = std::iter::once((SERVICE.to_owned(), ours.clone()))
        .chain(others.iter().map(|service| {
            (
                (*service).to_owned(),
                std::fs::read_to_string(rig.confdir().join(service)).unwrap(),
            )
        }))
        .collect();
    let mut samples = Samples::default();
    for round in 0..ROUNDS * CHUNKS {
        for (service, stack) in &stacks {
            rig.write_service(stack);
            let micros = rig.bench_authenticate("alice", PIN, 1);
            if round >= ROUNDS {
                let label = match service.as_str() {
                    SERVICE => "pam_tessera".to_owned(),
                    PAM_PKCS11_SERVICE => "pam_pkcs11 (ca,signature; cn mapper)".to_owned(),
                    PAM_SSS_SERVICE => PAM_SSS_LABEL.to_owned(),
                    BASELINE_SERVICE => baseline_label(),
                    other => other.to_owned(),
                };
                samples.add(&label, &micros);
            }
        }
        let floor = floor_micros(rig, &enrolled.token, &enrolled.id, 1);
        if round >= ROUNDS {
            samples.add("floor: C_Initialize+C_Login+C_Sign", &floor);
        }
    }
    rig.write_service(&ours);
    table(
        &format!("One login per process, SoftHSM2, {name} (pam_start + pam_authenticate + pam_end in a fresh process)"),
        &samples,
        Some("floor: C_Initialize+C_Login+C_Sign"),
        &["Each round is a new process for every module and for the floor, so each pays for loading SoftHSM and libcrypto, as a `sudo` or `su` does; pam_tessera also pays for starting its helper.".to_owned()],
    )
}

/// The steps `tessera login` logs, in order, with what each one's interval covers.
const STEPS: [(&str, &str); 10] = [
    (
        "configuration loaded",
        "file-trust checks, read and parse the config",
    ),
    (
        "trust anchors loaded",
        "file-trust checks, read and parse the CA files",
    ),
    ("PKCS#11 module loaded", "dlopen the module, C_Initialize"),
    ("tokens present", "slot list, token and slot info"),
    (
        "certificates found",
        "session, object search, attribute reads",
    ),
    (
        "certificate valid",
        "parse, map (NSS look-up), chain validation: 1 signature",
    ),
    (
        "logged in to the token",
        "PIN flags, PIN prompt (stdin), C_Login",
    ),
    (
        "token signed the challenge",
        "key search, challenge, C_SignInit + C_Sign",
    ),
    ("challenge signature verified", "signature verification"),
    ("login OK", "C_Logout, C_CloseSession, C_Finalize, dlclose"),
];

/// Where `tessera login` spends its time, step by step: the core flow
/// without libpam, with debug logging to a pipe, `rounds` runs in one process
/// after a warm-up of a chunk (so that libraries are loaded, as in the PAM
/// harness); the median of each interval between two logged steps.
fn login_timeline(rig: &LoginRig, rounds: usize) -> String {
    let runs = rounds + ROUNDS;
    let mut child = Command::new(tessera_testrig::bins::artefact("tessera"))
        .args(["login", "--user", "alice", "--repeat"])
        .arg(runs.to_string())
        .arg("--config")
        .arg(rig.config_path())
        .envs(rig.env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        for _ in 0..runs {
            writeln!(stdin, "{PIN}").unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tessera login failed:\n{log}");
    // Each run logs "[    1.234 ms]  DEBUG step..." lines (the PIN prompt,
    // with no newline after it, may come first) and ends with
    // "login OK: ..., 12.345 ms".
    let mut intervals: Vec<Vec<u64>> = vec![Vec::new(); STEPS.len()];
    let mut run: Vec<&str> = Vec::new();
    let mut finished = 0;
    for line in log.lines() {
        run.push(line);
        if !line.starts_with("login OK") {
            continue;
        }
        finished += 1;
        if finished > ROUNDS {
            let at = |needle: &str| -> u64 {
                let line = run
                    .iter()
                    .find(|line| line.contains(needle))
                    .unwrap_or_else(|| panic!("no {needle:?} in\n{}", run.join("\n")));
                let millis = if needle == "login OK" {
                    line.rsplit(", ")
                        .next()
                        .and_then(|end| end.strip_suffix(" ms"))
                } else {
                    line.split_once('[')
                        .and_then(|(_, rest)| rest.split(" ms]").next())
                };
                let millis: f64 = millis
                    .and_then(|text| text.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no time in {line:?}"));
                (millis * 1000.0).round() as u64
            };
            let mut previous = 0;
            for (interval, (needle, _)) in intervals.iter_mut().zip(STEPS) {
                let reached = at(needle);
                interval.push(reached.saturating_sub(previous));
                previous = reached;
            }
        }
        run.clear();
    }
    assert_eq!(finished, runs, "{log}");
    let mut text = format!(
        "\nWhere the time goes: `tessera login --repeat {runs}` (the same core flow without \
         libpam, debug log to a pipe), the last {rounds} runs; median per interval:\n\n\
         | up to the step | covers | median µs |\n|---|---|---|\n"
    );
    let mut total = 0;
    for (samples, (needle, covers)) in intervals.iter_mut().zip(STEPS) {
        samples.sort_unstable();
        let median = samples[samples.len() / 2];
        total += median;
        let _ = writeln!(text, "| {needle} | {covers} | {median} |");
    }
    let _ = writeln!(text, "| (sum of medians) | | {total} |");
    text
}

/// Section 2: the virtual card over OpenSC: tessera vs pam_pkcs11 vs pam_p11.
fn virtual_card_logins() -> String {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let dir = rig.path().join("card");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key.pem");
    let spki = dir.join("spki.der");
    tessera_testrig::run(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&key),
    );
    tessera_testrig::run(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&spki),
    );
    let certificate = rig
        .ca
        .issue(&UserCert::valid("alice"), &std::fs::read(&spki).unwrap());
    let cert = dir.join("cert.der");
    std::fs::write(&cert, &certificate).unwrap();
    let pcscd = Pcscd::start_for_readers(&rig.path().join("pcscd"), &[0]).expect("pcscd");
    let card = CardSpec::new(0)
        .slot("9a", &key, &cert)
        .pin(PIN)
        .start(&pcscd)
        .expect("virtual card");
    pcscd
        .wait_card(0, true, Duration::from_secs(5))
        .expect("card present");
    rig.add_env(pcscd.env());
    rig.use_pkcs11_module(OPENSC_PKCS11);
    rig.quiet_service();
    references::pam_pkcs11_service(&rig, OPENSC_PKCS11, "");
    references::pam_p11_service(
        &rig,
        OPENSC_PKCS11,
        "alice",
        &pem_encode("CERTIFICATE", &certificate),
    );
    let mut services = vec![PAM_PKCS11_SERVICE, PAM_P11_SERVICE];
    services.extend(baseline_service(&rig));
    let mut notes = Vec::new();
    // OpenSC's PIV driver labels the token with the first certificate's CN.
    let sssd = start_sssd(&mut rig, "alice", pcscd.env(), &mut notes);
    if sssd.is_some() {
        services.push(PAM_SSS_SERVICE);
    }
    let mut samples = Samples::default();
    for chunk in 0..CHUNKS {
        let results = rig.bench_services("alice", PIN, ROUNDS / 2, &services);
        if chunk == 0 {
            continue;
        }
        for (service, micros) in &results {
            samples.add(&card_label(service), micros);
        }
    }
    notes.push(card_traffic(&rig, card.log_path(), &services));
    drop(sssd);
    table(
        "Login through libpam, virtual PIV card over pcscd + OpenSC, ECDSA P-256",
        &samples,
        None,
        &notes,
    )
}

/// The row name of a service in the virtual card's tables.
fn card_label(service: &str) -> String {
    match service {
        SERVICE => "pam_tessera".to_owned(),
        PAM_PKCS11_SERVICE => "pam_pkcs11 (ca,signature; cn mapper)".to_owned(),
        PAM_P11_SERVICE => "pam_p11 (authorized certificate)".to_owned(),
        PAM_SSS_SERVICE => PAM_SSS_LABEL.to_owned(),
        BASELINE_SERVICE => baseline_label(),
        other => other.to_owned(),
    }
}

/// The card's APDU commands in `log` (its `--verbose` log) past line `from`,
/// counted by instruction.
fn apdus_since(log: &std::path::Path, from: usize) -> (usize, BTreeMap<&'static str, usize>) {
    let text = std::fs::read_to_string(log).unwrap();
    let commands: Vec<&str> = text
        .lines()
        .skip(from)
        .filter_map(|line| line.strip_prefix("> "))
        .collect();
    let mut by_instruction = BTreeMap::new();
    for command in &commands {
        // The log writes each command as upper-case hex: CLA INS P1 P2...
        let name = match command.get(2..4) {
            Some("A4") => "SELECT",
            Some("CB") => "GET DATA",
            Some("20") => "VERIFY",
            Some("87") => "GENERAL AUTHENTICATE",
            Some("C0") => "GET RESPONSE",
            _ => "other",
        };
        *by_instruction.entry(name).or_insert(0) += 1;
    }
    (commands.len(), by_instruction)
}

/// One login per module, each alone in a fresh harness process, counting
/// the commands the virtual card answered: the card's round trips are what
/// a login over a real reader waits for.
fn card_traffic(rig: &LoginRig, log: &std::path::Path, others: &[&str]) -> String {
    let confdir = rig.confdir();
    let own_stack = std::fs::read_to_string(confdir.join(SERVICE)).unwrap();
    let mut text = String::from(
        "APDU commands the card answered for one login (each module alone in a fresh process):\n\n\
         | module | commands | by instruction |\n|---|---|---|\n",
    );
    for service in std::iter::once(&SERVICE).chain(others) {
        // Run that module's stack under the rig's service name.
        rig.write_service(&std::fs::read_to_string(confdir.join(service)).unwrap());
        let from = std::fs::read_to_string(log).unwrap().lines().count();
        let micros = rig.bench_authenticate("alice", PIN, 1);
        assert_eq!(micros.len(), 1, "{service} did not log in");
        let (total, by_instruction) = apdus_since(log, from);
        let listed: Vec<String> = by_instruction
            .iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
        let _ = writeln!(
            text,
            "| {} | {total} | {} |",
            card_label(service),
            listed.join(", ")
        );
    }
    rig.write_service(&own_stack);
    text
}

/// Section 4: revocation by a local CRL of 100,000 entries, tessera
/// (`revocation = "crl"`, a `pki.crl.files` directory) vs pam_pkcs11
/// (`cert_policy = ca,signature,crl_offline`, a hashed `crl_dir`). Both are
/// first shown to refuse the user when the same-sized CRL lists them.
fn crl_logins() -> String {
    const ENTRIES: u64 = 100_000;
    let mut rig = LoginRig::new();
    let enrolled = rig.enroll("alice", KeyType::P256);
    rig.quiet_service();
    let pkcs11_dir = references::pam_pkcs11_service(&rig, SOFTHSM_MODULE, ",crl_offline");
    let tessera_crls = rig.path().join("crl");
    std::fs::create_dir_all(&tessera_crls).unwrap();
    rig.write_config(&rig.default_config().replace(
        "revocation = \"none\"\n",
        &format!(
            "revocation = \"crl\"\n[pki.crl]\nfiles = [\"{}\"]\nfetch = false\n",
            tessera_crls.display()
        ),
    ));
    let next_update = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let mut entries: Vec<Revoked> = (0..ENTRIES)
        .map(|index| Revoked::new(0x100_0000 + index, None))
        .collect();
    let install = |crl: &[u8]| {
        std::fs::write(tessera_crls.join("ca.crl"), crl).unwrap();
        let pem_dir = pkcs11_dir.join("crls");
        for entry in std::fs::read_dir(&pem_dir).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        std::fs::write(pem_dir.join("ca.crl.pem"), pem_encode("X509 CRL", crl)).unwrap();
        tessera_testrig::run(Command::new("openssl").arg("rehash").arg(&pem_dir));
        crl.len()
    };
    let services = [PAM_PKCS11_SERVICE];

    // The user revoked in a CRL of the same size: both must refuse.
    entries[ENTRIES as usize / 2] = Revoked::new(0, None);
    entries[ENTRIES as usize / 2].serial = serial_of(&enrolled.certificate);
    install(&rig.ca.crl(&entries, next_update));
    for service in [SERVICE, PAM_PKCS11_SERVICE] {
        let saved = std::fs::read_to_string(rig.confdir().join(SERVICE)).unwrap();
        rig.write_service(&std::fs::read_to_string(rig.confdir().join(service)).unwrap());
        let run = rig.authenticate(Some("alice"), &[PIN]);
        rig.write_service(&saved);
        let result = run.result("authenticate");
        assert_ne!(result, "PAM_SUCCESS", "{service} ignored the CRL: {run}");
    }

    entries[ENTRIES as usize / 2] = Revoked::new(0x100_0000 + ENTRIES, None);
    let size = install(&rig.ca.crl(&entries, next_update));
    let mut samples = Samples::default();
    for chunk in 0..CHUNKS {
        let results = rig.bench_services("alice", PIN, ROUNDS / 2, &services);
        if chunk == 0 {
            continue;
        }
        for (service, micros) in &results {
            let label = match service.as_str() {
                SERVICE => "pam_tessera (revocation = \"crl\", local file)",
                PAM_PKCS11_SERVICE => "pam_pkcs11 (ca,signature,crl_offline)",
                other => other,
            };
            samples.add(label, micros);
        }
    }
    table(
        &format!(
            "Login through libpam with a local CRL of {ENTRIES} entries ({} KiB DER), SoftHSM2, ECDSA P-256",
            size / 1024
        ),
        &samples,
        None,
        &["Both modules refused the user, in the same run, when the same-sized CRL listed their certificate.".to_owned()],
    )
}

/// Section 6b: module load time as a login sees it: a fresh process's
/// pam_start_confdir + pam_end (libpam dlopens and dlcloses the stack's
/// modules), for a one-line stack of each module; `pam_permit.so` alone is
/// libpam's own cost.
fn load_times() -> String {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    rig.quiet_service();
    references::pam_pkcs11_service(&rig, SOFTHSM_MODULE, "");
    references::pam_p11_service(&rig, SOFTHSM_MODULE, "alice", "");
    std::fs::write(
        rig.confdir().join("ref-permit"),
        "auth required pam_permit.so\n",
    )
    .unwrap();
    let baseline = baseline_service(&rig).map(|service| (baseline_label(), service));
    let stacks: Vec<(String, String)> = [
        ("pam_tessera.so".to_owned(), SERVICE),
        ("pam_pkcs11.so".to_owned(), PAM_PKCS11_SERVICE),
        ("pam_p11.so".to_owned(), PAM_P11_SERVICE),
        ("pam_permit.so (libpam alone)".to_owned(), "ref-permit"),
    ]
    .into_iter()
    .chain(baseline)
    .map(|(label, service)| {
        (
            label,
            std::fs::read_to_string(rig.confdir().join(service)).unwrap(),
        )
    })
    .collect();
    let saved = std::fs::read_to_string(rig.confdir().join(SERVICE)).unwrap();
    let mut samples = Samples::default();
    for round in 0..ROUNDS * CHUNKS {
        for (label, stack) in &stacks {
            rig.write_service(stack);
            let run = rig.pam_with(Some("alice"), &[], &[], &["--repeat", "1", "--load-only"]);
            let micros: Vec<u64> = run
                .events
                .iter()
                .find(|event| event["event"] == "bench")
                .and_then(|event| event["micros"].as_array())
                .unwrap_or_else(|| panic!("{label}: no load time: {run}"))
                .iter()
                .filter_map(serde_json::Value::as_u64)
                .collect();
            if round >= ROUNDS {
                samples.add(label, &micros);
            }
        }
    }
    rig.write_service(&saved);
    table(
        "Module load time (pam_start + pam_end in a fresh process, one-line stack)",
        &samples,
        Some("pam_permit.so (libpam alone)"),
        &[],
    )
}

/// Section 6: size of the module and peak memory of a process that logs in.
fn footprint() -> String {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    rig.quiet_service();
    references::pam_pkcs11_service(&rig, SOFTHSM_MODULE, "");
    let size = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let peak = |others: &[&str], service: Option<&str>| {
        let mut extra = vec!["--repeat", "5"];
        let run = match service {
            Some(service) => {
                let saved = std::fs::read_to_string(rig.confdir().join(SERVICE)).unwrap();
                rig.write_service(&std::fs::read_to_string(rig.confdir().join(service)).unwrap());
                let run = rig.pam_with(Some("alice"), &[PIN], &[], &extra);
                rig.write_service(&saved);
                run
            }
            None => {
                for other in others {
                    extra.extend(["--alternate", other]);
                }
                rig.pam_with(Some("alice"), &[PIN], &[], &extra)
            }
        };
        run.events
            .iter()
            .find(|event| event["event"] == "memory")
            .and_then(|event| event["peak_kib"].as_u64())
            .unwrap_or(0)
    };
    let tessera_peak = peak(&[], None);
    let pkcs11_peak = peak(&[], Some(PAM_PKCS11_SERVICE));
    let baseline = baseline_service(&rig).map(|service| peak(&[], Some(service)));
    let mut text = String::from("### Footprint\n\n| module | file size | peak RSS of the PAM process over 5 logins |\n|---|---|---|\n");
    let _ = writeln!(
        text,
        "| pam_tessera.so | {} KiB | {tessera_peak} KiB |",
        size(&pam_module()) / 1024
    );
    if let (Some(baseline_peak), Some(module)) =
        (baseline, std::env::var_os("TESSERA_BENCH_BASELINE_MODULE"))
    {
        let _ = writeln!(
            text,
            "| {} | {} KiB | {baseline_peak} KiB |",
            baseline_label(),
            size(std::path::Path::new(&module)) / 1024
        );
    }
    let _ = writeln!(
        text,
        "| tessera-auth (the helper, run per PAM call) | {} KiB | (its own process) |",
        size(&tessera_testrig::bins::artefact("tessera-auth")) / 1024
    );
    let _ = writeln!(
        text,
        "| pam_pkcs11.so | {} KiB (+ its mappers and libcrypto) | {pkcs11_peak} KiB |",
        size(std::path::Path::new(
            "/lib/x86_64-linux-gnu/security/pam_pkcs11.so"
        )) / 1024
    );
    text
}

/// `tessera-bench profile`: instruction counts (valgrind callgrind, which is
/// deterministic, so a busy machine does not skew it) of LOGINS logins
/// through libpam against LOGINS rounds of the floor program, on the same
/// SoftHSM P-256 token, then the functions with the most inclusive cost in
/// the logins. Files are kept in the printed directory for
/// `callgrind_annotate` or kcachegrind.
fn profile() -> String {
    const LOGINS: usize = 10;
    let mut rig = LoginRig::new();
    let enrolled = rig.enroll("alice", KeyType::P256);
    rig.quiet_service();
    let dir = std::env::temp_dir().join(format!("tessera-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let login_out = dir.join("callgrind.login");
    let floor_out = dir.join("callgrind.floor");
    let callgrind = |out: &std::path::Path| {
        vec![
            "valgrind".to_owned(),
            "--tool=callgrind".to_owned(),
            format!("--callgrind-out-file={}", out.display()),
        ]
    };
    rig.run_under(callgrind(&login_out));
    rig.bench_authenticate("alice", PIN, LOGINS);
    let (conf_var, conf) = rig.hsm.env();
    tessera_testrig::run(
        Command::new("valgrind")
            .args(callgrind(&floor_out)[1..].iter())
            .arg(tessera_testrig::bins::artefact("tessera-rig-p11"))
            .args([
                "--module",
                SOFTHSM_MODULE,
                "--token",
                &enrolled.token,
                "--pin",
                PIN,
            ])
            .args(["bench-sign", "--id", &enrolled.id, "--iterations"])
            .arg(LOGINS.to_string())
            .env(conf_var, conf),
    );
    let total = |out: &std::path::Path| -> u64 {
        std::fs::read_to_string(out)
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix("totals: "))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no totals in {}", out.display()))
    };
    let (login, floor) = (total(&login_out), total(&floor_out));
    let annotate = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100"])
        .arg(&login_out)
        .output()
        .expect("callgrind_annotate");
    let listing: Vec<String> = String::from_utf8_lossy(&annotate.stdout)
        .lines()
        .filter(|line| line.contains(" (") || line.contains(':'))
        .skip_while(|line| !line.contains("file:function"))
        .skip(1)
        .take(40)
        .map(str::to_owned)
        .collect();
    format!(
        "### Instruction counts (callgrind), {LOGINS} rounds each, SoftHSM2 P-256\n\n\
         | program | instructions | per round | ratio |\n|---|---|---|---|\n\
         | pam_tessera: pam_start + pam_authenticate + pam_end (harness process) | {login} | {} | {:.2} |\n\
         | floor: C_Initialize + C_Login + C_Sign + C_Finalize (tessera-rig-p11 process) | {floor} | {} | 1.00 |\n\n\
         Both totals include their process's start-up. Files: {}\n\n\
         Inclusive cost in the logins (top 40):\n\n```\n{}\n```\n",
        login / LOGINS as u64,
        login as f64 / floor as f64,
        floor / LOGINS as u64,
        dir.display(),
        listing.join("\n")
    )
}

/// The sections `tessera-bench [SECTION...]` runs, in order (all by default).
const SECTIONS: [&str; 6] = ["softhsm", "card", "crl", "footprint", "load", "profile"];

fn main() -> ExitCode {
    let mut wanted: Vec<String> = std::env::args().skip(1).collect();
    if let Some(unknown) = wanted
        .iter()
        .find(|name| !SECTIONS.contains(&name.as_str()))
    {
        eprintln!(
            "tessera-bench: unknown section {unknown:?}; sections: {}",
            SECTIONS.join(" ")
        );
        return ExitCode::from(2);
    }
    if wanted.is_empty() {
        wanted = SECTIONS.iter().map(|name| (*name).to_owned()).collect();
    }
    if !references::installed() {
        eprintln!("tessera-bench: install libpam-pkcs11 and libpam-p11 first (scripts/bench does)");
        return ExitCode::from(2);
    }
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| {
                line.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    if wanted != ["profile"] {
        println!(
        "## tessera benchmarks\n\nmachine: {machine}, {cores} cores; load average at start: {}; {} rounds per module after one warm-up chunk, modules interleaved round by round.\n",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        ROUNDS * (CHUNKS - 1)
    );
    }
    for section in &wanted {
        match section.as_str() {
            "softhsm" => {
                println!("{}", softhsm_logins(KeyType::Rsa2048, "RSA-2048"));
                println!("{}", softhsm_logins(KeyType::P256, "ECDSA P-256"));
            }
            "card" => println!("{}", virtual_card_logins()),
            "crl" => println!("{}", crl_logins()),
            "footprint" => println!("{}", footprint()),
            "load" => println!("{}", load_times()),
            _ => println!("{}", profile()),
        }
    }
    ExitCode::SUCCESS
}
