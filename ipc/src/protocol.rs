//! The messages between `pam_tessera.so` and `tessera-auth`.
//!
//! Each message is one SOCK_SEQPACKET datagram holding one postcard-encoded
//! value, so neither side parses a length of its own: the kernel keeps the
//! boundaries and [`crate::channel`] refuses anything over
//! [`MAX_FRAME_BYTES`]. The module sends a [`Request`], then answers each
//! [`FromHelper::Prompt`] and [`FromHelper::Message`] until the helper sends
//! its [`Verdict`].

use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::verdict::{AuthRecord, CardRequirement, FailureKind};

/// Bumped whenever a message changes shape. A long-running host (gdm) can
/// keep an old `pam_tessera.so` mapped across a package upgrade; the two
/// sides then refuse each other by this number instead of misreading.
pub const PROTOCOL_VERSION: u32 = 3;

/// Largest datagram either side accepts.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// The helper's end of the socket pair, as a descriptor number in the
/// helper: its standard input, which it moves elsewhere and replaces with
/// /dev/null before anything else runs.
pub const HELPER_SOCKET_FD: i32 = 0;

/// What the PAM call asks the helper to do.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// [`PROTOCOL_VERSION`] of the module.
    pub version: u32,
    /// The PAM service (PAM_SERVICE).
    pub service: String,
    /// The `card=` module argument, over the config's policy.
    pub card: Option<CardRequirement>,
    /// The operation.
    pub operation: Operation,
}

/// The PAM calls that need the helper.
#[derive(Debug, Serialize, Deserialize)]
pub enum Operation {
    /// pam_sm_authenticate.
    Authenticate {
        /// PAM_USER, or `None` when the user is found from the certificate.
        user: Option<String>,
        /// PAM_AUTHTOK from an earlier module, used only as the policy allows.
        authtok: Option<Secret>,
    },
    /// pam_sm_chauthtok, PAM_PRELIM_CHECK.
    ChangePinPrelim {
        /// PAM_USER.
        user: String,
    },
    /// pam_sm_chauthtok, PAM_UPDATE_AUTHTOK.
    ChangePinUpdate {
        /// PAM_USER.
        user: String,
    },
    /// pam_sm_open_session: write the session binding of the logind
    /// session this PAM transaction created.
    OpenSession {
        /// What pam_sm_authenticate left for this transaction.
        record: AuthRecord,
        /// XDG_SESSION_ID from this handle's PAM environment: pam_systemd
        /// sets it only when it created the session. `None` (a PAM
        /// application already inside a session, as `su` in a desktop
        /// session): nothing is bound.
        xdg_session_id: Option<String>,
        /// PAM_TTY.
        tty: String,
        /// PID of the PAM application.
        host_pid: u32,
    },
    /// pam_sm_close_session: remove the binding this PAM transaction
    /// wrote, and only that one: the record is removed only when each
    /// field below matches it.
    CloseSession {
        /// The session id open_session bound.
        session_id: String,
        /// The PAM application's PID at open_session (the record's `pid`).
        host_pid: u32,
        /// The user the record names.
        user: String,
        /// SHA-256 of the certificate the record names.
        certificate_sha256: String,
    },
}

/// Module to helper.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToHelper {
    /// The first message.
    Request(Box<Request>),
    /// The reply to a [`FromHelper::Prompt`].
    Answer(Secret),
    /// A [`FromHelper::Message`] was shown.
    Ack,
    /// The PAM conversation failed; the flow ends with a conversation error.
    ConversationFailed(String),
}

/// Helper to module.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromHelper {
    /// Sent once the configuration is loaded, before any PKCS#11 code runs.
    Hello(Hello),
    /// Ask the person; answered by [`ToHelper::Answer`].
    Prompt {
        /// Whether the answer may be shown (a choice) or not (a PIN).
        echo: bool,
        /// The prompt.
        text: String,
    },
    /// Tell the person; answered by [`ToHelper::Ack`].
    Message {
        /// An error message rather than information.
        error: bool,
        /// The message.
        text: String,
    },
    /// The flow waits for a card to be inserted, up to the
    /// `wait_for_card_ms` of [`Hello`]; no answer.
    WaitingForCard,
    /// The last message.
    Verdict(Verdict),
}

/// What the helper's configuration says about the deadlines of this call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the helper.
    pub version: u32,
    /// `token_timeout`: the longest the helper may work between two
    /// conversation exchanges.
    pub token_timeout_ms: u64,
    /// `wait_for_card`: added once, when the helper says it waits for a card.
    pub wait_for_card_ms: u64,
    /// The service's card requirement, with the `card=` argument applied.
    pub card: CardRequirement,
}

/// How the call ended.
#[derive(Debug, Serialize, Deserialize)]
pub enum Verdict {
    /// Authentication succeeded.
    Authenticated(Box<Authenticated>),
    /// A PIN change or session call succeeded.
    Done,
    /// The module does not take part (disabled for the service).
    Ignored,
    /// It failed; the helper has logged why.
    Failed {
        /// The class of failure.
        kind: FailureKind,
        /// What happened (never contains a PIN).
        message: String,
    },
}

/// A successful authentication.
#[derive(Debug, Serialize, Deserialize)]
pub struct Authenticated {
    /// The authenticated user (set as PAM_USER when the call had none).
    pub user: String,
    /// The PIN, when the policy exports it as PAM_AUTHTOK.
    pub pin: Option<Secret>,
    /// The record for the later calls of this transaction.
    pub record: AuthRecord,
}
