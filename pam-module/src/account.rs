//! `pam_sm_acct_mgmt`: for users this module authenticated, the
//! certificate must still be within its validity period.

use pamsm::{Pam, PamError};
use tessera_ipc::logging;
use tessera_ipc::{AccountCheck, Conversation};

use crate::call::{auth_record, cached_user, Call};
use crate::conversation::PamConversation;

/// The account check needs no token and no configuration: only the record
/// this module kept, so it runs in the module.
pub(crate) fn acct_mgmt(pamh: &Pam, raw_args: &[String]) -> PamError {
    let call = match Call::new(pamh, "acct_mgmt", raw_args) {
        Ok(call) => call,
        Err(code) => return code,
    };
    logging::with_logger(call.args.debug, call.args.log, || {
        let service = call.service.as_str();
        let Some(record) = auth_record(pamh) else {
            // Someone else authenticated this user (a password, another module).
            tracing::debug!(
                id = "pam.account.not_ours",
                service,
                "user not authenticated by pam_tessera; ignoring"
            );
            return PamError::IGNORE;
        };
        // An unreadable or non-UTF-8 PAM_USER is not the user authenticated.
        let user = cached_user(pamh).ok().flatten();
        #[allow(clippy::disallowed_methods)]
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        match record.recheck(user.as_deref(), now) {
            AccountCheck::Valid => {}
            AccountCheck::UserChanged => {
                tracing::warn!(id = "pam.account.user_changed", service, authenticated = %record.user, now = ?user, "PAM_USER changed after authentication");
                return PamError::PERM_DENIED;
            }
            AccountCheck::CertificateNotValid => {
                tracing::warn!(id = "pam.account.certificate_expired", service, user = %record.user, "certificate no longer within its validity period");
                let mut conversation = PamConversation::new(pamh, false);
                let _ = conversation.error("Your smart card certificate is no longer valid");
                return PamError::PERM_DENIED;
            }
        }
        PamError::SUCCESS
    })
}
