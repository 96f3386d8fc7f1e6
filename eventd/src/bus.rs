//! The system bus connection: made (and remade, with backoff) by one task,
//! which also owns eventd's bus name, serves its API and follows logind's
//! `SessionRemoved`. Calls to logind are retried here, across reconnections.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use tessera_core::eventd_api::{DBUS_NAME, DBUS_PATH};
use zbus::{Connection, OwnedObjectPath};
use zruntime::SharedRuntime;

use crate::api::{Api, SharedStatus};
use crate::events::InputSender;
use crate::logind::{self, CallError, ManagerProxy};
use crate::model::Input;

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Delay before the first retry of a logind call; doubled each time.
const RETRY_START: Duration = Duration::from_millis(250);
/// Attempts per logind call (about 8 s of retrying in all).
const ATTEMPTS: u32 = 6;

/// The current connection, if any, and the runtime tasks use.
#[derive(Debug, Clone)]
pub struct Bus {
    connection: Arc<Mutex<Option<Connection>>>,
    runtime: SharedRuntime,
}

impl Bus {
    /// No connection yet.
    pub fn new(runtime: SharedRuntime) -> Self {
        Self {
            connection: Arc::new(Mutex::new(None)),
            runtime,
        }
    }

    /// The live connection, if there is one.
    pub fn connection(&self) -> Option<Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(|connection| !connection.is_closed())
    }

    fn set(&self, connection: Option<Connection>) {
        *self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = connection;
    }

    /// The runtime.
    pub fn runtime(&self) -> &SharedRuntime {
        &self.runtime
    }

    /// Waits `duration` on the runtime.
    pub async fn sleep(&self, duration: Duration) {
        self.runtime.sleep(duration).await;
    }

    /// Runs the logind call `what` about `session` on the connection of the
    /// moment until it succeeds, fails for good, or the attempts run out;
    /// each failed attempt is logged.
    pub async fn call_logind<T, F, Fut>(
        &self,
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
            match self.connection() {
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
                        if let Some(final_error) = logind::final_error(&error) {
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
                self.sleep(delay).await;
                delay *= 2;
            }
        }
        Err(CallError::GaveUp {
            last,
            attempts: ATTEMPTS,
        })
    }

    /// `GetSession`, retried.
    pub async fn session_path(&self, session: &str) -> Result<OwnedObjectPath, CallError> {
        self.call_logind("GetSession", session, |connection| async move {
            logind::session_path(&connection, session).await
        })
        .await
    }

    /// The session's boolean property `name`, retried.
    pub async fn session_flag(
        &self,
        session: &str,
        path: &OwnedObjectPath,
        name: &'static str,
    ) -> Result<bool, CallError> {
        self.call_logind(name, session, |connection| async move {
            logind::session_flag(&connection, path, name).await
        })
        .await
    }
}

async fn connect(status: &SharedStatus, call_timeout: Duration) -> zbus::Result<Connection> {
    zbus::connection::Builder::system()
        .method_timeout(call_timeout)
        .serve_at(DBUS_PATH, Api::new(status.clone()))
        .name(DBUS_NAME)
        .build()
        .await
}

/// Keeps a connection up for as long as the daemon runs.
pub async fn supervise(
    bus: Bus,
    status: SharedStatus,
    events: InputSender,
    call_timeout: Duration,
) {
    let mut backoff = BACKOFF_START;
    let mut reported = false;
    loop {
        match connect(&status, call_timeout).await {
            Ok(connection) => {
                match serve(&bus, &connection, &events).await {
                    Ok(()) => {
                        tracing::warn!(id = "eventd.bus.lost", "lost the system bus; reconnecting")
                    }
                    Err(error) => {
                        tracing::warn!(id = "eventd.bus.lost", %error, "system bus connection failed; reconnecting")
                    }
                }
                bus.set(None);
                backoff = BACKOFF_START;
                reported = false;
            }
            Err(error) => {
                if !reported {
                    tracing::error!(id = "eventd.bus.unreachable", %error, "cannot connect to the system bus or own {DBUS_NAME}; retrying with backoff");
                    reported = true;
                }
            }
        }
        bus.sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Follows SessionRemoved until the connection closes.
async fn serve(bus: &Bus, connection: &Connection, events: &InputSender) -> zbus::Result<()> {
    let mut removed = ManagerProxy::builder(connection)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?
        .receive_session_removed()
        .await?;
    bus.set(Some(connection.clone()));
    tracing::info!(
        id = "eventd.bus.connected",
        "connected to the system bus as {DBUS_NAME}"
    );
    events.send_async(Input::BusConnected).await;
    let forward = async {
        while let Some(signal) = removed.next().await {
            if let Ok(args) = signal.args() {
                events.send_async(Input::SessionGone(args.id)).await;
            }
        }
    };
    let closed = connection.closed();
    futures_util::pin_mut!(forward);
    futures_util::pin_mut!(closed);
    futures_util::future::select(forward, closed).await;
    Ok(())
}
