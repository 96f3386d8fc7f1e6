//! Waiting for a card: woken by PC/SC reader events where the PKCS#11 module
//! sits behind pcscd, by bounded polling otherwise.

use std::time::Duration;

use pcsc::{Context, ReaderState, Scope, State, PNP_NOTIFICATION};

/// How often the slot list is re-read when PC/SC is not available, and
/// while a reader holds a card that no token stands for yet (OpenSC may
/// list it a moment after pcscd reports it: no reader event follows).
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Reader names can be long, but not this long.
const READER_LIST_BUFFER: usize = 16 * 1024;

/// Watches PC/SC readers from a snapshot taken before the tokens are listed,
/// so a card inserted in between still ends the next wait.
pub struct CardWatcher {
    pcsc: Option<(Context, Vec<ReaderState>)>,
}

impl std::fmt::Debug for CardWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardWatcher")
            .field("pcsc", &self.pcsc.is_some())
            .finish()
    }
}

fn snapshot(context: &Context) -> Option<Vec<ReaderState>> {
    let mut buffer = vec![0u8; READER_LIST_BUFFER];
    let mut states: Vec<ReaderState> = match context.list_readers(&mut buffer) {
        Ok(names) => names
            .map(|name| ReaderState::new(name.to_owned(), State::UNAWARE))
            .collect(),
        Err(pcsc::Error::NoReadersAvailable) => Vec::new(),
        Err(error) => {
            tracing::debug!(id = "auth.card_wait.readers_unlisted", %error, "cannot list PC/SC readers");
            return None;
        }
    };
    states.push(ReaderState::new(PNP_NOTIFICATION(), State::UNAWARE));
    context
        .get_status_change(Duration::ZERO, &mut states)
        .ok()?;
    for state in &mut states {
        state.sync_current_state();
    }
    Some(states)
}

impl CardWatcher {
    /// Takes the reader snapshot, or falls back to polling without pcscd.
    pub fn start() -> Self {
        let pcsc = Context::establish(Scope::User)
            .map_err(|error| {
                tracing::debug!(id = "auth.card_wait.polling", %error, "PC/SC unavailable; will poll the slot list")
            })
            .ok()
            .and_then(|context| snapshot(&context).map(|states| (context, states)));
        Self { pcsc }
    }

    /// Returns when a reader changes (card in or out, reader plugged) or after
    /// `timeout`; without PC/SC, or while a reader already holds a card, after
    /// [`POLL_INTERVAL`] at most.
    pub fn wait(&mut self, timeout: Duration) {
        if let Some((context, states)) = &mut self.pcsc {
            let card_present = states.iter().any(|state| {
                state.name() != PNP_NOTIFICATION() && state.current_state().contains(State::PRESENT)
            });
            let timeout = if card_present {
                timeout.min(POLL_INTERVAL)
            } else {
                timeout
            };
            match context.get_status_change(timeout, states) {
                Ok(()) => {
                    let readers_changed = states.iter().any(|state| {
                        state.name() == PNP_NOTIFICATION()
                            && state.event_state().contains(State::CHANGED)
                    });
                    if readers_changed {
                        // Start over with the new reader list.
                        if let Some(fresh) = snapshot(context) {
                            *states = fresh;
                        }
                    } else {
                        for state in states.iter_mut() {
                            state.sync_current_state();
                        }
                    }
                    return;
                }
                Err(pcsc::Error::Timeout) => return,
                Err(error) => {
                    tracing::debug!(id = "auth.card_wait.polling", %error, "PC/SC wait failed; polling instead");
                    self.pcsc = None;
                }
            }
        }
        std::thread::sleep(timeout.min(POLL_INTERVAL));
    }
}
