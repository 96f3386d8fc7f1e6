//! `pam_tessera.so`: the PAM adapter over `tessera-core`.
//!
//! Every entry point runs under `catch_unwind`; a panic becomes
//! PAM_SERVICE_ERR. All unsafe code lives in [`ffi`].

mod args;
mod conversation;
mod ffi;
mod logging;
mod session;

use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pamsm::{Pam, PamError, PamFlags, PamLibExt, PamServiceModule};
use tessera_core::auth::{FailureKind, Secret};
use tessera_core::binding::{AuthRecord, BoundToken};
use tessera_core::policy::{AuthPolicy, CardRequirement};
use tessera_core::{AuthRequest, Config};
use zeroize::{Zeroize, Zeroizing};

use crate::args::ModuleArgs;
use crate::conversation::PamConversation;

/// The module type handed to pamsm's entry-point macro.
#[derive(Debug)]
pub struct PamTessera;

/// pam_set_data name of the [`AuthRecord`] kept from authenticate to the
/// session and account calls.
const AUTH_RECORD: &str = "tessera_auth_record";

/// The PAM code for each class of failure (DESIGN.md, "PAM return codes").
/// Never PAM_SUCCESS or PAM_IGNORE.
fn failure_code(kind: FailureKind, card: CardRequirement) -> PamError {
    match kind {
        FailureKind::NoModule
        | FailureKind::NoToken
        | FailureKind::NoMatchingCertificate
        | FailureKind::MappingUnavailable
        | FailureKind::TokenUnavailable => match card {
            // No fallback to a password where the card is required.
            CardRequirement::Required => PamError::AUTH_ERR,
            CardRequirement::Optional | CardRequirement::Disabled => PamError::AUTHINFO_UNAVAIL,
        },
        FailureKind::CertificateRejected
        | FailureKind::WrongPin
        | FailureKind::ProofFailed
        | FailureKind::NewPinRejected => PamError::AUTH_ERR,
        FailureKind::PinLocked => PamError::MAXTRIES,
        FailureKind::Conversation => PamError::CONV_ERR,
        FailureKind::Config | FailureKind::Internal => PamError::SERVICE_ERR,
    }
}

/// The PAM code of a failed PIN change (pam_sm_chauthtok); never
/// PAM_SUCCESS or PAM_IGNORE.
fn chauthtok_failure_code(kind: FailureKind) -> PamError {
    match kind {
        FailureKind::NoModule
        | FailureKind::NoToken
        | FailureKind::NoMatchingCertificate
        | FailureKind::MappingUnavailable
        | FailureKind::TokenUnavailable => PamError::AUTHINFO_UNAVAIL,
        FailureKind::WrongPin => PamError::AUTH_ERR,
        FailureKind::PinLocked => PamError::MAXTRIES,
        FailureKind::NewPinRejected
        | FailureKind::CertificateRejected
        | FailureKind::ProofFailed => PamError::AUTHTOK_ERR,
        FailureKind::Conversation => PamError::CONV_ERR,
        FailureKind::Config | FailureKind::Internal => PamError::SERVICE_ERR,
    }
}

/// pam_chauthtok's two passes (pam_sm_chauthtok(3)).
const PAM_PRELIM_CHECK: i32 = 0x4000;
const PAM_UPDATE_AUTHTOK: i32 = 0x2000;

fn chauthtok(pamh: &Pam, flags: PamFlags, raw_args: &[String]) -> PamError {
    let call = match Call::new(pamh, "chauthtok", raw_args) {
        Ok(call) => call,
        Err(code) => return code,
    };
    logging::with_logger(&call.args, || {
        let service = call.service.as_str();
        let config = match call.config() {
            Ok(config) => config,
            Err(code) => return code,
        };
        let policy = call.policy(&config);
        if policy.card == CardRequirement::Disabled {
            return PamError::IGNORE;
        }
        let user = match cached_user(pamh) {
            Ok(Some(user)) => user,
            _ => {
                tracing::error!(service, "PIN change without a user name");
                return PamError::USER_UNKNOWN;
            }
        };
        let result = if flags.bits() & PAM_PRELIM_CHECK != 0 {
            tessera_core::pin_change::prelim_check(&config, &user)
        } else if flags.bits() & PAM_UPDATE_AUTHTOK != 0 {
            let mut conversation = PamConversation::new(pamh, flags.contains(PamFlags::SILENT));
            tessera_core::pin_change::change_pin(
                &config,
                &user,
                policy.unblock_pin,
                &mut conversation,
            )
            .map(drop)
        } else {
            tracing::error!(
                service,
                "pam_sm_chauthtok called without PRELIM_CHECK or UPDATE_AUTHTOK"
            );
            return PamError::SERVICE_ERR;
        };
        match result {
            Ok(()) => PamError::SUCCESS,
            Err(failure) => {
                let code = chauthtok_failure_code(failure.kind);
                tracing::warn!(service, user = %user, ?code, "PIN change: {failure}");
                code
            }
        }
    })
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

/// What every entry point needs: parsed arguments, service, config, policy.
pub(crate) struct Call {
    pub(crate) args: ModuleArgs,
    pub(crate) service: String,
}

impl Call {
    pub(crate) fn new(pamh: &Pam, entry: &str, raw_args: &[String]) -> Result<Self, PamError> {
        let args = ModuleArgs::parse(raw_args).map_err(|error| {
            logging::emergency(&format!("pam_sm_{entry}: {error}"));
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

    pub(crate) fn config(&self) -> Result<Config, PamError> {
        Config::load(&self.args.config).map_err(|error| {
            tracing::error!(service = %self.service, "configuration error: {error}");
            PamError::SERVICE_ERR
        })
    }

    /// The service's policy, with the `card=` module argument on top.
    fn policy(&self, config: &Config) -> AuthPolicy {
        let mut policy = config.policies.for_service(&self.service).clone();
        if let Some(card) = self.args.card {
            policy.card = card;
        }
        policy
    }
}

fn cached_user(pamh: &Pam) -> Result<Option<String>, PamError> {
    Ok(pamh
        .get_cached_user()?
        .and_then(|name| name.to_str().ok())
        .filter(|name| !name.is_empty())
        .map(str::to_owned))
}

fn authenticate(pamh: &Pam, flags: PamFlags, raw_args: &[String]) -> PamError {
    let call = match Call::new(pamh, "authenticate", raw_args) {
        Ok(call) => call,
        Err(code) => return code,
    };
    logging::with_logger(&call.args, || {
        let service = call.service.as_str();
        let config = match call.config() {
            Ok(config) => config,
            Err(code) => return code,
        };
        let policy = call.policy(&config);
        if policy.card == CardRequirement::Disabled {
            tracing::debug!(service, "module disabled for this service");
            return PamError::IGNORE;
        }
        let user = match cached_user(pamh) {
            Ok(user) => user,
            Err(code) => {
                tracing::error!(service, "cannot read PAM_USER: {code}");
                return PamError::SERVICE_ERR;
            }
        };
        let authtok = pamh
            .get_cached_authtok()
            .ok()
            .flatten()
            .and_then(|token| token.to_str().ok())
            .map(|token| Secret::new(Zeroizing::new(token.to_owned())));
        // The one place the module reads the clock; the core takes it as a parameter.
        #[allow(clippy::disallowed_methods)]
        let now = rustls_pki_types::UnixTime::now();
        let request = AuthRequest {
            user: user.as_deref(),
            now,
            policy: &policy,
            authtok,
        };
        let mut conversation = PamConversation::new(pamh, flags.contains(PamFlags::SILENT));
        match tessera_core::authenticate(&config, &request, &mut conversation) {
            Ok(success) => {
                if user.is_none() {
                    if let Err(code) = ffi::set_user(pamh, &success.user) {
                        tracing::error!(service, "cannot set PAM_USER: {code}");
                        return PamError::SERVICE_ERR;
                    }
                }
                if let Some(pin) = &success.pin {
                    if let Err(code) = export_authtok(pamh, pin) {
                        tracing::error!(service, "cannot set PAM_AUTHTOK: {code}");
                        return PamError::SERVICE_ERR;
                    }
                }
                let token_name = format!("PKCS11_LOGIN_TOKEN_NAME={}", success.token.label);
                if let Err(code) = pamh.putenv(&token_name) {
                    tracing::warn!(service, "cannot set PKCS11_LOGIN_TOKEN_NAME: {code}");
                }
                let record = AuthRecord {
                    user: success.user.clone(),
                    token: BoundToken::from(&success.token),
                    certificate_sha256: success.certificate_sha256.clone(),
                    not_before: success.validity.0,
                    not_after: success.validity.1,
                };
                if let Err(code) = pamh.send_bytes(AUTH_RECORD, record.to_bytes(), None) {
                    tracing::error!(service, "cannot keep the authentication record: {code}");
                    return PamError::SERVICE_ERR;
                }
                tracing::info!(
                    service,
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
                let code = failure_code(failure.kind, policy.card);
                let user = user.as_deref().unwrap_or("");
                match failure.kind {
                    FailureKind::NoToken | FailureKind::NoMatchingCertificate => {
                        tracing::info!(service, user, ?code, "{failure}")
                    }
                    _ => tracing::warn!(service, user, ?code, "authentication failed: {failure}"),
                }
                code
            }
        }
    })
}

/// Sets PAM_AUTHTOK to the PIN for later modules; the temporary C string is wiped.
fn export_authtok(pamh: &Pam, pin: &Secret) -> Result<(), PamError> {
    let c_pin = CString::new(pin.expose().as_bytes()).map_err(|_| PamError::BUF_ERR)?;
    let result = pamh.set_authtok(&c_pin);
    c_pin.into_bytes().zeroize();
    result
}

/// The record authenticate left for this transaction, if this module
/// authenticated the user.
pub(crate) fn auth_record(pamh: &Pam) -> Option<AuthRecord> {
    pamh.retrieve_bytes(AUTH_RECORD)
        .ok()
        .and_then(|bytes| AuthRecord::from_bytes(&bytes))
}

fn acct_mgmt(pamh: &Pam, raw_args: &[String]) -> PamError {
    let call = match Call::new(pamh, "acct_mgmt", raw_args) {
        Ok(call) => call,
        Err(code) => return code,
    };
    logging::with_logger(&call.args, || {
        let service = call.service.as_str();
        let Some(record) = auth_record(pamh) else {
            // Someone else authenticated this user (a password, another module).
            tracing::debug!(service, "user not authenticated by pam_tessera; ignoring");
            return PamError::IGNORE;
        };
        match cached_user(pamh) {
            Ok(Some(user)) if user == record.user => {}
            other => {
                tracing::warn!(service, authenticated = %record.user, now = ?other, "PAM_USER changed after authentication");
                return PamError::PERM_DENIED;
            }
        }
        #[allow(clippy::disallowed_methods)]
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        if now < record.not_before || now > record.not_after {
            tracing::warn!(service, user = %record.user, "certificate no longer within its validity period");
            let mut conversation = PamConversation::new(pamh, false);
            let _ = tessera_core::Conversation::error(
                &mut conversation,
                "Your smart card certificate is no longer valid",
            );
            return PamError::PERM_DENIED;
        }
        PamError::SUCCESS
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

    /// For users this module authenticated: the certificate must still be
    /// within its validity period. Others: PAM_IGNORE (not ours to judge).
    fn acct_mgmt(pamh: Pam, _: PamFlags, args: Vec<String>) -> PamError {
        guarded("acct_mgmt", || acct_mgmt(&pamh, &args))
    }

    /// Writes the session binding that lets tessera-eventd lock this session
    /// when its card is pulled.
    fn open_session(pamh: Pam, _: PamFlags, args: Vec<String>) -> PamError {
        guarded("open_session", || session::open(&pamh, &args))
    }

    /// Removes the session binding.
    fn close_session(pamh: Pam, _: PamFlags, args: Vec<String>) -> PamError {
        guarded("close_session", || session::close(&pamh, &args))
    }

    /// Changes the PIN of the user's token: current PIN, new PIN twice,
    /// within the token's length limits.
    fn chauthtok(pamh: Pam, flags: PamFlags, args: Vec<String>) -> PamError {
        guarded("chauthtok", || chauthtok(&pamh, flags, &args))
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
            FailureKind::MappingUnavailable,
            FailureKind::CertificateRejected,
            FailureKind::WrongPin,
            FailureKind::PinLocked,
            FailureKind::ProofFailed,
            FailureKind::TokenUnavailable,
            FailureKind::Conversation,
            FailureKind::Config,
            FailureKind::Internal,
            FailureKind::NewPinRejected,
        ];
        for kind in kinds {
            let code = chauthtok_failure_code(kind);
            assert!(
                code != PamError::SUCCESS && code != PamError::IGNORE,
                "{kind:?}"
            );
        }
        for card in [
            CardRequirement::Optional,
            CardRequirement::Required,
            CardRequirement::Disabled,
        ] {
            for kind in kinds {
                let code = failure_code(kind, card);
                assert!(
                    code != PamError::SUCCESS && code != PamError::IGNORE,
                    "{kind:?} with {card:?} -> {code:?}"
                );
            }
        }
    }

    #[test]
    fn a_required_card_turns_every_unavailable_into_auth_err() {
        for kind in [
            FailureKind::NoModule,
            FailureKind::NoToken,
            FailureKind::NoMatchingCertificate,
            FailureKind::MappingUnavailable,
            FailureKind::TokenUnavailable,
        ] {
            assert_eq!(
                failure_code(kind, CardRequirement::Required),
                PamError::AUTH_ERR
            );
            assert_eq!(
                failure_code(kind, CardRequirement::Optional),
                PamError::AUTHINFO_UNAVAIL
            );
        }
    }

    #[test]
    fn a_panic_becomes_service_err() {
        let code = guarded("test", || panic!("injected"));
        assert_eq!(code, PamError::SERVICE_ERR);
    }
}
