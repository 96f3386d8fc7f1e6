//! `tessera-auth`: the token and certificate work of `pam_tessera.so`, in a
//! process of its own.
//!
//! The PAM module spawns it for each call that needs a token, the
//! configuration or a session binding, with an empty environment and its
//! end of a socket pair as standard input; nothing of the PAM application's
//! caller reaches the PKCS#11 module, pcsc-lite or a parser. The module
//! kills it when it overruns `token_timeout`. See docs/pam.md, "The helper".

mod operations;
mod remote;
mod sanitize;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use tessera_core::config::DEFAULT_CONFIG_PATH;
use tessera_core::Config;
use tessera_ipc::channel::Channel;
use tessera_ipc::logging::{self, LogTarget};
use tessera_ipc::protocol::{FromHelper, ToHelper, Verdict, PROTOCOL_VERSION};
use tessera_ipc::FailureKind;

/// The command line the module passes (never the caller's).
#[derive(Debug)]
struct Args {
    config: PathBuf,
    log: LogTarget,
    debug: bool,
    /// Set on the second start, once `[pkcs11] environment` is in place
    /// (only when it sets variables read at exec).
    environment_applied: bool,
}

impl Args {
    fn parse(mut argv: impl Iterator<Item = OsString>) -> Result<Self, String> {
        let mut args = Args {
            config: PathBuf::from(DEFAULT_CONFIG_PATH),
            log: LogTarget::Auto,
            debug: false,
            environment_applied: false,
        };
        argv.next();
        while let Some(arg) = argv.next() {
            match arg.to_str() {
                Some("--config") => {
                    let path = PathBuf::from(argv.next().ok_or("--config needs a path")?);
                    if !path.is_absolute() {
                        return Err(format!("--config {path:?} is not absolute"));
                    }
                    args.config = path;
                }
                Some("--log") => {
                    let name = argv.next().ok_or("--log needs a target")?;
                    args.log = name
                        .to_str()
                        .and_then(LogTarget::from_name)
                        .ok_or_else(|| format!("unknown log target {name:?}"))?;
                }
                Some("--debug") => args.debug = true,
                Some("--environment-applied") => args.environment_applied = true,
                _ => return Err(format!("unknown argument {arg:?}")),
            }
        }
        Ok(args)
    }
}

fn main() -> ExitCode {
    // Before anything reads a file or loads a library (the logger opens a
    // socket, which must not be closed as an inherited descriptor).
    let sanitized = sanitize::process();
    let args = match Args::parse(std::env::args_os()) {
        Ok(args) => args,
        Err(error) => {
            logging::emergency("auth.arguments.invalid", &format!("tessera-auth: {error}"));
            if let Ok(socket) = sanitized {
                let _ = Channel::from_socket(socket).send(&FromHelper::Verdict(Verdict::Failed {
                    kind: FailureKind::Internal,
                    message: error,
                }));
            }
            return ExitCode::FAILURE;
        }
    };
    logging::with_logger(args.debug, args.log, || {
        let channel = match sanitized {
            Ok(socket) => Channel::from_socket(socket),
            Err(error) => {
                tracing::error!(
                    id = "auth.sanitize.failed",
                    "tessera-auth: refusing to run: {error}"
                );
                return ExitCode::FAILURE;
            }
        };
        // Logged by the hook, before unwinding drops the socket: once the
        // module sees it closed it kills this process group.
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            tracing::error!(id = "auth.panic", "internal error (panic: {what})");
        }));
        match catch_unwind(AssertUnwindSafe(|| serve(&args, channel))) {
            Ok(None) => ExitCode::SUCCESS,
            Ok(Some((channel, verdict))) => {
                let _ = channel.send(&FromHelper::Verdict(verdict));
                // The socket stays open until the kernel closes it at exit,
                // after the libraries' destructors: its end is how the
                // module knows this process is gone.
                std::mem::forget(channel);
                ExitCode::SUCCESS
            }
            // The channel went down with the panicking closure: the module
            // sees the helper end without a verdict and fails closed.
            Err(_) => ExitCode::FAILURE,
        }
    })
}

/// Loads the configuration, applies `[pkcs11] environment` (executing itself
/// again when it sets variables only read at exec), then reads the module's
/// request and carries it out. `None` when nothing is left to send.
fn serve(args: &Args, channel: Channel) -> Option<(Channel, Verdict)> {
    let failed = |kind, message: String| Verdict::Failed { kind, message };
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(id = "auth.config.invalid", "configuration error: {error}");
            return Some((channel, failed(FailureKind::Config, error.to_string())));
        }
    };
    if !args.environment_applied {
        if config
            .pkcs11_environment
            .keys()
            .any(|name| read_at_exec(name))
        {
            // The dynamic loader and libc read these once, at exec.
            let error = reexecute(args, &config, channel);
            tracing::error!(
                id = "auth.reexec.failed",
                "cannot re-execute with [pkcs11] environment: {error}"
            );
            return None;
        }
        // Nothing has read the (empty) environment yet and no other thread
        // runs: the libraries loaded from here on see exactly these.
        for (name, value) in &config.pkcs11_environment {
            std::env::set_var(name, value);
        }
    }
    let request = match channel.recv::<ToHelper>(None) {
        Ok(ToHelper::Request(request)) if request.version == PROTOCOL_VERSION => request,
        Ok(ToHelper::Request(request)) => {
            let message = format!(
                "the PAM module speaks protocol version {}, this helper {PROTOCOL_VERSION}",
                request.version
            );
            tracing::error!(id = "auth.protocol.version", "{message}");
            return Some((channel, failed(FailureKind::Internal, message)));
        }
        Ok(_) => {
            let message = "the PAM module sent something else than a request".to_owned();
            tracing::error!(id = "auth.protocol.unexpected", "{message}");
            return Some((channel, failed(FailureKind::Internal, message)));
        }
        Err(error) => {
            tracing::error!(
                id = "auth.protocol.no_request",
                "no request from the PAM module: {error}"
            );
            return None;
        }
    };
    let verdict = operations::carry_out(&config, *request, &channel);
    Some((channel, verdict))
}

/// Variables that take effect only when a program starts: the dynamic
/// loader's (LD_PRELOAD, LD_LIBRARY_PATH...), glibc's tunables and malloc
/// settings.
fn read_at_exec(name: &str) -> bool {
    name.starts_with("LD_") || name.starts_with("MALLOC_") || name == "GLIBC_TUNABLES"
}

/// Executes this helper again with exactly the configured environment;
/// returns only on failure.
fn reexecute(args: &Args, config: &Config, channel: Channel) -> std::io::Error {
    let executable = match std::env::current_exe() {
        Ok(path) => path,
        Err(error) => return error,
    };
    let mut command = Command::new(executable);
    command
        .arg("--config")
        .arg(&args.config)
        .args(["--log", args.log.name(), "--environment-applied"])
        .env_clear()
        .envs(&config.pkcs11_environment)
        .stdin(Stdio::from(channel.into_socket()));
    if args.debug {
        command.arg("--debug");
    }
    command.exec()
}
