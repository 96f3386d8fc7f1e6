//! What every entry point shares: the panic guard, the parsed arguments
//! and service, running the helper, PAM_USER, and the record
//! authenticate keeps for the later calls of the transaction.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pamsm::{Pam, PamError, PamLibExt};
use tessera_ipc::client::{self, Exchange, HelperCommand};
use tessera_ipc::logging;
use tessera_ipc::protocol::{Operation, Request, PROTOCOL_VERSION};
use tessera_ipc::AuthRecord;

use crate::args::ModuleArgs;
use crate::conversation::PamConversation;

/// pam_set_data name of the [`AuthRecord`] kept from authenticate to the
/// session and account calls.
pub(crate) const AUTH_RECORD: &str = "tessera_auth_record";

/// Runs an entry point's body; a panic is logged and becomes PAM_SERVICE_ERR.
pub(crate) fn guarded(entry: &str, body: impl FnOnce() -> PamError) -> PamError {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(code) => code,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            logging::emergency(
                "pam.panic",
                &format!("pam_sm_{entry}: internal error (panic: {what})"),
            );
            PamError::SERVICE_ERR
        }
    }
}

/// What every entry point needs: parsed arguments and the service.
pub(crate) struct Call {
    pub(crate) args: ModuleArgs,
    pub(crate) service: String,
}

impl Call {
    pub(crate) fn new(pamh: &Pam, entry: &str, raw_args: &[String]) -> Result<Self, PamError> {
        let args = ModuleArgs::parse(raw_args).map_err(|error| {
            logging::emergency("pam.arguments.invalid", &format!("pam_sm_{entry}: {error}"));
            PamError::SERVICE_ERR
        })?;
        let service = pamh
            .get_service()
            .ok()
            .flatten()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self { args, service })
    }

    /// Runs the helper for `operation`, its prompts going through the PAM
    /// conversation.
    pub(crate) fn run_helper(&self, pamh: &Pam, silent: bool, operation: Operation) -> Exchange {
        let command = HelperCommand::installed(&self.args.config, self.args.debug, self.args.log);
        let request = Request {
            version: PROTOCOL_VERSION,
            service: self.service.clone(),
            card: self.args.card,
            operation,
        };
        let mut conversation = PamConversation::new(pamh, silent);
        client::run(&command, request, &mut conversation)
    }
}

/// PAM_USER: `None` only when it is unset or empty (a username-less login,
/// where the certificate names the user). A name that is not valid UTF-8 is
/// nobody this module can authenticate: PAM_USER_UNKNOWN, never a
/// username-less login that would overwrite it.
pub(crate) fn cached_user(pamh: &Pam) -> Result<Option<String>, PamError> {
    match pamh.get_cached_user()? {
        None => Ok(None),
        Some(name) if name.to_bytes().is_empty() => Ok(None),
        Some(name) => name
            .to_str()
            .map(|name| Some(name.to_owned()))
            .map_err(|_| PamError::USER_UNKNOWN),
    }
}

/// The record authenticate left for this transaction, if this module
/// authenticated the user.
pub(crate) fn auth_record(pamh: &Pam) -> Option<AuthRecord> {
    pamh.retrieve_bytes(AUTH_RECORD)
        .ok()
        .and_then(|bytes| AuthRecord::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_service_err() {
        let code = guarded("test", || panic!("injected"));
        assert_eq!(code, PamError::SERVICE_ERR);
    }
}
