//! The bounded channel that carries every [`Input`] to the main loop.

use std::num::NonZeroUsize;

use zruntime::mpmc;

use crate::model::Input;

/// How many inputs may wait for the main loop; senders wait beyond that.
const CAPACITY: NonZeroUsize = match NonZeroUsize::new(256) {
    Some(capacity) => capacity,
    None => NonZeroUsize::MIN,
};

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
