//! `pam_sm_chauthtok`: the helper changes the PIN of the user's token.

use pamsm::{Pam, PamError, PamFlags};
use tessera_ipc::logging;
use tessera_ipc::protocol::{Operation, Verdict};
use tessera_ipc::CardRequirement;

use crate::call::{cached_user, Call};
use crate::codes::{chauthtok_failure_code, helper_failure_kind};

/// pam_chauthtok's two passes (pam_sm_chauthtok(3)).
const PAM_PRELIM_CHECK: i32 = 0x4000;
const PAM_UPDATE_AUTHTOK: i32 = 0x2000;

pub(crate) fn chauthtok(pamh: &Pam, flags: PamFlags, raw_args: &[String]) -> PamError {
    let call = match Call::new(pamh, "chauthtok", raw_args) {
        Ok(call) => call,
        Err(code) => return code,
    };
    logging::with_logger(call.args.debug, call.args.log, || {
        let service = call.service.as_str();
        if call.args.card == Some(CardRequirement::Disabled) {
            return PamError::IGNORE;
        }
        let user = match cached_user(pamh) {
            Ok(Some(user)) => user,
            _ => {
                tracing::error!(
                    id = "pam.chauthtok.no_user",
                    service,
                    "PIN change without a user name"
                );
                return PamError::USER_UNKNOWN;
            }
        };
        let operation = if flags.bits() & PAM_PRELIM_CHECK != 0 {
            Operation::ChangePinPrelim { user }
        } else if flags.bits() & PAM_UPDATE_AUTHTOK != 0 {
            Operation::ChangePinUpdate { user }
        } else {
            tracing::error!(
                id = "pam.chauthtok.bad_flags",
                service,
                "pam_sm_chauthtok called without PRELIM_CHECK or UPDATE_AUTHTOK"
            );
            return PamError::SERVICE_ERR;
        };
        let silent = flags.contains(PamFlags::SILENT);
        match call.run_helper(pamh, silent, operation).result {
            Ok(Verdict::Done) => PamError::SUCCESS,
            Ok(Verdict::Ignored) => PamError::IGNORE,
            Ok(Verdict::Failed { kind, .. }) => chauthtok_failure_code(kind),
            Ok(Verdict::Authenticated(_)) => {
                tracing::error!(
                    id = "pam.helper.unexpected_verdict",
                    service,
                    "the helper answered a PIN change with an authentication"
                );
                PamError::SERVICE_ERR
            }
            Err(error) => {
                tracing::error!(
                    id = "pam.chauthtok.helper_failed",
                    service,
                    "PIN change: {error}"
                );
                chauthtok_failure_code(helper_failure_kind(&error))
            }
        }
    })
}
