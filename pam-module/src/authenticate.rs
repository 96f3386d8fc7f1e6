//! `pam_sm_authenticate`: the helper proves the card; the module takes its
//! verdict into the transaction (PAM_USER, PAM_AUTHTOK, the auth record).

use std::ffi::CString;

use pamsm::{Pam, PamError, PamFlags, PamLibExt};
use tessera_ipc::client::HelperError;
use tessera_ipc::logging;
use tessera_ipc::protocol::{Authenticated, Operation, Verdict};
use tessera_ipc::{CardRequirement, Conversation, Secret};
use zeroize::{Zeroize, Zeroizing};

use crate::call::{cached_user, Call, AUTH_RECORD};
use crate::codes::{failure_code, helper_failure_kind};
use crate::conversation::PamConversation;
use crate::ffi::calls as ffi;

pub(crate) fn authenticate(pamh: &Pam, flags: PamFlags, raw_args: &[String]) -> PamError {
    let call = match Call::new(pamh, "authenticate", raw_args) {
        Ok(call) => call,
        Err(code) => return code,
    };
    logging::with_logger(call.args.debug, call.args.log, || {
        let service = call.service.as_str();
        if call.args.card == Some(CardRequirement::Disabled) {
            tracing::debug!(
                id = "pam.auth.disabled",
                service,
                "module disabled for this stack (card=disabled)"
            );
            return PamError::IGNORE;
        }
        let user = match cached_user(pamh) {
            Ok(user) => user,
            Err(PamError::USER_UNKNOWN) => {
                tracing::warn!(
                    id = "pam.user.not_utf8",
                    service,
                    "PAM_USER is not valid UTF-8; refused"
                );
                return PamError::USER_UNKNOWN;
            }
            Err(code) => {
                tracing::error!(
                    id = "pam.user.unreadable",
                    service,
                    "cannot read PAM_USER: {code}"
                );
                return PamError::SERVICE_ERR;
            }
        };
        let authtok = pamh
            .get_cached_authtok()
            .ok()
            .flatten()
            .and_then(|token| token.to_str().ok())
            .map(|token| Secret::new(Zeroizing::new(token.to_owned())));
        let silent = flags.contains(PamFlags::SILENT);
        let operation = Operation::Authenticate {
            user: user.clone(),
            authtok,
        };
        let exchange = call.run_helper(pamh, silent, operation);
        let card = exchange
            .hello
            .map(|hello| hello.card)
            .or(call.args.card)
            .unwrap_or(CardRequirement::Optional);
        match exchange.result {
            Ok(Verdict::Authenticated(success)) => accept(pamh, service, user.as_deref(), success),
            Ok(Verdict::Failed { kind, .. }) => failure_code(kind, card),
            Ok(Verdict::Ignored) => PamError::IGNORE,
            Ok(Verdict::Done) => {
                tracing::error!(
                    id = "pam.helper.unexpected_verdict",
                    service,
                    "the helper answered an authentication without a result"
                );
                PamError::SERVICE_ERR
            }
            Err(error) => {
                let kind = helper_failure_kind(&error);
                tracing::error!(
                    id = "pam.helper.failed",
                    service,
                    user = user.as_deref().unwrap_or(""),
                    "authentication failed: {error}"
                );
                if let HelperError::TimedOut(_) = error {
                    let mut conversation = PamConversation::new(pamh, silent);
                    let _ = conversation.error("The smart card did not answer in time");
                }
                failure_code(kind, card)
            }
        }
    })
}

/// Takes the helper's successful verdict into the PAM transaction.
fn accept(
    pamh: &Pam,
    service: &str,
    requested: Option<&str>,
    success: Box<Authenticated>,
) -> PamError {
    match requested {
        Some(requested) if requested != success.user => {
            tracing::error!(id = "pam.auth.user_mismatch", service, requested, authenticated = %success.user, "the helper authenticated another user");
            return PamError::SERVICE_ERR;
        }
        Some(_) => {}
        None => {
            if let Err(code) = ffi::set_user(pamh, &success.user) {
                tracing::error!(
                    id = "pam.item.set_failed",
                    service,
                    "cannot set PAM_USER: {code}"
                );
                return PamError::SERVICE_ERR;
            }
        }
    }
    if let Some(pin) = &success.pin {
        if let Err(code) = export_authtok(pamh, pin) {
            tracing::error!(
                id = "pam.item.set_failed",
                service,
                "cannot set PAM_AUTHTOK: {code}"
            );
            return PamError::SERVICE_ERR;
        }
    }
    let token_name = format!("PKCS11_LOGIN_TOKEN_NAME={}", success.record.token.label);
    if let Err(code) = pamh.putenv(&token_name) {
        tracing::warn!(
            id = "pam.env.set_failed",
            service,
            "cannot set PKCS11_LOGIN_TOKEN_NAME: {code}"
        );
    }
    if let Err(code) = pamh.send_bytes(AUTH_RECORD, success.record.to_bytes(), None) {
        tracing::error!(
            id = "pam.data.set_failed",
            service,
            "cannot keep the authentication record: {code}"
        );
        return PamError::SERVICE_ERR;
    }
    PamError::SUCCESS
}

/// Sets PAM_AUTHTOK to the PIN for later modules; the temporary C string is wiped.
fn export_authtok(pamh: &Pam, pin: &Secret) -> Result<(), PamError> {
    let c_pin = CString::new(pin.expose().as_bytes()).map_err(|_| PamError::BUF_ERR)?;
    let result = pamh.set_authtok(&c_pin);
    c_pin.into_bytes().zeroize();
    result
}
