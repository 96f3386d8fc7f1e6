//! How authentication behaves per PAM service (the `[auth]` section and its
//! per-service overrides in `[service.<name>]`) and `[session]`, once
//! `config` has checked them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Longest `wait_for_card` accepted; PAM callers must never hang for long.
pub const MAX_WAIT_FOR_CARD: Duration = Duration::from_secs(600);

/// Default `token_timeout`: how long the helper may work between two
/// conversation exchanges before the module kills it.
pub const DEFAULT_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The range `token_timeout` must lie in: long enough for a slow card and a
/// revocation fetch, short enough that a hung token does not hold a login.
pub const TOKEN_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(300));

pub use tessera_ipc::CardRequirement;

/// Where the PIN comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinSource {
    /// Always ask through the conversation (default: a password typed for an
    /// earlier module must not burn PIN tries).
    Prompt,
    /// Use PAM_AUTHTOK from an earlier module; fail if there is none.
    UseFirstPass,
    /// Use PAM_AUTHTOK if set; ask if it is missing or wrong.
    TryFirstPass,
}

/// The effective policy for one PAM service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPolicy {
    /// What happens without a usable card.
    pub card: CardRequirement,
    /// How long to wait for a card to be inserted (zero: do not wait).
    pub wait_for_card: Duration,
    /// Where the PIN comes from.
    pub pin_source: PinSource,
    /// After success, set PAM_AUTHTOK to the PIN for later modules (keyrings).
    pub export_pin_as_authtok: bool,
    /// A PIN change finding the user PIN locked offers to unblock it with the
    /// PUK (SO login, then C_InitPIN).
    pub unblock_pin: bool,
    /// The longest the helper may work between two conversation exchanges
    /// (waiting for the person does not count; `wait_for_card` is added).
    pub token_timeout: Duration,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        Self {
            card: CardRequirement::Optional,
            wait_for_card: Duration::ZERO,
            pin_source: PinSource::Prompt,
            export_pin_as_authtok: false,
            unblock_pin: false,
            token_timeout: DEFAULT_TOKEN_TIMEOUT,
        }
    }
}

/// Parses `"30s"`, `"500ms"`, `"2m"` or `"0"`, at most [`MAX_WAIT_FOR_CARD`]
/// (`wait_for_card`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration_unbounded(text)?;
    if duration > MAX_WAIT_FOR_CARD {
        return Err(format!(
            "{:?} is longer than the limit of {} s",
            text.trim(),
            MAX_WAIT_FOR_CARD.as_secs()
        ));
    }
    Ok(duration)
}

/// Parses `"30s"`, `"500ms"`, `"2m"` or `"0"` with no bound of its own: each
/// key that takes a duration checks its own range.
pub fn parse_duration_unbounded(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as \"30s\" or \"500ms\""))?;
    let duration = match unit {
        "ms" => Duration::from_millis(value),
        "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        "" if value == 0 => Duration::ZERO,
        _ => return Err(format!("{text:?} needs a unit: ms, s or m (e.g. \"30s\")")),
    };
    Ok(duration)
}

/// Authentication policy for all services, with per-service overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    /// `[auth]`.
    pub default: AuthPolicy,
    /// `[service.<name>]`, already merged over `[auth]`.
    pub services: BTreeMap<String, AuthPolicy>,
}

impl Policies {
    /// The policy for PAM service `service`.
    pub fn for_service(&self, service: &str) -> &AuthPolicy {
        self.services.get(service).unwrap_or(&self.default)
    }
}

/// Session bindings settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Where session bindings are written.
    pub bindings_dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units_and_are_bounded() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("30").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("11m").unwrap_err().contains("limit"));
        assert!(parse_duration("99999999999999999999s").is_err());
    }

    #[test]
    fn unbounded_durations_leave_the_limit_to_their_key() {
        assert_eq!(
            parse_duration_unbounded("11m"),
            Ok(Duration::from_secs(660))
        );
        assert!(parse_duration_unbounded("11")
            .unwrap_err()
            .contains("needs a unit"));
    }
}
