//! systemd-logind over D-Bus: the calls eventd makes, each one attempt over
//! a given connection, and which of logind's errors are final. Retrying
//! across reconnections is [`crate::bus::Bus::call_logind`]'s.

use std::collections::HashMap;

use zbus::{proxy, Connection, OwnedObjectPath, OwnedVariant, Variant};

/// logind's session interface.
const SESSION_INTERFACE: &str = "org.freedesktop.login1.Session";

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
    #[error("{last} (gave up after {attempts} attempts)")]
    GaveUp {
        /// The last attempt's error.
        last: String,
        /// How many attempts were made.
        attempts: u32,
    },
}

fn error_name(error: &zbus::Error) -> Option<String> {
    match error {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str().to_owned()),
        zbus::Error::FDO(error) => Some(zbus::DBusError::name(error.as_ref()).as_str().to_owned()),
        _ => None,
    }
}

/// The error, when retrying cannot help: logind answered that the session
/// does not exist, or refused.
pub fn final_error(error: &zbus::Error) -> Option<CallError> {
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

/// `GetSession`: the session's object path.
pub async fn session_path(connection: &Connection, session: &str) -> zbus::Result<OwnedObjectPath> {
    ManagerProxy::new(connection)
        .await?
        .get_session(session)
        .await
}

/// `LockSession`.
pub async fn lock_session(connection: &Connection, session: &str) -> zbus::Result<()> {
    ManagerProxy::new(connection)
        .await?
        .lock_session(session)
        .await
}

/// `TerminateSession`.
pub async fn terminate_session(connection: &Connection, session: &str) -> zbus::Result<()> {
    ManagerProxy::new(connection)
        .await?
        .terminate_session(session)
        .await
}

/// A boolean property of the session at `path` (read, never cached).
pub async fn session_flag(
    connection: &Connection,
    path: &OwnedObjectPath,
    name: &str,
) -> zbus::Result<bool> {
    let value = session_properties(connection, path)
        .await?
        .get(SESSION_INTERFACE, name)
        .await?;
    Ok(matches!(&*value, Variant::Bool(true)))
}

/// The properties of the session at `path`, uncached: eventd reads each
/// value when it needs it, or follows the changes.
pub async fn session_properties(
    connection: &Connection,
    path: &OwnedObjectPath,
) -> zbus::Result<SessionPropertiesProxy<'static>> {
    SessionPropertiesProxy::builder(connection)
        .path(path.clone())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
}

/// Whether a PropertiesChanged signal says LockedHint is now true.
pub fn says_locked(changed: &HashMap<String, OwnedVariant>) -> bool {
    changed
        .get("LockedHint")
        .is_some_and(|value| matches!(&**value, Variant::Bool(true)))
}
