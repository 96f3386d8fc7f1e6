//! Changing the token PIN (`passwd` with pam_tessera in the password stack).

use tessera_ipc::{Conversation, FailureKind, Secret};
use tessera_mappers::CertificateFields;

use crate::auth::discover::{map_object, Scope};
use crate::auth::failure::{login_failure, AuthFailure};
use crate::auth::tokens::{load_module, matching_tokens, BareKeys, TokenObjects};
use crate::config::Config;
use crate::mapping;
use crate::token::{TokenBackend, TokenIdentity, UnblockError};

/// The present tokens holding a certificate that maps to `user`. Validity is
/// not checked: an expired certificate's owner may still change the PIN.
fn tokens_of_user(
    backend: &dyn TokenBackend,
    config: &Config,
    user: &str,
) -> Result<Vec<TokenIdentity>, AuthFailure> {
    let tokens = matching_tokens(backend, config)?;
    let objects = TokenObjects::read(backend, &tokens, BareKeys::Skip);
    let mut owned: Vec<TokenIdentity> = Vec::new();
    // No clock here: the mapping cache is not consulted for a PIN change.
    mapping::with_context(config, None, |context| -> Result<(), AuthFailure> {
        for certificate in objects.certificates {
            let Ok(fields) = CertificateFields::from_der(&certificate.der) else {
                continue;
            };
            let mapping = map_object(
                config,
                context,
                Some(&fields),
                fields.public_key.as_ref(),
                &certificate.token,
                Scope::Login { user: Some(user) },
            )?;
            if !mapping.users().is_empty() && !owned.contains(&certificate.token) {
                owned.push(certificate.token);
            }
        }
        Ok(())
    })?;
    Ok(owned)
}

/// The preliminary check of `pam_sm_chauthtok`: is a token of `user` present?
pub fn prelim_check(config: &Config, user: &str) -> Result<(), AuthFailure> {
    let module = load_module(config)?;
    if tokens_of_user(&module, config, user)?.is_empty() {
        return Err(AuthFailure::new(
            FailureKind::NoMatchingCertificate,
            format!("no token of user {user} present"),
        ));
    }
    Ok(())
}

fn ask(conversation: &mut dyn Conversation, prompt: &str) -> Result<Secret, AuthFailure> {
    Ok(Secret::new(conversation.prompt_secret(prompt)?))
}

/// Asks for a new PIN twice and checks it against the token's length limits
/// before anything reaches the token.
fn ask_new_pin(
    conversation: &mut dyn Conversation,
    (min, max): (usize, usize),
) -> Result<Secret, AuthFailure> {
    let new = ask(conversation, "New PIN: ")?;
    let length = new.expose().chars().count();
    if length < min || length > max {
        let message = format!("The new PIN must have {min} to {max} characters");
        conversation.error(&message)?;
        return Err(AuthFailure::new(FailureKind::NewPinRejected, message));
    }
    let repeated = ask(conversation, "Repeat new PIN: ")?;
    if new.expose() != repeated.expose() {
        conversation.error("The PINs do not match")?;
        return Err(AuthFailure::new(
            FailureKind::NewPinRejected,
            "the new PINs do not match",
        ));
    }
    Ok(new)
}

/// Asks for the current PIN and a new one (twice) and changes the PIN of the
/// token of `user`. When the PIN is locked and `unblock_pin` is set, asks for
/// the PUK instead of the current PIN and unblocks it. Returns the token
/// whose PIN changed.
pub fn change_pin(
    config: &Config,
    user: &str,
    unblock_pin: bool,
    conversation: &mut dyn Conversation,
) -> Result<TokenIdentity, AuthFailure> {
    let module = load_module(config)?;
    let token = match tokens_of_user(&module, config, user)?.as_slice() {
        [] => {
            return Err(AuthFailure::new(
                FailureKind::NoMatchingCertificate,
                format!("no token of user {user} present"),
            ))
        }
        [token] => token.clone(),
        several => {
            conversation
                .error("Several of your tokens are present; leave only the one to change")?;
            return Err(AuthFailure::new(
                FailureKind::NoMatchingCertificate,
                format!(
                    "{} tokens of user {user} present; refusing to guess",
                    several.len()
                ),
            ));
        }
    };
    change_pin_of(&module, token, user, unblock_pin, conversation)
}

/// Changes (or, when locked and `unblock_pin` is set, unblocks) the PIN of
/// `token`, the one token of `user` present.
pub(crate) fn change_pin_of(
    backend: &dyn TokenBackend,
    token: TokenIdentity,
    user: &str,
    unblock_pin: bool,
    conversation: &mut dyn Conversation,
) -> Result<TokenIdentity, AuthFailure> {
    let fresh = backend.refresh(&token).unwrap_or_else(|_| token.clone());
    let lengths = backend
        .pin_length_range(&token)
        .map_err(|error| AuthFailure::new(FailureKind::TokenUnavailable, error.to_string()))?;
    if fresh.pin_locked {
        if unblock_pin {
            unblock(backend, &fresh, user, lengths, conversation)?;
            return Ok(token);
        }
        conversation.error(&format!(
            "The PIN of {} is locked; ask your administrator to unblock it",
            token.label
        ))?;
        return Err(AuthFailure::new(
            FailureKind::PinLocked,
            format!("PIN of token {} is locked", token.describe()),
        ));
    }

    let old = ask(conversation, &format!("Current PIN for {}: ", token.label))?;
    if old.expose().is_empty() {
        return Err(AuthFailure::new(FailureKind::WrongPin, "empty PIN"));
    }
    let new = ask_new_pin(conversation, lengths)?;
    if let Err(error) = backend.set_pin(&token, &old, &new) {
        let failure = login_failure(error, &token);
        return Err(match failure.kind {
            FailureKind::WrongPin => {
                conversation.error("Incorrect PIN")?;
                failure
            }
            FailureKind::PinLocked => {
                conversation.error(&format!("The PIN of {} is locked", token.label))?;
                failure
            }
            _ => AuthFailure::new(FailureKind::NewPinRejected, failure.message),
        });
    }
    tracing::info!(id = "auth.pin.changed", user, token = %token.describe(), "token PIN changed");
    Ok(token)
}

/// Unblocks the locked user PIN of `token` with its PUK (SO PIN) and sets a
/// new one.
fn unblock(
    backend: &dyn TokenBackend,
    token: &TokenIdentity,
    user: &str,
    lengths: (usize, usize),
    conversation: &mut dyn Conversation,
) -> Result<(), AuthFailure> {
    if token.so_pin_locked {
        conversation.error(&format!(
            "The PIN and the PUK of {} are locked; ask your administrator",
            token.label
        ))?;
        return Err(AuthFailure::new(
            FailureKind::PinLocked,
            format!("PIN and PUK of token {} are locked", token.describe()),
        ));
    }
    conversation.info(&format!(
        "The PIN of {} is locked; unblock it with its PUK",
        token.label
    ))?;
    if token.so_pin_final_try {
        conversation.error("Last PUK try: a wrong PUK locks the card for good")?;
    }
    let puk = ask(conversation, &format!("PUK for {}: ", token.label))?;
    if puk.expose().is_empty() {
        return Err(AuthFailure::new(FailureKind::WrongPin, "empty PUK"));
    }
    let new = ask_new_pin(conversation, lengths)?;
    match backend.unblock_pin(token, &puk, &new) {
        Ok(()) => {
            tracing::info!(id = "auth.pin.unblocked", user, token = %token.describe(), "token PIN unblocked with the PUK");
            Ok(())
        }
        Err(UnblockError::Puk(error)) => {
            let failure = login_failure(error, token);
            match failure.kind {
                FailureKind::WrongPin => conversation.error("Incorrect PUK")?,
                FailureKind::PinLocked => {
                    conversation.error(&format!("The PUK of {} is locked", token.label))?
                }
                _ => {}
            }
            Err(AuthFailure::new(
                failure.kind,
                format!(
                    "PUK login to {} failed: {}",
                    token.describe(),
                    failure.message
                ),
            ))
        }
        Err(UnblockError::NewPin(error)) => Err(AuthFailure::new(
            FailureKind::NewPinRejected,
            format!("{} refused the new PIN: {error}", token.describe()),
        )),
        Err(UnblockError::Session(error)) => Err(AuthFailure::new(
            if error.token_gone() {
                FailureKind::TokenUnavailable
            } else {
                FailureKind::ProofFailed
            },
            format!("cannot open a session on {}: {error}", token.describe()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scripted_conversation::{error, info, secret, ScriptedConversation, Step};
    use crate::token::scripted::ScriptedTokens;

    const PIN: &str = "123456";
    const PUK: &str = "12345678";

    fn change(
        tokens: &ScriptedTokens,
        unblock_pin: bool,
        script: impl IntoIterator<Item = Step>,
    ) -> Result<TokenIdentity, AuthFailure> {
        let mut conversation = ScriptedConversation::new(script);
        change_pin_of(
            tokens,
            tokens.identity(0),
            "alice",
            unblock_pin,
            &mut conversation,
        )
    }

    fn card() -> ScriptedTokens {
        ScriptedTokens::new().with_card("alice-card", PIN, PUK, &[1])
    }

    #[test]
    fn the_pin_changes_after_the_current_pin_and_the_new_one_twice() {
        let tokens = card();
        change(
            &tokens,
            false,
            [
                secret("Current PIN for alice-card: ", PIN),
                secret("New PIN: ", "654321"),
                secret("Repeat new PIN: ", "654321"),
            ],
        )
        .unwrap();
        assert_eq!(tokens.pin(0), "654321");
    }

    #[test]
    fn a_new_pin_refused_before_the_token_is_touched() {
        for (script, message) in [
            (
                vec![
                    secret("Current PIN for alice-card: ", PIN),
                    secret("New PIN: ", "654321"),
                    secret("Repeat new PIN: ", "654320"),
                ],
                "The PINs do not match",
            ),
            (
                vec![
                    secret("Current PIN for alice-card: ", PIN),
                    secret("New PIN: ", "12345"),
                ],
                "The new PIN must have 6 to 8 characters",
            ),
        ] {
            let tokens = card();
            let mut script = script;
            script.push(error(message));
            let failure = change(&tokens, false, script).err().unwrap();
            assert_eq!(failure.kind, FailureKind::NewPinRejected);
            assert!(!tokens
                .calls()
                .iter()
                .any(|call| call.starts_with("C_SetPIN")));
            assert_eq!(tokens.pin(0), PIN);
        }
    }

    #[test]
    fn a_wrong_current_pin_is_reported_and_changes_nothing() {
        let tokens = card();
        let failure = change(
            &tokens,
            false,
            [
                secret("Current PIN for alice-card: ", "000000"),
                secret("New PIN: ", "654321"),
                secret("Repeat new PIN: ", "654321"),
                error("Incorrect PIN"),
            ],
        )
        .err()
        .unwrap();
        assert_eq!(failure.kind, FailureKind::WrongPin);
        assert_eq!(tokens.pin(0), PIN);
    }

    #[test]
    fn a_locked_pin_is_not_unblocked_unless_the_policy_says_so() {
        let tokens = card();
        tokens.set_pin_tries(0, 0);
        let failure = change(
            &tokens,
            false,
            [error(
                "The PIN of alice-card is locked; ask your administrator to unblock it",
            )],
        )
        .err()
        .unwrap();
        assert_eq!(failure.kind, FailureKind::PinLocked);
    }

    #[test]
    fn a_locked_pin_is_unblocked_with_the_puk_and_warned_on_its_last_try() {
        let tokens = card();
        tokens.set_pin_tries(0, 0);
        tokens.set_puk_tries(0, 1);
        change(
            &tokens,
            true,
            [
                info("The PIN of alice-card is locked; unblock it with its PUK"),
                error("Last PUK try: a wrong PUK locks the card for good"),
                secret("PUK for alice-card: ", PUK),
                secret("New PIN: ", "24681357"),
                secret("Repeat new PIN: ", "24681357"),
            ],
        )
        .unwrap();
        assert_eq!(tokens.pin(0), "24681357");
        assert_eq!(tokens.pin_tries(0), 3);
    }

    #[test]
    fn a_wrong_puk_is_reported_and_a_locked_puk_asks_nothing() {
        let tokens = card();
        tokens.set_pin_tries(0, 0);
        let failure = change(
            &tokens,
            true,
            [
                info("The PIN of alice-card is locked; unblock it with its PUK"),
                secret("PUK for alice-card: ", "00000000"),
                secret("New PIN: ", "654321"),
                secret("Repeat new PIN: ", "654321"),
                error("Incorrect PUK"),
            ],
        )
        .err()
        .unwrap();
        assert_eq!(failure.kind, FailureKind::WrongPin);

        tokens.set_puk_tries(0, 0);
        let failure = change(
            &tokens,
            true,
            [error(
                "The PIN and the PUK of alice-card are locked; ask your administrator",
            )],
        )
        .err()
        .unwrap();
        assert_eq!(failure.kind, FailureKind::PinLocked);
        assert!(!tokens
            .calls()
            .iter()
            .skip_while(|call| !call.starts_with("C_InitPIN"))
            .skip(1)
            .any(|call| call.starts_with("C_InitPIN")));
    }
}
