//! What `pam_tessera.so` and its helper `tessera-auth` share.
//!
//! The PAM module runs inside hostile hosts (`su` hands it the invoking
//! user's environment), so it does no token or certificate work itself: it
//! spawns `tessera-auth` with an empty environment and a deadline
//! ([`client`]), relays the helper's prompts through the PAM conversation,
//! and turns its [`protocol::Verdict`] into a PAM code. This crate holds that
//! contract and nothing that parses certificates or loads PKCS#11 code, so
//! the module can link it.

pub mod channel;
pub mod client;
pub mod conversation;
pub mod filetrust;
pub mod logging;
pub mod protocol;
pub mod secret;
pub mod verdict;

/// Where the configuration lives unless the PAM argument `config=` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tessera/tessera.toml";

pub use conversation::{Conversation, ConversationError};
pub use secret::Secret;
pub use verdict::{AccountCheck, AuthRecord, BoundToken, CardRequirement, FailureKind};
