//! The card's side of the vpcd connection, and the insert/pull switch that
//! opens and closes it.
//!
//! vpcd frames every message as a 2-byte big-endian length and a payload.
//! A 1-byte payload is a control message (0 power off, 1 power on, 2 reset,
//! 4 get ATR); anything else is a command APDU answered with a response
//! APDU. Closing the connection removes the card from the reader.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use socket2::SockRef;

use tessera_vcard::piv::{PivCard, ATR};

/// How long to wait before retrying when vpcd is not listening (pcscd not
/// started yet) or dropped the connection.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the card stands, shared by the link loop, the control socket and
/// the signal handler.
#[derive(Debug, Default)]
pub struct Switch {
    state: Mutex<SwitchState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct SwitchState {
    inserted: bool,
    quit: bool,
    // A clone of the live connection, so another thread can close it.
    stream: Option<TcpStream>,
}

/// A snapshot for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    /// The card should be in the reader.
    pub inserted: bool,
    /// The vpcd connection is open.
    pub connected: bool,
}

impl Switch {
    /// A switch starting inserted or pulled.
    pub fn new(inserted: bool) -> Switch {
        Switch {
            state: Mutex::new(SwitchState {
                inserted,
                ..SwitchState::default()
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SwitchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes the card: closes the vpcd connection now.
    pub fn pull(&self) {
        let mut state = self.lock();
        state.inserted = false;
        close(&mut state);
        self.changed.notify_all();
    }

    /// Inserts the card: the link loop connects to vpcd.
    pub fn insert(&self) {
        self.lock().inserted = true;
        self.changed.notify_all();
    }

    /// Stops the link loop, closing the connection.
    pub fn quit(&self) {
        let mut state = self.lock();
        state.quit = true;
        close(&mut state);
        self.changed.notify_all();
    }

    /// Current state.
    pub fn status(&self) -> LinkStatus {
        let state = self.lock();
        LinkStatus {
            inserted: state.inserted,
            connected: state.stream.is_some(),
        }
    }

    /// The card should be in the reader and the program keeps running.
    fn wants_connection(&self) -> bool {
        let state = self.lock();
        state.inserted && !state.quit
    }

    /// Blocks until the card should be inserted (true) or the program should
    /// quit (false).
    fn wait_for_insert(&self) -> bool {
        let mut state = self.lock();
        while !state.inserted && !state.quit {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        !state.quit
    }

    /// Sleeps up to `delay`, waking early on pull or quit.
    fn pause(&self, delay: Duration) {
        let state = self.lock();
        if state.inserted && !state.quit {
            drop(
                self.changed
                    .wait_timeout(state, delay)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
    }

    /// Registers a new connection unless the card was pulled meanwhile.
    fn attach(&self, stream: &TcpStream) -> io::Result<bool> {
        let clone = stream.try_clone()?;
        let mut state = self.lock();
        if !state.inserted || state.quit {
            return Ok(false);
        }
        state.stream = Some(clone);
        Ok(true)
    }

    fn detach(&self) {
        self.lock().stream = None;
    }
}

fn close(state: &mut SwitchState) {
    if let Some(stream) = state.stream.take() {
        // shutdown, not just drop: the link thread's clone keeps the socket
        // open otherwise, and vpcd must see the FIN right now.
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// Keeps the card connected to vpcd while it is inserted, until quit.
pub fn run(switch: &Switch, card: &Mutex<PivCard>, addr: SocketAddr, verbose: bool) {
    let mut reported_failure = false;
    while switch.wait_for_insert() {
        let stream = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => s,
            Err(e) => {
                if !reported_failure {
                    eprintln!("tessera-vcard: vpcd at {addr} not reachable ({e}); retrying");
                    reported_failure = true;
                }
                switch.pause(RECONNECT_DELAY);
                continue;
            }
        };
        reported_failure = false;
        match switch.attach(&stream) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                eprintln!("tessera-vcard: {e}");
                switch.pause(RECONNECT_DELAY);
                continue;
            }
        }
        eprintln!("tessera-vcard: inserted (connected to vpcd at {addr})");
        let result = serve(stream, card, verbose);
        switch.detach();
        // A removed card loses power, and with it PIN status and buffers.
        lock_card(card).power_cycle();
        let unexpected = switch.wants_connection();
        match result {
            Ok(()) if unexpected => eprintln!("tessera-vcard: vpcd closed the connection"),
            Err(e) if unexpected => eprintln!("tessera-vcard: connection lost: {e}"),
            _ => eprintln!("tessera-vcard: removed"),
        }
        if unexpected {
            switch.pause(RECONNECT_DELAY);
        }
    }
}

fn lock_card(card: &Mutex<PivCard>) -> MutexGuard<'_, PivCard> {
    card.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Answers vpcd until the connection ends.
fn serve(mut stream: TcpStream, card: &Mutex<PivCard>, verbose: bool) -> io::Result<()> {
    // vpcd writes the length and the payload separately; without NODELAY on
    // our side and QUICKACK around every recv, each exchange waits ~40 ms
    // for a delayed ACK.
    stream.set_nodelay(true)?;
    loop {
        let mut header = [0u8; 2];
        match recv_exact(&mut stream, &mut header)? {
            0 => return Ok(()),
            2 => {}
            _ => return Err(io::ErrorKind::UnexpectedEof.into()),
        }
        let mut payload = vec![0u8; usize::from(u16::from_be_bytes(header))];
        if recv_exact(&mut stream, &mut payload)? != payload.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let reply = match payload.as_slice() {
            [] => None,
            [0x00] | [0x01] | [0x02] => {
                lock_card(card).power_cycle();
                None
            }
            [0x04] => Some(ATR.to_vec()),
            [other] => {
                eprintln!("tessera-vcard: ignoring unknown vpcd control {other:#04x}");
                None
            }
            apdu => {
                let response = lock_card(card).process(apdu);
                if verbose {
                    eprintln!("> {}", redacted(apdu));
                    eprintln!("< {}", hex(&response));
                }
                Some(response)
            }
        };
        if let Some(reply) = reply {
            let len = u16::try_from(reply.len()).map_err(|_| io::ErrorKind::InvalidData)?;
            let mut frame = Vec::with_capacity(reply.len() + 2);
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&reply);
            stream.write_all(&frame)?;
        }
    }
}

/// Fills `buf` unless the peer closes first; returns how many bytes arrived.
fn recv_exact(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        SockRef::from(&*stream).set_quickack(true)?;
        let n = match stream.read(rest) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        SockRef::from(&*stream).set_quickack(true)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// PINs and PUKs stay out of the log: only the header of VERIFY, CHANGE
/// REFERENCE DATA and RESET RETRY COUNTER is shown.
fn redacted(apdu: &[u8]) -> String {
    match apdu {
        [_, 0x20 | 0x24 | 0x2C, _, _, _, ..] => {
            format!(
                "{} <reference data redacted>",
                hex(apdu.get(..4).unwrap_or_default())
            )
        }
        _ => hex(apdu),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn redacts_pin_commands_only() {
        assert_eq!(
            redacted(&[0x00, 0x20, 0x00, 0x80, 0x08, 0x31, 0x32]),
            "00200080 <reference data redacted>"
        );
        assert_eq!(redacted(&[0x00, 0x20, 0x00, 0x80]), "00200080");
        assert_eq!(redacted(&[0x00, 0xCB, 0x3F, 0xFF, 0x00]), "00CB3FFF00");
    }
}
