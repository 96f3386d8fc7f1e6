//! `[auth]` and its per-service overrides `[service.<name>]`: how
//! authentication behaves for each PAM service.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, ConfigText};
use crate::pki::policy::{Policy as PkiPolicy, RevocationMode};
use crate::policy::{
    parse_duration, parse_duration_unbounded, AuthPolicy, CardRequirement, PinSource, Policies,
    TOKEN_TIMEOUT_RANGE,
};

/// `[auth]` and `[service.<name>]` as written: every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthSection {
    card: Option<CardRequirement>,
    wait_for_card: Option<String>,
    pin_source: Option<PinSource>,
    export_pin_as_authtok: Option<bool>,
    unblock_pin: Option<bool>,
    token_timeout: Option<String>,
}

/// `[auth]` merged over the defaults, then each `[service.<name>]` over `[auth]`.
pub(super) fn policies(
    auth: Option<&Spanned<AuthSection>>,
    services: &BTreeMap<String, Spanned<AuthSection>>,
    pki: &PkiPolicy,
    config: ConfigText<'_>,
) -> Result<Policies, ConfigError> {
    let default = match auth {
        Some(auth) => auth
            .get_ref()
            .apply(&AuthPolicy::default())
            .map_err(|message| config.error(Some(auth.span()), format!("auth.{message}")))?,
        None => AuthPolicy::default(),
    };
    let mut merged = BTreeMap::new();
    for (name, section) in services {
        let policy = section.get_ref().apply(&default).map_err(|message| {
            config.error(Some(section.span()), format!("service.{name}.{message}"))
        })?;
        merged.insert(name.clone(), policy);
    }
    // The revocation budget is spent inside the helper's deadline.
    if pki.revocation != RevocationMode::None {
        let sections = std::iter::once(("auth".to_owned(), &default, auth.map(Spanned::span)))
            .chain(merged.iter().map(|(name, policy)| {
                (
                    format!("service.{name}"),
                    policy,
                    services.get(name).map(Spanned::span),
                )
            }));
        for (section, policy, span) in sections {
            if policy.token_timeout <= pki.revocation_timeout {
                return Err(config.error(
                    span,
                    format!(
                        "{section}.token_timeout ({} ms) must be longer than pki.revocation_timeout_ms ({} ms)",
                        policy.token_timeout.as_millis(),
                        pki.revocation_timeout.as_millis()
                    ),
                ));
            }
        }
    }
    Ok(Policies {
        default,
        services: merged,
    })
}

impl AuthSection {
    /// `self`'s keys laid over `base`; a message starting with the key
    /// (positioned at the table by the caller, which knows its name).
    fn apply(&self, base: &AuthPolicy) -> Result<AuthPolicy, String> {
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
                Some(text) => token_timeout(text)?,
                None => base.token_timeout,
            },
        })
    }
}

fn token_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration_unbounded(text).map_err(|e| format!("token_timeout: {e}"))?;
    let (shortest, longest) = TOKEN_TIMEOUT_RANGE;
    if timeout < shortest || timeout > longest {
        return Err(format!(
            "token_timeout: {text:?} must lie between {} s and {} s",
            shortest.as_secs(),
            longest.as_secs()
        ));
    }
    Ok(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn token_timeout_is_bounded_by_its_own_range_not_wait_for_cards() {
        let section = AuthSection {
            token_timeout: Some("11m".to_owned()),
            ..AuthSection::default()
        };
        let message = section.apply(&AuthPolicy::default()).unwrap_err();
        assert!(
            message.contains("token_timeout: \"11m\" must lie between 1 s and 300 s"),
            "{message}"
        );
    }
}
