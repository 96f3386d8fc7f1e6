//! The daemon's wiring: starts the worker threads and the bus task, then
//! feeds every [`Input`] to the [`Engine`] and carries out its effects
//! (identification, actions, commands, signals, binding clean-up).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tessera_core::binding::{BoundToken, SessionBinding};
use tessera_core::config::eventd::EventdConfig;
use tessera_core::config::Config;
use tessera_core::eventd_api::DBUS_PATH;
use tessera_core::filetrust;
use zbus::object_server::SignalEmitter;
use zruntime::signal::{Signal, Signals};
use zruntime::SharedRuntime;

use crate::api::{Api, SharedStatus, Status};
use crate::bus::{self, Bus};
use crate::engine::{Effect, Engine};
use crate::events::{self, InputReceiver, InputSender};
use crate::identify::{Identifier, Request};
use crate::logind::CallError;
use crate::model::{hex, Identity, Input, Outcome};
use crate::{actions, bindings, command, readers};

/// How long shutdown waits for running actions (a lock in progress).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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

/// Runs the daemon with the configuration at `config_path` until SIGTERM;
/// `dbus_timeout` bounds each D-Bus call.
pub async fn run(config_path: PathBuf, dbus_timeout: Duration) -> ExitCode {
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
    let mut settings = match load_settings(&config_path) {
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
        dbus_timeout,
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
        config = %config_path.display(),
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
    let stopped = daemon.run_loop(&inputs, &config_path, &mut settings).await;
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
        config_path: &Path,
        settings: &mut Settings,
    ) -> ExitCode {
        while let Ok(input) = inputs.recv().await {
            match input {
                Input::Stop => return ExitCode::SUCCESS,
                Input::Reload => self.reload(config_path, settings),
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
                let action = kind.name();
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
                let field = |f: fn(&BoundToken) -> &String| {
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
                    if let Err(CallError::NoSuchSession) = bus.session_path(&session_id).await {
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
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = Status::of(&self.engine);
    }
}
