//! `tessera status`: what tessera-eventd sees, read from its D-Bus API
//! (readers, inserted tokens, sessions bound to tokens). Works for any user.

use std::time::Duration;

use serde::Serialize;
use tessera_core::eventd_config::{DBUS_NAME, DBUS_PATH};
use zbus::proxy;

/// How long to wait for eventd to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

#[proxy(
    interface = "org.tessera.EventD1",
    default_service = "org.tessera.EventD1",
    default_path = "/org/tessera/EventD1"
)]
trait EventD {
    fn list_readers(&self) -> zbus::Result<Vec<(String, bool, String)>>;
    #[allow(clippy::type_complexity)]
    fn list_tokens(
        &self,
    ) -> zbus::Result<Vec<(String, String, String, String, String, String, String)>>;
    #[allow(clippy::type_complexity)]
    fn list_sessions(
        &self,
    ) -> zbus::Result<
        Vec<(
            String,
            u32,
            String,
            String,
            String,
            String,
            String,
            String,
            bool,
        )>,
    >;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn pcsc_available(&self) -> zbus::Result<bool>;
}

/// A reader.
#[derive(Debug, Serialize)]
pub struct Reader {
    name: String,
    card_present: bool,
    atr: String,
}

/// A card in a reader.
#[derive(Debug, Serialize)]
pub struct Token {
    reader: String,
    state: String,
    label: String,
    manufacturer: String,
    model: String,
    serial: String,
    atr: String,
}

/// A session opened with a token.
#[derive(Debug, Serialize)]
pub struct Session {
    id: String,
    uid: u32,
    user: String,
    service: String,
    tty: String,
    token_label: String,
    token_serial: String,
    reader: String,
    token_present: bool,
}

/// Everything `tessera status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    eventd_version: String,
    pcsc_available: bool,
    readers: Vec<Reader>,
    tokens: Vec<Token>,
    sessions: Vec<Session>,
}

/// Asks eventd over the system bus.
pub fn query() -> Result<Status, String> {
    zbus::block_on(async {
        let connection = zbus::connection::Builder::system()
            .method_timeout(TIMEOUT)
            .build()
            .await
            .map_err(|error| format!("cannot reach the system bus: {error}"))?;
        let eventd = EventDProxy::builder(&connection)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|error| error.to_string())?;
        let unreachable = |error: zbus::Error| {
            format!(
                "{DBUS_NAME} on {DBUS_PATH} did not answer (is tessera-eventd running?): {error}"
            )
        };
        Ok(Status {
            eventd_version: eventd.version().await.map_err(unreachable)?,
            pcsc_available: eventd.pcsc_available().await.map_err(unreachable)?,
            readers: eventd
                .list_readers()
                .await
                .map_err(unreachable)?
                .into_iter()
                .map(|(name, card_present, atr)| Reader {
                    name,
                    card_present,
                    atr,
                })
                .collect(),
            tokens: eventd
                .list_tokens()
                .await
                .map_err(unreachable)?
                .into_iter()
                .map(
                    |(reader, state, label, manufacturer, model, serial, atr)| Token {
                        reader,
                        state,
                        label,
                        manufacturer,
                        model,
                        serial,
                        atr,
                    },
                )
                .collect(),
            sessions: eventd
                .list_sessions()
                .await
                .map_err(unreachable)?
                .into_iter()
                .map(
                    |(
                        id,
                        uid,
                        user,
                        service,
                        tty,
                        token_label,
                        token_serial,
                        reader,
                        token_present,
                    )| {
                        Session {
                            id,
                            uid,
                            user,
                            service,
                            tty,
                            token_label,
                            token_serial,
                            reader,
                            token_present,
                        }
                    },
                )
                .collect(),
        })
    })
}

/// The report as text.
pub fn render(status: &Status) -> String {
    let mut text = format!(
        "tessera-eventd {}: pcscd {}\n",
        status.eventd_version,
        if status.pcsc_available {
            "reachable"
        } else {
            "NOT reachable"
        }
    );
    text.push_str(&format!("readers: {}\n", status.readers.len()));
    for reader in &status.readers {
        let token = status
            .tokens
            .iter()
            .find(|token| token.reader == reader.name);
        let card = match token {
            Some(token) if token.state == "identified" => format!(
                "token \"{}\" ({} {}, serial {})",
                token.label, token.manufacturer, token.model, token.serial
            ),
            Some(token) => format!("card, {} (ATR {})", token.state, token.atr),
            None => "empty".to_owned(),
        };
        text.push_str(&format!("  {}: {card}\n", reader.name));
    }
    text.push_str(&format!(
        "sessions bound to a token: {}\n",
        status.sessions.len()
    ));
    for session in &status.sessions {
        text.push_str(&format!(
            "  session {} of {} (uid {}) via {}{}: token \"{}\" serial {} {}\n",
            session.id,
            session.user,
            session.uid,
            session.service,
            if session.tty.is_empty() {
                String::new()
            } else {
                format!(" on {}", session.tty)
            },
            session.token_label,
            session.token_serial,
            if session.token_present {
                "present"
            } else {
                "not in a reader"
            }
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_readers_tokens_and_sessions() {
        let status = Status {
            eventd_version: "0.1.0".into(),
            pcsc_available: true,
            readers: vec![
                Reader {
                    name: "R0".into(),
                    card_present: true,
                    atr: "3b".into(),
                },
                Reader {
                    name: "R1".into(),
                    card_present: false,
                    atr: String::new(),
                },
            ],
            tokens: vec![Token {
                reader: "R0".into(),
                state: "identified".into(),
                label: "alice".into(),
                manufacturer: "piv_II".into(),
                model: "PKCS#15 emulated".into(),
                serial: "0001".into(),
                atr: "3b".into(),
            }],
            sessions: vec![Session {
                id: "c1".into(),
                uid: 1000,
                user: "alice".into(),
                service: "login".into(),
                tty: "tty1".into(),
                token_label: "alice".into(),
                token_serial: "0001".into(),
                reader: "R0".into(),
                token_present: true,
            }],
        };
        let text = render(&status);
        assert!(text.contains("pcscd reachable"), "{text}");
        assert!(
            text.contains("R0: token \"alice\" (piv_II PKCS#15 emulated, serial 0001)"),
            "{text}"
        );
        assert!(text.contains("R1: empty"), "{text}");
        assert!(text.contains("session c1 of alice (uid 1000) via login on tty1: token \"alice\" serial 0001 present"), "{text}");
    }
}
