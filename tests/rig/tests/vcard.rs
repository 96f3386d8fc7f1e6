//! The virtual PIV card behind real pcscd, real vpcd and real OpenSC: what
//! OpenSC's PKCS#11 module makes of it, signatures checked by openssl, PIN
//! lockout and PUK unblock, and card pull/insert as pcscd sees it.
//!
//! Every test starts its own pcscd and cards (serialised machine-wide by the
//! harness's lock) and stops them by PID. The `#[ignore]`d
//! `measure_pull_latency_and_rsa_signature_cost` prints the figures quoted
//! in tests/README.md.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tessera_testrig::pcscd::{self, Pcscd, OPENSC_PKCS11};
use tessera_testrig::vcard::{CardSpec, VirtualCard};

const PCSC_TIMEOUT: Duration = Duration::from_secs(3);
const GUID: &str = "00112233445566778899aabbccddeeff";

/// A key pair and self-signed certificate made with the openssl CLI.
struct KeyPair {
    key: PathBuf,
    cert: PathBuf,
    public: PathBuf,
}

fn keypair(dir: &Path, name: &str, kind: &str, cn: &str) -> KeyPair {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    let public = dir.join(format!("{name}.pub"));
    let newkey: Vec<&str> = match kind {
        "rsa2048" => vec!["-newkey", "rsa:2048"],
        "p256" => vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "p384" => vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        other => panic!("unknown key kind {other}"),
    };
    run(Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "30", "-subj"])
        .arg(format!("/CN={cn}"))
        .args(newkey)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    run(Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(&cert)
        .arg("-out")
        .arg(&public));
    KeyPair { key, cert, public }
}

fn output(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn run(command: &mut Command) -> String {
    let out = output(command);
    assert!(
        out.status.success(),
        "{command:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// pkcs11-tool on OpenSC's module with the rig's OPENSC_CONF.
fn pkcs11_tool(pcscd: &Pcscd, args: &[&str]) -> Output {
    output(
        Command::new("pkcs11-tool")
            .args(["--module", OPENSC_PKCS11])
            .args(args)
            .envs(pcscd.env()),
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn token_flags(pcscd: &Pcscd) -> String {
    let out = pkcs11_tool(pcscd, &["--list-token-slots"]);
    assert!(out.status.success(), "{}", text(&out));
    let listing = text(&out);
    listing
        .lines()
        .find(|l| l.trim_start().starts_with("token flags"))
        .unwrap_or_else(|| panic!("no token in:\n{listing}"))
        .to_owned()
}

fn openssl_verifies(digest: &str, public: &Path, data: &Path, signature: &Path) -> bool {
    output(
        Command::new("openssl")
            .args(["dgst", digest, "-verify"])
            .arg(public)
            .arg("-signature")
            .arg(signature)
            .arg(data),
    )
    .status
    .success()
}

/// Signs `data` with the key `id` on the token and checks the signature
/// with openssl against the certificate's public key, and that a changed
/// message does not verify.
fn sign_and_verify(pcscd: &Pcscd, extra: &[&str], id: &str, mechanism: &str, public: &Path) {
    let dir = pcscd.dir();
    let data = dir.join(format!("data-{id}"));
    let other = dir.join(format!("other-{id}"));
    let sig = dir.join(format!("sig-{id}"));
    std::fs::write(&data, b"tessera challenge\n").unwrap();
    std::fs::write(&other, b"tessera challengf\n").unwrap();
    let mut args = extra.to_vec();
    let (data_s, sig_s) = (data.to_str().unwrap(), sig.to_str().unwrap());
    args.extend([
        "--sign",
        "--id",
        id,
        "--mechanism",
        mechanism,
        "-i",
        data_s,
        "-o",
        sig_s,
    ]);
    if mechanism.starts_with("ECDSA") {
        args.extend(["--signature-format", "openssl"]);
    }
    let out = pkcs11_tool(pcscd, &args);
    assert!(out.status.success(), "{}", text(&out));
    let digest = if mechanism.contains("384") {
        "-sha384"
    } else {
        "-sha256"
    };
    assert!(
        openssl_verifies(digest, public, &data, &sig),
        "signature of key {id} does not verify"
    );
    assert!(
        !openssl_verifies(digest, public, &other, &sig),
        "signature verifies for other data"
    );
}

struct OneCard {
    pcscd: Pcscd,
    card: VirtualCard,
    rsa: KeyPair,
    p256: KeyPair,
    p384: KeyPair,
    _dir: tempfile::TempDir,
}

/// One card in reader 0: RSA-2048 in 9A, P-256 in 9C, P-384 in 9E.
fn one_card(configure: impl FnOnce(CardSpec) -> CardSpec) -> OneCard {
    let dir = tempfile::tempdir().unwrap();
    let rsa = keypair(dir.path(), "rsa", "rsa2048", "alice rsa");
    let p256 = keypair(dir.path(), "p256", "p256", "alice p256");
    let p384 = keypair(dir.path(), "p384", "p384", "alice p384");
    let pcscd = Pcscd::start_for_readers(dir.path(), &[0]).unwrap();
    let spec = CardSpec::new(0)
        .guid(GUID)
        .slot("9a", &rsa.key, &rsa.cert)
        .slot("9c", &p256.key, &p256.cert)
        .slot("9e", &p384.key, &p384.cert);
    let card = configure(spec).start(&pcscd).unwrap();
    OneCard {
        pcscd,
        card,
        rsa,
        p256,
        p384,
        _dir: dir,
    }
}

/// Splits `pkcs11-tool -O` output into objects: a header line plus its
/// indented attribute lines.
fn objects(listing: &str) -> Vec<String> {
    let mut objects: Vec<String> = Vec::new();
    for line in listing.lines() {
        if line.starts_with(char::is_whitespace) {
            if let Some(last) = objects.last_mut() {
                last.push('\n');
                last.push_str(line.trim());
            }
        } else {
            objects.push(line.to_owned());
        }
    }
    objects
}

fn has_object(objects: &[String], header: &str, attrs: &[&str]) -> bool {
    objects
        .iter()
        .any(|o| o.starts_with(header) && attrs.iter().all(|a| o.lines().any(|l| l == *a)))
}

#[test]
fn opensc_shows_the_token_with_its_certificates_and_keys() {
    let rig = one_card(|s| s);
    let out = pkcs11_tool(&rig.pcscd, &["--list-token-slots"]);
    let listing = text(&out);
    assert!(out.status.success(), "{listing}");
    // Label from the first certificate's CN; serial from the CHUID GUID.
    assert!(
        listing.contains("token label        : alice rsa"),
        "{listing}"
    );
    assert!(
        listing.contains("serial num         : 8899aabbccddeeff"),
        "{listing}"
    );
    assert!(listing.contains("token manufacturer : piv_II"), "{listing}");

    let out = pkcs11_tool(
        &rig.pcscd,
        &["--list-objects", "--login", "--pin", "123456"],
    );
    let listing = text(&out);
    assert!(out.status.success(), "{listing}");
    let objs = objects(&listing);
    for (id, subject) in [
        ("01", "alice rsa"),
        ("02", "alice p256"),
        ("04", "alice p384"),
    ] {
        let subject = format!("subject:    DN: CN={subject}");
        let id = format!("ID:         {id}");
        assert!(
            has_object(&objs, "Certificate Object", &[&subject, &id]),
            "no certificate {subject} {id} in:\n{listing}"
        );
    }
    assert!(
        has_object(&objs, "Private Key Object; RSA", &["ID:         01"]),
        "{listing}"
    );
    assert!(
        has_object(&objs, "Private Key Object; EC", &["ID:         02"]),
        "{listing}"
    );
    assert!(
        has_object(&objs, "Private Key Object; EC", &["ID:         04"]),
        "{listing}"
    );
    // Slot 9D holds nothing, so OpenSC must not invent key 03.
    assert!(!listing.contains("ID:         03"), "{listing}");
}

#[test]
fn generate_random_comes_from_the_card() {
    let rig = one_card(|s| s);
    let out = pkcs11_tool(&rig.pcscd, &["--generate-random", "32"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(out.stdout.len(), 32);
    assert!(out.stdout.iter().any(|b| *b != 0));
    // OpenSC's PIV driver asks for 8-byte challenges from key 9B.
    let log = std::fs::read_to_string(rig.card.log_path()).unwrap();
    assert_eq!(log.matches("> 0087009B047C02810000").count(), 4, "{log}");
}

#[test]
fn rsa_2048_signature_verifies_with_openssl() {
    let rig = one_card(|s| s);
    let login = ["--login", "--pin", "123456"];
    sign_and_verify(&rig.pcscd, &login, "01", "SHA256-RSA-PKCS", &rig.rsa.public);
}

#[test]
fn ecdsa_signatures_verify_with_openssl() {
    let rig = one_card(|s| s);
    let login = ["--login", "--pin", "123456"];
    // 9C needs the PIN again right before signing (CKA_ALWAYS_AUTHENTICATE);
    // pkcs11-tool does the context-specific login with the same PIN.
    sign_and_verify(&rig.pcscd, &login, "02", "ECDSA-SHA256", &rig.p256.public);
    sign_and_verify(&rig.pcscd, &login, "04", "ECDSA-SHA384", &rig.p384.public);
}

#[test]
fn wrong_pins_lock_the_token_and_the_puk_unblocks_it() {
    let rig = one_card(|s| s.pin_tries(3).puk_tries(3));
    let (pcscd, card) = (&rig.pcscd, &rig.card);
    let flags = token_flags(pcscd);
    assert!(
        !flags.contains("final user PIN try") && !flags.contains("locked"),
        "{flags}"
    );

    let wrong_login = ["--login", "--pin", "999999", "--list-objects"];
    for tries_left in [2, 1, 0] {
        let out = pkcs11_tool(pcscd, &wrong_login);
        assert!(!out.status.success());
        assert!(text(&out).contains("CKR_PIN_INCORRECT"), "{}", text(&out));
        assert_eq!(card.status().unwrap().pin_tries_left, tries_left);
        let flags = token_flags(pcscd);
        match tries_left {
            2 => assert!(!flags.contains("final user PIN try"), "{flags}"),
            1 => assert!(flags.contains("final user PIN try"), "{flags}"),
            _ => assert!(flags.contains("user PIN locked"), "{flags}"),
        }
    }

    // Locked means locked: the right PIN no longer works.
    let out = pkcs11_tool(pcscd, &["--login", "--pin", "123456", "--list-objects"]);
    assert!(text(&out).contains("CKR_PIN_LOCKED"), "{}", text(&out));
    assert_eq!(card.status().unwrap().pin_tries_left, 0);

    // A wrong PUK costs a PUK try and leaves the PIN blocked.
    let out = pkcs11_tool(
        pcscd,
        &["--unlock-pin", "--puk", "00000000", "--new-pin", "654321"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let status = card.status().unwrap();
    assert_eq!((status.pin_tries_left, status.puk_tries_left), (0, 2));
    assert!(token_flags(pcscd).contains("user PIN locked"));

    // The right PUK sets a new PIN and resets both counters.
    let out = pkcs11_tool(
        pcscd,
        &["--unlock-pin", "--puk", "12345678", "--new-pin", "654321"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let status = card.status().unwrap();
    assert_eq!((status.pin_tries_left, status.puk_tries_left), (3, 3));
    assert!(!token_flags(pcscd).contains("locked"));

    let login = ["--login", "--pin", "654321"];
    sign_and_verify(pcscd, &login, "01", "SHA256-RSA-PKCS", &rig.rsa.public);
    let out = pkcs11_tool(pcscd, &["--login", "--pin", "123456", "--list-objects"]);
    assert!(
        text(&out).contains("CKR_PIN_INCORRECT"),
        "old PIN still works"
    );
}

#[test]
fn pkcs11_change_pin_replaces_the_pin() {
    let rig = one_card(|s| s);
    let out = pkcs11_tool(
        &rig.pcscd,
        &[
            "--login",
            "--pin",
            "123456",
            "--change-pin",
            "--new-pin",
            "24681357",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = pkcs11_tool(
        &rig.pcscd,
        &["--login", "--pin", "123456", "--list-objects"],
    );
    assert!(text(&out).contains("CKR_PIN_INCORRECT"), "{}", text(&out));
    let login = ["--login", "--pin", "24681357"];
    sign_and_verify(&rig.pcscd, &login, "01", "SHA256-RSA-PKCS", &rig.rsa.public);
}

#[test]
fn pin_counter_survives_a_card_restart_with_a_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("card.state");
    let rig = one_card(|s| s.state_file(&state));
    let out = pkcs11_tool(
        &rig.pcscd,
        &["--login", "--pin", "999999", "--list-objects"],
    );
    assert!(text(&out).contains("CKR_PIN_INCORRECT"), "{}", text(&out));
    let OneCard {
        pcscd,
        card,
        rsa,
        _dir: _keep_dir,
        ..
    } = rig;
    card.stop();
    pcscd.wait_card(0, false, PCSC_TIMEOUT).unwrap();

    let card = CardSpec::new(0)
        .slot("9a", &rsa.key, &rsa.cert)
        .state_file(&state)
        .start(&pcscd)
        .unwrap();
    assert_eq!(card.status().unwrap().pin_tries_left, 2);
    let out = pkcs11_tool(&pcscd, &["--login", "--pin", "999999", "--list-objects"]);
    assert!(!out.status.success());
    assert!(token_flags(&pcscd).contains("final user PIN try"));
}

#[test]
fn pull_empties_the_reader_and_insert_brings_the_token_back() {
    let rig = one_card(|s| s);
    let (pcscd, card) = (&rig.pcscd, &rig.card);
    assert!(pcscd.card_present(0).unwrap());

    card.pull().unwrap();
    pcscd.wait_card(0, false, PCSC_TIMEOUT).unwrap();
    assert!(!pcscd.card_present(0).unwrap());
    let status = card.status().unwrap();
    assert!(!status.inserted && !status.connected);
    let listing = text(&pkcs11_tool(pcscd, &["--list-token-slots"]));
    assert!(!listing.contains("alice rsa"), "{listing}");

    card.insert().unwrap();
    pcscd.wait_card(0, true, PCSC_TIMEOUT).unwrap();
    let listing = text(&pkcs11_tool(pcscd, &["--list-token-slots"]));
    assert!(
        listing.contains("token label        : alice rsa"),
        "{listing}"
    );
    let login = ["--login", "--pin", "123456"];
    sign_and_verify(pcscd, &login, "01", "SHA256-RSA-PKCS", &rig.rsa.public);
}

#[test]
fn a_card_started_pulled_appears_on_insert() {
    let rig = one_card(|s| s.pulled());
    assert!(!rig.pcscd.card_present(0).unwrap());
    rig.card.insert().unwrap();
    rig.pcscd.wait_card(0, true, PCSC_TIMEOUT).unwrap();
}

#[test]
fn two_cards_in_two_readers_pulling_one_leaves_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let alice = keypair(dir.path(), "alice", "p256", "alice");
    let bob = keypair(dir.path(), "bob", "rsa2048", "bob");
    let pcscd = Pcscd::start(dir.path()).unwrap();
    let card_a = CardSpec::new(0)
        .slot("9a", &alice.key, &alice.cert)
        .start(&pcscd)
        .unwrap();
    let card_b = CardSpec::new(1)
        .slot("9a", &bob.key, &bob.cert)
        .pin("87654321")
        .start(&pcscd)
        .unwrap();
    let listing = text(&pkcs11_tool(&pcscd, &["--list-token-slots"]));
    assert!(listing.contains("token label        : alice"), "{listing}");
    assert!(listing.contains("token label        : bob"), "{listing}");

    card_a.pull().unwrap();
    pcscd.wait_card(0, false, PCSC_TIMEOUT).unwrap();
    assert!(pcscd.card_present(1).unwrap());
    assert!(card_b.status().unwrap().connected);
    let listing = text(&pkcs11_tool(&pcscd, &["--list-token-slots"]));
    assert!(!listing.contains("token label        : alice"), "{listing}");
    assert!(listing.contains("token label        : bob"), "{listing}");
    let bob_login = ["--token-label", "bob", "--login", "--pin", "87654321"];
    sign_and_verify(&pcscd, &bob_login, "01", "SHA256-RSA-PKCS", &bob.public);

    card_a.insert().unwrap();
    pcscd.wait_card(0, true, PCSC_TIMEOUT).unwrap();
    let alice_login = ["--token-label", "alice", "--login", "--pin", "123456"];
    sign_and_verify(&pcscd, &alice_login, "01", "ECDSA-SHA256", &alice.public);
}

#[test]
fn control_subcommand_drives_the_card_from_a_shell() {
    let rig = one_card(|s| s);
    let vcard = tessera_testrig::vcard::vcard_binary().unwrap();
    let ctl = |cmd: &str| {
        output(
            Command::new(&vcard)
                .args(["ctl", "--control"])
                .arg(rig.card.control_path())
                .arg(cmd),
        )
    };
    let out = ctl("pull");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok pulled\n");
    rig.pcscd.wait_card(0, false, PCSC_TIMEOUT).unwrap();
    let out = ctl("status");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok card=pulled link=down"));
    let out = ctl("dance");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("err "));
    assert!(ctl("insert").status.success());
    rig.pcscd.wait_card(0, true, PCSC_TIMEOUT).unwrap();
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[((sorted.len() - 1) * p + 50) / 100]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Run with:
/// `cargo test -p tessera-testrig --release --test vcard -- --ignored --nocapture measure_`
#[test]
#[ignore = "measurement: 50 pulls take about half a minute"]
fn measure_pull_latency_and_rsa_signature_cost() {
    let rig = one_card(|s| s);
    let ctx = pcsc::Context::establish(pcsc::Scope::User).unwrap();

    // pcscd polls vpcd every 400 ms. Acting right after an event would lock
    // onto that cycle and always measure 400 ms, so each pull and insert
    // waits a pseudo-random 0-499 ms first, as a user would.
    let mut seed = {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            | 1
    };
    let mut jitter = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        Duration::from_millis(seed % 500)
    };
    let mut removals = Vec::new();
    let mut insertions = Vec::new();
    for _ in 0..50 {
        pcscd::wait_reader(&ctx, 0, true, PCSC_TIMEOUT).unwrap();
        std::thread::sleep(jitter());
        let start = Instant::now();
        rig.card.pull().unwrap();
        pcscd::wait_reader(&ctx, 0, false, PCSC_TIMEOUT).unwrap();
        removals.push(start.elapsed());
        std::thread::sleep(jitter());
        let start = Instant::now();
        rig.card.insert().unwrap();
        pcscd::wait_reader(&ctx, 0, true, PCSC_TIMEOUT).unwrap();
        insertions.push(start.elapsed());
    }
    for (what, samples) in [
        ("pull -> reader empty", &mut removals),
        ("insert -> card present", &mut insertions),
    ] {
        samples.sort();
        println!(
            "{what} over {} cycles: min {} median {} p90 {} max {}",
            samples.len(),
            ms(samples[0]),
            ms(percentile(samples, 50)),
            ms(percentile(samples, 90)),
            ms(samples[samples.len() - 1])
        );
    }

    // The PKCS#11 calls run in a child process, because OPENSC_CONF must be
    // in the environment before OpenSC loads and tests share one process.
    let data = rig.pcscd.dir().join("bench-data");
    let sig = rig.pcscd.dir().join("bench-sig");
    std::fs::write(&data, b"tessera bench\n").unwrap();
    let out = run(Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "rsa_signature_timing_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(rig.pcscd.env())
        .env("TESSERA_TIMING_DATA", &data)
        .env("TESSERA_TIMING_SIG", &sig));
    let line = out
        .lines()
        .find_map(|l| l.find("opensc-pkcs11").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no timing line in:\n{out}"));
    println!("{line}");
    assert!(openssl_verifies("-sha256", &rig.rsa.public, &data, &sig));
}

/// Helper process of the measurement above; does nothing when run by itself.
#[test]
#[ignore = "helper of measure_pull_latency_and_rsa_signature_cost"]
fn rsa_signature_timing_child() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, ObjectClass};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;

    let (Some(data), Some(sig)) = (
        std::env::var_os("TESSERA_TIMING_DATA"),
        std::env::var_os("TESSERA_TIMING_SIG"),
    ) else {
        return;
    };
    let data = std::fs::read(data).unwrap();
    let pkcs11 = Pkcs11::new(OPENSC_PKCS11).unwrap();
    let t = Instant::now();
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let init = t.elapsed();
    let slot = pkcs11.get_slots_with_token().unwrap()[0];
    let session = pkcs11.open_ro_session(slot).unwrap();
    let t = Instant::now();
    session
        .login(UserType::User, Some(&AuthPin::from("123456")))
        .unwrap();
    let login = t.elapsed();
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![0x01]),
        ])
        .unwrap()[0];
    let mut signs = Vec::new();
    let mut signature = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        signature = session.sign(&Mechanism::Sha256RsaPkcs, key, &data).unwrap();
        signs.push(t.elapsed());
    }
    let first = signs[0];
    signs.sort();
    std::fs::write(sig, &signature).unwrap();
    println!(
        "opensc-pkcs11 RSA-2048: C_Initialize {} C_Login {} first C_Sign {} (median of 20: {}, min {}, max {})",
        ms(init),
        ms(login),
        ms(first),
        ms(percentile(&signs, 50)),
        ms(signs[0]),
        ms(signs[signs.len() - 1])
    );
}
