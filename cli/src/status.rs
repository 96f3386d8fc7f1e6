//! `tessera status`: what tessera-eventd sees, read from its D-Bus API
//! (readers, inserted tokens, sessions bound to tokens). Works for any user.

use std::time::Duration;

use serde::Serialize;
use tessera_core::eventd_api::{ReaderRow, SessionRow, TokenRow, TokenState, DBUS_NAME, DBUS_PATH};
use zbus::proxy;

/// How long to wait for eventd to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

// The macro takes literals only; a test checks them against eventd_api.
#[proxy(
    interface = "org.tessera.EventD1",
    default_service = "org.tessera.EventD1",
    default_path = "/org/tessera/EventD1"
)]
trait EventD {
    fn list_readers(&self) -> zbus::Result<Vec<ReaderRow>>;
    fn list_tokens(&self) -> zbus::Result<Vec<TokenRow>>;
    fn list_sessions(&self) -> zbus::Result<Vec<SessionRow>>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn pcsc_available(&self) -> zbus::Result<bool>;
}

/// Everything `tessera status` shows (`--json`: these field names, and the
/// rows' own).
#[derive(Debug, Serialize)]
pub struct Status {
    eventd_version: String,
    pcsc_available: bool,
    readers: Vec<ReaderRow>,
    tokens: Vec<TokenRow>,
    sessions: Vec<SessionRow>,
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
            readers: eventd.list_readers().await.map_err(unreachable)?,
            tokens: eventd.list_tokens().await.map_err(unreachable)?,
            sessions: eventd.list_sessions().await.map_err(unreachable)?,
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
            Some(token) if token.state == TokenState::Identified => format!(
                "token \"{}\" ({} {}, serial {})",
                token.label, token.manufacturer, token.model, token.serial
            ),
            Some(token) => format!("card, {} (ATR {})", token.state.name(), token.atr),
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
    use tessera_core::eventd_api::DBUS_INTERFACE;
    use zbus::proxy::Defaults;

    use super::*;

    #[test]
    fn the_proxy_calls_eventds_name_object_and_interface() {
        type Proxy = EventDProxy<'static>;
        let interface = Proxy::INTERFACE.as_ref().map(|name| name.as_str());
        let destination = Proxy::DESTINATION.as_ref().map(|name| name.as_str());
        let path = Proxy::PATH.as_ref().map(|path| path.as_str());
        assert_eq!(interface, Some(DBUS_INTERFACE));
        assert_eq!(destination, Some(DBUS_NAME));
        assert_eq!(path, Some(DBUS_PATH));
    }

    fn alice_at_r0() -> Status {
        Status {
            eventd_version: "0.1.0".into(),
            pcsc_available: true,
            readers: vec![
                ReaderRow {
                    name: "R0".into(),
                    card_present: true,
                    atr: "3b".into(),
                },
                ReaderRow {
                    name: "R1".into(),
                    card_present: false,
                    atr: String::new(),
                },
            ],
            tokens: vec![TokenRow {
                reader: "R0".into(),
                state: TokenState::Identified,
                label: "alice".into(),
                manufacturer: "piv_II".into(),
                model: "PKCS#15 emulated".into(),
                serial: "0001".into(),
                atr: "3b".into(),
            }],
            sessions: vec![SessionRow {
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
        }
    }

    #[test]
    fn text_names_readers_tokens_and_sessions() {
        let status = alice_at_r0();
        let text = render(&status);
        assert!(text.contains("pcscd reachable"), "{text}");
        assert!(
            text.contains("R0: token \"alice\" (piv_II PKCS#15 emulated, serial 0001)"),
            "{text}"
        );
        assert!(text.contains("R1: empty"), "{text}");
        assert!(text.contains("session c1 of alice (uid 1000) via login on tty1: token \"alice\" serial 0001 present"), "{text}");
    }

    // Scripts read these names (docs/eventd.md): the wire rows keep them.
    #[test]
    fn json_keeps_its_field_names() {
        let json = serde_json::to_value(alice_at_r0()).unwrap();
        assert_eq!(json["eventd_version"], "0.1.0");
        assert_eq!(json["readers"][1]["card_present"], false);
        assert_eq!(json["tokens"][0]["state"], "identified");
        assert_eq!(json["tokens"][0]["manufacturer"], "piv_II");
        assert_eq!(json["sessions"][0]["token_serial"], "0001");
        assert_eq!(json["sessions"][0]["token_present"], true);
    }
}
