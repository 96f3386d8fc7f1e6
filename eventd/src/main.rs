//! tessera-eventd: locks the sessions opened with a smart card the moment
//! that card is pulled. Event-driven throughout: it sleeps in
//! `SCardGetStatusChange`, inotify and D-Bus, and never polls.

mod actions;
mod api;
mod bindings;
mod bus;
mod command;
mod engine;
mod events;
mod identify;
mod logind;
mod readers;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use sd_notify::NotifyState;
use tessera_core::binding::SessionBinding;
use tessera_core::config::{Config, DEFAULT_CONFIG_PATH};
use tessera_core::eventd_config::{Escalation, EventdConfig, DBUS_PATH};
use tessera_core::filetrust;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use zbus::object_server::SignalEmitter;
use zruntime::signal::{Signal, Signals};
use zruntime::SharedRuntime;

use crate::actions::{hex, Outcome};
use crate::api::{Api, SharedStatus, Status};
use crate::bus::Bus;
use crate::engine::{Effect, Engine, Identity};
use crate::events::{Input, InputReceiver, InputSender};
use crate::identify::{Identifier, Request};

/// How long shutdown waits for running actions (a lock in progress).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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

/// The parts of the configuration eventd uses, checked.
#[derive(Debug, Clone)]
struct Settings {
    module: PathBuf,
    bindings_dir: PathBuf,
    eventd: EventdConfig,
}

fn load_settings(path: &Path) -> Result<Settings, String> {
    let config = Config::load(path).map_err(|error| error.to_string())?;
    let eventd = config.eventd;
    // The commands run as root: only root may have written them.
    for command in [
        &eventd.remove_command,
        &eventd.escalation_command,
        &eventd.insert_command,
    ]
    .into_iter()
    .flatten()
    {
        filetrust::check_trusted_path(&command.program).map_err(|error| error.to_string())?;
    }
    Ok(Settings {
        module: config.pkcs11_module,
        bindings_dir: config.session.bindings_dir,
        eventd,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let (Some(module), Some(reader)) = (&cli.identify_module, &cli.identify_reader) {
        return identify::helper(module, reader);
    }
    init_logging(cli.log, cli.debug);
    zruntime::block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let runtime = match SharedRuntime::current() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    // Take the signals over before anything else can be started.
    let mut signals = match Signals::new(
        &runtime,
        [Signal::Terminate, Signal::Interrupt, Signal::Hangup],
    ) {
        Ok(signals) => signals,
        Err(error) => {
            tracing::error!(%error, "cannot handle signals");
            return ExitCode::FAILURE;
        }
    };
    let mut settings = match load_settings(&cli.config) {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!(id = "eventd.config.invalid", %error, "cannot start");
            let _ = sd_notify::notify(&[NotifyState::Status("invalid configuration")]);
            return ExitCode::FAILURE;
        }
    };
    let (events, inputs) = events::channel();
    let forward = events.clone();
    zruntime::spawn(async move {
        loop {
            match signals.recv().await {
                Ok(Signal::Hangup) => forward.send_async(Input::Reload).await,
                Ok(_) => forward.send_async(Input::Stop).await,
                Err(error) => {
                    tracing::error!(%error, "signal handling failed");
                    return;
                }
            }
        }
    })
    .detach();

    let status: SharedStatus = Arc::default();
    let bus = Bus::new(runtime.clone());
    zruntime::spawn(bus::supervise(
        bus.clone(),
        status.clone(),
        events.clone(),
        Duration::from_millis(cli.dbus_timeout_ms),
    ))
    .detach();
    let started = (|| {
        let identifier = Identifier::spawn(events.clone(), settings.eventd.identify_timeout)?;
        bindings::spawn(settings.bindings_dir.clone(), events.clone())?;
        let watcher = readers::spawn(events.clone())?;
        Ok::<_, std::io::Error>((identifier, watcher))
    })();
    let (identifier, watcher) = match started {
        Ok(started) => started,
        Err(error) => {
            tracing::error!(%error, "cannot start worker threads");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        id = "eventd.started",
        config = %cli.config.display(),
        module = %settings.module.display(),
        on_remove = ?settings.eventd.on_remove,
        "tessera-eventd {} watching card readers",
        env!("CARGO_PKG_VERSION")
    );

    let mut daemon = Daemon {
        engine: Engine::new(settings.eventd.clone()),
        module: settings.module.clone(),
        sessions_dir: settings.bindings_dir.clone(),
        bus,
        status,
        events,
        identifier,
        ready: Readiness::default(),
    };
    let stopped = daemon.run_loop(&inputs, &cli, &mut settings).await;
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    watcher.stop();
    daemon.drain(&inputs).await;
    tracing::info!(id = "eventd.stopped", "tessera-eventd stopped");
    stopped
}

/// What must have happened before systemd is told the daemon is ready.
#[derive(Debug, Default)]
struct Readiness {
    bindings: bool,
    pcsc: bool,
    notified: bool,
}

struct Daemon {
    engine: Engine,
    module: PathBuf,
    sessions_dir: PathBuf,
    bus: Bus,
    status: SharedStatus,
    events: InputSender,
    identifier: Identifier,
    ready: Readiness,
}

impl Daemon {
    async fn run_loop(
        &mut self,
        inputs: &InputReceiver,
        cli: &Cli,
        settings: &mut Settings,
    ) -> ExitCode {
        while let Ok(input) = inputs.recv().await {
            match input {
                Input::Stop => return ExitCode::SUCCESS,
                Input::Reload => self.reload(&cli.config, settings),
                input => self.handle(input).await,
            }
        }
        ExitCode::SUCCESS
    }

    /// Lets running actions finish (bounded) after a stop.
    async fn drain(&mut self, inputs: &InputReceiver) {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while self.engine.busy() {
            match self.bus.runtime().timeout_at(deadline, inputs.recv()).await {
                Ok(Ok(input @ Input::ActionDone { .. })) => self.handle(input).await,
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!("stopping with actions still running");
                    return;
                }
            }
        }
    }

    fn reload(&mut self, path: &Path, settings: &mut Settings) {
        let _ = sd_notify::notify(&[NotifyState::Reloading]);
        match load_settings(path) {
            Ok(new) => {
                if new.bindings_dir != settings.bindings_dir {
                    tracing::warn!(
                        id = "eventd.config.restart-needed",
                        "session.bindings_dir changed; still watching {} until restarted",
                        settings.bindings_dir.display()
                    );
                }
                tracing::info!(id = "eventd.config.reloaded", config = %path.display(), on_remove = ?new.eventd.on_remove, "configuration reloaded");
                self.engine.set_config(new.eventd.clone());
                self.module = new.module.clone();
                *settings = Settings {
                    bindings_dir: settings.bindings_dir.clone(),
                    ..new
                };
            }
            Err(error) => {
                tracing::error!(id = "eventd.config.invalid", %error, "configuration not reloaded; keeping the previous one");
            }
        }
        let _ = sd_notify::notify(&[NotifyState::Ready]);
    }

    async fn handle(&mut self, input: Input) {
        match &input {
            Input::BindingsRescanned(_) => self.ready.bindings = true,
            Input::PcscAvailable(available) => {
                self.ready.pcsc = true;
                let _ = sd_notify::notify(&[NotifyState::Status(if *available {
                    "watching card readers"
                } else {
                    "waiting for pcscd"
                })]);
            }
            Input::ActionDone {
                session_id,
                outcome,
            } => self.report(session_id, outcome).await,
            _ => {}
        }
        let gone = match &input {
            Input::ActionDone {
                session_id,
                outcome: Outcome::SessionGone,
            } => Some(session_id.clone()),
            _ => None,
        };
        let effects = self.engine.handle(input);
        for effect in effects {
            self.apply(effect).await;
        }
        if let Some(session_id) = gone {
            for effect in self.engine.handle(Input::SessionGone(session_id)) {
                self.apply(effect).await;
            }
        }
        self.refresh_status();
        if self.ready.bindings && self.ready.pcsc && !self.ready.notified {
            self.ready.notified = true;
            let _ = sd_notify::notify(&[NotifyState::Ready]);
            tracing::debug!("ready");
        }
    }

    async fn report(&self, session_id: &str, outcome: &Outcome) {
        let user = self
            .engine
            .sessions()
            .get(session_id)
            .map(|binding| binding.user.clone())
            .unwrap_or_default();
        let emitter = self.bus.connection().and_then(|connection| {
            SignalEmitter::new(&connection, DBUS_PATH)
                .ok()
                .map(|e| e.into_owned())
        });
        match outcome {
            Outcome::Locked => {
                tracing::info!(id = "eventd.session.locked", session = session_id, %user, "session locked");
                if let Some(emitter) = &emitter {
                    let _ = Api::session_locked(emitter, session_id, &user).await;
                }
            }
            Outcome::Escalated(kind) => {
                let action = match kind {
                    Escalation::Terminate => "terminate",
                    Escalation::Command => "command",
                    Escalation::Warn => "warn",
                };
                tracing::warn!(id = "eventd.session.escalated", session = session_id, %user, action, "escalation done");
                if let Some(emitter) = &emitter {
                    let _ = Api::session_escalated(emitter, session_id, &user, action).await;
                }
            }
            Outcome::Terminated => {
                tracing::info!(id = "eventd.session.terminated", session = session_id, %user, "session terminated")
            }
            Outcome::NoAction => {
                tracing::info!(id = "eventd.session.no-action", session = session_id, %user, "on_remove = none")
            }
            Outcome::Skipped(reason) => {
                tracing::info!(id = "eventd.session.skipped", session = session_id, %user, reason, "session left alone")
            }
            Outcome::SessionGone => {
                tracing::info!(id = "eventd.session.gone", session = session_id, %user, "session already ended")
            }
            Outcome::Failed(error) => {
                tracing::error!(id = "eventd.session.failed", session = session_id, %user, %error, "could not act on the session")
            }
        }
    }

    async fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Identify { reader, insertion } => {
                self.identifier
                    .identify(Request {
                        module: self.module.clone(),
                        reader,
                        insertion,
                    })
                    .await;
            }
            Effect::StartGrace { id, delay } => {
                let bus = self.bus.clone();
                let events = self.events.clone();
                zruntime::spawn(async move {
                    bus.sleep(delay).await;
                    events.send_async(Input::GraceExpired(id)).await;
                })
                .detach();
            }
            Effect::Act(request) => {
                tracing::info!(
                    id = "eventd.session.act",
                    session = %request.binding.session_id,
                    user = %request.binding.user,
                    reader = %request.pull.reader,
                    action = ?self.engine.config().on_remove,
                    "acting on a session whose card was pulled"
                );
                let bus = self.bus.clone();
                let events = self.events.clone();
                let config = self.engine.config().clone();
                zruntime::spawn(async move {
                    let outcome = actions::act(&bus, &config, &request).await;
                    events
                        .send_async(Input::ActionDone {
                            session_id: request.binding.session_id.clone(),
                            outcome,
                        })
                        .await;
                })
                .detach();
            }
            Effect::Inserted {
                reader,
                atr,
                token,
                sessions,
            } => {
                tracing::info!(
                    id = "eventd.token.inserted",
                    %reader,
                    label = %token.label,
                    manufacturer = %token.manufacturer,
                    model = %token.model,
                    serial = %token.serial,
                    sessions = sessions.len(),
                    "token inserted"
                );
                if let Some(connection) = self.bus.connection() {
                    if let Ok(emitter) = SignalEmitter::new(&connection, DBUS_PATH) {
                        let _ = Api::token_inserted(
                            &emitter,
                            &reader,
                            &token.label,
                            &token.manufacturer,
                            &token.model,
                            &token.serial,
                        )
                        .await;
                    }
                }
                if let Some(insert_command) = self.engine.config().insert_command.clone() {
                    let env = vec![
                        ("TESSERA_EVENT", "insert".to_owned()),
                        ("TESSERA_READER", reader),
                        ("TESSERA_ATR", hex(&atr)),
                        ("TESSERA_TOKEN_LABEL", token.label),
                        ("TESSERA_TOKEN_MANUFACTURER", token.manufacturer),
                        ("TESSERA_TOKEN_MODEL", token.model),
                        ("TESSERA_TOKEN_SERIAL", token.serial),
                        ("TESSERA_SESSION_IDS", sessions.join(" ")),
                    ];
                    let runtime = self.bus.runtime().clone();
                    let timeout = self.engine.config().command_timeout;
                    zruntime::spawn(async move {
                        command::run(&runtime, "insert_command", &insert_command, &env, timeout)
                            .await;
                    })
                    .detach();
                }
            }
            Effect::Removed(pull) => {
                let token = match &pull.identity {
                    Identity::Token(token) => Some(token.clone()),
                    _ => None,
                };
                let field = |f: fn(&tessera_core::binding::BoundToken) -> &String| {
                    token.as_ref().map(|t| f(t).clone()).unwrap_or_default()
                };
                let (label, manufacturer, model, serial) = (
                    field(|t| &t.label),
                    field(|t| &t.manufacturer),
                    field(|t| &t.model),
                    field(|t| &t.serial),
                );
                tracing::info!(
                    id = "eventd.token.removed",
                    reader = %pull.reader,
                    %label,
                    %serial,
                    identified = token.is_some(),
                    "card pulled"
                );
                if let Some(connection) = self.bus.connection() {
                    if let Ok(emitter) = SignalEmitter::new(&connection, DBUS_PATH) {
                        let _ = Api::token_removed(
                            &emitter,
                            &pull.reader,
                            &label,
                            &manufacturer,
                            &model,
                            &serial,
                        )
                        .await;
                    }
                }
            }
            Effect::CheckSession(session_id) => {
                let bus = self.bus.clone();
                let events = self.events.clone();
                zruntime::spawn(async move {
                    if bus.connection().is_none() {
                        // Checked again on connection (Input::BusConnected).
                        return;
                    }
                    if let Err(logind::CallError::NoSuchSession) =
                        logind::session_path(&bus, &session_id).await
                    {
                        events.send_async(Input::SessionGone(session_id)).await;
                    }
                })
                .detach();
            }
            Effect::ForgetBinding(session_id) => {
                tracing::info!(id = "eventd.binding.forgotten", session = %session_id, "logind no longer knows the session; binding removed");
                if let Err(error) = SessionBinding::remove(&self.sessions_dir, &session_id) {
                    tracing::warn!(session = %session_id, %error, "cannot remove the binding");
                }
            }
        }
    }

    fn refresh_status(&self) {
        let engine = &self.engine;
        let mut status = Status {
            pcsc_available: engine.pcsc_available(),
            ..Status::default()
        };
        for (reader, card) in engine.readers() {
            status.readers.push((
                reader.clone(),
                card.is_some(),
                card.as_ref().map(|card| hex(&card.atr)).unwrap_or_default(),
            ));
            if let Some(card) = card {
                let (state, token) = match &card.identity {
                    Identity::Token(token) => ("identified", Some(token)),
                    Identity::Pending => ("pending", None),
                    Identity::NotAToken => ("not-a-token", None),
                    Identity::Unreadable => ("unreadable", None),
                };
                let field = |f: fn(&tessera_core::binding::BoundToken) -> &String| {
                    token.map(|t| f(t).clone()).unwrap_or_default()
                };
                status.tokens.push((
                    reader.clone(),
                    state.to_owned(),
                    field(|t| &t.label),
                    field(|t| &t.manufacturer),
                    field(|t| &t.model),
                    field(|t| &t.serial),
                    hex(&card.atr),
                ));
            }
        }
        for binding in engine.sessions().values() {
            status.sessions.push((
                binding.session_id.clone(),
                binding.uid,
                binding.user.clone(),
                binding.service.clone(),
                binding.tty.clone(),
                binding.token.label.clone(),
                binding.token.serial.clone(),
                binding.token.slot_description.clone(),
                engine.token_present(&binding.token),
            ));
        }
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = status;
    }
}
