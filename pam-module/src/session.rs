//! `pam_sm_open_session` / `pam_sm_close_session`: the session bindings that
//! tell tessera-eventd which session was opened with which token.

use nix::unistd::{geteuid, User};
use pamsm::{Pam, PamError, PamLibExt};
use tessera_core::binding::{session_id_from_cgroup, SessionBinding, BINDING_VERSION};

use crate::{auth_record, ffi, logging, Call};

/// The logind session: XDG_SESSION_ID from pam_systemd, else this process's cgroup.
fn session_id(pamh: &Pam) -> Option<String> {
    let from_env = pamh
        .getenv("XDG_SESSION_ID")
        .ok()
        .flatten()
        .and_then(|id| id.to_str().ok())
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    from_env.or_else(|| {
        std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|text| session_id_from_cgroup(&text))
    })
}

/// Writes the binding for a session this module authenticated.
pub fn open(pamh: &Pam, raw_args: &[String]) -> PamError {
    let call = match Call::new(pamh, "open_session", raw_args) {
        Ok(call) => call,
        Err(code) => return code,
    };
    logging::with_logger(&call.args, || {
        let service = call.service.as_str();
        let Some(record) = auth_record(pamh) else {
            tracing::debug!(
                service,
                "session not authenticated by pam_tessera; no binding"
            );
            return PamError::IGNORE;
        };
        if !geteuid().is_root() {
            // Screen lockers run PAM as the user; bindings are root's business.
            tracing::debug!(service, "not running as root; session binding skipped");
            return PamError::SUCCESS;
        }
        let config = match call.config() {
            Ok(config) => config,
            Err(code) => return code,
        };
        let Some(session_id) = session_id(pamh) else {
            tracing::warn!(service, user = %record.user, "no logind session; pulling the card will not lock this session");
            return PamError::SUCCESS;
        };
        let uid = match User::from_name(&record.user) {
            Ok(Some(user)) => user.uid.as_raw(),
            other => {
                tracing::error!(service, user = %record.user, ?other, "cannot resolve the user's uid");
                return PamError::SESSION_ERR;
            }
        };
        #[allow(clippy::disallowed_methods)]
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        let binding = SessionBinding {
            version: BINDING_VERSION,
            session_id,
            uid,
            user: record.user.clone(),
            service: service.to_owned(),
            tty: ffi::tty(pamh).unwrap_or_default(),
            pid: std::process::id(),
            created,
            certificate_sha256: record.certificate_sha256.clone(),
            token: record.token.clone(),
        };
        match binding.write(&config.session.bindings_dir) {
            Ok(path) => {
                tracing::info!(service, user = %record.user, session = %binding.session_id, path = %path.display(), "session bound to token");
                PamError::SUCCESS
            }
            Err(error) => {
                tracing::error!(service, "cannot write the session binding: {error}");
                PamError::SESSION_ERR
            }
        }
    })
}

/// Removes the binding of this session, if there is one.
pub fn close(pamh: &Pam, raw_args: &[String]) -> PamError {
    let call = match Call::new(pamh, "close_session", raw_args) {
        Ok(call) => call,
        Err(code) => return code,
    };
    logging::with_logger(&call.args, || {
        let service = call.service.as_str();
        if auth_record(pamh).is_none() {
            tracing::debug!(service, "session not authenticated by pam_tessera");
            return PamError::IGNORE;
        }
        if !geteuid().is_root() {
            tracing::debug!(service, "not running as root; session binding left alone");
            return PamError::SUCCESS;
        }
        let config = match call.config() {
            Ok(config) => config,
            Err(code) => return code,
        };
        let Some(session_id) = session_id(pamh) else {
            return PamError::SUCCESS;
        };
        match SessionBinding::remove(&config.session.bindings_dir, &session_id) {
            Ok(()) => {
                tracing::info!(service, session = %session_id, "session binding removed");
                PamError::SUCCESS
            }
            Err(error) => {
                tracing::error!(service, "cannot remove the session binding: {error}");
                PamError::SESSION_ERR
            }
        }
    })
}
