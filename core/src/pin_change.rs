//! Changing the token PIN (`passwd` with pam_tessera in the password stack).

use zeroize::Zeroizing;

use crate::auth::{
    load_module, login_failure, map_to_users, matching_tokens, read_certificates, AuthFailure,
    Conversation, FailureKind,
};
use crate::config::Config;
use crate::mapping;
use crate::token::{Pkcs11Module, TokenIdentity, UnblockError};
use tessera_mappers::CertificateFields;

/// The present tokens holding a certificate that maps to `user`. Validity is
/// not checked: an expired certificate's owner may still change the PIN.
fn tokens_of_user(
    module: &Pkcs11Module,
    config: &Config,
    user: &str,
) -> Result<Vec<TokenIdentity>, AuthFailure> {
    let tokens = matching_tokens(module, config)?;
    let mut owned: Vec<TokenIdentity> = Vec::new();
    // No clock here: the mapping cache is not consulted for a PIN change.
    mapping::with_context(config, None, |context| -> Result<(), AuthFailure> {
        for certificate in read_certificates(module, &tokens) {
            let Ok(fields) = CertificateFields::from_der(&certificate.der) else {
                continue;
            };
            let mapped = map_to_users(
                config,
                context,
                Some(&fields),
                fields.public_key.as_ref(),
                &certificate.token,
                Some(user),
            )?;
            if mapped.is_some() && !owned.contains(&certificate.token) {
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

fn ask(
    conversation: &mut dyn Conversation,
    prompt: &str,
) -> Result<Zeroizing<String>, AuthFailure> {
    Ok(conversation.prompt_secret(prompt)?)
}

/// Asks for a new PIN twice and checks it against the token's length limits
/// before anything reaches the token.
fn ask_new_pin(
    conversation: &mut dyn Conversation,
    (min, max): (usize, usize),
) -> Result<Zeroizing<String>, AuthFailure> {
    let new = ask(conversation, "New PIN: ")?;
    let length = new.chars().count();
    if length < min || length > max {
        let message = format!("The new PIN must have {min} to {max} characters");
        conversation.error(&message)?;
        return Err(AuthFailure::new(FailureKind::NewPinRejected, message));
    }
    let repeated = ask(conversation, "Repeat new PIN: ")?;
    if new != repeated {
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
    let fresh = module.refresh(&token).unwrap_or_else(|_| token.clone());
    let lengths = module
        .pin_length_range(&token)
        .map_err(|error| AuthFailure::new(FailureKind::TokenUnavailable, error.to_string()))?;
    if fresh.pin_locked {
        if unblock_pin {
            unblock(&module, &fresh, user, lengths, conversation)?;
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
    if old.is_empty() {
        return Err(AuthFailure::new(FailureKind::WrongPin, "empty PIN"));
    }
    let new = ask_new_pin(conversation, lengths)?;
    if let Err(error) = module.set_pin(&token, &old, &new) {
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
    tracing::info!(user, token = %token.describe(), "token PIN changed");
    Ok(token)
}

/// Unblocks the locked user PIN of `token` with its PUK (SO PIN) and sets a
/// new one.
fn unblock(
    module: &Pkcs11Module,
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
    if puk.is_empty() {
        return Err(AuthFailure::new(FailureKind::WrongPin, "empty PUK"));
    }
    let new = ask_new_pin(conversation, lengths)?;
    match module.unblock_pin(token, &puk, &new) {
        Ok(()) => {
            tracing::info!(user, token = %token.describe(), "token PIN unblocked with the PUK");
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
