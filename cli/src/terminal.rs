//! The core's conversation on a terminal: prompts on stderr, PINs read
//! without echo (or from standard input when it is not a terminal).

use std::io::{self, BufRead, IsTerminal, Write};

use nix::sys::termios::{self, LocalFlags, SetArg};
use tessera_core::auth::{Conversation, ConversationError};
use zeroize::Zeroizing;

/// Talks to the user on the controlling terminal.
#[derive(Debug, Default)]
pub struct TerminalConversation;

fn conversation_error(error: io::Error) -> ConversationError {
    ConversationError(error.to_string())
}

fn read_line() -> Result<Zeroizing<String>, ConversationError> {
    let mut line = Zeroizing::new(String::new());
    let read = io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(conversation_error)?;
    if read == 0 {
        return Err(ConversationError("end of input".to_owned()));
    }
    let trimmed = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(trimmed);
    Ok(line)
}

impl Conversation for TerminalConversation {
    fn prompt_secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, ConversationError> {
        eprint!("{prompt}");
        io::stderr().flush().map_err(conversation_error)?;
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return read_line();
        }
        let saved = termios::tcgetattr(&stdin)
            .map_err(|error| ConversationError(format!("tcgetattr: {error}")))?;
        let mut silent = saved.clone();
        silent.local_flags.remove(LocalFlags::ECHO);
        termios::tcsetattr(&stdin, SetArg::TCSAFLUSH, &silent)
            .map_err(|error| ConversationError(format!("tcsetattr: {error}")))?;
        let answer = read_line();
        // Restore echo whatever happened to the read.
        let restored = termios::tcsetattr(&stdin, SetArg::TCSAFLUSH, &saved);
        eprintln!();
        restored.map_err(|error| ConversationError(format!("tcsetattr: {error}")))?;
        answer
    }

    fn prompt_visible(&mut self, prompt: &str) -> Result<String, ConversationError> {
        eprint!("{prompt}");
        io::stderr().flush().map_err(conversation_error)?;
        read_line().map(|line| line.as_str().to_owned())
    }

    fn info(&mut self, message: &str) -> Result<(), ConversationError> {
        eprintln!("{message}");
        Ok(())
    }

    fn error(&mut self, message: &str) -> Result<(), ConversationError> {
        eprintln!("{message}");
        Ok(())
    }
}
