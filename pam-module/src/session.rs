//! `pam_sm_open_session` / `pam_sm_close_session`: the session bindings that
//! tell tessera-eventd which session was opened with which token. The
//! helper writes and removes them; the module only passes the PAM items.

use nix::unistd::geteuid;
use pamsm::{Pam, PamError, PamLibExt};
use tessera_ipc::protocol::{Operation, Verdict};
use tessera_ipc::verdict::BoundSession;

use tessera_ipc::logging;

use crate::call::{auth_record, Call};
use crate::ffi::calls as ffi;

/// XDG_SESSION_ID from the PAM environment, if pam_systemd set it.
fn xdg_session_id(pamh: &Pam) -> Option<String> {
    pamh.getenv("XDG_SESSION_ID")
        .ok()
        .flatten()
        .and_then(|id| id.to_str().ok())
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// pam_set_data name of what open_session asked the helper to bind: the
/// session id and the PAM application's PID, so that close_session removes
/// that record and nothing else.
const BOUND_SESSION: &str = "tessera_bound_session";

/// Has the helper write the binding for a session this module authenticated
/// and this transaction created (pam_systemd set XDG_SESSION_ID in this
/// handle's environment). A PAM application already inside a session
/// (`su` in a desktop session) binds nothing: that session is its caller's.
pub fn open(pamh: &Pam, raw_args: &[String]) -> PamError {
    let mut asked = None;
    let code = session_call(
        pamh,
        "open_session",
        "session binding skipped",
        raw_args,
        |pamh| {
            let record = auth_record(pamh)?;
            let xdg_session_id = xdg_session_id(pamh);
            let host_pid = std::process::id();
            asked = xdg_session_id.clone().map(|session_id| BoundSession {
                session_id,
                host_pid,
            });
            Some(Operation::OpenSession {
                record,
                xdg_session_id,
                tty: ffi::tty(pamh).unwrap_or_default(),
                host_pid,
            })
        },
    );
    if code == PamError::SUCCESS && geteuid().is_root() {
        if let Some(bound) = asked {
            if let Err(error) = pamh.send_bytes(BOUND_SESSION, bound.to_bytes(), None) {
                // close_session then leaves the record; eventd drops it
                // when logind forgets the session.
                logging::emergency(
                    "pam.data.set_failed",
                    &format!("pam_sm_open_session: cannot remember the bound session: {error}"),
                );
            }
        }
    }
    code
}

/// Has the helper remove the binding this transaction's open_session
/// wrote, if it wrote one; never another transaction's.
pub fn close(pamh: &Pam, raw_args: &[String]) -> PamError {
    session_call(
        pamh,
        "close_session",
        "session binding left alone",
        raw_args,
        |pamh| {
            let record = auth_record(pamh)?;
            let bound = pamh
                .retrieve_bytes(BOUND_SESSION)
                .ok()
                .and_then(|bytes| BoundSession::from_bytes(&bytes))?;
            Some(Operation::CloseSession {
                session_id: bound.session_id,
                host_pid: bound.host_pid,
                user: record.user,
                certificate_sha256: record.certificate_sha256,
            })
        },
    )
}

/// `operation` is `None` when this module did not authenticate the session.
fn session_call(
    pamh: &Pam,
    entry: &str,
    unprivileged: &str,
    raw_args: &[String],
    operation: impl FnOnce(&Pam) -> Option<Operation>,
) -> PamError {
    let call = match Call::new(pamh, entry, raw_args) {
        Ok(call) => call,
        Err(code) => return code,
    };
    logging::with_logger(call.args.debug, call.args.log, || {
        let service = call.service.as_str();
        let Some(operation) = operation(pamh) else {
            tracing::debug!(
                id = "pam.session.not_ours",
                service,
                "session not authenticated by pam_tessera"
            );
            return PamError::IGNORE;
        };
        if !geteuid().is_root() {
            // Screen lockers run PAM as the user; bindings are root's business.
            tracing::debug!(
                id = "pam.session.unprivileged",
                service,
                "not running as root; {unprivileged}"
            );
            return PamError::SUCCESS;
        }
        match call.run_helper(pamh, false, operation).result {
            Ok(Verdict::Done) => PamError::SUCCESS,
            Ok(Verdict::Ignored) => PamError::IGNORE,
            Ok(Verdict::Failed { .. }) => PamError::SESSION_ERR,
            Ok(Verdict::Authenticated(_)) => {
                tracing::error!(
                    id = "pam.helper.unexpected_verdict",
                    service,
                    "the helper answered a session call with an authentication"
                );
                PamError::SESSION_ERR
            }
            Err(error) => {
                tracing::error!(
                    id = "pam.session.helper_failed",
                    service,
                    "session binding: {error}"
                );
                PamError::SESSION_ERR
            }
        }
    })
}
