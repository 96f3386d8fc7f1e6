//! One end of the module–helper socket pair: postcard values in
//! SOCK_SEQPACKET datagrams, every receive bounded by a deadline.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::protocol::MAX_FRAME_BYTES;

/// Why a message could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The other side closed its end (exited, crashed or was killed).
    #[error("the other side closed the connection")]
    Closed,
    /// Nothing arrived before the deadline.
    #[error("no message within the deadline")]
    TimedOut,
    /// A datagram larger than [`MAX_FRAME_BYTES`].
    #[error("message of {0} bytes is larger than the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    /// Not a message of the protocol.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] Errno),
}

/// One end of the socket pair.
#[derive(Debug)]
pub struct Channel {
    socket: OwnedFd,
}

impl Channel {
    /// A connected pair, both ends close-on-exec: (module's end, helper's end).
    pub fn pair() -> Result<(Channel, OwnedFd), Errno> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel { socket: ours }, theirs))
    }

    /// Wraps an already connected SOCK_SEQPACKET socket.
    pub fn from_socket(socket: OwnedFd) -> Channel {
        Channel { socket }
    }

    /// Gives the socket back (to hand it to a re-executed helper).
    pub fn into_socket(self) -> OwnedFd {
        self.socket
    }

    /// Sends one message. Never blocks and never raises SIGPIPE: the
    /// messages are small and the other side reads them one at a time.
    pub fn send<T: Serialize>(&self, message: &T) -> Result<(), ChannelError> {
        // Messages carry PINs: the encoded bytes are wiped too.
        let bytes = Zeroizing::new(
            postcard::to_allocvec(message)
                .map_err(|error| ChannelError::Malformed(error.to_string()))?,
        );
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(ChannelError::TooLarge(bytes.len()));
        }
        loop {
            match send(
                self.socket.as_raw_fd(),
                &bytes,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(ChannelError::Closed),
                Err(errno) => return Err(ChannelError::Io(errno)),
            }
        }
    }

    /// Receives one message, waiting until `deadline` (`None`: for ever).
    pub fn recv<T: DeserializeOwned>(&self, deadline: Option<Instant>) -> Result<T, ChannelError> {
        wait_readable(&self.socket, deadline)?;
        let mut buffer = Zeroizing::new(vec![0u8; MAX_FRAME_BYTES]);
        let mut reset_seen = false;
        let length = loop {
            // MSG_TRUNC: the datagram's real length, so an oversized one is
            // refused instead of read cut short.
            match recv(
                self.socket.as_raw_fd(),
                &mut buffer,
                MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => return Err(ChannelError::Closed),
                Ok(length) => break length,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    wait_readable(&self.socket, deadline)?;
                    continue;
                }
                // A peer that closed with our last message unread leaves
                // ECONNRESET pending; reading consumes it, and what the
                // peer sent before closing is still queued behind it.
                Err(Errno::ECONNRESET) if !reset_seen => reset_seen = true,
                Err(Errno::ECONNRESET) => return Err(ChannelError::Closed),
                Err(errno) => return Err(ChannelError::Io(errno)),
            }
        };
        if length > MAX_FRAME_BYTES {
            return Err(ChannelError::TooLarge(length));
        }
        match postcard::take_from_bytes(&buffer[..length]) {
            Ok((message, [])) => Ok(message),
            Ok((_, rest)) => Err(ChannelError::Malformed(format!(
                "{} bytes after the message",
                rest.len()
            ))),
            Err(error) => Err(ChannelError::Malformed(error.to_string())),
        }
    }
}

/// Waits until `fd` is readable (a message or the other side's close).
fn wait_readable(fd: &OwnedFd, deadline: Option<Instant>) -> Result<(), ChannelError> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ChannelError::TimedOut);
                }
                // Round up, so that the loop does not spin in the last millisecond.
                let millis = left.as_millis().saturating_add(1).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            // Hosts such as sudo interrupt us with their SIGCHLD handler.
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(ChannelError::Io(errno)),
            Ok(0) => continue,
            Ok(_) => return Ok(()),
        }
    }
}

/// How long until `deadline`, for messages.
pub fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ToHelper;
    use crate::Secret;

    #[test]
    fn messages_cross_and_a_closed_end_is_reported() {
        let (module, helper) = Channel::pair().unwrap();
        let helper = Channel::from_socket(helper);
        module
            .send(&ToHelper::Answer(Secret::new(Zeroizing::new(
                "1234".into(),
            ))))
            .unwrap();
        match helper.recv::<ToHelper>(None).unwrap() {
            ToHelper::Answer(pin) => assert_eq!(pin.expose().as_str(), "1234"),
            other => panic!("{other:?}"),
        }
        drop(module);
        assert!(matches!(
            helper.recv::<ToHelper>(None),
            Err(ChannelError::Closed)
        ));
    }

    #[test]
    fn what_a_peer_sent_before_closing_unread_is_still_received() {
        let (module, helper) = Channel::pair().unwrap();
        let helper = Channel::from_socket(helper);
        module.send(&ToHelper::Ack).unwrap();
        helper
            .send(&ToHelper::ConversationFailed("gone".into()))
            .unwrap();
        // Closed with the module's message unread: the kernel reports a reset.
        drop(helper);
        assert!(matches!(
            module.recv::<ToHelper>(None),
            Ok(ToHelper::ConversationFailed(_))
        ));
        assert!(matches!(
            module.recv::<ToHelper>(None),
            Err(ChannelError::Closed)
        ));
    }

    #[test]
    fn a_receive_ends_at_its_deadline() {
        let (module, _helper) = Channel::pair().unwrap();
        let started = Instant::now();
        let result = module.recv::<ToHelper>(Some(started + Duration::from_millis(50)));
        assert!(matches!(result, Err(ChannelError::TimedOut)), "{result:?}");
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn oversized_and_malformed_datagrams_are_refused() {
        let (module, helper) = Channel::pair().unwrap();
        let big = vec![0u8; MAX_FRAME_BYTES + 1];
        send(helper.as_raw_fd(), &big, MsgFlags::empty()).unwrap();
        assert!(matches!(
            module.recv::<ToHelper>(None),
            Err(ChannelError::TooLarge(length)) if length == MAX_FRAME_BYTES + 1
        ));
        send(helper.as_raw_fd(), &[0xff, 0xff, 0xff], MsgFlags::empty()).unwrap();
        assert!(matches!(
            module.recv::<ToHelper>(None),
            Err(ChannelError::Malformed(_))
        ));
    }
}
