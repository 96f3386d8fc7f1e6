//! tessera-eventd's D-Bus API (`org.tessera.EventD1`, docs/eventd.md): its
//! names and the rows its methods return, defined once for the daemon that
//! serves them and `tessera status` that reads them.
//!
//! Each row is a struct on the wire, its fields in the order of the
//! documented signature: serde and zbus encode a struct as a D-Bus struct,
//! so `ListReaders` still returns `a(sbs)`. The rows need zbus's wire
//! encoding, so they come with the `eventd-api` feature; the names do not.

/// tessera-eventd's name on the system bus.
pub const DBUS_NAME: &str = "org.tessera.EventD1";
/// Its object.
pub const DBUS_PATH: &str = "/org/tessera/EventD1";
/// Its interface.
pub const DBUS_INTERFACE: &str = "org.tessera.EventD1";

#[cfg(feature = "eventd-api")]
pub use self::rows::{ReaderRow, SessionRow, TokenRow, TokenState};

#[cfg(feature = "eventd-api")]
mod rows {
    use serde::{Deserialize, Serialize};
    use zbus::Type;

    /// One reader (`ListReaders`, `(sbs)`).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
    pub struct ReaderRow {
        /// Reader name.
        pub name: String,
        /// A card is in it.
        pub card_present: bool,
        /// The card's ATR in hex (empty without a card).
        pub atr: String,
    }

    /// How far eventd got identifying a card (a string on the wire).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Type)]
    #[serde(rename_all = "kebab-case")]
    #[zbus(signature = "s")]
    pub enum TokenState {
        /// PKCS#11 showed a token; its identity is in the row.
        Identified,
        /// Not identified yet.
        Pending,
        /// PKCS#11 shows no token for the reader: not a login card.
        NotAToken,
        /// Identification failed.
        Unreadable,
    }

    impl TokenState {
        /// Its name on the wire and in `tessera status`.
        pub fn name(self) -> &'static str {
            match self {
                Self::Identified => "identified",
                Self::Pending => "pending",
                Self::NotAToken => "not-a-token",
                Self::Unreadable => "unreadable",
            }
        }
    }

    /// One card in a reader (`ListTokens`, `(sssssss)`).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
    pub struct TokenRow {
        /// Reader name.
        pub reader: String,
        /// Whether it was identified.
        pub state: TokenState,
        /// Token label (empty unless identified).
        pub label: String,
        /// Token manufacturer.
        pub manufacturer: String,
        /// Token model.
        pub model: String,
        /// Token serial number.
        pub serial: String,
        /// The card's ATR in hex.
        pub atr: String,
    }

    /// One session opened with a token (`ListSessions`, `(sussssssb)`).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
    pub struct SessionRow {
        /// logind session id.
        pub id: String,
        /// The user's uid.
        pub uid: u32,
        /// The user's name.
        pub user: String,
        /// PAM service that opened it.
        pub service: String,
        /// Its tty (may be empty).
        pub tty: String,
        /// Label of the token it was opened with.
        pub token_label: String,
        /// Serial number of that token.
        pub token_serial: String,
        /// The reader (slot description) at login.
        pub reader: String,
        /// The token is in a reader now.
        pub token_present: bool,
    }

    #[cfg(test)]
    mod tests {
        use zbus::wire::serialized::Context;
        use zbus::wire::{to_bytes, LE};

        use super::*;

        // The documented signatures (docs/eventd.md): the interface must not change.
        #[test]
        fn rows_keep_the_documented_wire_signatures() {
            assert_eq!(Vec::<ReaderRow>::SIGNATURE, "a(sbs)");
            assert_eq!(Vec::<TokenRow>::SIGNATURE, "a(sssssss)");
            assert_eq!(Vec::<SessionRow>::SIGNATURE, "a(sussssssb)");
        }

        #[test]
        fn token_states_are_sent_by_their_names() {
            let context = Context::new(LE, 0);
            for state in [
                TokenState::Identified,
                TokenState::Pending,
                TokenState::NotAToken,
                TokenState::Unreadable,
            ] {
                assert_eq!(
                    to_bytes(context, &state).unwrap().bytes(),
                    to_bytes(context, &state.name()).unwrap().bytes()
                );
            }
        }

        #[test]
        fn a_row_encodes_as_the_tuple_it_replaced() {
            let context = Context::new(LE, 0);
            let row = TokenRow {
                reader: "R0".into(),
                state: TokenState::NotAToken,
                label: "l".into(),
                manufacturer: "m".into(),
                model: "o".into(),
                serial: "s".into(),
                atr: "3b".into(),
            };
            let tuple = ("R0", "not-a-token", "l", "m", "o", "s", "3b");
            assert_eq!(
                to_bytes(context, &row).unwrap().bytes(),
                to_bytes(context, &tuple).unwrap().bytes()
            );
            let decoded: TokenRow = to_bytes(context, &tuple).unwrap().deserialize().unwrap().0;
            assert_eq!(decoded, row);
        }
    }
}
