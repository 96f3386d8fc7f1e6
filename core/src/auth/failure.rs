//! How a login or PIN change fails: the protocol's class of failure and a
//! message for the log.

use std::fmt;

use cryptoki::error::RvError;
use tessera_ipc::{ConversationError, FailureKind};

use crate::token::{TokenError, TokenIdentity};

/// A failed authentication: its class and a message for the log.
#[derive(Debug, Clone)]
pub struct AuthFailure {
    /// The class of failure, which the PAM module turns into a code.
    pub kind: FailureKind,
    /// What happened, for the log (never contains the PIN).
    pub message: String,
}

impl AuthFailure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ConversationError> for AuthFailure {
    fn from(error: ConversationError) -> Self {
        AuthFailure::new(FailureKind::Conversation, error.to_string())
    }
}

/// The failure of a C_Login (or of C_SetPIN after it) on `token`.
pub(crate) fn login_failure(error: TokenError, token: &TokenIdentity) -> AuthFailure {
    let kind = match error.rv() {
        Some(RvError::PinIncorrect | RvError::PinLenRange | RvError::PinInvalid) => {
            FailureKind::WrongPin
        }
        Some(RvError::PinLocked) => FailureKind::PinLocked,
        _ if error.token_gone() => FailureKind::TokenUnavailable,
        // Fail closed: any other login error is an authentication failure.
        _ => FailureKind::ProofFailed,
    };
    AuthFailure::new(
        kind,
        format!("login to {} failed: {error}", token.describe()),
    )
}
