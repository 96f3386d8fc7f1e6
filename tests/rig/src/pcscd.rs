//! A private pcscd that knows only vsmartcard's virtual reader (vpcd), plus
//! an `OPENSC_CONF` limited to OpenSC's PIV driver.
//!
//! pcscd always listens on `/run/pcscd/pcscd.comm` and vpcd always on
//! 127.0.0.1:35963/35964, so one such pcscd runs per machine. [`Pcscd::start`]
//! first takes an exclusive `flock` on [`LOCK_FILE`]; test binaries that
//! cargo or nextest run in parallel processes then take turns. The lock is
//! released only when the pcscd and every virtual card started against it
//! are gone (each holds a share of it), so the next test never sees a
//! leftover card reconnecting to its reader.

use std::ffi::{CString, OsString};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pcsc::{Context, ReaderState, Scope, State};

/// The lock every test that needs pcscd holds while it runs.
pub const LOCK_FILE: &str = "/tmp/tessera-pcscd.lock";
/// pcscd's client socket (fixed at build time of pcsc-lite).
pub const PCSCD_SOCKET: &str = "/run/pcscd/pcscd.comm";
/// pcscd's PID file.
pub const PCSCD_PID_FILE: &str = "/run/pcscd/pcscd.pid";
/// Debian's vpcd reader configuration, copied into the private reader directory.
pub const VPCD_READER_CONF: &str = "/etc/reader.conf.d/vpcd";
/// OpenSC's PKCS#11 module.
pub const OPENSC_PKCS11: &str = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so";
/// Readers vpcd offers with the stock configuration.
pub const VPCD_READERS: u16 = 2;

const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

/// The PC/SC name of vpcd reader `index` ("Virtual PCD 00 00", "Virtual PCD 00 01").
pub fn reader_name(index: u16) -> String {
    format!("Virtual PCD 00 {index:02}")
}

/// A harness failure, with what was being attempted.
#[derive(Debug)]
pub struct HarnessError(String);

impl HarnessError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> HarnessError {
        HarnessError(message.into())
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

/// Result of harness operations.
pub type Result<T> = std::result::Result<T, HarnessError>;

pub(crate) fn context<E: fmt::Display>(what: impl fmt::Display) -> impl FnOnce(E) -> HarnessError {
    move |e| HarnessError(format!("{what}: {e}"))
}

/// The cross-process lock on pcscd and vpcd's ports; shared by the pcscd
/// and the cards started against it.
#[derive(Debug, Clone)]
pub struct PcscdLock {
    // Only held: the flock is released when the last share is dropped.
    _held: Arc<Flock<File>>,
}

impl PcscdLock {
    /// Blocks until no other test holds the lock.
    pub fn acquire() -> Result<PcscdLock> {
        // flock needs no write access, so a lock file created by another user works too.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(LOCK_FILE)
            .or_else(|_| File::open(LOCK_FILE))
            .map_err(context(LOCK_FILE))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| HarnessError(format!("flock {LOCK_FILE}: {e}")))?;
        Ok(PcscdLock {
            _held: Arc::new(lock),
        })
    }
}

/// A running pcscd with only the vpcd readers; stopped by PID on drop.
#[derive(Debug)]
pub struct Pcscd {
    child: Child,
    dir: PathBuf,
    opensc_conf: PathBuf,
    log: PathBuf,
    lock: PcscdLock,
}

impl Pcscd {
    /// Starts pcscd with its files in `dir`; OpenSC looks at every vpcd reader.
    pub fn start(dir: &Path) -> Result<Pcscd> {
        Pcscd::start_for_readers(dir, &[0, 1])
    }

    /// Starts pcscd with its files in `dir`; the `OPENSC_CONF` written there
    /// makes OpenSC ignore vpcd readers not listed in `readers`.
    pub fn start_for_readers(dir: &Path, readers: &[u16]) -> Result<Pcscd> {
        let lock = PcscdLock::acquire()?;
        let reader_dir = dir.join("reader.conf.d");
        std::fs::create_dir_all(&reader_dir).map_err(context(reader_dir.display()))?;
        std::fs::copy(VPCD_READER_CONF, reader_dir.join("vpcd"))
            .map_err(context(format!("copy {VPCD_READER_CONF}")))?;
        let opensc_conf = dir.join("opensc.conf");
        std::fs::write(&opensc_conf, opensc_conf_text(readers))
            .map_err(context(opensc_conf.display()))?;
        let log = dir.join("pcscd.log");
        let child = spawn_pcscd(&reader_dir, &log)?;
        let mut pcscd = Pcscd {
            child,
            dir: dir.to_owned(),
            opensc_conf,
            log,
            lock,
        };
        pcscd.wait_ready()?;
        Ok(pcscd)
    }

    /// Kills pcscd with SIGKILL (as a crash would) and reaps it; the cards
    /// and the lock stay. Start it again with [`Pcscd::restart`].
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What a service manager clears after a crash; pcscd refuses to
        // start over a socket and PID file it did not create.
        let _ = std::fs::remove_file(PCSCD_SOCKET);
        let _ = std::fs::remove_file(PCSCD_PID_FILE);
    }

    /// Starts pcscd again with the same readers after [`Pcscd::kill`].
    pub fn restart(&mut self) -> Result<()> {
        self.child = spawn_pcscd(&self.dir.join("reader.conf.d"), &self.log)?;
        self.wait_ready()
    }

    /// Ready when the socket exists and PC/SC lists the first vpcd reader.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let wanted = reader_name(0);
        loop {
            if let Some(status) = self.child.try_wait().map_err(context("wait for pcscd"))? {
                return Err(HarnessError(format!(
                    "pcscd exited with {status} during start-up (another pcscd running?); log:\n{}",
                    self.log_tail()
                )));
            }
            if Path::new(PCSCD_SOCKET).exists() {
                let listed = Context::establish(Scope::User)
                    .and_then(|ctx| ctx.list_readers_owned())
                    .map(|names| names.iter().any(|n| n.to_bytes() == wanted.as_bytes()));
                if listed == Ok(true) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(HarnessError(format!(
                    "pcscd did not list {wanted:?} within {START_TIMEOUT:?}; log:\n{}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The scratch directory pcscd's files (and the cards' files) live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `OPENSC_CONF` file: `card_drivers = PIV-II`, unused readers
    /// ignored, and PUK unblocking through `C_SetPIN` in a session that is
    /// not logged in (OpenSC's `set_pin_in_unlogged_session`).
    pub fn opensc_conf(&self) -> &Path {
        &self.opensc_conf
    }

    /// Environment for processes that load OpenSC (pkcs11-tool, PAM clients).
    pub fn env(&self) -> Vec<(String, OsString)> {
        vec![(
            "OPENSC_CONF".to_owned(),
            self.opensc_conf.as_os_str().to_owned(),
        )]
    }

    /// pcscd's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// pcscd's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn lock(&self) -> PcscdLock {
        self.lock.clone()
    }

    /// Whether PC/SC reports a card in vpcd reader `index` right now.
    pub fn card_present(&self, index: u16) -> Result<bool> {
        let ctx = Context::establish(Scope::User).map_err(context("SCardEstablishContext"))?;
        let mut states = [reader_state(index)?];
        ctx.get_status_change(Duration::ZERO, &mut states)
            .map_err(context("SCardGetStatusChange"))?;
        Ok(states[0].event_state().contains(State::PRESENT))
    }

    /// Waits until PC/SC reports vpcd reader `index` holding a card
    /// (`present`) or empty; returns how long that took.
    pub fn wait_card(&self, index: u16, present: bool, timeout: Duration) -> Result<Duration> {
        let ctx = Context::establish(Scope::User).map_err(context("SCardEstablishContext"))?;
        wait_reader(&ctx, index, present, timeout)
    }

    /// Stops pcscd now (the same as dropping it).
    pub fn stop(self) {}
}

impl Drop for Pcscd {
    fn drop(&mut self) {
        stop_child(&mut self.child, "pcscd");
    }
}

fn spawn_pcscd(reader_dir: &Path, log: &Path) -> Result<Child> {
    // Append: a restarted pcscd keeps the earlier log.
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(context(log.display()))?;
    let log_err = log_file.try_clone().map_err(context(log.display()))?;
    Command::new("pcscd")
        .arg("--foreground")
        .arg("-c")
        .arg(reader_dir)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(context("spawn pcscd (is the pcscd package installed?)"))
}

fn reader_state(index: u16) -> Result<ReaderState> {
    let name = CString::new(reader_name(index)).map_err(context("reader name"))?;
    Ok(ReaderState::new(name, State::UNAWARE))
}

/// Blocks in `SCardGetStatusChange` until the reader reaches the wanted
/// state; returns the time that took.
pub fn wait_reader(
    ctx: &Context,
    index: u16,
    present: bool,
    timeout: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    let mut states = [reader_state(index)?];
    loop {
        let event = states[0].event_state();
        let reached = if present {
            event.contains(State::PRESENT) && !event.contains(State::MUTE)
        } else {
            event.contains(State::EMPTY)
        };
        if reached {
            return Ok(start.elapsed());
        }
        states[0].sync_current_state();
        let Some(left) = timeout.checked_sub(start.elapsed()) else {
            return Err(HarnessError(format!(
                "{} not {} within {timeout:?}",
                reader_name(index),
                if present { "present" } else { "empty" }
            )));
        };
        match ctx.get_status_change(left, &mut states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(e) => return Err(HarnessError(format!("SCardGetStatusChange: {e}"))),
        }
    }
}

/// SIGTERM, a bounded wait, then SIGKILL; always reaps the child, because a
/// zombie pcscd keeps the next one from starting.
pub(crate) fn stop_child(child: &mut Child, what: &str) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let pid = i32::try_from(child.id()).map(Pid::from_raw);
    if let Ok(pid) = pid {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => std::thread::sleep(POLL),
        }
    }
    eprintln!("tessera-testrig: {what} ignored SIGTERM, killing it");
    let _ = child.kill();
    let _ = child.wait();
}

fn opensc_conf_text(readers: &[u16]) -> String {
    let ignored: Vec<String> = (0..VPCD_READERS)
        .filter(|r| !readers.contains(r))
        .map(|r| format!("\"{}\"", reader_name(r)))
        .collect();
    let ignored = if ignored.is_empty() {
        String::new()
    } else {
        format!("    ignored_readers = {};\n", ignored.join(", "))
    };
    format!(
        "# Written by tessera-testrig: OpenSC for the virtual PIV card only.\n\
         app default {{\n\
         \x20   card_drivers = PIV-II;\n\
         {ignored}\
         \x20   framework pkcs15 {{\n\
         \x20       use_file_caching = no;\n\
         \x20   }}\n\
         }}\n\
         app opensc-pkcs11 {{\n\
         \x20   pkcs11 {{\n\
         \x20       user_pin_unblock_style = set_pin_in_unlogged_session;\n\
         \x20   }}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_names_match_vpcd() {
        assert_eq!(reader_name(0), "Virtual PCD 00 00");
        assert_eq!(reader_name(1), "Virtual PCD 00 01");
    }

    #[test]
    fn opensc_conf_ignores_unused_readers_only() {
        let both = opensc_conf_text(&[0, 1]);
        assert!(both.contains("card_drivers = PIV-II;"));
        assert!(!both.contains("ignored_readers"));
        let first = opensc_conf_text(&[0]);
        assert!(first.contains("ignored_readers = \"Virtual PCD 00 01\";"));
    }
}
