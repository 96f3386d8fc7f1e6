//! eventd's own D-Bus API (`org.tessera.EventD1` on the system bus):
//! readers, inserted tokens, bound sessions, and signals for greeters and
//! status tools. Read-only: anyone may call it (see the bus policy file).
//! The rows are `tessera_core::eventd_api`'s, which `tessera status` reads.

use std::sync::{Arc, Mutex, PoisonError};

use tessera_core::binding::BoundToken;
use tessera_core::eventd_api::{ReaderRow, SessionRow, TokenRow, TokenState};
use zbus::interface;
use zbus::object_server::SignalEmitter;

use crate::engine::Engine;
use crate::model::{hex, Identity};

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

impl Status {
    /// What `engine` knows now.
    pub fn of(engine: &Engine) -> Self {
        let mut status = Self {
            pcsc_available: engine.pcsc_available(),
            ..Self::default()
        };
        for (reader, card) in engine.readers() {
            status.readers.push(ReaderRow {
                name: reader.clone(),
                card_present: card.is_some(),
                atr: card.as_ref().map(|card| hex(&card.atr)).unwrap_or_default(),
            });
            if let Some(card) = card {
                let (state, token) = match &card.identity {
                    Identity::Token(token) => (TokenState::Identified, Some(token)),
                    Identity::Pending => (TokenState::Pending, None),
                    Identity::NotAToken => (TokenState::NotAToken, None),
                    Identity::Unreadable => (TokenState::Unreadable, None),
                };
                let field = |f: fn(&BoundToken) -> &String| {
                    token.map(|token| f(token).clone()).unwrap_or_default()
                };
                status.tokens.push(TokenRow {
                    reader: reader.clone(),
                    state,
                    label: field(|token| &token.label),
                    manufacturer: field(|token| &token.manufacturer),
                    model: field(|token| &token.model),
                    serial: field(|token| &token.serial),
                    atr: hex(&card.atr),
                });
            }
        }
        for binding in engine.sessions().values() {
            status.sessions.push(SessionRow {
                id: binding.session_id.clone(),
                uid: binding.uid,
                user: binding.user.clone(),
                service: binding.service.clone(),
                tty: binding.tty.clone(),
                token_label: binding.token.label.clone(),
                token_serial: binding.token.serial.clone(),
                reader: binding.token.slot_description.clone(),
                token_present: engine.token_present(&binding.token),
            });
        }
        status
    }
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

// The macro takes a literal only; a test checks it against DBUS_INTERFACE.
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tessera_core::binding::{SessionBinding, BINDING_VERSION};
    use tessera_core::config::eventd::EventdConfig;
    use tessera_core::eventd_api::DBUS_INTERFACE;
    use zbus::object_server::Interface;

    use crate::engine::Effect;
    use crate::model::{Input, ReaderEvent};

    use super::*;

    const R0: &str = "Virtual PCD 00 00";
    const R1: &str = "Virtual PCD 00 01";

    fn reader(engine: &mut Engine, event: ReaderEvent) -> Vec<Effect> {
        engine.handle(Input::Reader {
            event,
            seen: Instant::now(),
        })
    }

    /// Inserts a card into `name` and answers its identification.
    fn insert(engine: &mut Engine, name: &str, identity: Identity) {
        let effects = reader(
            engine,
            ReaderEvent::CardInserted {
                reader: name.into(),
                atr: vec![0x3b, 0x8f],
            },
        );
        let Some(Effect::Identify { insertion, .. }) = effects.first() else {
            panic!("no identification asked for: {effects:?}");
        };
        engine.handle(Input::Identified {
            reader: name.into(),
            insertion: *insertion,
            identity,
        });
    }

    #[test]
    fn the_interface_is_the_one_tessera_status_calls() {
        assert_eq!(Api::name().as_str(), DBUS_INTERFACE);
    }

    #[test]
    fn status_rows_say_what_the_engine_knows() {
        let alice = BoundToken {
            label: "alice".into(),
            manufacturer: "piv_II".into(),
            model: "PKCS#15 emulated".into(),
            serial: "0001".into(),
            slot_description: R0.into(),
        };
        let mut engine = Engine::new(EventdConfig::default());
        engine.handle(Input::PcscAvailable(true));
        reader(&mut engine, ReaderEvent::ReaderAdded(R0.into()));
        reader(&mut engine, ReaderEvent::ReaderAdded(R1.into()));
        insert(&mut engine, R0, Identity::Token(alice.clone()));
        insert(&mut engine, R1, Identity::NotAToken);
        engine.handle(Input::BindingsRescanned(vec![SessionBinding {
            version: BINDING_VERSION,
            session_id: "c1".into(),
            uid: 1000,
            user: "alice".into(),
            service: "login".into(),
            tty: "tty1".into(),
            pid: 1,
            created: 0,
            certificate_sha256: "00".repeat(32),
            token: alice,
        }]));

        let status = Status::of(&engine);
        assert!(status.pcsc_available);
        assert_eq!(
            status.readers[0],
            ReaderRow {
                name: R0.into(),
                card_present: true,
                atr: "3b8f".into(),
            }
        );
        assert_eq!(status.tokens[0].state, TokenState::Identified);
        assert_eq!(status.tokens[0].serial, "0001");
        assert_eq!(status.tokens[1].state, TokenState::NotAToken);
        assert_eq!(status.tokens[1].label, "");
        assert_eq!(
            status.sessions,
            vec![SessionRow {
                id: "c1".into(),
                uid: 1000,
                user: "alice".into(),
                service: "login".into(),
                tty: "tty1".into(),
                token_label: "alice".into(),
                token_serial: "0001".into(),
                reader: R0.into(),
                token_present: true,
            }]
        );
    }
}
