//! The whole flow in-process, as a normal user: discover → choose → prove
//! over a scripted card whose certificates come from a test CA, with a
//! strict scripted conversation. No SoftHSM, no root, no files.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use tessera_ipc::FailureKind;
use tessera_mappers::CertificateFields;
use tessera_testrig::pki::{TestCa, UserCert};

use super::scripted_conversation::{error, info, secret, visible, ScriptedConversation, Step};
use super::{
    authenticate_with, discover, AuthFailure, AuthRequest, AuthSuccess, BareKeys, Scope,
    TokenObjects, Verdict,
};
use crate::config::Config;
use crate::pki::TrustStore;
use crate::policy::AuthPolicy;
use crate::token::scripted::ScriptedTokens;
use crate::token::TokenBackend;

const PIN: &str = "123456";

/// `root` is in every user database, so `user = "{cn}"` maps a
/// certificate for it without nss_wrapper.
const USER: &str = "root";

fn config() -> Config {
    Config::parse(
        Path::new("/test/tessera.toml"),
        "version = 1\n[pkcs11]\nmodule = \"/test/module.so\"\n[pki]\nca = [\"/test/ca\"]\nrevocation = \"none\"\n[[rule]]\nuser = \"{cn}\"\n",
    )
    .unwrap()
}

/// A CA and a card "root-card" whose keys 01 and 02 it certified per `specs`.
fn world(specs: &[UserCert]) -> (TrustStore, ScriptedTokens) {
    let ca = TestCa::new("Scripted Test Root CA");
    let store =
        TrustStore::from_certificates(vec![CertificateDer::from(ca.der().to_vec())]).unwrap();
    let tokens = ScriptedTokens::new().with_card("root-card", PIN, "12345678", &[1, 2]);
    for (index, spec) in specs.iter().enumerate() {
        let id = index as u8 + 1;
        tokens.store_certificate(0, id, ca.issue(spec, &tokens.spki(0, id)));
    }
    (store, tokens)
}

fn now() -> UnixTime {
    UnixTime::since_unix_epoch(UNIX_EPOCH.elapsed().unwrap())
}

fn login(
    store: &TrustStore,
    tokens: &ScriptedTokens,
    policy: &AuthPolicy,
    user: Option<&str>,
    at: UnixTime,
    script: impl IntoIterator<Item = Step>,
) -> Result<AuthSuccess, AuthFailure> {
    let request = AuthRequest {
        user,
        now: at,
        policy,
        authtok: None,
    };
    let mut conversation = ScriptedConversation::new(script);
    authenticate_with(&config(), store, tokens, &request, &mut conversation)
}

fn subject_of(tokens: &ScriptedTokens, id: u8) -> String {
    let token = tokens.identity(0);
    let certificates = tokens.certificates(&token).unwrap();
    let der = &certificates[usize::from(id) - 1].der;
    CertificateFields::from_der(der).unwrap().subject
}

#[test]
fn a_valid_certificate_of_the_user_logs_in_with_the_pin() {
    let (store, tokens) = world(&[UserCert::valid(USER)]);
    let policy = AuthPolicy::default();
    let success = login(
        &store,
        &tokens,
        &policy,
        Some(USER),
        now(),
        [secret("PIN for root-card: ", PIN)],
    )
    .unwrap();
    assert_eq!(success.user, USER);
    assert_eq!(success.rule, "rule 1");
    assert_eq!(success.certificate_sha256.len(), 64);
    assert!(success.validity.0 < success.validity.1);
    assert!(success.pin.is_none(), "kept only when exported");
}

#[test]
fn the_pin_is_kept_for_pam_authtok_only_when_the_policy_exports_it() {
    let (store, tokens) = world(&[UserCert::valid(USER)]);
    let policy = AuthPolicy {
        export_pin_as_authtok: true,
        ..AuthPolicy::default()
    };
    let success = login(
        &store,
        &tokens,
        &policy,
        Some(USER),
        now(),
        [secret("PIN for root-card: ", PIN)],
    )
    .unwrap();
    assert_eq!(success.pin.unwrap().expose().as_str(), PIN);
}

#[test]
fn without_a_user_name_the_certificate_names_the_user() {
    let (store, tokens) = world(&[UserCert::valid(USER)]);
    let policy = AuthPolicy::default();
    let success = login(
        &store,
        &tokens,
        &policy,
        None,
        now(),
        [
            info("Logging in as root"),
            secret("PIN for root-card: ", PIN),
        ],
    )
    .unwrap();
    assert_eq!(success.user, USER);
}

#[test]
fn two_valid_certificates_of_the_user_are_offered_and_the_chosen_one_signs() {
    let mut second = UserCert::valid(USER);
    second.email = Some("second@example.test".to_owned());
    let (store, tokens) = world(&[UserCert::valid(USER), second]);
    let listing = format!(
        "Several certificates can log you in:\n  1. root: {} on \"root-card\" (serial 0000000000000000)\n  2. root: {} on \"root-card\" (serial 0000000000000000)",
        subject_of(&tokens, 1),
        subject_of(&tokens, 2)
    );
    let policy = AuthPolicy::default();
    let success = login(
        &store,
        &tokens,
        &policy,
        Some(USER),
        now(),
        [
            info(&listing),
            visible("Choose [1-2]: ", "2"),
            secret("PIN for root-card: ", PIN),
        ],
    )
    .unwrap();
    let second_sha256 =
        CertificateFields::from_der(&tokens.certificates(&tokens.identity(0)).unwrap()[1].der)
            .unwrap()
            .sha256_hex;
    assert_eq!(success.certificate_sha256, second_sha256);
}

#[test]
fn an_expired_certificate_is_rejected_before_any_pin_is_asked() {
    let (store, tokens) = world(&[UserCert::valid(USER)]);
    // Time is a parameter: two years on, the certificate has expired.
    let later = UnixTime::since_unix_epoch(
        UNIX_EPOCH.elapsed().unwrap() + Duration::from_secs(2 * 365 * 86_400),
    );
    let certificates = tokens.certificates(&tokens.identity(0)).unwrap();
    let not_after = crate::pki::validity_window(&certificates[0].der).1;
    let expiry =
        crate::pki::format_time(UnixTime::since_unix_epoch(Duration::from_secs(not_after)));
    let policy = AuthPolicy::default();
    let failure = login(
        &store,
        &tokens,
        &policy,
        Some(USER),
        later,
        [error(&format!(
            "Smart card certificate rejected: certificate expired on {expiry}"
        ))],
    )
    .err()
    .unwrap();
    assert_eq!(failure.kind, FailureKind::CertificateRejected, "{failure}");
    assert!(tokens.calls().is_empty(), "{:?}", tokens.calls());
}

#[test]
fn a_card_of_someone_else_says_so_and_lets_the_stack_fall_back() {
    let (store, tokens) = world(&[UserCert::valid("nobody-at-all")]);
    let policy = AuthPolicy::default();
    let failure = login(
        &store,
        &tokens,
        &policy,
        Some(USER),
        now(),
        [error("The smart card does not belong to root")],
    )
    .err()
    .unwrap();
    assert_eq!(failure.kind, FailureKind::NoMatchingCertificate);
}

#[test]
fn explaining_validates_every_certificate_and_logging_in_only_the_users() {
    let (store, tokens) = world(&[UserCert::valid(USER), UserCert::valid("nobody-at-all")]);
    let token_list = tokens.tokens().unwrap();
    let objects = TokenObjects::read(&tokens, &token_list, BareKeys::Skip);
    let config = config();

    let explained = discover(
        &config,
        &store,
        &objects,
        Scope::Explain { user: None },
        now(),
    )
    .unwrap();
    let verdicts: Vec<String> = explained.iter().map(|e| e.verdict.describe()).collect();
    assert_eq!(verdicts, ["valid", "valid"]);
    assert_eq!(explained[0].mapping.as_ref().unwrap().users(), [USER]);
    assert!(explained[1].mapping.as_ref().unwrap().users().is_empty());

    let login = discover(
        &config,
        &store,
        &objects,
        Scope::Login { user: Some(USER) },
        now(),
    )
    .unwrap();
    assert!(matches!(login[0].verdict, Verdict::Valid(_)));
    assert!(matches!(login[1].verdict, Verdict::NotMapped));
}
