//! How the authentication flow talks to the person: the PAM conversation in
//! the module, the terminal in the CLI, the socket to the module in the
//! helper, a script in tests.

use std::time::Duration;

use zeroize::Zeroizing;

/// A failed conversation with the user (the application hung up, or refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("conversation failed: {0}")]
pub struct ConversationError(pub String);

/// How the flow talks to the user.
pub trait Conversation {
    /// Asks for a secret (the PIN) without echo.
    fn prompt_secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, ConversationError>;
    /// Asks a question whose answer may be echoed (a choice from a list).
    fn prompt_visible(&mut self, prompt: &str) -> Result<String, ConversationError>;
    /// Shows an informational message.
    fn info(&mut self, message: &str) -> Result<(), ConversationError>;
    /// Shows an error message.
    fn error(&mut self, message: &str) -> Result<(), ConversationError>;
    /// The flow is about to wait up to `limit` for a card to be inserted:
    /// the helper tells the module, whose deadline must then allow for it.
    fn waiting_for_card(&mut self, limit: Duration) -> Result<(), ConversationError> {
        let _ = limit;
        Ok(())
    }
}
