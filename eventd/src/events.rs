//! Everything the main loop reacts to, and the channel that carries it.

use std::num::NonZeroUsize;
use std::time::Instant;

use tessera_core::binding::SessionBinding;
use zruntime::mpmc;

use crate::actions::Outcome;
use crate::engine::Identity;
use crate::readers::ReaderEvent;

/// How many inputs may wait for the main loop; senders wait beyond that.
const CAPACITY: NonZeroUsize = match NonZeroUsize::new(256) {
    Some(capacity) => capacity,
    None => NonZeroUsize::MIN,
};

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

/// The sending side, for threads and tasks.
#[derive(Debug, Clone)]
pub struct InputSender(mpmc::Sender<Input>);

/// The main loop's receiving side.
pub type InputReceiver = mpmc::Receiver<Input>;

/// A bounded channel of inputs.
pub fn channel() -> (InputSender, InputReceiver) {
    let (sender, receiver) = mpmc::bounded(CAPACITY);
    (InputSender(sender), receiver)
}

impl InputSender {
    /// Sends from a plain thread, waiting while the channel is full.
    pub fn send(&self, input: Input) {
        // Fails only once the main loop is gone, when nobody cares any more.
        let _ = zruntime::block_on(self.0.send(input));
    }

    /// Sends from a task.
    pub async fn send_async(&self, input: Input) {
        let _ = self.0.send(input).await;
    }
}
