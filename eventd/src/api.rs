//! eventd's own D-Bus API (`org.tessera.EventD1` on the system bus):
//! readers, inserted tokens, bound sessions, and signals for greeters and
//! status tools. Read-only: anyone may call it (see the bus policy file).

use std::sync::{Arc, Mutex, PoisonError};

use zbus::interface;
use zbus::object_server::SignalEmitter;

/// One reader: (name, card present, ATR in hex).
pub type ReaderRow = (String, bool, String);
/// One inserted card: (reader, state, label, manufacturer, model, serial,
/// ATR in hex); state is `identified`, `pending`, `not-a-token` or `unreadable`.
pub type TokenRow = (String, String, String, String, String, String, String);
/// One bound session: (id, uid, user, PAM service, tty, token label, token
/// serial, reader at login, token present now).
pub type SessionRow = (
    String,
    u32,
    String,
    String,
    String,
    String,
    String,
    String,
    bool,
);

/// What the API reports; the main loop refreshes it after every event.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// pcscd reachable.
    pub pcsc_available: bool,
    /// Readers.
    pub readers: Vec<ReaderRow>,
    /// Inserted cards.
    pub tokens: Vec<TokenRow>,
    /// Bound sessions.
    pub sessions: Vec<SessionRow>,
}

/// The status, shared between the main loop and the bus.
pub type SharedStatus = Arc<Mutex<Status>>;

/// The served object.
#[derive(Debug)]
pub struct Api {
    status: SharedStatus,
}

impl Api {
    /// Serves `status`.
    pub fn new(status: SharedStatus) -> Self {
        Self { status }
    }

    fn read<T>(&self, f: impl FnOnce(&Status) -> T) -> T {
        f(&self.status.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[interface(name = "org.tessera.EventD1")]
impl Api {
    /// Readers: name, card present, ATR (hex).
    fn list_readers(&self) -> Vec<ReaderRow> {
        self.read(|status| status.readers.clone())
    }

    /// Cards in readers: reader, state, label, manufacturer, model, serial, ATR (hex).
    fn list_tokens(&self) -> Vec<TokenRow> {
        self.read(|status| status.tokens.clone())
    }

    /// Sessions opened with a token: id, uid, user, service, tty, token
    /// label, token serial, reader at login, token present now.
    fn list_sessions(&self) -> Vec<SessionRow> {
        self.read(|status| status.sessions.clone())
    }

    /// The daemon's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    /// Whether pcscd is reachable.
    #[zbus(property(emits_changed_signal = "false"))]
    fn pcsc_available(&self) -> bool {
        self.read(|status| status.pcsc_available)
    }

    /// A token was inserted and identified: reader, label, manufacturer, model, serial.
    #[zbus(signal)]
    pub async fn token_inserted(
        emitter: &SignalEmitter<'_>,
        reader: &str,
        label: &str,
        manufacturer: &str,
        model: &str,
        serial: &str,
    ) -> zbus::Result<()>;

    /// A card left its reader (identity fields empty if it was never identified).
    #[zbus(signal)]
    pub async fn token_removed(
        emitter: &SignalEmitter<'_>,
        reader: &str,
        label: &str,
        manufacturer: &str,
        model: &str,
        serial: &str,
    ) -> zbus::Result<()>;

    /// A session was locked (LockedHint confirmed) after its card was pulled.
    #[zbus(signal)]
    pub async fn session_locked(
        emitter: &SignalEmitter<'_>,
        session_id: &str,
        user: &str,
    ) -> zbus::Result<()>;

    /// A session did not lock in time and was escalated: action is
    /// `terminate`, `command` or `warn`.
    #[zbus(signal)]
    pub async fn session_escalated(
        emitter: &SignalEmitter<'_>,
        session_id: &str,
        user: &str,
        action: &str,
    ) -> zbus::Result<()>;
}
