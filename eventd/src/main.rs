//! tessera-eventd: locks the sessions opened with a smart card the moment
//! that card is pulled. Event-driven throughout: it sleeps in
//! `SCardGetStatusChange`, inotify and D-Bus, and never polls.

mod actions;
mod api;
mod bindings;
mod bus;
mod command;
mod daemon;
mod engine;
mod events;
mod identify;
mod logind;
mod model;
mod readers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tessera_core::config::DEFAULT_CONFIG_PATH;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogTarget {
    /// journald if its socket answers, else standard error.
    Auto,
    /// The systemd journal, with structured fields.
    Journald,
    /// Standard error, one line per event.
    Stderr,
}

/// Locks the sessions opened with a smart card when that card is pulled.
#[derive(Parser, Debug)]
#[command(name = "tessera-eventd", version, about, long_about = None)]
struct Cli {
    /// The configuration file (its [pkcs11] and [eventd] sections).
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Reply timeout of each D-Bus call to logind, in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=120_000))]
    dbus_timeout_ms: u64,
    /// Where log records go.
    #[arg(long, value_enum, default_value_t = LogTarget::Auto)]
    log: LogTarget,
    /// Log debug records too.
    #[arg(long)]
    debug: bool,
    /// Internal: identify the token in `--identify-reader` through this
    /// PKCS#11 module, print the answer and exit (the daemon runs itself so
    /// for each insertion; see identify.rs).
    #[arg(long, hide = true, requires = "identify_reader")]
    identify_module: Option<PathBuf>,
    /// Internal: the reader for `--identify-module`.
    #[arg(long, hide = true, requires = "identify_module")]
    identify_reader: Option<String>,
}

fn init_logging(target: LogTarget, debug: bool) {
    let level = if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
    // Our records at the chosen level; zbus and the rest only when they warn.
    let filter = Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target("tessera_eventd", level)
        .with_target("tessera_core", level);
    let journald = match target {
        LogTarget::Stderr => None,
        LogTarget::Auto | LogTarget::Journald => tracing_journald::layer()
            .map(|layer| {
                // Fields become TESSERA_ID, TESSERA_SESSION...: `journalctl TESSERA_ID=eventd.session.locked`.
                layer
                    .with_syslog_identifier("tessera-eventd".to_owned())
                    .with_field_prefix(Some("TESSERA".to_owned()))
            })
            .ok(),
    };
    let journald_missing = target == LogTarget::Journald && journald.is_none();
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(stderr)
        .init();
    if journald_missing {
        tracing::warn!("journald is not reachable; logging to standard error");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let (Some(module), Some(reader)) = (&cli.identify_module, &cli.identify_reader) {
        return identify::helper(module, reader);
    }
    init_logging(cli.log, cli.debug);
    zruntime::block_on(daemon::run(
        cli.config,
        Duration::from_millis(cli.dbus_timeout_ms),
    ))
}
