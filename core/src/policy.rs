//! How authentication behaves per PAM service: the `[auth]` section, its
//! per-service overrides in `[service.<name>]`, and `[session]`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::binding::SESSIONS_DIR;

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

/// `[auth]` and `[service.<name>]` as written: every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthSection {
    card: Option<CardRequirement>,
    wait_for_card: Option<String>,
    pin_source: Option<PinSource>,
    export_pin_as_authtok: Option<bool>,
    unblock_pin: Option<bool>,
    token_timeout: Option<String>,
}

/// `[session]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionSection {
    bindings_dir: Option<PathBuf>,
}

/// Parses `"30s"`, `"500ms"`, `"2m"` or `"0"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
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
    if duration > MAX_WAIT_FOR_CARD {
        return Err(format!(
            "{text:?} is longer than the limit of {} s",
            MAX_WAIT_FOR_CARD.as_secs()
        ));
    }
    Ok(duration)
}

impl AuthSection {
    /// `self`'s keys laid over `base`.
    pub(crate) fn apply(&self, base: &AuthPolicy) -> Result<AuthPolicy, String> {
        Ok(AuthPolicy {
            card: self.card.unwrap_or(base.card),
            wait_for_card: match &self.wait_for_card {
                Some(text) => parse_duration(text).map_err(|e| format!("wait_for_card: {e}"))?,
                None => base.wait_for_card,
            },
            pin_source: self.pin_source.unwrap_or(base.pin_source),
            export_pin_as_authtok: self
                .export_pin_as_authtok
                .unwrap_or(base.export_pin_as_authtok),
            unblock_pin: self.unblock_pin.unwrap_or(base.unblock_pin),
            token_timeout: match &self.token_timeout {
                Some(text) => {
                    let timeout =
                        parse_duration(text).map_err(|e| format!("token_timeout: {e}"))?;
                    let (shortest, longest) = TOKEN_TIMEOUT_RANGE;
                    if timeout < shortest || timeout > longest {
                        return Err(format!(
                            "token_timeout: {text:?} must lie between {} s and {} s",
                            shortest.as_secs(),
                            longest.as_secs()
                        ));
                    }
                    timeout
                }
                None => base.token_timeout,
            },
        })
    }
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

impl SessionSection {
    pub(crate) fn resolve(&self) -> Result<SessionPolicy, String> {
        let bindings_dir = self
            .bindings_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(SESSIONS_DIR));
        if !bindings_dir.is_absolute() {
            return Err(format!(
                "session.bindings_dir: path {bindings_dir:?} must be absolute"
            ));
        }
        Ok(SessionPolicy { bindings_dir })
    }
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
    fn service_sections_override_only_what_they_set() {
        let base = AuthPolicy {
            wait_for_card: Duration::from_secs(5),
            ..AuthPolicy::default()
        };
        let sudo = AuthSection {
            card: Some(CardRequirement::Required),
            ..AuthSection::default()
        };
        let merged = sudo.apply(&base).unwrap();
        assert_eq!(merged.card, CardRequirement::Required);
        assert_eq!(merged.wait_for_card, Duration::from_secs(5));
        assert_eq!(merged.pin_source, PinSource::Prompt);
        assert!(!merged.unblock_pin);

        let passwd = AuthSection {
            unblock_pin: Some(true),
            ..AuthSection::default()
        };
        let merged = passwd.apply(&base).unwrap();
        assert!(merged.unblock_pin);
        assert_eq!(merged.card, CardRequirement::Optional);
    }
}
