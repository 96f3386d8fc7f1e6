//! A strict scripted conversation for tests: every prompt and message must
//! be the next one expected, word for word, and dropping the script with
//! steps left over fails the test.

use std::collections::VecDeque;
use std::time::Duration;

use tessera_ipc::{Conversation, ConversationError};
use zeroize::Zeroizing;

/// One expected exchange.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// A secret prompt and the answer typed.
    Secret(String, String),
    /// A visible prompt and the answer typed.
    Visible(String, String),
    /// An informational message.
    Info(String),
    /// An error message.
    Error(String),
    /// The flow announces a wait for a card of up to this long.
    WaitingForCard(Duration),
}

// Answers to secret prompts are PINs, even in a test: never shown.
impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Secret(prompt, _) => write!(f, "Secret({prompt:?}, <redacted>)"),
            Step::Visible(prompt, _) => write!(f, "Visible({prompt:?}, <redacted>)"),
            Step::Info(message) => write!(f, "Info({message:?})"),
            Step::Error(message) => write!(f, "Error({message:?})"),
            Step::WaitingForCard(limit) => write!(f, "WaitingForCard({limit:?})"),
        }
    }
}

/// A secret prompt and its answer.
pub(crate) fn secret(prompt: &str, answer: &str) -> Step {
    Step::Secret(prompt.to_owned(), answer.to_owned())
}

/// A visible prompt and its answer.
pub(crate) fn visible(prompt: &str, answer: &str) -> Step {
    Step::Visible(prompt.to_owned(), answer.to_owned())
}

/// An informational message.
pub(crate) fn info(message: &str) -> Step {
    Step::Info(message.to_owned())
}

/// An error message.
pub(crate) fn error(message: &str) -> Step {
    Step::Error(message.to_owned())
}

/// The script being played.
pub(crate) struct ScriptedConversation {
    steps: VecDeque<Step>,
}

impl ScriptedConversation {
    /// Expects exactly `steps`, in order.
    pub(crate) fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Self {
            steps: steps.into_iter().collect(),
        }
    }

    fn next(&mut self, happened: &Step) -> Step {
        let expected = self
            .steps
            .pop_front()
            .unwrap_or_else(|| panic!("unexpected {happened:?}: the script is finished"));
        let same_kind = std::mem::discriminant(&expected) == std::mem::discriminant(happened);
        let same_text = match (&expected, happened) {
            (Step::Secret(want, _), Step::Secret(got, _))
            | (Step::Visible(want, _), Step::Visible(got, _))
            | (Step::Info(want), Step::Info(got))
            | (Step::Error(want), Step::Error(got)) => want == got,
            (Step::WaitingForCard(want), Step::WaitingForCard(got)) => want == got,
            _ => false,
        };
        assert!(
            same_kind && same_text,
            "expected {expected:?}, got {happened:?}"
        );
        expected
    }
}

impl Conversation for ScriptedConversation {
    fn prompt_secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, ConversationError> {
        match self.next(&Step::Secret(prompt.to_owned(), String::new())) {
            Step::Secret(_, answer) => Ok(Zeroizing::new(answer)),
            _ => unreachable!("next() checked the kind"),
        }
    }

    fn prompt_visible(&mut self, prompt: &str) -> Result<String, ConversationError> {
        match self.next(&Step::Visible(prompt.to_owned(), String::new())) {
            Step::Visible(_, answer) => Ok(answer),
            _ => unreachable!("next() checked the kind"),
        }
    }

    fn info(&mut self, message: &str) -> Result<(), ConversationError> {
        self.next(&Step::Info(message.to_owned()));
        Ok(())
    }

    fn error(&mut self, message: &str) -> Result<(), ConversationError> {
        self.next(&Step::Error(message.to_owned()));
        Ok(())
    }

    fn waiting_for_card(&mut self, limit: Duration) -> Result<(), ConversationError> {
        self.next(&Step::WaitingForCard(limit));
        Ok(())
    }
}

impl Drop for ScriptedConversation {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(
                self.steps.is_empty(),
                "the flow ended with steps of the script left: {:?}",
                self.steps
            );
        }
    }
}

#[test]
fn a_script_with_answers_left_over_fails_when_dropped() {
    let result = std::panic::catch_unwind(|| {
        drop(ScriptedConversation::new([secret("PIN for a: ", "1")]));
    });
    assert!(result.is_err());
}

#[test]
#[should_panic(expected = "expected Info")]
fn an_unexpected_message_fails() {
    let mut script = ScriptedConversation::new([info("Insert your smart card")]);
    let _ = script.error("Incorrect PIN");
}
