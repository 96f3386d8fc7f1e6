//! Virtual PIV cards (`tessera-vcard`) in vpcd's readers, driven through
//! their control sockets and stopped by PID.
//!
//! Finding the binary: `CARGO_BIN_EXE_tessera-vcard` exists only for the
//! tests of the tessera-vcard package itself, so [`vcard_binary`] looks in
//! this order:
//! 1. `$TESSERA_VCARD`, if set (a prebuilt binary anywhere);
//! 2. `$TESSERA_BIN_DIR/tessera-vcard`, if that variable is set (as for the
//!    rig's other artefacts);
//! 3. `<target>/<profile>/tessera-vcard`, derived from the test executable,
//!    which lives in `<target>/<profile>/deps/`. Under `cargo test` (`$CARGO`
//!    set) the harness first runs `cargo build -p tessera-vcard` once per test
//!    process in the profile of the running test, so the card is never stale
//!    even when only the rig's tests were selected.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::pcscd::{context, reader_name, stop_child, HarnessError, Pcscd, PcscdLock, Result};

const BINARY: &str = "tessera-vcard";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// Path of the tessera-vcard binary (see the module documentation).
pub fn vcard_binary() -> Result<PathBuf> {
    static FOUND: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| locate().map_err(|e| e.to_string()))
        .clone()
        .map_err(HarnessError::new)
}

fn locate() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TESSERA_VCARD") {
        return Ok(PathBuf::from(path));
    }
    if let Some(dir) = std::env::var_os("TESSERA_BIN_DIR") {
        return Ok(PathBuf::from(dir).join(BINARY));
    }
    let profile_dir = crate::bins::bin_dir();
    let candidate = profile_dir.join(BINARY);
    if let Some(cargo) = std::env::var_os("CARGO") {
        build(&cargo, &profile_dir)?;
    }
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(HarnessError::new(format!(
            "{} missing: run `cargo build -p tessera-vcard` or set TESSERA_VCARD",
            candidate.display()
        )))
    }
}

fn build(cargo: &std::ffi::OsStr, profile_dir: &Path) -> Result<()> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../vcard/Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--manifest-path",
        manifest,
        "--bin",
        BINARY,
    ]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(context("run cargo build -p tessera-vcard"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(HarnessError::new(format!(
            "cargo build -p tessera-vcard failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// What to put on a virtual card and how to run it.
#[derive(Debug, Clone)]
pub struct CardSpec {
    reader: u16,
    keys: Vec<(String, PathBuf)>,
    certs: Vec<(String, PathBuf)>,
    pin: String,
    puk: String,
    pin_tries: u8,
    puk_tries: u8,
    state: Option<PathBuf>,
    guid: Option<String>,
    pulled: bool,
}

impl CardSpec {
    /// A card for vpcd reader `reader` with PIN 123456, PUK 12345678, three
    /// tries each and no keys yet.
    pub fn new(reader: u16) -> CardSpec {
        CardSpec {
            reader,
            keys: Vec::new(),
            certs: Vec::new(),
            pin: "123456".to_owned(),
            puk: "12345678".to_owned(),
            pin_tries: 3,
            puk_tries: 3,
            state: None,
            guid: None,
            pulled: false,
        }
    }

    /// Key (PKCS#8 PEM/DER) and certificate (PEM/DER) for slot `9a`, `9c`, `9d` or `9e`.
    pub fn slot(self, slot: &str, key: impl Into<PathBuf>, cert: impl Into<PathBuf>) -> CardSpec {
        self.key(slot, key).cert(slot, cert)
    }

    /// Only a key for `slot` (OpenSC will not show it without a certificate).
    pub fn key(mut self, slot: &str, key: impl Into<PathBuf>) -> CardSpec {
        self.keys.push((slot.to_owned(), key.into()));
        self
    }

    /// Only a certificate for `slot` (a card that cannot sign with it).
    pub fn cert(mut self, slot: &str, cert: impl Into<PathBuf>) -> CardSpec {
        self.certs.push((slot.to_owned(), cert.into()));
        self
    }

    /// The PIN (6 to 8 characters).
    pub fn pin(mut self, pin: &str) -> CardSpec {
        pin.clone_into(&mut self.pin);
        self
    }

    /// The PUK (6 to 8 characters).
    pub fn puk(mut self, puk: &str) -> CardSpec {
        puk.clone_into(&mut self.puk);
        self
    }

    /// Wrong PINs before the PIN blocks.
    pub fn pin_tries(mut self, tries: u8) -> CardSpec {
        self.pin_tries = tries;
        self
    }

    /// Wrong PUKs before the PUK blocks.
    pub fn puk_tries(mut self, tries: u8) -> CardSpec {
        self.puk_tries = tries;
        self
    }

    /// Keep PIN, PUK and counters in this file across card restarts.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> CardSpec {
        self.state = Some(path.into());
        self
    }

    /// The card GUID (32 hex digits); OpenSC shows its last 16 as the serial.
    pub fn guid(mut self, guid: &str) -> CardSpec {
        self.guid = Some(guid.to_owned());
        self
    }

    /// Start with the card out of the reader.
    pub fn pulled(mut self) -> CardSpec {
        self.pulled = true;
        self
    }

    /// Starts the card with its control socket and log in `pcscd.dir()`;
    /// returns once pcscd reports the card present (or, for a pulled card,
    /// once the control socket answers).
    pub fn start(&self, pcscd: &Pcscd) -> Result<VirtualCard> {
        let binary = vcard_binary()?;
        let dir = pcscd.dir();
        let control = dir.join(format!("vcard-{}.sock", self.reader));
        let log = dir.join(format!("vcard-{}.log", self.reader));
        // Append: a test may restart the card in the same reader.
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(context(log.display()))?;
        let log_err = log_file.try_clone().map_err(context(log.display()))?;
        let mut cmd = Command::new(&binary);
        cmd.arg("run")
            .args(["--reader", &self.reader.to_string()])
            .args(["--pin", &self.pin, "--puk", &self.puk])
            .args(["--pin-tries", &self.pin_tries.to_string()])
            .args(["--puk-tries", &self.puk_tries.to_string()])
            .arg("--control")
            .arg(&control)
            .arg("--verbose");
        for (slot, path) in &self.keys {
            cmd.arg("--key").arg(slot_arg(slot, path));
        }
        for (slot, path) in &self.certs {
            cmd.arg("--cert").arg(slot_arg(slot, path));
        }
        if let Some(state) = &self.state {
            cmd.arg("--state").arg(state);
        }
        if let Some(guid) = &self.guid {
            cmd.args(["--guid", guid]);
        }
        if self.pulled {
            cmd.arg("--pulled");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(context(format!("spawn {}", binary.display())))?;
        let mut card = VirtualCard {
            child,
            reader: self.reader,
            control,
            log,
            _lock: pcscd.lock(),
        };
        card.wait_ready(!self.pulled)?;
        if !self.pulled {
            pcscd.wait_card(self.reader, true, START_TIMEOUT)?;
        }
        Ok(card)
    }
}

fn slot_arg(slot: &str, path: &Path) -> std::ffi::OsString {
    let mut arg = std::ffi::OsString::from(format!("{slot}="));
    arg.push(path);
    arg
}

/// What `status` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardStatus {
    /// The card is meant to be in the reader.
    pub inserted: bool,
    /// The vpcd connection is open.
    pub connected: bool,
    /// PIN tries left.
    pub pin_tries_left: u8,
    /// PUK tries left.
    pub puk_tries_left: u8,
}

impl CardStatus {
    fn parse(reply: &str) -> Option<CardStatus> {
        let mut status = CardStatus {
            inserted: false,
            connected: false,
            pin_tries_left: 0,
            puk_tries_left: 0,
        };
        let mut fields = reply.split_whitespace();
        if fields.next()? != "ok" {
            return None;
        }
        for field in fields {
            match field.split_once('=')? {
                ("card", v) => status.inserted = v == "inserted",
                ("link", v) => status.connected = v == "up",
                ("pin_tries_left", v) => status.pin_tries_left = v.parse().ok()?,
                ("puk_tries_left", v) => status.puk_tries_left = v.parse().ok()?,
                _ => {}
            }
        }
        Some(status)
    }
}

/// A running tessera-vcard process; stopped by PID (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct VirtualCard {
    child: Child,
    reader: u16,
    control: PathBuf,
    log: PathBuf,
    // Keeps the next test's pcscd away until this card is gone.
    _lock: PcscdLock,
}

impl VirtualCard {
    fn wait_ready(&mut self, connected: bool) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(context("wait for tessera-vcard"))?
            {
                return Err(HarnessError::new(format!(
                    "tessera-vcard exited with {status}; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )));
            }
            if let Ok(status) = self.status() {
                if status.connected == connected {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(HarnessError::new(format!(
                    "tessera-vcard in reader {} not ready within {START_TIMEOUT:?}",
                    self.reader
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The vpcd reader index.
    pub fn reader(&self) -> u16 {
        self.reader
    }

    /// The PC/SC reader name.
    pub fn reader_name(&self) -> String {
        reader_name(self.reader)
    }

    /// The control socket, for `tessera-vcard ctl --control PATH ...`.
    pub fn control_path(&self) -> &Path {
        &self.control
    }

    /// The card's log (every APDU, PINs redacted).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The card's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one control command; returns the `ok ...` reply or fails on `err ...`.
    pub fn command(&self, command: &str) -> Result<String> {
        let what = format!("{} {command}", self.control.display());
        let mut conn = UnixStream::connect(&self.control).map_err(context(&what))?;
        conn.set_read_timeout(Some(CONTROL_TIMEOUT))
            .map_err(context(&what))?;
        conn.write_all(format!("{command}\n").as_bytes())
            .map_err(context(&what))?;
        let mut reply = String::new();
        BufReader::new(conn)
            .read_line(&mut reply)
            .map_err(context(&what))?;
        let reply = reply.trim_end().to_owned();
        if reply.starts_with("ok") {
            Ok(reply)
        } else {
            Err(HarnessError::new(format!("{what}: {reply:?}")))
        }
    }

    /// Takes the card out: closes its vpcd connection. pcscd notices within
    /// about 400 ms; wait with [`Pcscd::wait_card`].
    pub fn pull(&self) -> Result<()> {
        self.command("pull").map(drop)
    }

    /// Puts the card back: it reconnects to vpcd.
    pub fn insert(&self) -> Result<()> {
        self.command("insert").map(drop)
    }

    /// The card's own view of its state.
    pub fn status(&self) -> Result<CardStatus> {
        let reply = self.command("status")?;
        CardStatus::parse(&reply)
            .ok_or_else(|| HarnessError::new(format!("bad status reply {reply:?}")))
    }

    /// Stops the card now (the same as dropping it).
    pub fn stop(self) {}
}

impl Drop for VirtualCard {
    fn drop(&mut self) {
        stop_child(&mut self.child, BINARY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_reply() {
        assert_eq!(
            CardStatus::parse("ok card=inserted link=up pin_tries_left=2 puk_tries_left=3"),
            Some(CardStatus {
                inserted: true,
                connected: true,
                pin_tries_left: 2,
                puk_tries_left: 3
            })
        );
        assert_eq!(
            CardStatus::parse("ok card=pulled link=down pin_tries_left=0 puk_tries_left=1"),
            Some(CardStatus {
                inserted: false,
                connected: false,
                pin_tries_left: 0,
                puk_tries_left: 1
            })
        );
        assert_eq!(CardStatus::parse("err nope"), None);
    }
}
