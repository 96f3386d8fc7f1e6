//! docs/design.md, lesson 6: a wrong PIN must not be accepted because the token is
//! already logged in. Here the "other application" is this very process: it
//! initialises SoftHSM2 and logs in before the flow runs, so the flow meets
//! CKR_CRYPTOKI_ALREADY_INITIALIZED and CKR_USER_ALREADY_LOGGED_IN.
//!
//! One test per file: it sets SOFTHSM2_CONF for the whole process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use rustls_pki_types::UnixTime;
use tessera_core::auth::{Conversation, ConversationError, FailureKind};
use tessera_core::policy::AuthPolicy;
use tessera_core::{authenticate, AuthRequest, Config};
use tessera_testrig::login::{LoginRig, PIN};
use tessera_testrig::pki::UserCert;
use tessera_testrig::softhsm::{KeyType, SOFTHSM_MODULE};
use zeroize::Zeroizing;

/// Answers prompts from a script; any prompt beyond it is a test failure.
struct Script(VecDeque<&'static str>);

impl Conversation for Script {
    fn prompt_secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, ConversationError> {
        let answer = self
            .0
            .pop_front()
            .unwrap_or_else(|| panic!("unexpected prompt {prompt:?}"));
        Ok(Zeroizing::new(answer.to_owned()))
    }

    fn prompt_visible(&mut self, prompt: &str) -> Result<String, ConversationError> {
        panic!("unexpected visible prompt {prompt:?}")
    }

    fn info(&mut self, _: &str) -> Result<(), ConversationError> {
        Ok(())
    }

    fn error(&mut self, _: &str) -> Result<(), ConversationError> {
        Ok(())
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(self.0.is_empty(), "unused answers: {:?}", self.0);
        }
    }
}

#[test]
fn wrong_pin_is_refused_when_this_process_already_logged_the_token_in() {
    let rig = LoginRig::new();
    // "root" exists in every NSS database, so no nss_wrapper is needed in-process.
    rig.enroll_with(
        "root-token",
        KeyType::P256,
        &UserCert::valid("root"),
        &rig.ca,
    );
    let (key, conf) = rig.hsm.env();
    std::env::set_var(key, conf);

    let context = Pkcs11::new(SOFTHSM_MODULE).unwrap();
    context
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = context.get_slots_with_token().unwrap()[0];
    let session = context.open_ro_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();

    let config = Config::load(&rig.config_path()).unwrap();
    let policy = AuthPolicy::default();
    let request = AuthRequest {
        user: Some("root"),
        now: UnixTime::since_unix_epoch(std::time::UNIX_EPOCH.elapsed().unwrap()),
        policy: &policy,
        authtok: None,
    };
    let failure = authenticate(&config, &request, &mut Script(["000000"].into())).unwrap_err();
    assert_eq!(failure.kind, FailureKind::WrongPin, "{failure}");

    let success = authenticate(&config, &request, &mut Script([PIN].into())).unwrap();
    assert_eq!(success.user, "root");
}
