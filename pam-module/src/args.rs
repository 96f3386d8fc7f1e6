//! Module arguments from the PAM stack line.

use std::path::PathBuf;

use tessera_ipc::logging::LogTarget;
use tessera_ipc::{CardRequirement, DEFAULT_CONFIG_PATH};

/// Parsed module arguments.
#[derive(Debug, Clone)]
pub struct ModuleArgs {
    /// `config=PATH`.
    pub config: PathBuf,
    /// `debug`.
    pub debug: bool,
    /// `log=auto|journald|syslog|stderr`.
    pub log: LogTarget,
    /// `card=optional|required|disabled`, over the config's policy.
    pub card: Option<CardRequirement>,
}

/// An argument the module does not understand.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// Not one of the documented arguments.
    #[error(
        "unknown module argument {0:?}; known: config=PATH, debug, log=auto|journald|syslog|stderr, card=optional|required|disabled"
    )]
    Unknown(String),
    /// `log=` with an unknown target.
    #[error("unknown log target {0:?}; use auto, journald, syslog or stderr")]
    LogTarget(String),
    /// `card=` with an unknown value.
    #[error("unknown card requirement {0:?}; use optional, required or disabled")]
    Card(String),
    /// `config=` with a relative or empty path.
    #[error("config= needs an absolute path, got {0:?}")]
    ConfigPath(String),
}

impl ModuleArgs {
    /// Parses the arguments; unknown ones are an error, so a typo in the PAM
    /// stack cannot silently weaken it.
    pub fn parse(args: &[String]) -> Result<Self, ArgsError> {
        let mut parsed = Self {
            config: PathBuf::from(DEFAULT_CONFIG_PATH),
            debug: false,
            log: LogTarget::Auto,
            card: None,
        };
        for arg in args {
            match arg.split_once('=') {
                None if arg == "debug" => parsed.debug = true,
                Some(("config", path)) => {
                    let path = PathBuf::from(path);
                    if !path.is_absolute() {
                        return Err(ArgsError::ConfigPath(arg.clone()));
                    }
                    parsed.config = path;
                }
                Some(("log", target)) => {
                    parsed.log = LogTarget::from_name(target)
                        .ok_or_else(|| ArgsError::LogTarget(target.to_owned()))?
                }
                Some(("card", requirement)) => {
                    parsed.card = Some(match requirement {
                        "optional" => CardRequirement::Optional,
                        "required" => CardRequirement::Required,
                        "disabled" => CardRequirement::Disabled,
                        other => return Err(ArgsError::Card(other.to_owned())),
                    })
                }
                _ => return Err(ArgsError::Unknown(arg.clone())),
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ModuleArgs, ArgsError> {
        ModuleArgs::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults_and_overrides() {
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.config, PathBuf::from("/etc/tessera/tessera.toml"));
        assert!(!defaults.debug);
        let custom =
            parse(&["config=/tmp/t.toml", "debug", "log=stderr", "card=required"]).unwrap();
        assert_eq!(custom.card, Some(CardRequirement::Required));
        assert_eq!(custom.config, PathBuf::from("/tmp/t.toml"));
        assert!(custom.debug);
        assert_eq!(custom.log, LogTarget::Stderr);
    }

    #[test]
    fn unknown_and_malformed_arguments_are_errors() {
        assert!(matches!(parse(&["debgu"]), Err(ArgsError::Unknown(_))));
        assert!(matches!(
            parse(&["config=rel.toml"]),
            Err(ArgsError::ConfigPath(_))
        ));
        assert!(matches!(parse(&["log=file"]), Err(ArgsError::LogTarget(_))));
        assert!(matches!(parse(&["card=maybe"]), Err(ArgsError::Card(_))));
    }
}
