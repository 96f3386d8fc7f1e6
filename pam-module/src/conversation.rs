//! The helper's prompts and messages, shown through the PAM conversation.

use pamsm::Pam;
use tessera_ipc::{Conversation, ConversationError};
use zeroize::Zeroizing;

use crate::ffi::calls::{self as ffi, MessageStyle};

/// Talks to the user through the application's PAM conversation.
pub struct PamConversation<'a> {
    pam: &'a Pam,
    silent: bool,
}

impl<'a> PamConversation<'a> {
    /// `silent` is PAM_SILENT: informational messages are suppressed, errors are not.
    pub fn new(pam: &'a Pam, silent: bool) -> Self {
        Self { pam, silent }
    }

    fn ask(
        &mut self,
        style: MessageStyle,
        prompt: &str,
    ) -> Result<Zeroizing<String>, ConversationError> {
        let reply = ffi::converse(self.pam, style, prompt)
            .map_err(|code| ConversationError(format!("PAM conversation returned {code:?}")))?
            .ok_or_else(|| ConversationError("no reply from the application".to_owned()))?;
        match std::str::from_utf8(&reply) {
            Ok(text) => Ok(Zeroizing::new(text.to_owned())),
            Err(_) => Err(ConversationError("reply is not valid UTF-8".to_owned())),
        }
    }

    fn tell(&mut self, style: MessageStyle, message: &str) -> Result<(), ConversationError> {
        // PAM_SILENT mutes information, not the reason a card was refused:
        // sudo always passes PAM_SILENT, and "Incorrect PIN" or "the card does
        // not belong to you" must still reach the person at the keyboard.
        if self.silent && matches!(style, MessageStyle::TextInfo) {
            return Ok(());
        }
        ffi::converse(self.pam, style, message)
            .map(drop)
            .map_err(|code| ConversationError(format!("PAM conversation returned {code:?}")))
    }
}

impl Conversation for PamConversation<'_> {
    fn prompt_secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, ConversationError> {
        self.ask(MessageStyle::PromptEchoOff, prompt)
    }

    fn prompt_visible(&mut self, prompt: &str) -> Result<String, ConversationError> {
        self.ask(MessageStyle::PromptEchoOn, prompt)
            .map(|answer| answer.as_str().to_owned())
    }

    fn info(&mut self, message: &str) -> Result<(), ConversationError> {
        self.tell(MessageStyle::TextInfo, message)
    }

    fn error(&mut self, message: &str) -> Result<(), ConversationError> {
        self.tell(MessageStyle::ErrorMsg, message)
    }
}
