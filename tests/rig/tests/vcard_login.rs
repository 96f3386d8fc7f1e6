//! Logins through real libpam with the project's virtual PIV card behind real
//! pcscd and OpenSC's PKCS#11 module: the card that tests can pull.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tessera_testrig::bins::artefact;
use tessera_testrig::login::{CardKey, LoginRig, PIN};
use tessera_testrig::pcscd::{Pcscd, OPENSC_PKCS11};
use tessera_testrig::vcard::{CardSpec, VirtualCard};

const PCSC_TIMEOUT: Duration = Duration::from_secs(5);

struct CardRig {
    rig: LoginRig,
    card: VirtualCard,
    pcscd: Pcscd,
}

fn card_rig(key_type: CardKey, pin_tries: u8) -> CardRig {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let (key, cert) = rig.card_credentials("alice", key_type);
    let pcscd = Pcscd::start_for_readers(&rig.path().join("pcscd"), &[0]).unwrap();
    let card = CardSpec::new(0)
        .slot("9a", key, cert)
        .pin(PIN)
        .pin_tries(pin_tries)
        .start(&pcscd)
        .unwrap();
    pcscd.wait_card(0, true, PCSC_TIMEOUT).unwrap();
    rig.add_env(pcscd.env());
    rig.use_pkcs11_module(OPENSC_PKCS11);
    CardRig { rig, card, pcscd }
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn rsa_virtual_card_user_logs_in_through_opensc() {
    let card = card_rig(CardKey::Rsa2048, 3);
    let run = card.rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(
        run.result("authenticate"),
        "PAM_SUCCESS",
        "{run}\ncard log:\n{}",
        log_of(card.card.log_path())
    );
    assert!(
        run.messages()
            .iter()
            .any(|(style, text)| style == "prompt_echo_off" && text == "PIN for alice: "),
        "{run}"
    );
}

#[test]
fn p256_virtual_card_user_is_found_without_a_user_name() {
    let card = card_rig(CardKey::P256, 3);
    let run = card.rig.authenticate(None, &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert_eq!(run.user().as_deref(), Some("alice"));
}

#[test]
fn wrong_pin_is_refused_even_while_another_application_is_logged_in() {
    let card = card_rig(CardKey::P256, 5);
    // Another application logs in to the card and stays logged in.
    let mut holder = Command::new(artefact("tessera-rig-p11"))
        .args([
            "--module",
            OPENSC_PKCS11,
            "--token",
            "alice",
            "--pin",
            PIN,
            "hold-login",
        ])
        .envs(card.pcscd.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let tries_before = card.card.status().unwrap().pin_tries_left;

    let run = card.rig.authenticate(Some("alice"), &["000000"]);
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");
    // The wrong PIN really went to the card.
    assert_eq!(card.card.status().unwrap().pin_tries_left, tries_before - 1);

    let run = card.rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
}

#[test]
fn wrong_pins_lock_the_card_and_a_locked_pin_is_maxtries_without_a_login_attempt() {
    let card = card_rig(CardKey::P256, 2);
    let first = card.rig.authenticate(Some("alice"), &["000000"]);
    assert_eq!(first.result("authenticate"), "PAM_AUTH_ERR", "{first}");

    let second = card.rig.authenticate(Some("alice"), &["000000"]);
    assert!(
        second
            .messages()
            .iter()
            .any(|(style, text)| style == "error" && text.contains("one more wrong PIN")),
        "the final try must be announced: {second}"
    );
    assert_ne!(second.result("authenticate"), "PAM_SUCCESS", "{second}");

    let locked = card.rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(locked.result("authenticate"), "PAM_MAXTRIES", "{locked}");
    assert!(
        locked
            .messages()
            .iter()
            .any(|(style, text)| style == "error" && text.contains("is locked")),
        "{locked}"
    );
    assert!(
        !locked
            .messages()
            .iter()
            .any(|(style, _)| style == "prompt_echo_off"),
        "no PIN may be asked for a locked card: {locked}"
    );
}

#[test]
fn pulled_card_is_authinfo_unavail() {
    let card = card_rig(CardKey::P256, 3);
    card.card.pull().unwrap();
    card.pcscd.wait_card(0, false, PCSC_TIMEOUT).unwrap();
    let run = card.rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTHINFO_UNAVAIL", "{run}");

    card.card.insert().unwrap();
    card.pcscd.wait_card(0, true, PCSC_TIMEOUT).unwrap();
    let run = card.rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
}

#[test]
fn waiting_for_a_card_returns_as_soon_as_it_is_inserted() {
    let card = card_rig(CardKey::P256, 3);
    card.card.pull().unwrap();
    card.pcscd.wait_card(0, false, PCSC_TIMEOUT).unwrap();
    let config = card
        .rig
        .default_config()
        .replace(tessera_testrig::softhsm::SOFTHSM_MODULE, OPENSC_PKCS11)
        .replace("[pki]", "[auth]\nwait_for_card = \"60s\"\n[pki]");
    card.rig.write_config(&config);
    let run = std::thread::scope(|scope| {
        let login = scope.spawn(|| card.rig.authenticate(Some("alice"), &[PIN]));
        std::thread::sleep(Duration::from_millis(700));
        card.card.insert().unwrap();
        login.join().unwrap()
    });
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert!(
        run.messages()
            .iter()
            .any(|(_, text)| text == "Insert your smart card"),
        "{run}"
    );
    // Event-driven: far from the 60 s deadline.
    assert!(run.micros("authenticate") < 30_000_000, "{run}");
}

/// GDM starts its smart-card service the moment gsd-smartcard sees the
/// card, while OpenSC may not list the token yet: the wait must notice
/// the token without another reader event.
#[test]
fn a_card_inserted_just_before_the_login_is_found_without_another_reader_event() {
    let card = card_rig(CardKey::P256, 3);
    let config = card
        .rig
        .default_config()
        .replace(tessera_testrig::softhsm::SOFTHSM_MODULE, OPENSC_PKCS11)
        .replace("[pki]", "[auth]\nwait_for_card = \"60s\"\n[pki]");
    card.rig.write_config(&config);
    // The login starts 0, 100 and 200 ms after the insertion.
    for attempt in 0..3 {
        card.card.pull().unwrap();
        card.pcscd.wait_card(0, false, PCSC_TIMEOUT).unwrap();
        card.card.insert().unwrap();
        std::thread::sleep(Duration::from_millis(100 * attempt));
        let run = card.rig.authenticate(Some("alice"), &[PIN]);
        assert_eq!(
            run.result("authenticate"),
            "PAM_SUCCESS",
            "attempt {attempt}: {run}"
        );
        // Far from the 60 s deadline: no reader event came after the start.
        assert!(
            run.micros("authenticate") < 30_000_000,
            "attempt {attempt}: {run}"
        );
    }
}

#[test]
fn the_card_pin_is_changed_through_pam() {
    let card = card_rig(CardKey::P256, 3);
    card.rig.write_service(&format!(
        "auth required {module} config={config} log=stderr debug\npassword required {module} config={config} log=stderr debug\n",
        module = tessera_testrig::bins::pam_module().display(),
        config = card.rig.config_path().display()
    ));
    let run = card.rig.pam(
        Some("alice"),
        &[PIN, "87654321", "87654321"],
        &["chauthtok"],
    );
    assert_eq!(run.result("chauthtok"), "PAM_SUCCESS", "{run}");
    let run = card.rig.authenticate(Some("alice"), &["87654321"]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
}

/// Figures for tests/README.md: `cargo test -p tessera-testrig --release
/// --test vcard_login -- --ignored --nocapture measure_`.
#[test]
#[ignore = "measurement, run by hand"]
fn measure_virtual_card_login_time() {
    for (name, key_type) in [("RSA-2048", CardKey::Rsa2048), ("P-256", CardKey::P256)] {
        let card = card_rig(key_type, 3);
        let mut micros: Vec<u64> = (0..10)
            .map(|_| {
                let run = card.rig.authenticate(Some("alice"), &[PIN]);
                assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
                run.micros("authenticate")
            })
            .collect();
        micros.sort_unstable();
        #[allow(clippy::print_stdout)]
        {
            println!(
                "virtual card {name}: pam_authenticate min {:.1} ms, median {:.1} ms, max {:.1} ms over {} logins",
                micros[0] as f64 / 1000.0,
                micros[micros.len() / 2] as f64 / 1000.0,
                micros[micros.len() - 1] as f64 / 1000.0,
                micros.len()
            );
        }
    }
}
