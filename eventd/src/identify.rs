//! Which token is in a reader, asked through PKCS#11 on a thread of its own
//! (the calls block, sometimes for seconds with slow cards).
//!
//! The module is loaded for each request and finalised after it, so a
//! restarted pcscd or a replaced module never leaves stale state behind;
//! insertions are rare and C_Initialize costs milliseconds.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use tessera_core::binding::BoundToken;
use tessera_core::token::{Pkcs11Module, TokenError, TokenIdentity};

use crate::engine::{same_reader, Identity};
use crate::events::{Input, InputSender};

/// Requests that may wait; beyond that, the oldest reader state wins
/// (a request dropped here leaves the card Unreadable: fail closed).
const QUEUE: usize = 32;
/// Tries per request; a card just inserted may still be powering up.
const TRIES: u32 = 3;
const RETRY_DELAY: Duration = Duration::from_millis(150);

/// One identification request.
#[derive(Debug)]
pub struct Request {
    /// The PKCS#11 module to load.
    pub module: PathBuf,
    /// Reader name.
    pub reader: String,
    /// Echoed back.
    pub insertion: u64,
}

/// The sending side of the worker.
#[derive(Debug, Clone)]
pub struct Identifier {
    requests: SyncSender<Request>,
    events: InputSender,
}

impl Identifier {
    /// Starts the worker thread.
    pub fn spawn(events: InputSender) -> std::io::Result<Self> {
        let (requests, receiver) = mpsc::sync_channel(QUEUE);
        let results = events.clone();
        std::thread::Builder::new()
            .name("pkcs11".to_owned())
            .spawn(move || serve(&receiver, &results))?;
        Ok(Self { requests, events })
    }

    /// Queues a request without waiting.
    pub async fn identify(&self, request: Request) {
        match self.requests.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(request) | TrySendError::Disconnected(request)) => {
                tracing::error!(
                    reader = %request.reader,
                    "PKCS#11 identification queue full or stopped; card left unidentified"
                );
                self.events
                    .send_async(Input::Identified {
                        reader: request.reader,
                        insertion: request.insertion,
                        identity: Identity::Unreadable,
                    })
                    .await;
            }
        }
    }
}

fn serve(requests: &Receiver<Request>, events: &InputSender) {
    for request in requests {
        let identity = identify(&request);
        events.send(Input::Identified {
            reader: request.reader,
            insertion: request.insertion,
            identity,
        });
    }
}

fn identify(request: &Request) -> Identity {
    let mut last_error = None;
    for attempt in 1..=TRIES {
        match tokens(request) {
            Ok(tokens) => {
                let found: Vec<&TokenIdentity> = tokens
                    .iter()
                    .filter(|token| same_reader(&token.slot_description, &request.reader))
                    .collect();
                return match found.as_slice() {
                    [token] => {
                        tracing::debug!(reader = %request.reader, token = %token.describe(), "identified");
                        Identity::Token(BoundToken::from(*token))
                    }
                    [] if attempt < TRIES => {
                        // The module may not have seen the card yet.
                        std::thread::sleep(RETRY_DELAY * attempt);
                        continue;
                    }
                    [] => Identity::NotAToken,
                    // Several PKCS#11 tokens on one card (e.g. several PINs):
                    // no single identity to bind, so unreadable (fail closed).
                    _ => {
                        tracing::warn!(reader = %request.reader, count = found.len(), "several tokens in one reader");
                        Identity::Unreadable
                    }
                };
            }
            Err(error) => {
                tracing::debug!(reader = %request.reader, attempt, %error, "identification failed");
                last_error = Some(error);
                std::thread::sleep(RETRY_DELAY * attempt);
            }
        }
    }
    if let Some(error) = last_error {
        tracing::warn!(
            id = "eventd.pkcs11.unreadable",
            reader = %request.reader,
            %error,
            "cannot identify the card; a pull from this reader will act on every session bound to it"
        );
    }
    Identity::Unreadable
}

fn tokens(request: &Request) -> Result<Vec<TokenIdentity>, TokenError> {
    Pkcs11Module::load(&request.module)?.tokens()
}
