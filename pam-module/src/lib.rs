//! `pam_tessera.so`: the PAM adapter, a thin client of the `tessera-auth`
//! helper.
//!
//! The module reads PAM items, spawns the helper (clean environment,
//! deadline; `tessera_ipc::client`), relays its prompts through the PAM
//! conversation and turns its verdict into a PAM code. It loads no PKCS#11
//! code and parses no certificate, configuration or directory answer: the
//! PAM application's caller (`su` keeps the invoking user's environment) is
//! hostile, and none of that may run in its process.
//!
//! Every entry point runs under `catch_unwind`; a panic becomes
//! PAM_SERVICE_ERR. All unsafe code lives in [`ffi`].

mod account;
mod args;
mod authenticate;
mod call;
mod chauthtok;
mod codes;
mod conversation;
mod ffi;
mod session;

use pamsm::{Pam, PamError, PamFlags, PamServiceModule};

use crate::call::{auth_record, guarded};

/// The module type handed to pamsm's entry-point macro.
#[derive(Debug)]
pub struct PamTessera;

impl PamServiceModule for PamTessera {
    fn authenticate(pamh: Pam, flags: PamFlags, args: Vec<String>) -> PamError {
        guarded("authenticate", || {
            authenticate::authenticate(&pamh, flags, &args)
        })
    }

    /// No credentials to establish. PAM_SUCCESS when this module
    /// authenticated the user in this transaction, so a stack whose
    /// authentication ended here (`success=end`/`done`) ends its setcred
    /// here too; PAM_IGNORE otherwise, so the module that did authenticate
    /// (pam_unix, pam_sss, pam_krb5) gets its setcred call.
    fn setcred(pamh: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        guarded("setcred", || {
            if auth_record(&pamh).is_some() {
                PamError::SUCCESS
            } else {
                PamError::IGNORE
            }
        })
    }

    /// For users this module authenticated: the certificate must still be
    /// within its validity period. Others: PAM_IGNORE (not ours to judge).
    fn acct_mgmt(pamh: Pam, _: PamFlags, args: Vec<String>) -> PamError {
        guarded("acct_mgmt", || account::acct_mgmt(&pamh, &args))
    }

    /// Has the helper write the session binding that lets tessera-eventd
    /// lock this session when its card is pulled.
    fn open_session(pamh: Pam, _: PamFlags, args: Vec<String>) -> PamError {
        guarded("open_session", || session::open(&pamh, &args))
    }

    /// Has the helper remove the session binding.
    fn close_session(pamh: Pam, _: PamFlags, args: Vec<String>) -> PamError {
        guarded("close_session", || session::close(&pamh, &args))
    }

    /// Changes the PIN of the user's token: current PIN, new PIN twice,
    /// within the token's length limits.
    fn chauthtok(pamh: Pam, flags: PamFlags, args: Vec<String>) -> PamError {
        guarded("chauthtok", || chauthtok::chauthtok(&pamh, flags, &args))
    }
}
