//! The proof of possession: the PIN (PAM_AUTHTOK or a prompt, with the
//! retry-counter warnings), C_Login, a fresh challenge signed by the key of
//! the chosen certificate, and its verification.

use std::fmt;

use tessera_ipc::{Conversation, FailureKind, Secret};

use super::candidate::{Candidate, Proof};
use super::failure::{login_failure, AuthFailure};
use super::request::AuthRequest;
use crate::challenge::{Challenge, KeyAlgorithm};
use crate::policy::PinSource;
use crate::token::{SigningSession, TokenBackend, TokenIdentity};

/// Logs in with the PIN, has the token sign a fresh challenge with the key of
/// the certificate's CKA_ID, and verifies the signature with that certificate.
/// Returns the PIN that worked (None with a PIN pad).
pub(crate) fn prove_possession(
    backend: &dyn TokenBackend,
    candidate: &Candidate<'_>,
    request: &AuthRequest<'_>,
    conversation: &mut dyn Conversation,
) -> Result<Option<Secret>, AuthFailure> {
    let token = candidate.token;
    let algorithm = match &candidate.proof {
        Proof::Certificate { der, .. } => KeyAlgorithm::of_certificate(der).map_err(|error| {
            AuthFailure::new(FailureKind::CertificateRejected, error.to_string())
        })?,
        Proof::Key(key) => KeyAlgorithm::of_public_key(key),
    };

    if token.pin_locked {
        conversation.error(&format!("The PIN of {} is locked", token.label))?;
        return Err(pin_locked(token));
    }

    let mut session = backend
        .open_session(token)
        .map_err(|error| AuthFailure::new(FailureKind::TokenUnavailable, error.to_string()))?;

    let pin = if token.protected_authentication_path {
        conversation.info("Enter your PIN on the reader's PIN pad")?;
        session
            .login(None)
            .map_err(|error| login_failure(error, token))?;
        None
    } else {
        Some(log_in_with_pin(
            backend,
            session.as_mut(),
            token,
            request,
            conversation,
        )?)
    };
    tracing::debug!(id = "auth.token.logged_in", token = %token.describe(), "logged in to the token");

    let proof_failed = |error: &dyn fmt::Display| {
        AuthFailure::new(
            FailureKind::ProofFailed,
            format!("proof of possession with {}: {error}", token.describe()),
        )
    };
    let challenge = Challenge::generate().map_err(|error| {
        AuthFailure::new(
            FailureKind::Internal,
            format!("no randomness for the challenge: {error}"),
        )
    })?;
    let (mechanism, input) = algorithm.signing_input(&challenge);
    let signature = session
        .sign(candidate.id, &mechanism, &input)
        .map_err(|error| proof_failed(&error))?;
    tracing::debug!(
        id = "auth.proof.signed",
        bytes = signature.len(),
        "token signed the challenge"
    );
    match &candidate.proof {
        Proof::Certificate { validated, .. } => {
            algorithm.verify(validated.end_entity(), &challenge, &signature)
        }
        Proof::Key(key) => algorithm.verify_with_key(key, &challenge, &signature),
    }
    .map_err(|error| proof_failed(&error))?;
    tracing::debug!(id = "auth.proof.verified", token = %token.describe(), ?algorithm, "challenge signature verified");
    Ok(pin)
}

fn pin_locked(token: &TokenIdentity) -> AuthFailure {
    AuthFailure::new(
        FailureKind::PinLocked,
        format!("PIN of token {} is locked", token.describe()),
    )
}

/// Warns about a low retry counter, then logs in with PAM_AUTHTOK or a
/// prompted PIN as the policy says. An empty PIN never reaches C_Login.
fn log_in_with_pin(
    backend: &dyn TokenBackend,
    session: &mut dyn SigningSession,
    token: &TokenIdentity,
    request: &AuthRequest<'_>,
    conversation: &mut dyn Conversation,
) -> Result<Secret, AuthFailure> {
    // A password meant for an earlier module must not spend the last PIN
    // tries: with the retry counter low, the person is asked instead.
    let counter_low = token.pin_final_try || token.pin_count_low;
    let first_pass = match request.policy.pin_source {
        PinSource::Prompt => None,
        PinSource::UseFirstPass | PinSource::TryFirstPass if counter_low => {
            tracing::info!(id = "auth.pin.counter_low", token = %token.describe(), "the PIN retry counter is low; asking for the PIN instead of trying PAM_AUTHTOK");
            None
        }
        PinSource::UseFirstPass | PinSource::TryFirstPass => request
            .authtok
            .as_ref()
            .filter(|authtok| !authtok.expose().is_empty()),
    };
    if let Some(authtok) = first_pass {
        match try_login(session, token, authtok) {
            Ok(()) => return Ok(authtok.clone()),
            Err(failure)
                if failure.kind == FailureKind::WrongPin
                    && request.policy.pin_source == PinSource::TryFirstPass =>
            {
                tracing::info!(id = "auth.pin.authtok_rejected", token = %token.describe(), "PAM_AUTHTOK is not the PIN; asking for it");
            }
            Err(failure) => {
                report_login_failure(&failure, token, conversation)?;
                return Err(failure);
            }
        }
    } else if request.policy.pin_source == PinSource::UseFirstPass && !counter_low {
        return Err(AuthFailure::new(
            FailureKind::MissingAuthtok,
            "pin_source = \"use_first_pass\" but no earlier module set PAM_AUTHTOK",
        ));
    }

    // A failed PAM_AUTHTOK try may have changed the PIN flags.
    let fresh = backend.refresh(token).unwrap_or_else(|_| token.clone());
    if fresh.pin_locked {
        conversation.error(&format!("The PIN of {} is locked", token.label))?;
        return Err(pin_locked(token));
    }
    if fresh.pin_final_try {
        conversation.error("Warning: one more wrong PIN will lock the card")?;
    } else if fresh.pin_count_low {
        conversation.error("Warning: a wrong PIN was entered recently")?;
    }
    let pin = Secret::new(conversation.prompt_secret(&format!("PIN for {}: ", token.label))?);
    if pin.expose().is_empty() {
        return Err(AuthFailure::new(FailureKind::WrongPin, "empty PIN"));
    }
    if let Err(failure) = try_login(session, token, &pin) {
        report_login_failure(&failure, token, conversation)?;
        return Err(failure);
    }
    Ok(pin)
}

fn try_login(
    session: &mut dyn SigningSession,
    token: &TokenIdentity,
    pin: &Secret,
) -> Result<(), AuthFailure> {
    if pin.expose().is_empty() {
        return Err(AuthFailure::new(FailureKind::WrongPin, "empty PIN"));
    }
    session
        .login(Some(pin))
        .map_err(|error| login_failure(error, token))
}

fn report_login_failure(
    failure: &AuthFailure,
    token: &TokenIdentity,
    conversation: &mut dyn Conversation,
) -> Result<(), AuthFailure> {
    match failure.kind {
        FailureKind::WrongPin => conversation.error("Incorrect PIN")?,
        FailureKind::PinLocked => {
            conversation.error(&format!("The PIN of {} is locked", token.label))?
        }
        _ => {}
    }
    Ok(())
}
