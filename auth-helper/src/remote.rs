//! The helper's side of the conversation: each prompt and message goes to
//! the PAM module over the socket, which shows it through the PAM
//! conversation and sends the answer back.

use std::time::Duration;

use tessera_ipc::channel::Channel;
use tessera_ipc::protocol::{FromHelper, ToHelper};
use tessera_ipc::{Conversation, ConversationError};
use zeroize::Zeroizing;

/// The PAM conversation, at the other end of the socket.
pub struct RemoteConversation<'a> {
    channel: &'a Channel,
}

impl<'a> RemoteConversation<'a> {
    /// Talks through `channel`.
    pub fn new(channel: &'a Channel) -> Self {
        Self { channel }
    }

    fn exchange(&mut self, message: FromHelper) -> Result<ToHelper, ConversationError> {
        self.channel
            .send(&message)
            .map_err(|error| ConversationError(format!("the PAM module is gone: {error}")))?;
        // No deadline: the person may take their time, and the module
        // closing its end ends the wait.
        self.channel
            .recv::<ToHelper>(None)
            .map_err(|error| ConversationError(format!("no answer from the PAM module: {error}")))
    }

    fn tell(&mut self, error: bool, text: &str) -> Result<(), ConversationError> {
        match self.exchange(FromHelper::Message {
            error,
            text: text.to_owned(),
        })? {
            ToHelper::Ack => Ok(()),
            ToHelper::ConversationFailed(reason) => Err(ConversationError(reason)),
            _ => Err(ConversationError(
                "unexpected reply from the PAM module".into(),
            )),
        }
    }

    fn ask(&mut self, echo: bool, text: &str) -> Result<Zeroizing<String>, ConversationError> {
        match self.exchange(FromHelper::Prompt {
            echo,
            text: text.to_owned(),
        })? {
            ToHelper::Answer(answer) => Ok(answer.expose().clone()),
            ToHelper::ConversationFailed(reason) => Err(ConversationError(reason)),
            _ => Err(ConversationError(
                "unexpected reply from the PAM module".into(),
            )),
        }
    }
}

impl Conversation for RemoteConversation<'_> {
    fn prompt_secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, ConversationError> {
        self.ask(false, prompt)
    }

    fn prompt_visible(&mut self, prompt: &str) -> Result<String, ConversationError> {
        self.ask(true, prompt)
            .map(|answer| answer.as_str().to_owned())
    }

    fn info(&mut self, message: &str) -> Result<(), ConversationError> {
        self.tell(false, message)
    }

    fn error(&mut self, message: &str) -> Result<(), ConversationError> {
        self.tell(true, message)
    }

    fn waiting_for_card(&mut self, _limit: Duration) -> Result<(), ConversationError> {
        self.channel
            .send(&FromHelper::WaitingForCard)
            .map_err(|error| ConversationError(format!("the PAM module is gone: {error}")))
    }
}
