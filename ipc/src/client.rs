//! Spawning `tessera-auth` and driving it: the module's side of the helper
//! protocol, also used by `tessera login` so that its timings are the
//! module's.
//!
//! The helper starts with nothing of the host: an empty environment, the
//! socket as its standard input, 1 and 2 on /dev/null (2 stays the host's
//! stderr only with `log=stderr`), every signal at its default and none blocked, its own
//! process group. It closes every other descriptor, moves to `/`, resets
//! rlimits and makes its user ids equal before it loads anything.
//!
//! The host may reap children behind our back (sudo's and GDM's SIGCHLD
//! handlers) or ignore SIGCHLD, so nothing here depends on `waitpid`: the
//! helper is alive while its end of the socket is open, and the deadline
//! kills its process group, which exists as long as that end is open.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use zeroize::Zeroizing;

use crate::channel::{Channel, ChannelError};
use crate::conversation::Conversation;
use crate::filetrust::{self, TrustError};
use crate::logging::LogTarget;
use crate::protocol::{
    FromHelper, Hello, Request, ToHelper, Verdict, HELPER_SOCKET_FD, PROTOCOL_VERSION,
};
use crate::secret::Secret;

/// Where `pam_tessera.so` finds the helper, fixed at build time (build.rs).
pub const HELPER_PATH: &str = env!("TESSERA_AUTH_HELPER_PATH");

/// Bound on the helper's start and configuration load, before it has said
/// what its configured `token_timeout` is.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a helper that gave its verdict may take to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// How to start the helper.
#[derive(Debug, Clone)]
pub struct HelperCommand {
    /// The helper executable; must be root-owned and writable by root alone.
    pub path: PathBuf,
    /// The configuration file the helper reads.
    pub config: PathBuf,
    /// Log at debug level.
    pub debug: bool,
    /// Where the helper logs.
    pub log: LogTarget,
}

impl HelperCommand {
    /// The helper at [`HELPER_PATH`].
    pub fn installed(config: &Path, debug: bool, log: LogTarget) -> Self {
        Self {
            path: PathBuf::from(HELPER_PATH),
            config: config.to_owned(),
            debug,
            log,
        }
    }

    fn argv(&self) -> Result<Vec<CString>, HelperError> {
        let text =
            |bytes: &[u8]| CString::new(bytes).map_err(|_| HelperError::Spawn(Errno::EINVAL));
        let mut argv = vec![
            text(self.path.as_os_str().as_bytes())?,
            text(b"--config")?,
            text(self.config.as_os_str().as_bytes())?,
            text(b"--log")?,
            text(self.log.name().as_bytes())?,
        ];
        if self.debug {
            argv.push(text(b"--debug")?);
        }
        Ok(argv)
    }
}

/// Why the helper gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The helper executable may have been written by someone other than root.
    #[error("refusing the helper: {0}")]
    Untrusted(#[from] TrustError),
    /// It could not be started.
    #[error("cannot start the helper: {0}")]
    Spawn(Errno),
    /// It exited, crashed or was killed before its verdict.
    #[error("the helper ended without a verdict")]
    Died,
    /// It did not answer within its deadline and was killed.
    #[error("the token did not answer within {} s; the helper was killed", .0.as_secs_f32())]
    TimedOut(Duration),
    /// It broke the protocol and was killed.
    #[error("the helper broke the protocol: {0}")]
    Protocol(String),
    /// It speaks another protocol version (a package upgrade under a
    /// running host).
    #[error("the helper speaks protocol version {helper}, this module {PROTOCOL_VERSION}")]
    Version {
        /// The helper's version.
        helper: u32,
    },
}

/// What one run of the helper gave.
#[derive(Debug)]
pub struct Exchange {
    /// The helper's hello, if it got that far: the card requirement and the
    /// deadlines that applied.
    pub hello: Option<Hello>,
    /// The verdict, or why there is none.
    pub result: Result<Verdict, HelperError>,
}

/// Starts the helper, sends `request`, relays its prompts and messages
/// through `conversation`, and returns its verdict.
pub fn run(
    command: &HelperCommand,
    request: Request,
    conversation: &mut dyn Conversation,
) -> Exchange {
    let mut hello = None;
    let result = spawn(command).and_then(|helper| {
        let result = helper.converse(request, conversation, &mut hello);
        helper.finish(result.is_ok());
        result
    });
    Exchange { hello, result }
}

/// A started helper.
struct Running {
    channel: Channel,
    pid: Pid,
}

fn spawn(command: &HelperCommand) -> Result<Running, HelperError> {
    filetrust::check_trusted_path(&command.path)?;
    let argv = command.argv()?;
    let (channel, theirs) = Channel::pair().map_err(HelperError::Spawn)?;
    // dup2 onto the same number would leave close-on-exec set.
    let theirs: OwnedFd = if theirs.as_raw_fd() == HELPER_SOCKET_FD {
        nix::unistd::dup(&theirs).map_err(HelperError::Spawn)?
    } else {
        theirs
    };

    let mut actions = PosixSpawnFileActions::init().map_err(HelperError::Spawn)?;
    // The socket first: it may itself sit on 1 or 2 when the host closed those.
    actions
        .add_dup2(theirs.as_raw_fd(), HELPER_SOCKET_FD)
        .map_err(HelperError::Spawn)?;
    let null = c"/dev/null";
    actions
        .add_open(1, null, OFlag::O_WRONLY, Mode::empty())
        .map_err(HelperError::Spawn)?;
    if command.log != LogTarget::Stderr {
        actions
            .add_open(2, null, OFlag::O_WRONLY, Mode::empty())
            .map_err(HelperError::Spawn)?;
    }

    let mut attributes = PosixSpawnAttr::init().map_err(HelperError::Spawn)?;
    attributes
        .set_flags(
            PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
                | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF
                | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK,
        )
        .map_err(HelperError::Spawn)?;
    attributes
        .set_pgroup(Pid::from_raw(0))
        .map_err(HelperError::Spawn)?;
    // Signals the host ignores stay ignored across exec unless reset here.
    attributes
        .set_sigdefault(&SigSet::all())
        .map_err(HelperError::Spawn)?;
    attributes
        .set_sigmask(&SigSet::empty())
        .map_err(HelperError::Spawn)?;

    let no_environment: [CString; 0] = [];
    let pid = posix_spawn(
        command.path.as_path(),
        &actions,
        &attributes,
        &argv,
        &no_environment,
    )
    .map_err(HelperError::Spawn)?;
    drop(theirs);
    tracing::debug!(id = "pam.helper.started", helper = %command.path.display(), pid = pid.as_raw(), "helper started");
    Ok(Running { channel, pid })
}

impl Running {
    fn converse(
        &self,
        request: Request,
        conversation: &mut dyn Conversation,
        hello_seen: &mut Option<Hello>,
    ) -> Result<Verdict, HelperError> {
        match self.send(&ToHelper::Request(Box::new(request))) {
            // A helper that refuses its configuration answers without
            // reading the request and may be gone before it is sent: its
            // verdict still waits in the socket.
            Err(HelperError::Died) | Ok(()) => {}
            Err(error) => return Err(error),
        }
        let mut timeout = STARTUP_TIMEOUT;
        let mut deadline = Instant::now() + timeout;
        let mut card_wait_granted = false;
        loop {
            let message = match self.channel.recv::<FromHelper>(Some(deadline)) {
                Ok(message) => message,
                Err(ChannelError::TimedOut) => return Err(HelperError::TimedOut(timeout)),
                Err(ChannelError::Closed) => return Err(HelperError::Died),
                Err(error) => return Err(HelperError::Protocol(error.to_string())),
            };
            match message {
                FromHelper::Hello(hello) => {
                    if hello_seen.is_some() {
                        return Err(HelperError::Protocol("a second hello".into()));
                    }
                    if hello.version != PROTOCOL_VERSION {
                        return Err(HelperError::Version {
                            helper: hello.version,
                        });
                    }
                    *hello_seen = Some(hello);
                    timeout = Duration::from_millis(hello.token_timeout_ms);
                    deadline = Instant::now() + timeout;
                }
                FromHelper::Verdict(verdict) => match (&verdict, hello_seen.is_some()) {
                    // Only a failure (a bad config) may come before the hello.
                    (Verdict::Failed { .. }, _) | (_, true) => return Ok(verdict),
                    (_, false) => {
                        return Err(HelperError::Protocol("a verdict before the hello".into()))
                    }
                },
                FromHelper::Prompt { .. }
                | FromHelper::Message { .. }
                | FromHelper::WaitingForCard
                    if hello_seen.is_none() =>
                {
                    return Err(HelperError::Protocol("a prompt before the hello".into()))
                }
                FromHelper::Prompt { echo, text } => {
                    let reply = if echo {
                        conversation
                            .prompt_visible(&text)
                            .map(|answer| Secret::new(Zeroizing::new(answer)))
                    } else {
                        conversation.prompt_secret(&text).map(Secret::new)
                    };
                    self.send(&match reply {
                        Ok(answer) => ToHelper::Answer(answer),
                        Err(error) => ToHelper::ConversationFailed(error.0),
                    })?;
                    // Time spent waiting for the person does not count.
                    deadline = Instant::now() + timeout;
                }
                FromHelper::Message { error, text } => {
                    let shown = if error {
                        conversation.error(&text)
                    } else {
                        conversation.info(&text)
                    };
                    self.send(&match shown {
                        Ok(()) => ToHelper::Ack,
                        Err(error) => ToHelper::ConversationFailed(error.0),
                    })?;
                    deadline = Instant::now() + timeout;
                }
                FromHelper::WaitingForCard => {
                    let Some(hello) = hello_seen else {
                        return Err(HelperError::Protocol("a card wait before the hello".into()));
                    };
                    if card_wait_granted {
                        return Err(HelperError::Protocol("a second card wait".into()));
                    }
                    card_wait_granted = true;
                    let _ = conversation
                        .waiting_for_card(Duration::from_millis(hello.wait_for_card_ms));
                    deadline =
                        Instant::now() + Duration::from_millis(hello.wait_for_card_ms) + timeout;
                }
            }
        }
    }

    fn send(&self, message: &ToHelper) -> Result<(), HelperError> {
        self.channel.send(message).map_err(|error| match error {
            ChannelError::Closed => HelperError::Died,
            other => HelperError::Protocol(other.to_string()),
        })
    }

    /// Lets a helper that gave its verdict exit, kills one that did not (or
    /// that lingers), and reaps it unless the host already has.
    fn finish(self, verdict_given: bool) {
        let mut exited = verdict_given && self.wait_for_close(EXIT_GRACE);
        if !exited {
            // Its end of the socket is open, so its process group still
            // exists and is ours.
            if let Err(errno) = killpg(self.pid, Signal::SIGKILL) {
                tracing::debug!(id = "pam.helper.kill_failed", pid = self.pid.as_raw(), %errno, "cannot kill the helper's process group");
            }
            exited = self.wait_for_close(EXIT_GRACE);
        }
        let flags = if exited {
            // Past closing its descriptors it is a zombie or about to be one.
            None
        } else {
            Some(WaitPidFlag::WNOHANG)
        };
        match waitpid(self.pid, flags) {
            Ok(_) => {}
            // The host reaped it (its SIGCHLD handler) or ignores SIGCHLD.
            Err(Errno::ECHILD) => {}
            Err(errno) => {
                tracing::debug!(id = "pam.helper.reap_failed", pid = self.pid.as_raw(), %errno, "cannot reap the helper")
            }
        }
        if !exited {
            tracing::warn!(
                id = "pam.helper.unkillable",
                pid = self.pid.as_raw(),
                "the helper did not exit after SIGKILL; left for the host to reap"
            );
        }
    }

    /// Whether the helper closed its end (exited) within `grace`.
    fn wait_for_close(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        loop {
            match self.channel.recv::<FromHelper>(Some(deadline)) {
                Err(ChannelError::Closed) => return true,
                Err(ChannelError::TimedOut) | Err(ChannelError::Io(_)) => return false,
                // Anything after the verdict is ignored; keep waiting for the close.
                Ok(_) | Err(_) => continue,
            }
        }
    }
}
