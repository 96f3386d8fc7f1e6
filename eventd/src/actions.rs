//! Carrying out a pull's action on one session: lock and confirm, or
//! terminate, then escalate when nothing locked the session.

use std::time::Instant;

use futures_util::StreamExt;
use tessera_core::config::eventd::{Escalation, EventdConfig, RemoveAction};
use zbus::OwnedObjectPath;

use crate::bus::Bus;
use crate::command;
use crate::engine::ActionRequest;
use crate::logind::{self, CallError};
use crate::model::{hex, Identity, Outcome};

/// `TESSERA_*` variables describing the session and its token.
pub fn environment(event: &'static str, request: &ActionRequest) -> Vec<(&'static str, String)> {
    let binding = &request.binding;
    vec![
        ("TESSERA_EVENT", event.to_owned()),
        ("TESSERA_SESSION_ID", binding.session_id.clone()),
        ("TESSERA_USER", binding.user.clone()),
        ("TESSERA_UID", binding.uid.to_string()),
        ("TESSERA_SERVICE", binding.service.clone()),
        ("TESSERA_TTY", binding.tty.clone()),
        ("TESSERA_READER", request.pull.reader.clone()),
        ("TESSERA_ATR", hex(&request.pull.atr)),
        ("TESSERA_TOKEN_LABEL", binding.token.label.clone()),
        (
            "TESSERA_TOKEN_MANUFACTURER",
            binding.token.manufacturer.clone(),
        ),
        ("TESSERA_TOKEN_MODEL", binding.token.model.clone()),
        ("TESSERA_TOKEN_SERIAL", binding.token.serial.clone()),
        (
            "TESSERA_TOKEN_IDENTIFIED",
            matches!(request.pull.identity, Identity::Token(_)).to_string(),
        ),
    ]
}

/// The session's logind object, as far as it was looked up before acting.
enum SessionObject {
    /// Nothing needed it before acting.
    NotAsked,
    /// logind's answer.
    Path(OwnedObjectPath),
    /// Asked, and logind could not answer (after retries).
    Unknown,
}

/// Runs the configured action for `request`.
pub async fn act(bus: &Bus, config: &EventdConfig, request: &ActionRequest) -> Outcome {
    let session = request.binding.session_id.as_str();
    // Only the filters need the session's object before acting: without
    // them LockSession goes out first, since every round trip before it is
    // time the session stays open.
    let mut object = SessionObject::NotAsked;
    if config.only_active || config.only_local {
        match bus.session_path(session).await {
            Ok(found) => {
                if let Some(reason) = filtered_out(bus, config, session, &found).await {
                    return Outcome::Skipped(reason);
                }
                object = SessionObject::Path(found);
            }
            Err(CallError::NoSuchSession) => return Outcome::SessionGone,
            // Act anyway: LockSession takes the id, and fail closed.
            Err(error) => {
                tracing::warn!(session, %error, "cannot look the session up");
                object = SessionObject::Unknown;
            }
        }
    }
    if let Some(remove_command) = &config.remove_command {
        let runtime = bus.runtime().clone();
        let remove_command = remove_command.clone();
        let env = environment("remove", request);
        let timeout = config.command_timeout;
        zruntime::spawn(async move {
            command::run(&runtime, "remove_command", &remove_command, &env, timeout).await;
        })
        .detach();
    }
    match config.on_remove {
        RemoveAction::None => Outcome::NoAction,
        RemoveAction::Terminate => terminate(bus, session, Outcome::Terminated).await,
        RemoveAction::Lock => lock(bus, config, request, object).await,
    }
}

/// Why the configuration says to leave this session alone, if it does.
/// When logind cannot tell, the session is acted on (fail closed).
async fn filtered_out(
    bus: &Bus,
    config: &EventdConfig,
    session: &str,
    path: &OwnedObjectPath,
) -> Option<&'static str> {
    if config.only_active {
        if let Ok(false) = bus.session_flag(session, path, "Active").await {
            return Some("session not active");
        }
    }
    if config.only_local {
        if let Ok(true) = bus.session_flag(session, path, "Remote").await {
            return Some("session is remote");
        }
    }
    None
}

async fn terminate(bus: &Bus, session: &str, done: Outcome) -> Outcome {
    let result = bus
        .call_logind("TerminateSession", session, |connection| async move {
            logind::terminate_session(&connection, session).await
        })
        .await;
    match result {
        Ok(()) => done,
        Err(CallError::NoSuchSession) => Outcome::SessionGone,
        Err(error) => Outcome::Failed(format!("TerminateSession: {error}")),
    }
}

async fn lock(
    bus: &Bus,
    config: &EventdConfig,
    request: &ActionRequest,
    object: SessionObject,
) -> Outcome {
    let session = request.binding.session_id.as_str();
    let requested = Instant::now();
    let locked = bus
        .call_logind("LockSession", session, |connection| async move {
            logind::lock_session(&connection, session).await
        })
        .await;
    let answered = Instant::now();
    tracing::info!(
        id = "eventd.lock.requested",
        session,
        // eventd's own share: from the wake-up of SCardGetStatusChange to
        // the LockSession call; then logind's answer.
        since_pull_us = requested
            .saturating_duration_since(request.pull.seen)
            .as_micros() as u64,
        answer_us = answered.saturating_duration_since(requested).as_micros() as u64,
        "LockSession answered"
    );
    match locked {
        Ok(()) => {}
        Err(CallError::NoSuchSession) => return Outcome::SessionGone,
        Err(error) => {
            tracing::error!(id = "eventd.lock.failed", session, %error, "LockSession failed");
            return escalate(bus, config, request).await;
        }
    }
    let deadline = answered + config.lock_timeout;
    let path = match object {
        SessionObject::Path(path) => Some(path),
        // The lookup already failed after its retries: do not wait for it twice.
        SessionObject::Unknown => None,
        SessionObject::NotAsked => match bus.session_path(session).await {
            Ok(path) => Some(path),
            Err(CallError::NoSuchSession) => return Outcome::SessionGone,
            Err(error) => {
                tracing::warn!(session, %error, "cannot look the session up to confirm the lock");
                None
            }
        },
    };
    if let Some(path) = &path {
        if confirm_locked(bus, session, path, deadline).await {
            return Outcome::Locked;
        }
    }
    escalate(bus, config, request).await
}

/// Whether the session at `path` reports LockedHint by `deadline`.
/// Subscribed first, then read: a change after the subscription is in the
/// stream, one before it shows in the read.
async fn confirm_locked(
    bus: &Bus,
    session: &str,
    path: &OwnedObjectPath,
    deadline: Instant,
) -> bool {
    let runtime = bus.runtime();
    let mut changes = match bus.connection() {
        Some(connection) => match logind::session_properties(&connection, path).await {
            Ok(proxy) => proxy.receive_properties_changed().await.ok(),
            Err(_) => None,
        },
        None => None,
    };
    let hint = runtime
        .timeout_at(deadline, bus.session_flag(session, path, "LockedHint"))
        .await;
    if let Ok(Ok(true)) = hint {
        return true;
    }
    let Some(changes) = &mut changes else {
        return false;
    };
    let confirmed = runtime
        .timeout_at(deadline, async {
            while let Some(signal) = changes.next().await {
                if signal
                    .args()
                    .is_ok_and(|args| logind::says_locked(&args.changed))
                {
                    return true;
                }
            }
            false
        })
        .await;
    matches!(confirmed, Ok(true))
}

async fn escalate(bus: &Bus, config: &EventdConfig, request: &ActionRequest) -> Outcome {
    let binding = &request.binding;
    let session = binding.session_id.as_str();
    tracing::error!(
        id = "eventd.lock.unconfirmed",
        session,
        user = %binding.user,
        escalation = ?config.escalation,
        "session did not report itself locked within {:?} after its card was pulled; escalating",
        config.lock_timeout
    );
    match config.escalation {
        Escalation::Terminate => {
            terminate(bus, session, Outcome::Escalated(Escalation::Terminate)).await
        }
        Escalation::Command => {
            if let Some(escalation_command) = &config.escalation_command {
                let env = environment("escalate", request);
                command::run(
                    bus.runtime(),
                    "escalation_command",
                    escalation_command,
                    &env,
                    config.command_timeout,
                )
                .await;
            }
            Outcome::Escalated(Escalation::Command)
        }
        Escalation::Warn => {
            tracing::error!(
                id = "eventd.lock.left-unlocked",
                session,
                user = %binding.user,
                "SESSION LEFT UNLOCKED: its card was pulled, nothing locked it, and escalation = \"warn\""
            );
            Outcome::Escalated(Escalation::Warn)
        }
    }
}
