//! The choice and the proof of possession, run in-process as a normal user
//! against scripted tokens and a strict scripted conversation.

use rustls_pki_types::UnixTime;
use tessera_ipc::{FailureKind, Secret};
use zeroize::Zeroizing;

use super::candidate::{Candidate, Proof};
use super::choose::choose;
use super::failure::AuthFailure;
use super::prove::prove_possession;
use super::request::AuthRequest;
use super::scripted_conversation::{error, info, secret, visible, ScriptedConversation, Step};
use crate::policy::{AuthPolicy, PinSource};
use crate::token::scripted::ScriptedTokens;
use crate::token::TokenIdentity;

const PIN: &str = "123456";
const PUK: &str = "12345678";

/// One card, "alice-card", with keys 01 and 02.
fn card() -> ScriptedTokens {
    ScriptedTokens::new().with_card("alice-card", PIN, PUK, &[1, 2])
}

/// A candidate for key `id` of the card in slot 0, mapped to `users`; the
/// key's public half stands for a key in the user's authorized files.
fn candidate<'a>(
    tokens: &ScriptedTokens,
    token: &'a TokenIdentity,
    id: &'a [u8],
    users: &[&str],
) -> Candidate<'a> {
    Candidate {
        token,
        id,
        subject: format!("key {}", id[0]),
        sha256: String::new(),
        validity: (0, u64::MAX),
        users: users.iter().map(|user| (*user).to_owned()).collect(),
        rule: "rule 1".to_owned(),
        proof: Proof::Key(tokens.public_key(0, id[0])),
    }
}

fn policy(pin_source: PinSource) -> AuthPolicy {
    AuthPolicy {
        pin_source,
        ..AuthPolicy::default()
    }
}

fn request<'a>(policy: &'a AuthPolicy, authtok: Option<&str>) -> AuthRequest<'a> {
    AuthRequest {
        user: Some("alice"),
        now: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_000)),
        policy,
        authtok: authtok.map(|text| Secret::new(Zeroizing::new(text.to_owned()))),
    }
}

/// Runs the proof for key 01 of the card, as the token list showed it.
fn prove(
    tokens: &ScriptedTokens,
    request: &AuthRequest<'_>,
    script: impl IntoIterator<Item = Step>,
) -> Result<Option<Secret>, AuthFailure> {
    let token = tokens.identity(0);
    let candidate = candidate(tokens, &token, &[1], &["alice"]);
    let mut conversation = ScriptedConversation::new(script);
    prove_possession(tokens, &candidate, request, &mut conversation)
}

fn pin_prompt() -> String {
    "PIN for alice-card: ".to_owned()
}

#[test]
fn one_certificate_for_one_user_is_taken_without_asking() {
    let tokens = card();
    let token = tokens.identity(0);
    let only = candidate(&tokens, &token, &[1], &["alice"]);
    let (chosen, user) = choose(vec![only], &mut ScriptedConversation::new([])).unwrap();
    assert_eq!((chosen.id, user.as_str()), (&[1u8][..], "alice"));
}

#[test]
fn several_certificates_are_listed_and_the_answer_picks_one() {
    let tokens = card();
    let token = tokens.identity(0);
    let candidates = vec![
        candidate(&tokens, &token, &[1], &["alice"]),
        candidate(&tokens, &token, &[2], &["alice", "alice-admin"]),
    ];
    let listing = "Several certificates can log you in:\n  1. alice: key 1 on \"alice-card\" (serial 0000000000000000)\n  2. alice: key 2 on \"alice-card\" (serial 0000000000000000)\n  3. alice-admin: key 2 on \"alice-card\" (serial 0000000000000000)";
    let mut conversation =
        ScriptedConversation::new([info(listing), visible("Choose [1-3]: ", " 3 ")]);
    let (chosen, user) = choose(candidates, &mut conversation).unwrap();
    assert_eq!((chosen.id, user.as_str()), (&[2u8][..], "alice-admin"));
}

#[test]
fn an_answer_outside_the_list_is_an_invalid_choice_not_a_wrong_pin() {
    let tokens = card();
    let token = tokens.identity(0);
    for answer in ["0", "3", "123456", ""] {
        let candidates = vec![
            candidate(&tokens, &token, &[1], &["alice"]),
            candidate(&tokens, &token, &[2], &["alice"]),
        ];
        let listing = "Several certificates can log you in:\n  1. alice: key 1 on \"alice-card\" (serial 0000000000000000)\n  2. alice: key 2 on \"alice-card\" (serial 0000000000000000)";
        let mut conversation = ScriptedConversation::new([
            info(listing),
            visible("Choose [1-2]: ", answer),
            error("Invalid choice"),
        ]);
        let failure = choose(candidates, &mut conversation).err().unwrap();
        assert_eq!(failure.kind, FailureKind::InvalidChoice, "{answer:?}");
        assert!(
            !failure.message.contains(answer) || answer.is_empty(),
            "the answer is not logged"
        );
    }
}

#[test]
fn the_right_pin_logs_in_and_the_key_signs_a_challenge_that_verifies() {
    let tokens = card();
    let policy = policy(PinSource::Prompt);
    let pin = prove(
        &tokens,
        &request(&policy, None),
        [secret(&pin_prompt(), PIN)],
    )
    .unwrap();
    assert_eq!(pin.unwrap().expose().as_str(), PIN);
    assert_eq!(
        tokens.calls(),
        ["C_GetTokenInfo 0", "C_Login 0", "C_Sign 0"]
    );
}

#[test]
fn a_signature_by_another_key_than_the_certificates_fails_the_proof() {
    let tokens = card();
    let token = tokens.identity(0);
    let mut wrong = candidate(&tokens, &token, &[1], &["alice"]);
    wrong.proof = Proof::Key(tokens.public_key(0, 2));
    let policy = policy(PinSource::Prompt);
    let mut conversation = ScriptedConversation::new([secret(&pin_prompt(), PIN)]);
    let failure = prove_possession(&tokens, &wrong, &request(&policy, None), &mut conversation)
        .err()
        .unwrap();
    assert_eq!(failure.kind, FailureKind::ProofFailed, "{failure}");
}

#[test]
fn a_wrong_pin_says_so_and_spends_a_try() {
    let tokens = card();
    let policy = policy(PinSource::Prompt);
    let failure = prove(
        &tokens,
        &request(&policy, None),
        [secret(&pin_prompt(), "000000"), error("Incorrect PIN")],
    )
    .err()
    .unwrap();
    assert_eq!(failure.kind, FailureKind::WrongPin);
    assert_eq!(tokens.pin_tries(0), 2);
}

#[test]
fn an_empty_pin_never_reaches_the_token() {
    let tokens = card();
    let policy = policy(PinSource::Prompt);
    let failure = prove(
        &tokens,
        &request(&policy, None),
        [secret(&pin_prompt(), "")],
    )
    .err()
    .unwrap();
    assert_eq!(failure.kind, FailureKind::WrongPin);
    assert!(!tokens
        .calls()
        .iter()
        .any(|call| call.starts_with("C_Login")));
}

#[test]
fn a_low_retry_counter_is_announced_before_the_prompt() {
    for (tries, warning) in [
        (2, "Warning: a wrong PIN was entered recently"),
        (1, "Warning: one more wrong PIN will lock the card"),
    ] {
        let tokens = card();
        tokens.set_pin_tries(0, tries);
        let policy = policy(PinSource::Prompt);
        prove(
            &tokens,
            &request(&policy, None),
            [error(warning), secret(&pin_prompt(), PIN)],
        )
        .unwrap();
    }
}

#[test]
fn a_locked_pin_is_reported_and_no_login_is_tried() {
    let tokens = card();
    tokens.set_pin_tries(0, 0);
    let policy = policy(PinSource::Prompt);
    let failure = prove(
        &tokens,
        &request(&policy, None),
        [error("The PIN of alice-card is locked")],
    )
    .err()
    .unwrap();
    assert_eq!(failure.kind, FailureKind::PinLocked);
    assert!(tokens.calls().is_empty(), "{:?}", tokens.calls());
}

#[test]
fn the_last_wrong_pin_locks_the_card_and_says_so() {
    let tokens = card();
    tokens.set_pin_tries(0, 1);
    let policy = policy(PinSource::Prompt);
    let failure = prove(
        &tokens,
        &request(&policy, None),
        [
            error("Warning: one more wrong PIN will lock the card"),
            secret(&pin_prompt(), "000000"),
            error("The PIN of alice-card is locked"),
        ],
    )
    .err()
    .unwrap();
    assert_eq!(failure.kind, FailureKind::PinLocked);
}

#[test]
fn try_first_pass_uses_a_right_authtok_without_asking() {
    let tokens = card();
    let policy = policy(PinSource::TryFirstPass);
    let pin = prove(&tokens, &request(&policy, Some(PIN)), []).unwrap();
    assert_eq!(pin.unwrap().expose().as_str(), PIN);
    assert_eq!(tokens.calls(), ["C_Login 0", "C_Sign 0"]);
}

#[test]
fn try_first_pass_asks_after_a_wrong_authtok_and_warns_of_the_spent_try() {
    let tokens = card();
    let policy = policy(PinSource::TryFirstPass);
    prove(
        &tokens,
        &request(&policy, Some("password")),
        [
            error("Warning: a wrong PIN was entered recently"),
            secret(&pin_prompt(), PIN),
        ],
    )
    .unwrap();
    assert_eq!(
        tokens.calls(),
        ["C_Login 0", "C_GetTokenInfo 0", "C_Login 0", "C_Sign 0"]
    );
}

#[test]
fn first_pass_never_spends_the_last_tries_on_the_authtok() {
    for source in [PinSource::TryFirstPass, PinSource::UseFirstPass] {
        let tokens = card();
        tokens.set_pin_tries(0, 1);
        let policy = policy(source);
        prove(
            &tokens,
            &request(&policy, Some("password")),
            [
                error("Warning: one more wrong PIN will lock the card"),
                secret(&pin_prompt(), PIN),
            ],
        )
        .unwrap();
        assert_eq!(
            tokens.calls(),
            ["C_GetTokenInfo 0", "C_Login 0", "C_Sign 0"],
            "{source:?}"
        );
    }
}

#[test]
fn use_first_pass_without_an_authtok_is_a_missing_authtok_and_asks_nothing() {
    for authtok in [None, Some("")] {
        let tokens = card();
        let policy = policy(PinSource::UseFirstPass);
        let failure = prove(&tokens, &request(&policy, authtok), [])
            .err()
            .unwrap();
        assert_eq!(failure.kind, FailureKind::MissingAuthtok, "{authtok:?}");
        assert!(tokens.calls().is_empty());
    }
}

#[test]
fn use_first_pass_with_a_wrong_authtok_fails_without_asking() {
    let tokens = card();
    let policy = policy(PinSource::UseFirstPass);
    let failure = prove(
        &tokens,
        &request(&policy, Some("password")),
        [error("Incorrect PIN")],
    )
    .err()
    .unwrap();
    assert_eq!(failure.kind, FailureKind::WrongPin);
}
