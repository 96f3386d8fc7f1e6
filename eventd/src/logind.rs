//! systemd-logind over D-Bus: the calls eventd makes, with bounded retries.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use zbus::{proxy, Connection, OwnedObjectPath, OwnedVariant, Variant};

use crate::bus::Bus;

/// logind's session interface.
pub const SESSION_INTERFACE: &str = "org.freedesktop.login1.Session";

/// Delay before the first retry; doubled each time.
const RETRY_START: Duration = Duration::from_millis(250);
/// Attempts per call (about 8 s of retrying in all).
const ATTEMPTS: u32 = 6;

#[proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
pub trait Manager {
    /// The object path of session `id`.
    fn get_session(&self, id: &str) -> zbus::Result<OwnedObjectPath>;
    /// Asks the session's screen locker to lock.
    fn lock_session(&self, id: &str) -> zbus::Result<()>;
    /// Ends the session.
    fn terminate_session(&self, id: &str) -> zbus::Result<()>;
    /// A session ended.
    #[zbus(signal)]
    fn session_removed(&self, id: String, path: OwnedObjectPath) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.freedesktop.DBus.Properties",
    default_service = "org.freedesktop.login1"
)]
pub trait SessionProperties {
    /// One property of the session.
    fn get(&self, interface: &str, name: &str) -> zbus::Result<OwnedVariant>;
    /// Properties of the session changed (LockedHint among them).
    #[zbus(signal)]
    fn properties_changed(
        &self,
        interface: String,
        changed: HashMap<String, OwnedVariant>,
        invalidated: Vec<String>,
    ) -> zbus::Result<()>;
}

/// Why a logind call failed in the end.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// logind does not know the session.
    #[error("no such session")]
    NoSuchSession,
    /// logind refused (policy).
    #[error("refused: {0}")]
    Refused(String),
    /// Still failing after every retry.
    #[error("{0} (gave up after {ATTEMPTS} attempts)")]
    GaveUp(String),
}

fn error_name(error: &zbus::Error) -> Option<String> {
    match error {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str().to_owned()),
        zbus::Error::FDO(error) => Some(zbus::DBusError::name(error.as_ref()).as_str().to_owned()),
        _ => None,
    }
}

fn classify(error: &zbus::Error) -> Option<CallError> {
    match error_name(error).as_deref() {
        Some("org.freedesktop.login1.NoSuchSession") => Some(CallError::NoSuchSession),
        Some(
            name @ ("org.freedesktop.DBus.Error.AccessDenied"
            | "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
            | "org.freedesktop.DBus.Error.UnknownMethod"),
        ) => Some(CallError::Refused(name.to_owned())),
        _ => None,
    }
}

/// Runs `call` until it succeeds, fails for good, or the attempts run out;
/// each failed attempt is logged.
pub async fn retry<T, F, Fut>(
    bus: &Bus,
    what: &str,
    session: &str,
    mut call: F,
) -> Result<T, CallError>
where
    F: FnMut(Connection) -> Fut,
    Fut: Future<Output = zbus::Result<T>>,
{
    let mut delay = RETRY_START;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match bus.connection() {
            Some(connection) => match call(connection).await {
                Ok(value) => {
                    if attempt > 1 {
                        tracing::info!(
                            id = "eventd.logind.recovered",
                            session,
                            call = what,
                            attempt,
                            "logind call succeeded after retrying"
                        );
                    }
                    return Ok(value);
                }
                Err(error) => {
                    if let Some(final_error) = classify(&error) {
                        return Err(final_error);
                    }
                    tracing::warn!(id = "eventd.logind.retry", session, call = what, attempt, %error, "logind call failed; retrying");
                    last = error.to_string();
                }
            },
            None => {
                tracing::warn!(
                    id = "eventd.logind.retry",
                    session,
                    call = what,
                    attempt,
                    "not connected to the system bus; retrying"
                );
                last = "not connected to the system bus".to_owned();
            }
        }
        if attempt < ATTEMPTS {
            bus.sleep(delay).await;
            delay *= 2;
        }
    }
    Err(CallError::GaveUp(last))
}

/// A session's object path.
pub async fn session_path(bus: &Bus, session: &str) -> Result<OwnedObjectPath, CallError> {
    retry(bus, "GetSession", session, |connection| async move {
        ManagerProxy::new(&connection)
            .await?
            .get_session(session)
            .await
    })
    .await
}

/// A boolean property of the session at `path`.
pub async fn session_flag(
    bus: &Bus,
    session: &str,
    path: &OwnedObjectPath,
    name: &'static str,
) -> Result<bool, CallError> {
    retry(bus, name, session, |connection| {
        let path = path.clone();
        async move {
            let value = SessionPropertiesProxy::builder(&connection)
                .path(path)
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build()
                .await?
                .get(SESSION_INTERFACE, name)
                .await?;
            Ok(matches!(&*value, Variant::Bool(true)))
        }
    })
    .await
}

/// Whether a PropertiesChanged signal says LockedHint is now true.
pub fn says_locked(changed: &HashMap<String, OwnedVariant>) -> bool {
    changed
        .get("LockedHint")
        .is_some_and(|value| matches!(&**value, Variant::Bool(true)))
}
