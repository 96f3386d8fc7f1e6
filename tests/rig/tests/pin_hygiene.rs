//! Where a PIN may go wrong before it reaches the token: a password meant
//! for another module spending the last tries, and a PIN typed at the
//! wrong prompt ending up in the log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tessera_testrig::bins::pam_module;
use tessera_testrig::login::{LoginRig, PAM_SET_ITEMS, PIN};
use tessera_testrig::p11fault::{FaultPlan, FaultRig};
use tessera_testrig::pki::UserCert;
use tessera_testrig::softhsm::KeyType;

/// An auth stack where an earlier module sets PAM_AUTHTOK to `authtok`.
fn after_a_password_module(rig: &mut LoginRig, authtok: &str) {
    rig.set_process_env("PAM_AUTHTOK", Some(authtok));
    rig.write_service(&format!(
        "auth required {PAM_SET_ITEMS}\nauth required {} config={} log=stderr debug\n",
        pam_module().display(),
        rig.config_path().display()
    ));
}

#[test]
fn with_the_retry_counter_low_try_first_pass_asks_instead_of_spending_a_try_on_the_authtok() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let config = rig
        .default_config()
        .replace("[pki]", "[auth]\npin_source = \"try_first_pass\"\n[pki]");
    rig.write_config(&config);
    after_a_password_module(&mut rig, "password123");
    let rig = FaultRig::new(rig);
    let plan = FaultPlan::new();

    // The counter is fine: the authtok is tried first, then the PIN asked.
    let wrong = rig.login(&plan, Some("alice"), &["000000"]);
    assert_eq!(wrong.result(), Some("PAM_AUTH_ERR"), "{wrong}");
    assert_eq!(
        wrong.count("C_Login"),
        2,
        "authtok, then the prompted PIN: {wrong}"
    );

    // Two wrong PINs later SoftHSM reports CKF_USER_PIN_COUNT_LOW: the
    // password from the earlier module must not be tried.
    let run = rig.login(&plan, Some("alice"), &[PIN]);
    assert_eq!(run.result(), Some("PAM_SUCCESS"), "{run}");
    assert_eq!(run.count("C_Login"), 1, "only the prompted PIN: {run}");
    assert!(
        run.run
            .messages()
            .iter()
            .any(|(_, text)| text == "Warning: a wrong PIN was entered recently"),
        "{run}"
    );
    assert!(
        run.run
            .logged("auth.pin.counter_low", "the PIN retry counter is low"),
        "{run}"
    );
}

#[test]
fn a_pin_typed_at_the_certificate_choice_is_neither_logged_nor_shown_back() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    rig.enroll_with(
        "alice-spare",
        KeyType::P256,
        &UserCert::valid("alice"),
        &rig.ca,
    );
    // The person types the PIN where the module asks which certificate.
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");
    assert!(
        run.messages()
            .iter()
            .any(|(style, text)| style == "prompt_echo_on" && text == "Choose [1-2]: "),
        "{run}"
    );
    assert!(
        run.log
            .contains("the answer to the certificate choice was not a number from 1 to 2"),
        "{run}"
    );
    assert!(!run.log.contains(PIN), "the PIN reached the log: {run}");
    assert!(
        run.messages().iter().all(|(_, text)| !text.contains(PIN)),
        "the PIN was shown back: {run}"
    );
}
