//! `tessera login`: the whole authentication flow without PAM, each step
//! printed with the time it was reached.

use std::path::Path;
use std::time::Instant;

use tessera_core::{authenticate, AuthRequest, Config};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use crate::terminal::TerminalConversation;

/// Prints the time since the command started, in milliseconds.
struct SinceStart(Instant);

impl FormatTime for SinceStart {
    fn format_time(
        &self,
        writer: &mut tracing_subscriber::fmt::format::Writer<'_>,
    ) -> std::fmt::Result {
        write!(
            writer,
            "[{:8.1} ms]",
            self.0.elapsed().as_secs_f64() * 1000.0
        )
    }
}

/// Runs the login; returns whether it succeeded.
pub fn run(config_path: &Path, user: Option<&str>, service: &str) -> Result<bool, String> {
    let started = Instant::now();
    let steps = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_timer(SinceStart(started))
        .with_target(false)
        .with_filter(LevelFilter::DEBUG);
    let subscriber = tracing_subscriber::registry().with(steps);
    tracing::subscriber::with_default(subscriber, || {
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
                    "login OK: user {} with {} ({}), rule \"{}\", {elapsed:.1} ms",
                    success.user,
                    success.token.describe(),
                    success.subject,
                    success.rule
                );
                Ok(true)
            }
            Err(failure) => {
                eprintln!(
                    "login FAILED ({:?}): {failure}, {elapsed:.1} ms",
                    failure.kind
                );
                Ok(false)
            }
        }
    })
}
