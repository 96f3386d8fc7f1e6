//! The module's flows beyond a plain login: session bindings, account checks,
//! PIN sources, per-service policy, token selection and waiting for a card.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use tessera_core::binding::SessionBinding;
use tessera_testrig::bins::pam_module;
use tessera_testrig::login::{LoginRig, PAM_GET_ITEMS, PAM_SET_ITEMS, PIN};
use tessera_testrig::p11fault::{FaultPlan, FaultRig, FaultRun};
use tessera_testrig::pki::UserCert;
use tessera_testrig::softhsm::{KeyType, SO_PIN};

fn module_line(rig: &LoginRig, kind: &str, control: &str, extra: &str) -> String {
    format!(
        "{kind} {control} {} config={} log=stderr debug {extra}\n",
        pam_module().display(),
        rig.config_path().display()
    )
}

/// An auth stack where an earlier module sets PAM_AUTHTOK (from the
/// process environment) and a later one exports it for the test to read.
fn authtok_stack(rig: &mut LoginRig, authtok: Option<&str>) {
    rig.set_process_env("PAM_AUTHTOK", authtok);
    rig.write_service(&format!(
        "auth required {PAM_SET_ITEMS}\n{}auth required {PAM_GET_ITEMS}\n",
        module_line(rig, "auth", "requisite", "")
    ));
}

fn with_config(rig: &LoginRig, extra: &str) {
    let config = rig
        .default_config()
        .replace("[pki]", &format!("{extra}\n[pki]"));
    rig.write_config(&config);
}

#[test]
fn open_session_binds_the_session_to_the_token_and_close_session_removes_it() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let bindings = rig.path().join("sessions");
    with_config(
        &rig,
        &format!("[session]\nbindings_dir = \"{}\"", bindings.display()),
    );
    rig.write_service(&format!(
        "{}{}",
        module_line(&rig, "auth", "required", ""),
        module_line(&rig, "session", "required", "")
    ));
    let run = rig.pam_with(
        Some("alice"),
        &[PIN],
        &["authenticate", "open_session"],
        &["--env", "XDG_SESSION_ID=c7"],
    );
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert_eq!(run.result("open_session"), "PAM_SUCCESS", "{run}");
    let binding = SessionBinding::read(&bindings.join("c7.toml")).unwrap();
    assert_eq!(binding.session_id, "c7");
    assert_eq!(binding.user, "alice");
    assert_eq!(binding.uid, 20001);
    assert_eq!(binding.service, "tessera-test");
    assert_eq!(binding.token.label, "alice-token");
    assert!(!binding.token.serial.is_empty());
    assert_eq!(binding.certificate_sha256.len(), 64);
    assert!(
        run.env()
            .contains(&"PKCS11_LOGIN_TOKEN_NAME=alice-token".to_owned()),
        "{run}"
    );

    let run = rig.pam_with(
        Some("alice"),
        &[PIN],
        &["authenticate", "open_session", "close_session"],
        &["--env", "XDG_SESSION_ID=c8"],
    );
    assert_eq!(run.result("close_session"), "PAM_SUCCESS", "{run}");
    assert!(!bindings.join("c8.toml").exists());
}

#[test]
fn sessions_the_module_did_not_authenticate_get_no_binding() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    let bindings = rig.path().join("sessions");
    with_config(
        &rig,
        &format!("[session]\nbindings_dir = \"{}\"", bindings.display()),
    );
    rig.write_service(&format!(
        "auth required pam_permit.so\n{}session required pam_permit.so\n",
        module_line(&rig, "session", "optional", "")
    ));
    let run = rig.pam_with(
        Some("alice"),
        &[],
        &["authenticate", "open_session"],
        &["--env", "XDG_SESSION_ID=c9"],
    );
    assert_eq!(run.result("open_session"), "PAM_SUCCESS", "{run}");
    assert!(!bindings.exists(), "no binding without a card login");
    assert!(!run.records("pam.session.not_ours").is_empty(), "{run}");
}

#[test]
fn acct_mgmt_accepts_a_card_login_and_ignores_other_logins() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    rig.write_service(&format!(
        "{}{}account required pam_permit.so\n",
        module_line(&rig, "auth", "required", ""),
        module_line(&rig, "account", "required", "")
    ));
    let run = rig.pam(Some("alice"), &[PIN], &["authenticate", "acct_mgmt"]);
    assert_eq!(run.result("acct_mgmt"), "PAM_SUCCESS", "{run}");

    rig.write_service(&format!(
        "auth required pam_permit.so\n{}account required pam_permit.so\n",
        module_line(&rig, "account", "required", "")
    ));
    let run = rig.pam(Some("alice"), &[], &["authenticate", "acct_mgmt"]);
    assert_eq!(run.result("acct_mgmt"), "PAM_SUCCESS", "{run}");
    assert!(
        run.log
            .contains("not authenticated by pam_tessera; ignoring"),
        "{run}"
    );
}

#[test]
fn a_password_from_an_earlier_module_is_not_tried_as_the_pin_by_default() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    authtok_stack(&mut rig, Some("password123"));
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert!(
        run.messages()
            .iter()
            .any(|(style, _)| style == "prompt_echo_off"),
        "the PIN must be asked for: {run}"
    );
}

#[test]
fn try_first_pass_uses_the_authtok_and_asks_when_it_is_not_the_pin() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    with_config(&rig, "[auth]\npin_source = \"try_first_pass\"");
    authtok_stack(&mut rig, Some(PIN));
    let run = rig.authenticate(Some("alice"), &[]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert!(run.messages().is_empty(), "no prompt needed: {run}");

    authtok_stack(&mut rig, Some("password123"));
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert!(
        run.messages()
            .iter()
            .any(|(style, _)| style == "prompt_echo_off"),
        "{run}"
    );
}

#[test]
fn use_first_pass_without_an_authtok_fails_without_prompting() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    with_config(&rig, "[auth]\npin_source = \"use_first_pass\"");
    let run = rig.authenticate(Some("alice"), &[]);
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");
    authtok_stack(&mut rig, Some("000000"));
    let run = rig.authenticate(Some("alice"), &[]);
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");
    assert!(
        run.messages()
            .iter()
            .all(|(style, _)| style != "prompt_echo_off"),
        "{run}"
    );
}

#[test]
fn the_pin_becomes_pam_authtok_only_when_exported() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    authtok_stack(&mut rig, None);
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert_eq!(run.authtok(), None);

    with_config(&rig, "[auth]\nexport_pin_as_authtok = true");
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert_eq!(run.authtok().as_deref(), Some(PIN));
}

#[test]
fn a_required_card_allows_no_fallback_and_a_disabled_service_is_ignored() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    with_config(&rig, "[service.tessera-test]\ncard = \"required\"");
    let run = rig.authenticate(Some("alice"), &[]);
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");

    // The module argument wins over the config.
    rig.write_service(&module_line(&rig, "auth", "required", "card=optional"));
    let run = rig.authenticate(Some("alice"), &[]);
    assert_eq!(run.result("authenticate"), "PAM_AUTHINFO_UNAVAIL", "{run}");

    with_config(&rig, "[service.tessera-test]\ncard = \"disabled\"");
    rig.write_service(&format!(
        "{}auth required pam_permit.so\n",
        module_line(&rig, "auth", "[ignore=ignore default=die]", "")
    ));
    rig.enroll_with(
        "alice-token",
        KeyType::P256,
        &UserCert::valid("alice"),
        &rig.ca,
    );
    let run = rig.authenticate(Some("alice"), &[]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert!(
        run.messages().is_empty(),
        "a disabled module asks nothing: {run}"
    );
    assert!(
        run.logged("auth.login.disabled", "module disabled for this service"),
        "{run}"
    );
}

#[test]
fn several_usable_certificates_let_the_user_choose_and_a_token_uri_narrows_them() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    rig.enroll_with(
        "alice-spare",
        KeyType::P256,
        &UserCert::valid("alice"),
        &rig.ca,
    );
    let run = rig.authenticate(Some("alice"), &["2", PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    let messages = run.messages();
    assert!(
        messages
            .iter()
            .any(|(style, text)| style == "prompt_echo_on" && text == "Choose [1-2]: "),
        "{run}"
    );
    let chosen_prompt = messages
        .iter()
        .find(|(style, _)| style == "prompt_echo_off")
        .map(|(_, text)| text.clone())
        .unwrap();
    assert!(chosen_prompt.starts_with("PIN for alice-"), "{run}");

    let run = rig.authenticate(Some("alice"), &["7"]);
    assert_eq!(run.result("authenticate"), "PAM_AUTH_ERR", "{run}");

    with_config(&rig, "[pkcs11]\ntoken = \"pkcs11:token=alice-spare\"");
    let config = std::fs::read_to_string(rig.config_path()).unwrap();
    // [pkcs11] already exists in the default config: move the key there.
    let config = config
        .replace("[pkcs11]\ntoken = \"pkcs11:token=alice-spare\"\n", "")
        .replace(
            "[pkcs11]\n",
            "[pkcs11]\ntoken = \"pkcs11:token=alice-spare\"\n",
        );
    rig.write_config(&config);
    let run = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert!(
        run.messages()
            .iter()
            .any(|(style, text)| style == "prompt_echo_off" && text == "PIN for alice-spare: "),
        "{run}"
    );
}

#[test]
fn waiting_for_a_card_is_bounded() {
    let mut rig = LoginRig::new();
    rig.add_user("alice");
    with_config(&rig, "[auth]\nwait_for_card = \"1s\"");
    let started = std::time::Instant::now();
    let run = rig.authenticate(Some("alice"), &[PIN]);
    let elapsed = started.elapsed();
    assert_eq!(run.result("authenticate"), "PAM_AUTHINFO_UNAVAIL", "{run}");
    assert!(
        run.messages()
            .iter()
            .any(|(_, text)| text == "Insert your smart card"),
        "{run}"
    );
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn a_screen_locker_running_as_the_user_authenticates_and_skips_root_only_state() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let bindings = rig.path().join("sessions");
    with_config(
        &rig,
        &format!("[session]\nbindings_dir = \"{}\"", bindings.display()),
    );
    rig.write_service(&format!(
        "{}{}",
        module_line(&rig, "auth", "required", ""),
        module_line(&rig, "session", "required", "")
    ));
    rig.run_as(rig.uid_of("alice"));
    let run = rig.pam_with(
        Some("alice"),
        &[PIN],
        &["authenticate", "open_session"],
        &["--env", "XDG_SESSION_ID=c3"],
    );
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert_eq!(run.result("open_session"), "PAM_SUCCESS", "{run}");
    assert!(
        run.log
            .contains("not running as root; session binding skipped"),
        "{run}"
    );
    assert!(!bindings.exists());
}

fn password_stack(rig: &LoginRig) {
    rig.write_service(&format!(
        "{}{}",
        module_line(rig, "auth", "required", ""),
        module_line(rig, "password", "required", "")
    ));
}

#[test]
fn passwd_changes_the_token_pin() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    password_stack(&rig);
    let run = rig.pam(
        Some("alice"),
        &[PIN, "24681357", "24681357"],
        &["chauthtok"],
    );
    assert_eq!(run.result("chauthtok"), "PAM_SUCCESS", "{run}");
    let prompts: Vec<String> = run
        .messages()
        .into_iter()
        .filter(|(style, _)| style == "prompt_echo_off")
        .map(|(_, text)| text)
        .collect();
    assert_eq!(
        prompts,
        [
            "Current PIN for alice-token: ",
            "New PIN: ",
            "Repeat new PIN: "
        ]
    );
    assert!(!run.log.contains("24681357"), "{run}");

    let old = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(old.result("authenticate"), "PAM_AUTH_ERR", "{old}");
    let new = rig.authenticate(Some("alice"), &["24681357"]);
    assert_eq!(new.result("authenticate"), "PAM_SUCCESS", "{new}");
}

/// The secret prompts of a run, in order.
fn secret_prompts(run: &tessera_testrig::login::PamRun) -> Vec<String> {
    run.messages()
        .into_iter()
        .filter(|(style, _)| style == "prompt_echo_off")
        .map(|(_, text)| text)
        .collect()
}

fn said(run: &FaultRun, text: &str) -> bool {
    run.run.messages().iter().any(|(_, said)| said == text)
}

/// SoftHSM never locks a PIN, so the fault module reports
/// CKF_USER_PIN_LOCKED on top of the token's real flags; the SO login and
/// C_InitPIN still reach the real token.
#[test]
fn passwd_unblocks_a_locked_pin_with_the_puk_only_where_the_admin_enabled_it() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    let rig = FaultRig::new(rig);
    password_stack(&rig.rig);
    let flags = |names: &str| {
        FaultPlan::new().rule(
            "C_GetTokenInfo",
            None,
            &format!("{{ token_flags = [{names}] }}"),
        )
    };
    let locked = flags("\"CKF_USER_PIN_LOCKED\"");
    let answers = [SO_PIN, "24681357", "24681357"];

    let refused = rig.pam(&locked, Some("alice"), &answers, &["chauthtok"]);
    assert_eq!(
        refused.result_of("chauthtok"),
        Some("PAM_MAXTRIES"),
        "{refused}"
    );
    assert!(
        said(
            &refused,
            "The PIN of alice-token is locked; ask your administrator to unblock it"
        ),
        "{refused}"
    );
    assert!(secret_prompts(&refused.run).is_empty(), "{refused}");
    assert!(refused.so_logins().is_empty(), "{refused}");

    // Enabled for another service only: still refused here.
    let config = rig.rig.config_path();
    let base = std::fs::read_to_string(&config).unwrap();
    rig.rig
        .write_config(&base.replace("[pki]", "[service.passwd]\nunblock_pin = true\n[pki]"));
    let elsewhere = rig.pam(&locked, Some("alice"), &answers, &["chauthtok"]);
    assert_eq!(
        elsewhere.result_of("chauthtok"),
        Some("PAM_MAXTRIES"),
        "{elsewhere}"
    );
    assert!(elsewhere.so_logins().is_empty(), "{elsewhere}");

    rig.rig
        .write_config(&base.replace("[pki]", "[service.tessera-test]\nunblock_pin = true\n[pki]"));
    // A wrong PUK: the token refuses the SO login, the PIN is not touched.
    let wrong = rig.pam(
        &locked,
        Some("alice"),
        &["87654321", "24681357", "24681357"],
        &["chauthtok"],
    );
    assert_eq!(
        wrong.result_of("chauthtok"),
        Some("PAM_AUTH_ERR"),
        "{wrong}"
    );
    assert!(said(&wrong, "Incorrect PUK"), "{wrong}");
    assert_eq!(wrong.so_logins().len(), 1, "{wrong}");
    assert_eq!(wrong.so_logins()[0].rv, "CKR_PIN_INCORRECT", "{wrong}");
    assert!(!wrong.called("C_InitPIN"), "{wrong}");

    // Mismatched new PINs: refused before the PUK reaches the token.
    let mismatch = rig.pam(
        &locked,
        Some("alice"),
        &[SO_PIN, "24681357", "24681358"],
        &["chauthtok"],
    );
    assert_eq!(
        mismatch.result_of("chauthtok"),
        Some("PAM_AUTHTOK_ERR"),
        "{mismatch}"
    );
    assert!(mismatch.so_logins().is_empty(), "{mismatch}");

    // The PUK and the PIN both locked: nothing to try.
    let both = flags("\"CKF_USER_PIN_LOCKED\", \"CKF_SO_PIN_LOCKED\"");
    let dead = rig.pam(&both, Some("alice"), &answers, &["chauthtok"]);
    assert_eq!(dead.result_of("chauthtok"), Some("PAM_MAXTRIES"), "{dead}");
    assert!(
        said(
            &dead,
            "The PIN and the PUK of alice-token are locked; ask your administrator"
        ),
        "{dead}"
    );
    assert!(dead.so_logins().is_empty(), "{dead}");

    // The right PUK: SO login, C_InitPIN with the new PIN.
    let last_try = flags("\"CKF_USER_PIN_LOCKED\", \"CKF_SO_PIN_FINAL_TRY\"");
    let unblocked = rig.pam(&last_try, Some("alice"), &answers, &["chauthtok"]);
    assert_eq!(
        unblocked.result_of("chauthtok"),
        Some("PAM_SUCCESS"),
        "{unblocked}"
    );
    assert_eq!(
        secret_prompts(&unblocked.run),
        ["PUK for alice-token: ", "New PIN: ", "Repeat new PIN: "],
        "{unblocked}"
    );
    assert!(
        said(
            &unblocked,
            "The PIN of alice-token is locked; unblock it with its PUK"
        ),
        "{unblocked}"
    );
    assert!(
        said(
            &unblocked,
            "Last PUK try: a wrong PUK locks the card for good"
        ),
        "{unblocked}"
    );
    assert!(
        unblocked
            .calls
            .iter()
            .any(|call| call.function == "C_InitPIN" && call.rv == "CKR_OK"),
        "{unblocked}"
    );
    for secret in answers {
        assert!(!unblocked.run.log.contains(secret), "{unblocked}");
    }

    // The real token now takes the new PIN, not the old one.
    rig.rig.write_config(&base);
    let new = rig.login(&FaultPlan::new(), Some("alice"), &["24681357"]);
    assert_eq!(new.result(), Some("PAM_SUCCESS"), "{new}");
    let old = rig.login(&FaultPlan::new(), Some("alice"), &[PIN]);
    assert_eq!(old.result(), Some("PAM_AUTH_ERR"), "{old}");
}

#[test]
fn passwd_refuses_mismatched_short_or_unauthorised_pin_changes() {
    let mut rig = LoginRig::new();
    rig.enroll("alice", KeyType::P256);
    password_stack(&rig);
    let mismatch = rig.pam(
        Some("alice"),
        &[PIN, "11112222", "11113333"],
        &["chauthtok"],
    );
    assert_eq!(
        mismatch.result("chauthtok"),
        "PAM_AUTHTOK_ERR",
        "{mismatch}"
    );
    assert!(mismatch
        .messages()
        .iter()
        .any(|(_, t)| t == "The PINs do not match"));

    let short = rig.pam(Some("alice"), &[PIN, "12"], &["chauthtok"]);
    assert_eq!(short.result("chauthtok"), "PAM_AUTHTOK_ERR", "{short}");
    assert!(
        short
            .messages()
            .iter()
            .any(|(_, t)| t.starts_with("The new PIN must have")),
        "{short}"
    );

    let wrong = rig.pam(
        Some("alice"),
        &["000000", "11112222", "11112222"],
        &["chauthtok"],
    );
    assert_eq!(wrong.result("chauthtok"), "PAM_AUTH_ERR", "{wrong}");

    let still = rig.authenticate(Some("alice"), &[PIN]);
    assert_eq!(
        still.result("authenticate"),
        "PAM_SUCCESS",
        "the PIN is unchanged: {still}"
    );

    rig.add_user("bob");
    let no_token = rig.pam(Some("bob"), &[], &["chauthtok"]);
    assert_eq!(
        no_token.result("chauthtok"),
        "PAM_AUTHINFO_UNAVAIL",
        "{no_token}"
    );
}

/// Security review: a PAM_USER that is not valid UTF-8 was taken for "no
/// user" (a username-less login): the card holder was authenticated and
/// PAM_USER overwritten with their name. It is an unknown user; only an
/// unset or empty PAM_USER means a username-less login.
#[test]
fn a_user_name_that_is_not_utf8_is_unknown_and_never_replaced() {
    let mut rig = LoginRig::new();
    rig.enroll("tess", KeyType::P256);
    rig.write_service(&format!(
        "{}{}{}",
        module_line(&rig, "auth", "required", ""),
        module_line(&rig, "account", "required", ""),
        module_line(&rig, "password", "required", ""),
    ));
    // "tess\xff"
    let run = rig.pam_with(
        None,
        &[PIN],
        &["authenticate", "acct_mgmt"],
        &["--user-hex", "74657373ff"],
    );
    assert_eq!(run.result("authenticate"), "PAM_USER_UNKNOWN", "{run}");
    assert_ne!(run.result("acct_mgmt"), "PAM_SUCCESS", "{run}");
    assert_eq!(run.user().as_deref(), Some("tess\u{fffd}"), "{run}");
    assert!(
        run.messages().is_empty(),
        "nothing is asked for an unknown user: {run}"
    );

    // An empty PAM_USER is a username-less login, as no PAM_USER is.
    let run = rig.pam_with(None, &[PIN], &["authenticate"], &["--user-hex", ""]);
    assert_eq!(run.result("authenticate"), "PAM_SUCCESS", "{run}");
    assert_eq!(run.user().as_deref(), Some("tess"), "{run}");
}
