//! The README's demo: a real PAM login with a software token, then a card
//! pull that locks the session.
//!
//! Part 1 builds a scratch PKI and a SoftHSM2 token holding an RSA-2048 key
//! and a certificate for user "demo", logs that user in through real libpam
//! and `pam_tessera.so`, and prints who was mapped, from which certificate,
//! and how long the login took next to the bare token cost (C_Initialize +
//! C_Login + C_Sign) measured in the same run.
//!
//! Part 2 boots systemd as PID 1 in a private namespace (real logind), logs
//! "demo" in there with the project's virtual PIV card behind real pcscd and
//! OpenSC through pam_tessera + pam_systemd, runs tessera-eventd as its
//! systemd unit, pulls the card and shows logind locking that session.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use std::time::{Duration, Instant};

use tessera_testrig::bins::pam_module;
use tessera_testrig::eventd::{add_system_user, locked_hint, EventdUnit, Locker, Session};
use tessera_testrig::login::{CardKey, LoginRig, PIN};
use tessera_testrig::pcscd::{Pcscd, OPENSC_PKCS11};
use tessera_testrig::softhsm::KeyType;
use tessera_testrig::systemd::{Namespace, INNER};
use tessera_testrig::vcard::CardSpec;
use x509_cert::der::Decode;

const ROUNDS: usize = 20;

fn percentile(sorted: &[u64], fraction: f64) -> f64 {
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index] as f64 / 1000.0
}

/// What the demo tells the copy of itself running inside the namespace.
const CARD_PULL: &str = "demo-card-pull";
const REACTION: Duration = Duration::from_secs(10);

/// Part 2, inside the namespace: login with the virtual card, pull, lock.
fn card_pull_inside() -> ExitCode {
    let mut rig = LoginRig::new();
    rig.add_user("demo");
    add_system_user(&rig, "demo");
    let pcscd = Pcscd::start_for_readers(&rig.path().join("pcscd"), &[0]).expect("pcscd");
    let (key, cert) = rig.card_credentials("demo", CardKey::P256);
    let card = CardSpec::new(0)
        .slot("9a", key, cert)
        .pin(PIN)
        .start(&pcscd)
        .expect("virtual card");
    pcscd.wait_card(0, true, REACTION).expect("card inserted");
    rig.add_env(pcscd.env());
    rig.use_pkcs11_module(OPENSC_PKCS11);
    rig.write_service(&format!(
        "auth required {module} config={config}\n\
         account required pam_permit.so\n\
         session required pam_systemd.so class=user type=tty\n\
         session required {module} config={config}\n",
        module = pam_module().display(),
        config = rig.config_path().display(),
    ));
    let mut unit = EventdUnit::install(&pcscd, "");
    unit.start();
    println!("virtual PIV card in \"Virtual PCD 00 00\" (pcscd + OpenSC), tessera-eventd running as its systemd unit");
    let session = Session::login(&rig, "demo");
    println!(
        "pam_authenticate + pam_open_session (pam_tessera, pam_systemd): logind session {} for demo, bound to the card",
        session.id
    );
    let locker = Locker::start(&session, false);
    unit.wait_records("eventd.token.inserted", 1, REACTION);
    let pulled = Instant::now();
    card.pull().expect("pull the card");
    println!("card pulled");
    if locker.wait("lock", REACTION).is_none() {
        println!("no Lock reached the session:\n{}", unit.log_text());
        return ExitCode::FAILURE;
    }
    let lock_after = pulled.elapsed();
    let deadline = Instant::now() + REACTION;
    while !locked_hint(&session.id) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !locked_hint(&session.id) {
        println!(
            "the session did not report LockedHint:\n{}",
            unit.log_text()
        );
        return ExitCode::FAILURE;
    }
    println!(
        "logind sent Lock to session {} {:.0} ms after the pull (pcscd checks the reader every 400 ms); LockedHint = yes",
        session.id,
        lock_after.as_secs_f64() * 1000.0
    );
    ExitCode::SUCCESS
}

/// Part 2, outside: boot the namespace and run part 2 in it.
fn card_pull() -> ExitCode {
    let vcard = tessera_testrig::vcard::vcard_binary().expect("tessera-vcard");
    let started = Instant::now();
    let namespace = match Namespace::boot() {
        Ok(namespace) => namespace,
        Err(error) => {
            eprintln!("tessera-demo: cannot boot systemd in a namespace: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "systemd booted as PID 1 in a private namespace in {:.0} ms (real logind)",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let exe = std::env::current_exe().expect("demo executable");
    let status = namespace
        .command(&exe)
        .env(INNER, CARD_PULL)
        .env("TESSERA_VCARD", vcard)
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .env_remove("XDG_SESSION_ID")
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(std::process::Stdio::null())
        .status()
        .expect("run the demo inside the namespace");
    if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    if std::env::var(INNER).as_deref() == Ok(CARD_PULL) {
        return card_pull_inside();
    }
    if !nix_is_root() {
        eprintln!("tessera-demo: run as root (the module refuses config files not owned by root)");
        return ExitCode::from(2);
    }
    let mut rig = LoginRig::new();
    println!("scratch directory: {}", rig.path().display());
    let enrolled = rig.enroll("demo", KeyType::Rsa2048);
    println!(
        "token \"{}\": RSA-2048 key generated on the token, certificate issued by the test CA",
        enrolled.token
    );

    let first = rig.authenticate(Some("demo"), &[PIN]);
    let result = first.result("authenticate");
    println!("pam_authenticate(\"demo\") through libpam + pam_tessera.so: {result}");
    if result != "PAM_SUCCESS" {
        println!("{first}");
        return ExitCode::FAILURE;
    }
    let certificate = x509_cert::Certificate::from_der(&enrolled.certificate).expect("certificate");
    println!("  mapped user:   {}", first.user().unwrap_or_default());
    println!("  certificate:   {}", certificate.tbs_certificate.subject);
    println!("  issuer:        {}", certificate.tbs_certificate.issuer);
    println!(
        "  login time:    {:.2} ms",
        first.micros("authenticate") as f64 / 1000.0
    );

    rig.quiet_service();
    let mut logins = rig.bench_authenticate("demo", PIN, ROUNDS);
    logins.sort_unstable();
    let floor: serde_json::Value =
        serde_json::from_str(
            &rig.hsm
                .bench_sign(&enrolled.token, PIN, &enrolled.id, ROUNDS),
        )
        .expect("bench output");
    let floor_median = floor["median_micros"].as_f64().unwrap_or(f64::NAN) / 1000.0;
    let login_median = percentile(&logins, 0.5);
    println!();
    println!("over {ROUNDS} rounds, same token, same run:");
    println!(
        "  pam_start+pam_authenticate+pam_end         min {:.2} ms  median {:.2} ms  p90 {:.2} ms",
        percentile(&logins, 0.0),
        login_median,
        percentile(&logins, 0.9)
    );
    println!(
        "  bare C_Initialize+C_Login+C_Sign (floor)   min {:.2} ms  median {:.2} ms",
        floor["min_micros"].as_f64().unwrap_or(f64::NAN) / 1000.0,
        floor_median
    );
    println!(
        "  ratio tessera/floor (median)               {:.2}",
        login_median / floor_median
    );
    println!();
    card_pull()
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
        .unwrap_or(false)
}
