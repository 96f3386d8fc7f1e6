//! The values that travel between eventd's threads and tasks and its main
//! loop: what a reader reported, what PKCS#11 said about a card, how an
//! action ended, and the [`Input`] that carries each. A leaf: it uses
//! nothing else of eventd, so every module can share these types.

use std::time::Instant;

use tessera_core::binding::{BoundToken, SessionBinding};
use tessera_core::config::eventd::Escalation;

/// What is known about the token in a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Not identified yet.
    Pending,
    /// A PKCS#11 token with this identity.
    Token(BoundToken),
    /// PKCS#11 shows no token for this reader: not a login card.
    NotAToken,
    /// Identification failed (PKCS#11 error, card busy or gone meanwhile).
    Unreadable,
}

/// A change the tracker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderEvent {
    /// A reader appeared.
    ReaderAdded(String),
    /// A reader disappeared (a [`ReaderEvent::CardRemoved`] precedes it if it held a card).
    ReaderRemoved(String),
    /// A card that answers is in the reader.
    CardInserted {
        /// Reader name.
        reader: String,
        /// The card's ATR.
        atr: Vec<u8>,
    },
    /// The card left the reader.
    CardRemoved {
        /// Reader name.
        reader: String,
    },
    /// After pcscd came back, a card with the ATR seen before is in the
    /// reader: it may have been swapped meanwhile, so identify it again.
    CardReverify {
        /// Reader name.
        reader: String,
        /// The card's ATR.
        atr: Vec<u8>,
    },
}

/// How an action on a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// LockSession sent and LockedHint turned true.
    Locked,
    /// TerminateSession done (`on_remove = "terminate"`).
    Terminated,
    /// `on_remove = "none"`: only the command, if any, ran.
    NoAction,
    /// Not acted on: the session is not active or not local, as configured.
    Skipped(&'static str),
    /// Nothing locked the session in time; the escalation ran.
    Escalated(Escalation),
    /// logind no longer knows the session.
    SessionGone,
    /// logind could not be asked (after retries).
    Failed(String),
}

/// One thing that happened.
#[derive(Debug)]
pub enum Input {
    /// A reader or card changed.
    Reader {
        /// What changed.
        event: ReaderEvent,
        /// When SCardGetStatusChange returned with it.
        seen: Instant,
    },
    /// pcscd became reachable (true) or was lost (false).
    PcscAvailable(bool),
    /// PKCS#11 said which token sits in a reader.
    Identified {
        /// Reader name.
        reader: String,
        /// Which insertion this answers; older answers are stale.
        insertion: u64,
        /// What was found.
        identity: Identity,
    },
    /// The whole binding directory was (re)read.
    BindingsRescanned(Vec<SessionBinding>),
    /// One binding file was written (Some) or removed or refused (None).
    Binding {
        /// The session id the file is named after.
        session_id: String,
        /// The valid record now in the file.
        binding: Option<Box<SessionBinding>>,
    },
    /// logind says the session no longer exists.
    SessionGone(String),
    /// Connected to the system bus (again).
    BusConnected,
    /// A grace delay ran out.
    GraceExpired(u64),
    /// An action task finished.
    ActionDone {
        /// The session acted on.
        session_id: String,
        /// How it went.
        outcome: Outcome,
    },
    /// SIGHUP.
    Reload,
    /// SIGTERM or SIGINT.
    Stop,
}

/// Lower-case hex: how ATRs are shown (D-Bus rows, command environments, logs).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
