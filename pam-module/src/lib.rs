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

mod args;
mod conversation;
mod ffi;
mod session;

pub(crate) use tessera_ipc::logging;

use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pamsm::{Pam, PamError, PamFlags, PamLibExt, PamServiceModule};
use tessera_ipc::client::{self, Exchange, HelperCommand, HelperError};
use tessera_ipc::protocol::{Authenticated, Operation, Request, Verdict, PROTOCOL_VERSION};
use tessera_ipc::{AuthRecord, CardRequirement, Conversation, FailureKind, Secret};
use zeroize::{Zeroize, Zeroizing};

use crate::args::ModuleArgs;
use crate::conversation::PamConversation;

/// The module type handed to pamsm's entry-point macro.
#[derive(Debug)]
pub struct PamTessera;

/// pam_set_data name of the [`AuthRecord`] kept from authenticate to the
/// session and account calls.
const AUTH_RECORD: &str = "tessera_auth_record";

/// The PAM code for each class of failure (docs/design.md, "PAM return codes").
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

/// The class of failure of a helper that gave no verdict. One that could
/// not be started (missing, or not root's) is an installation fault; one
/// that died, hung or broke the protocol is a token that did not answer.
fn helper_failure_kind(error: &HelperError) -> FailureKind {
    match error {
        HelperError::Untrusted(_) | HelperError::Spawn(_) | HelperError::Version { .. } => {
            FailureKind::Internal
        }
        HelperError::Died | HelperError::TimedOut(_) | HelperError::Protocol(_) => {
            FailureKind::TokenUnavailable
        }
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
fn cached_user(pamh: &Pam) -> Result<Option<String>, PamError> {
    match pamh.get_cached_user()? {
        None => Ok(None),
        Some(name) if name.to_bytes().is_empty() => Ok(None),
        Some(name) => name
            .to_str()
            .map(|name| Some(name.to_owned()))
            .map_err(|_| PamError::USER_UNKNOWN),
    }
}

fn authenticate(pamh: &Pam, flags: PamFlags, raw_args: &[String]) -> PamError {
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

/// The record authenticate left for this transaction, if this module
/// authenticated the user.
pub(crate) fn auth_record(pamh: &Pam) -> Option<AuthRecord> {
    pamh.retrieve_bytes(AUTH_RECORD)
        .ok()
        .and_then(|bytes| AuthRecord::from_bytes(&bytes))
}

/// The account check needs no token and no configuration: only the record
/// this module kept, so it runs in the module.
fn acct_mgmt(pamh: &Pam, raw_args: &[String]) -> PamError {
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
        match cached_user(pamh) {
            Ok(Some(user)) if user == record.user => {}
            other => {
                tracing::warn!(id = "pam.account.user_changed", service, authenticated = %record.user, now = ?other, "PAM_USER changed after authentication");
                return PamError::PERM_DENIED;
            }
        }
        #[allow(clippy::disallowed_methods)]
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        if now < record.not_before || now > record.not_after {
            tracing::warn!(id = "pam.account.certificate_expired", service, user = %record.user, "certificate no longer within its validity period");
            let mut conversation = PamConversation::new(pamh, false);
            let _ = conversation.error("Your smart card certificate is no longer valid");
            return PamError::PERM_DENIED;
        }
        PamError::SUCCESS
    })
}

impl PamServiceModule for PamTessera {
    fn authenticate(pamh: Pam, flags: PamFlags, args: Vec<String>) -> PamError {
        guarded("authenticate", || authenticate(&pamh, flags, &args))
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
        guarded("acct_mgmt", || acct_mgmt(&pamh, &args))
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
        guarded("chauthtok", || chauthtok(&pamh, flags, &args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const KINDS: [FailureKind; 13] = [
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

    #[test]
    fn no_failure_maps_to_success_or_ignore() {
        for kind in KINDS {
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
            for kind in KINDS {
                let code = failure_code(kind, card);
                assert!(
                    code != PamError::SUCCESS && code != PamError::IGNORE,
                    "{kind:?} with {card:?} -> {code:?}"
                );
            }
        }
    }

    #[test]
    fn a_helper_that_died_hung_or_misspoke_is_a_token_that_did_not_answer() {
        for error in [
            HelperError::Died,
            HelperError::TimedOut(Duration::from_secs(30)),
            HelperError::Protocol("junk".into()),
        ] {
            let kind = helper_failure_kind(&error);
            assert_eq!(kind, FailureKind::TokenUnavailable, "{error}");
            assert_eq!(
                failure_code(kind, CardRequirement::Optional),
                PamError::AUTHINFO_UNAVAIL
            );
        }
        let missing = HelperError::Spawn(nix::errno::Errno::ENOENT);
        assert_eq!(
            failure_code(helper_failure_kind(&missing), CardRequirement::Optional),
            PamError::SERVICE_ERR
        );
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
