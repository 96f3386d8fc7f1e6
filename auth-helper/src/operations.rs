//! What the helper does for each PAM call.

use nix::unistd::{geteuid, User};
use tessera_core::auth::AuthRequest;
use tessera_core::binding::{
    session_to_bind, validate_session_id, NotBound, SessionBinding, BINDING_VERSION,
    LOGIND_SESSIONS_DIR,
};
use tessera_core::policy::AuthPolicy;
use tessera_core::{pin_change, AuthFailure, Config};
use tessera_ipc::channel::Channel;
use tessera_ipc::protocol::{
    Authenticated, FromHelper, Hello, Operation, Request, Verdict, PROTOCOL_VERSION,
};
use tessera_ipc::{AuthRecord, BoundToken, CardRequirement, FailureKind, Secret};

use crate::remote::RemoteConversation;

/// Says hello, then carries out `request`.
pub fn carry_out(config: &Config, request: Request, channel: &Channel) -> Verdict {
    let service = request.service.as_str();
    let mut policy = config.policies.for_service(service).clone();
    if let Some(card) = request.card {
        policy.card = card;
    }
    let hello = Hello {
        version: PROTOCOL_VERSION,
        token_timeout_ms: millis(policy.token_timeout),
        wait_for_card_ms: millis(policy.wait_for_card),
        card: policy.card,
    };
    if let Err(error) = channel.send(&FromHelper::Hello(hello)) {
        return failed(
            FailureKind::Internal,
            format!("cannot greet the PAM module: {error}"),
        );
    }
    let mut conversation = RemoteConversation::new(channel);
    match request.operation {
        Operation::Authenticate { user, authtok } => {
            authenticate(config, service, &policy, user, authtok, &mut conversation)
        }
        Operation::ChangePinPrelim { user } => {
            if policy.card == CardRequirement::Disabled {
                return Verdict::Ignored;
            }
            pin_change_verdict(service, &user, pin_change::prelim_check(config, &user))
        }
        Operation::ChangePinUpdate { user } => {
            if policy.card == CardRequirement::Disabled {
                return Verdict::Ignored;
            }
            let result =
                pin_change::change_pin(config, &user, policy.unblock_pin, &mut conversation)
                    .map(drop);
            pin_change_verdict(service, &user, result)
        }
        Operation::OpenSession {
            record,
            xdg_session_id,
            tty,
            host_pid,
        } => open_session(config, service, record, xdg_session_id, tty, host_pid),
        Operation::CloseSession {
            session_id,
            host_pid,
            user,
            certificate_sha256,
        } => close_session(
            config,
            service,
            &session_id,
            host_pid,
            &user,
            &certificate_sha256,
        ),
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn failed(kind: FailureKind, message: String) -> Verdict {
    Verdict::Failed { kind, message }
}

fn authenticate(
    config: &Config,
    service: &str,
    policy: &AuthPolicy,
    user: Option<String>,
    authtok: Option<Secret>,
    conversation: &mut RemoteConversation<'_>,
) -> Verdict {
    if policy.card == CardRequirement::Disabled {
        tracing::debug!(
            id = "auth.login.disabled",
            service,
            "module disabled for this service"
        );
        return Verdict::Ignored;
    }
    // The one place the helper reads the clock; the core takes it as a parameter.
    #[allow(clippy::disallowed_methods)]
    let now = rustls_pki_types::UnixTime::now();
    let request = AuthRequest {
        user: user.as_deref(),
        now,
        policy,
        authtok,
    };
    match tessera_core::authenticate(config, &request, conversation) {
        Ok(success) => {
            tracing::info!(
                id = "auth.login.succeeded",
                service,
                user = %success.user,
                token = %success.token.describe(),
                subject = %success.subject,
                sha256 = %success.certificate_sha256,
                rule = %success.rule,
                "authenticated"
            );
            Verdict::Authenticated(Box::new(Authenticated {
                record: AuthRecord {
                    user: success.user.clone(),
                    token: BoundToken::from(&success.token),
                    certificate_sha256: success.certificate_sha256,
                    not_before: success.validity.0,
                    not_after: success.validity.1,
                },
                user: success.user,
                pin: success.pin,
            }))
        }
        Err(failure) => {
            let user = user.as_deref().unwrap_or("");
            match failure.kind {
                FailureKind::NoToken | FailureKind::NoMatchingCertificate => {
                    tracing::info!(id = "auth.login.unavailable", service, user, kind = ?failure.kind, "{failure}")
                }
                _ => {
                    tracing::warn!(id = "auth.login.failed", service, user, kind = ?failure.kind, "authentication failed: {failure}")
                }
            }
            failed(failure.kind, failure.message)
        }
    }
}

fn pin_change_verdict(service: &str, user: &str, result: Result<(), AuthFailure>) -> Verdict {
    match result {
        Ok(()) => Verdict::Done,
        Err(failure) => {
            tracing::warn!(id = "auth.pin.change_failed", service, user, kind = ?failure.kind, "PIN change: {failure}");
            failed(failure.kind, failure.message)
        }
    }
}

/// The logind session this PAM transaction created, or `None`
/// (core's [`session_to_bind`] decides; this reads logind's state and logs).
fn created_session(service: &str, xdg_session_id: Option<String>, host_pid: u32) -> Option<String> {
    let id = xdg_session_id.as_deref().filter(|id| !id.is_empty());
    // A hostile id is refused below before it can name a file here.
    let state = id
        .filter(|id| validate_session_id(id).is_ok())
        .and_then(|id| {
            let path = std::path::Path::new(LOGIND_SESSIONS_DIR).join(id);
            std::fs::read_to_string(&path)
                .map_err(|error| {
                    tracing::debug!(id = "auth.session.no_state_file", service, path = %path.display(), %error, "no logind state file; trusting XDG_SESSION_ID")
                })
                .ok()
        });
    match session_to_bind(id, state.as_deref(), host_pid) {
        Ok(session) => Some(session),
        Err(NotBound::NoSession) => {
            tracing::info!(
                id = "auth.session.no_session_id",
                service,
                "no logind session created by this PAM transaction (no XDG_SESSION_ID); nothing bound"
            );
            None
        }
        Err(NotBound::BadSessionId(error)) => {
            tracing::warn!(
                id = "auth.session.bad_session_id",
                service,
                "{error}; nothing bound"
            );
            None
        }
        Err(NotBound::OtherLeader { session, leader }) => {
            tracing::warn!(
                id = "auth.session.other_leader",
                service,
                %session,
                ?leader,
                host_pid,
                "the logind session was not created by this PAM application; nothing bound"
            );
            None
        }
    }
}

fn open_session(
    config: &Config,
    service: &str,
    record: AuthRecord,
    xdg_session_id: Option<String>,
    tty: String,
    host_pid: u32,
) -> Verdict {
    if !geteuid().is_root() {
        // Screen lockers run PAM as the user; bindings are root's business.
        tracing::debug!(
            id = "auth.session.unprivileged",
            service,
            "not running as root; session binding skipped"
        );
        return Verdict::Done;
    }
    let Some(session_id) = created_session(service, xdg_session_id, host_pid) else {
        return Verdict::Done;
    };
    let uid = match User::from_name(&record.user) {
        Ok(Some(user)) => user.uid.as_raw(),
        other => {
            tracing::error!(id = "auth.session.uid_unresolved", service, user = %record.user, ?other, "cannot resolve the user's uid");
            return failed(
                FailureKind::Internal,
                format!("cannot resolve the uid of {}", record.user),
            );
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
        tty,
        pid: host_pid,
        created,
        certificate_sha256: record.certificate_sha256.clone(),
        token: record.token.clone(),
    };
    match binding.write(&config.session.bindings_dir) {
        Ok(path) => {
            tracing::info!(id = "auth.session.bound", service, user = %record.user, session = %binding.session_id, path = %path.display(), "session bound to token");
            Verdict::Done
        }
        Err(error) => {
            tracing::error!(
                id = "auth.session.bind_failed",
                service,
                "cannot write the session binding: {error}"
            );
            failed(FailureKind::Internal, error.to_string())
        }
    }
}

fn close_session(
    config: &Config,
    service: &str,
    session_id: &str,
    host_pid: u32,
    user: &str,
    certificate_sha256: &str,
) -> Verdict {
    if !geteuid().is_root() {
        tracing::debug!(
            id = "auth.session.unprivileged",
            service,
            "not running as root; session binding left alone"
        );
        return Verdict::Done;
    }
    let written_by_this_transaction =
        |record: &SessionBinding| record.written_by(host_pid, service, user, certificate_sha256);
    match SessionBinding::remove_if(
        &config.session.bindings_dir,
        session_id,
        written_by_this_transaction,
    ) {
        Ok(true) => {
            tracing::info!(id = "auth.session.unbound", service, session = %session_id, "session binding removed");
            Verdict::Done
        }
        Ok(false) => {
            tracing::info!(id = "auth.session.binding_not_ours", service, session = %session_id, "the session's binding is not the one this transaction wrote; left alone");
            Verdict::Done
        }
        Err(error) => {
            tracing::error!(
                id = "auth.session.unbind_failed",
                service,
                "cannot remove the session binding: {error}"
            );
            failed(FailureKind::Internal, error.to_string())
        }
    }
}
