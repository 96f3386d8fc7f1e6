//! The `[eventd]` section of tessera.toml: what tessera-eventd does when a
//! card is pulled or inserted.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, ConfigText};

/// Longest grace delay: a card may be away this long before the action runs.
const GRACE: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(10 * 60);
/// Bounds of the time a locker gets to set LockedHint.
const LOCK_TIMEOUT: RangeInclusive<Duration> = Duration::from_millis(100)..=Duration::from_secs(60);
/// Bounds of the time a command may run before it is killed.
const COMMAND_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(10 * 60);
/// Bounds of the time a PKCS#11 identification may take before it is killed.
const IDENTIFY_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_millis(500)..=Duration::from_secs(5 * 60);
/// Most arguments (the program included) a command may have.
const MAX_ARGS: usize = 64;
/// Longest single argument.
const MAX_ARG_LEN: usize = 4096;

/// What to do with a session when the card it was opened with is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoveAction {
    /// logind `LockSession`, confirmed through `LockedHint`.
    Lock,
    /// logind `TerminateSession`.
    Terminate,
    /// Nothing (a configured command may still run).
    None,
}

/// What to do when a session did not report itself locked in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Escalation {
    /// logind `TerminateSession`: fail closed.
    Terminate,
    /// Run `escalation_command`.
    Command,
    /// Log an error and leave the session as it is.
    Warn,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEventd {
    on_remove: Option<RemoveAction>,
    remove_command: Option<Spanned<Vec<String>>>,
    grace: Option<Spanned<String>>,
    lock_timeout: Option<Spanned<String>>,
    escalation: Option<Spanned<Escalation>>,
    escalation_command: Option<Spanned<Vec<String>>>,
    only_active: Option<bool>,
    only_local: Option<bool>,
    insert_command: Option<Spanned<Vec<String>>>,
    command_timeout: Option<Spanned<String>>,
    identify_timeout: Option<Spanned<String>>,
}

impl Escalation {
    /// Its name in the file, in logs and in the `SessionEscalated` signal.
    pub fn name(self) -> &'static str {
        match self {
            Self::Terminate => "terminate",
            Self::Command => "command",
            Self::Warn => "warn",
        }
    }
}

/// A program and its arguments, run without a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// Absolute path of the program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

/// The checked `[eventd]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventdConfig {
    /// Action on the sessions of a pulled card.
    pub on_remove: RemoveAction,
    /// Also run this for each such session.
    pub remove_command: Option<CommandLine>,
    /// Wait this long after a pull; re-inserting the same card cancels.
    pub grace: Duration,
    /// Time a session's locker gets to set `LockedHint` after `LockSession`.
    pub lock_timeout: Duration,
    /// What happens when it did not.
    pub escalation: Escalation,
    /// Run for `escalation = "command"`.
    pub escalation_command: Option<CommandLine>,
    /// Act only on sessions logind reports active (in the foreground of their seat).
    pub only_active: bool,
    /// Act only on sessions that are not remote.
    pub only_local: bool,
    /// Run once for each inserted token.
    pub insert_command: Option<CommandLine>,
    /// A command still running after this is killed.
    pub command_timeout: Duration,
    /// A PKCS#11 identification still running after this is killed and
    /// the card left unidentified.
    pub identify_timeout: Duration,
}

impl Default for EventdConfig {
    fn default() -> Self {
        Self {
            on_remove: RemoveAction::Lock,
            remove_command: None,
            grace: Duration::ZERO,
            lock_timeout: Duration::from_secs(5),
            // A session nothing locked stays open at the desk: fail closed.
            escalation: Escalation::Terminate,
            escalation_command: None,
            only_active: false,
            only_local: false,
            insert_command: None,
            command_timeout: Duration::from_secs(30),
            // Slow cards take seconds to list their objects; a module that
            // takes this long is stuck.
            identify_timeout: Duration::from_secs(15),
        }
    }
}

impl EventdConfig {
    /// Checks the raw section.
    pub(super) fn from_raw(raw: RawEventd, config: ConfigText<'_>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let duration = |value: &Option<Spanned<String>>,
                        key: &str,
                        bounds: RangeInclusive<Duration>,
                        default: Duration| {
            value.as_ref().map_or(Ok(default), |value| {
                config.duration_in(value, &format!("eventd.{key}"), bounds)
            })
        };
        let command = |value: &Option<Spanned<Vec<String>>>, key: &str| {
            value
                .as_ref()
                .map(|value| command_line(value, key, config))
                .transpose()
        };
        let escalation = raw
            .escalation
            .as_ref()
            .map_or(defaults.escalation, |e| *e.get_ref());
        let escalation_command = command(&raw.escalation_command, "escalation_command")?;
        match (&raw.escalation, &escalation_command) {
            (Some(chosen), None) if *chosen.get_ref() == Escalation::Command => {
                return Err(config.error(
                    Some(chosen.span()),
                    "eventd.escalation = \"command\" needs eventd.escalation_command".to_owned(),
                ))
            }
            (_, Some(_)) if escalation != Escalation::Command => {
                return Err(config.error(
                    raw.escalation_command.as_ref().map(Spanned::span),
                    "eventd.escalation_command is set but eventd.escalation is not \"command\""
                        .to_owned(),
                ))
            }
            _ => {}
        }
        Ok(Self {
            on_remove: raw.on_remove.unwrap_or(defaults.on_remove),
            remove_command: command(&raw.remove_command, "remove_command")?,
            grace: duration(&raw.grace, "grace", GRACE, defaults.grace)?,
            lock_timeout: duration(
                &raw.lock_timeout,
                "lock_timeout",
                LOCK_TIMEOUT,
                defaults.lock_timeout,
            )?,
            escalation,
            escalation_command,
            only_active: raw.only_active.unwrap_or(defaults.only_active),
            only_local: raw.only_local.unwrap_or(defaults.only_local),
            insert_command: command(&raw.insert_command, "insert_command")?,
            command_timeout: duration(
                &raw.command_timeout,
                "command_timeout",
                COMMAND_TIMEOUT,
                defaults.command_timeout,
            )?,
            identify_timeout: duration(
                &raw.identify_timeout,
                "identify_timeout",
                IDENTIFY_TIMEOUT,
                defaults.identify_timeout,
            )?,
        })
    }
}

fn command_line(
    value: &Spanned<Vec<String>>,
    key: &str,
    config: ConfigText<'_>,
) -> Result<CommandLine, ConfigError> {
    let error =
        |message: String| config.error(Some(value.span()), format!("eventd.{key}: {message}"));
    let argv = value.get_ref();
    let Some((program, args)) = argv.split_first() else {
        return Err(error(
            "empty command; name an absolute program path".to_owned(),
        ));
    };
    if argv.len() > MAX_ARGS {
        return Err(error(format!("more than {MAX_ARGS} arguments")));
    }
    if argv
        .iter()
        .any(|arg| arg.len() > MAX_ARG_LEN || arg.contains('\0'))
    {
        return Err(error(format!(
            "arguments must be under {MAX_ARG_LEN} bytes, without NUL"
        )));
    }
    let program = PathBuf::from(program);
    if !program.is_absolute() {
        // Run without a shell and without PATH: the admin names the program.
        return Err(error(format!(
            "program {:?} must be an absolute path",
            program
        )));
    }
    Ok(CommandLine {
        program,
        args: args.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = "version = 1\n[pki]\nca = [\"/ca\"]\n[[rule]]\nuser = \"{cn}\"\n";

    /// The section read out of a whole file, so positions are the file's.
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        eventd: RawEventd,
    }

    fn parse(eventd: &str) -> Result<EventdConfig, ConfigError> {
        let text = format!("{BASE}[eventd]\n{eventd}");
        let config = ConfigText::new(Path::new("/t.toml"), &text);
        let file: File = toml::from_str(&text)
            .map_err(|error| config.error(error.span(), error.message().to_owned()))?;
        EventdConfig::from_raw(file.eventd, config)
    }

    fn error_at(eventd: &str) -> (usize, String) {
        match parse(eventd).unwrap_err() {
            ConfigError::At { line, message, .. } => (line, message),
            other => panic!("expected a positioned error, got {other}"),
        }
    }

    #[test]
    fn an_empty_section_means_lock_and_terminate_when_nothing_locked() {
        let config = parse("").unwrap();
        assert_eq!(config, EventdConfig::default());
        assert_eq!(config.on_remove, RemoveAction::Lock);
        assert_eq!(config.escalation, Escalation::Terminate);
        assert_eq!(config.grace, Duration::ZERO);
    }

    #[test]
    fn every_key_parses() {
        let config = parse(
            "on_remove = \"terminate\"\nremove_command = [\"/bin/logger\", \"pulled\"]\n\
             grace = \"1500ms\"\nlock_timeout = \"2s\"\nescalation = \"command\"\n\
             escalation_command = [\"/usr/bin/true\"]\nonly_active = true\nonly_local = true\n\
             insert_command = [\"/bin/echo\"]\ncommand_timeout = \"1s\"\n\
             identify_timeout = \"4s\"\n",
        )
        .unwrap();
        assert_eq!(config.on_remove, RemoveAction::Terminate);
        assert_eq!(
            config.remove_command,
            Some(CommandLine {
                program: "/bin/logger".into(),
                args: vec!["pulled".into()]
            })
        );
        assert_eq!(config.grace, Duration::from_millis(1500));
        assert_eq!(config.lock_timeout, Duration::from_secs(2));
        assert_eq!(config.escalation, Escalation::Command);
        assert!(config.only_active && config.only_local);
        assert_eq!(config.command_timeout, Duration::from_secs(1));
        assert_eq!(config.identify_timeout, Duration::from_secs(4));
    }

    #[test]
    fn unknown_keys_and_values_are_refused_with_their_line() {
        let (line, message) = error_at("on_remove = \"lock\"\nlock_on_pull = true\n");
        assert_eq!(line, 8);
        assert!(
            message.contains("unknown field `lock_on_pull`"),
            "{message}"
        );
        let (line, message) = error_at("on_remove = \"logout\"\n");
        assert_eq!(line, 7);
        assert!(message.contains("unknown variant `logout`"), "{message}");
    }

    #[test]
    fn commands_need_an_absolute_program_and_no_shell() {
        let (_, message) = error_at("remove_command = [\"loginctl\", \"lock-sessions\"]\n");
        assert!(message.contains("must be an absolute path"), "{message}");
        let (_, message) = error_at("insert_command = []\n");
        assert!(message.contains("empty command"), "{message}");
    }

    #[test]
    fn escalation_command_and_escalation_must_agree() {
        let (line, message) = error_at("escalation = \"command\"\n");
        assert_eq!(line, 7);
        assert!(
            message.contains("needs eventd.escalation_command"),
            "{message}"
        );
        let (_, message) = error_at("escalation_command = [\"/bin/true\"]\n");
        assert!(message.contains("is not \"command\""), "{message}");
    }

    #[test]
    fn durations_are_bounded() {
        let (line, message) = error_at("lock_timeout = \"0\"\n");
        assert_eq!(line, 7);
        assert!(message.contains("out of range 100ms..=60s"), "{message}");
        assert!(parse("grace = \"11m\"\n").is_err());
        assert!(parse("grace = \"10m\"\n").is_ok());
        let (_, message) = error_at("grace = \"2\"\n");
        assert!(message.contains("needs a unit"), "{message}");
    }

    #[test]
    fn durations_are_bounded_by_their_own_range_only() {
        let (_, message) = error_at("grace = \"11m\"\n");
        assert!(
            message.contains("eventd.grace: \"11m\" is out of range 0ns..=600s"),
            "{message}"
        );
        let (_, message) = error_at("identify_timeout = \"6m\"\n");
        assert!(message.contains("out of range 500ms..=300s"), "{message}");
        assert_eq!(
            parse("command_timeout = \"10m\"\n")
                .unwrap()
                .command_timeout,
            Duration::from_secs(600)
        );
    }
}
