//! `tessera login`: the whole authentication flow without PAM, each step
//! printed with the time it was reached in its run.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tessera_core::{authenticate, AuthRequest, Config};
use tessera_ipc::client::{self, HelperCommand};
use tessera_ipc::logging::LogTarget;
use tessera_ipc::protocol::{Operation, Request, Verdict, PROTOCOL_VERSION};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use crate::terminal::TerminalConversation;

/// Prints the time since the current run started, in milliseconds.
struct SinceStart(Arc<Mutex<Instant>>);

impl FormatTime for SinceStart {
    fn format_time(
        &self,
        writer: &mut tracing_subscriber::fmt::format::Writer<'_>,
    ) -> std::fmt::Result {
        let started = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
        write!(
            writer,
            "[{:9.3} ms]",
            started.elapsed().as_secs_f64() * 1000.0
        )
    }
}

/// Runs the login `repeat` times; returns whether every run succeeded.
pub fn run(
    config_path: &Path,
    user: Option<&str>,
    service: &str,
    repeat: u32,
    helper: bool,
) -> Result<bool, String> {
    let started = Arc::new(Mutex::new(Instant::now()));
    let steps = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_timer(SinceStart(started.clone()))
        .with_target(false)
        .with_filter(LevelFilter::DEBUG);
    let subscriber = tracing_subscriber::registry().with(steps);
    tracing::subscriber::with_default(subscriber, || {
        let mut all_succeeded = true;
        for _ in 0..repeat {
            *started.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
            all_succeeded &= if helper {
                run_in_helper(config_path, user, service)
            } else {
                run_once(config_path, user, service)?
            };
        }
        Ok(all_succeeded)
    })
}

/// One login through the helper, from spawning it to its verdict: what
/// pam_tessera.so does, without libpam.
fn run_in_helper(config_path: &Path, user: Option<&str>, service: &str) -> bool {
    let started = Instant::now();
    let command = HelperCommand::installed(config_path, true, LogTarget::Stderr);
    let request = Request {
        version: PROTOCOL_VERSION,
        service: service.to_owned(),
        card: None,
        operation: Operation::Authenticate {
            user: user.map(str::to_owned),
            authtok: None,
        },
    };
    let exchange = client::run(&command, request, &mut TerminalConversation);
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    match exchange.result {
        Ok(Verdict::Authenticated(success)) => {
            eprintln!(
                "login OK: user {} with token {} (certificate SHA-256 {}), in the helper {}, {elapsed:.3} ms",
                success.user,
                success.record.token.label,
                success.record.certificate_sha256,
                command.path.display()
            );
            true
        }
        Ok(Verdict::Failed { kind, message }) => {
            eprintln!("login FAILED ({kind:?}): {message}, {elapsed:.3} ms");
            false
        }
        Ok(other) => {
            eprintln!("login FAILED: the helper answered {other:?}, {elapsed:.3} ms");
            false
        }
        Err(error) => {
            eprintln!("login FAILED: {error}, {elapsed:.3} ms");
            false
        }
    }
}

/// One login, from loading the config to the result line.
fn run_once(config_path: &Path, user: Option<&str>, service: &str) -> Result<bool, String> {
    let started = Instant::now();
    let config = Config::load(config_path).map_err(|error| error.to_string())?;
    let policy = config.policies.for_service(service).clone();
    tracing::debug!(service, path = %config_path.display(), "configuration loaded");
    // The CLI is an entry point: it reads the clock.
    #[allow(clippy::disallowed_methods)]
    let now = rustls_pki_types::UnixTime::now();
    let request = AuthRequest {
        user,
        now,
        policy: &policy,
        authtok: None,
    };
    let result = authenticate(&config, &request, &mut TerminalConversation);
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(success) => {
            eprintln!(
                "login OK: user {} with {} ({}), rule \"{}\", {elapsed:.3} ms",
                success.user,
                success.token.describe(),
                success.subject,
                success.rule
            );
            Ok(true)
        }
        Err(failure) => {
            eprintln!(
                "login FAILED ({:?}): {failure}, {elapsed:.3} ms",
                failure.kind
            );
            Ok(false)
        }
    }
}
