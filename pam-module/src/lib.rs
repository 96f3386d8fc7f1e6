//! `pam_tessera.so`: the PAM adapter over `tessera-core`.
//!
//! Every entry point runs under `catch_unwind`; a panic becomes
//! PAM_SERVICE_ERR. All unsafe code lives in [`ffi`].

mod args;
mod conversation;
mod ffi;
mod logging;

use std::panic::{catch_unwind, AssertUnwindSafe};

use pamsm::{Pam, PamError, PamFlags, PamLibExt, PamServiceModule};
use tessera_core::auth::FailureKind;
use tessera_core::{AuthRequest, Config};

use crate::args::ModuleArgs;
use crate::conversation::PamConversation;

/// The module type handed to pamsm's entry-point macro.
#[derive(Debug)]
pub struct PamTessera;

/// The PAM code for each class of failure (DESIGN.md, "PAM return codes").
/// Never PAM_SUCCESS or PAM_IGNORE.
fn failure_code(kind: FailureKind) -> PamError {
    match kind {
        FailureKind::NoModule
        | FailureKind::NoToken
        | FailureKind::NoMatchingCertificate
        | FailureKind::TokenUnavailable => PamError::AUTHINFO_UNAVAIL,
        FailureKind::CertificateRejected | FailureKind::WrongPin | FailureKind::ProofFailed => {
            PamError::AUTH_ERR
        }
        FailureKind::PinLocked => PamError::MAXTRIES,
        FailureKind::Conversation => PamError::CONV_ERR,
        FailureKind::Config | FailureKind::Internal => PamError::SERVICE_ERR,
    }
}

/// Runs an entry point's body; a panic is logged and becomes PAM_SERVICE_ERR.
fn guarded(entry: &str, body: impl FnOnce() -> PamError) -> PamError {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(code) => code,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            logging::emergency(&format!("pam_sm_{entry}: internal error (panic: {what})"));
            PamError::SERVICE_ERR
        }
    }
}

fn authenticate(pamh: &Pam, flags: PamFlags, raw_args: &[String]) -> PamError {
    let args = match ModuleArgs::parse(raw_args) {
        Ok(args) => args,
        Err(error) => {
            logging::emergency(&format!("pam_sm_authenticate: {error}"));
            return PamError::SERVICE_ERR;
        }
    };
    let service = pamh
        .get_service()
        .ok()
        .flatten()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    logging::with_logger(&args, || {
        let config = match Config::load(&args.config) {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(%service, "configuration error: {error}");
                return PamError::SERVICE_ERR;
            }
        };
        let user = match pamh.get_cached_user() {
            Ok(user) => user
                .and_then(|name| name.to_str().ok())
                .filter(|name| !name.is_empty()),
            Err(code) => {
                tracing::error!(%service, "cannot read PAM_USER: {code}");
                return PamError::SERVICE_ERR;
            }
        };
        // The one place the module reads the clock; the core takes it as a parameter.
        #[allow(clippy::disallowed_methods)]
        let now = rustls_pki_types::UnixTime::now();
        let request = AuthRequest { user, now };
        let mut conversation = PamConversation::new(pamh, flags.contains(PamFlags::SILENT));
        match tessera_core::authenticate(&config, &request, &mut conversation) {
            Ok(success) => {
                if user.is_none() {
                    if let Err(code) = ffi::set_user(pamh, &success.user) {
                        tracing::error!(%service, "cannot set PAM_USER: {code}");
                        return PamError::SERVICE_ERR;
                    }
                }
                tracing::info!(
                    %service,
                    user = %success.user,
                    token = %success.token.describe(),
                    subject = %success.subject,
                    sha256 = %success.certificate_sha256,
                    rule = %success.rule,
                    "authenticated"
                );
                PamError::SUCCESS
            }
            Err(failure) => {
                let code = failure_code(failure.kind);
                match failure.kind {
                    FailureKind::NoToken | FailureKind::NoMatchingCertificate => {
                        tracing::info!(%service, user = user.unwrap_or(""), ?code, "{failure}")
                    }
                    _ => {
                        tracing::warn!(%service, user = user.unwrap_or(""), ?code, "authentication failed: {failure}")
                    }
                }
                code
            }
        }
    })
}

impl PamServiceModule for PamTessera {
    fn authenticate(pamh: Pam, flags: PamFlags, args: Vec<String>) -> PamError {
        guarded("authenticate", || authenticate(&pamh, flags, &args))
    }

    /// No credentials to establish; succeeding keeps `auth` stacks that call
    /// pam_setcred after a successful authentication working.
    fn setcred(_: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        PamError::SUCCESS
    }

    /// Account management is left to the modules that own the account (pam_unix, sssd).
    fn acct_mgmt(_: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        PamError::IGNORE
    }

    /// Session bindings for tessera-eventd are not written by this version.
    fn open_session(_: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        PamError::IGNORE
    }

    /// See [`PamTessera::open_session`].
    fn close_session(_: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        PamError::IGNORE
    }

    /// Changing the token PIN through PAM is not supported by this version.
    fn chauthtok(_: Pam, _: PamFlags, _: Vec<String>) -> PamError {
        PamError::IGNORE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_failure_maps_to_success_or_ignore() {
        let kinds = [
            FailureKind::NoModule,
            FailureKind::NoToken,
            FailureKind::NoMatchingCertificate,
            FailureKind::CertificateRejected,
            FailureKind::WrongPin,
            FailureKind::PinLocked,
            FailureKind::ProofFailed,
            FailureKind::TokenUnavailable,
            FailureKind::Conversation,
            FailureKind::Config,
            FailureKind::Internal,
        ];
        for kind in kinds {
            let code = failure_code(kind);
            assert!(
                code != PamError::SUCCESS && code != PamError::IGNORE,
                "{kind:?} -> {code:?}"
            );
        }
    }

    #[test]
    fn a_panic_becomes_service_err() {
        let code = guarded("test", || panic!("injected"));
        assert_eq!(code, PamError::SERVICE_ERR);
    }
}
