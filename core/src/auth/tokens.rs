//! The first part of discovery: the PKCS#11 module, the tokens present (or
//! awaited), and the certificates and bare keys they hold.

use std::time::Instant;

use tessera_ipc::{Conversation, FailureKind};

use super::failure::AuthFailure;
use crate::config::Config;
use crate::policy::AuthPolicy;
use crate::token::{
    Pkcs11Module, TokenBackend, TokenCertificate, TokenError, TokenIdentity, TokenPublicKey,
};
use crate::wait::CardWatcher;

/// Loads the configured PKCS#11 module.
pub fn load_module(config: &Config) -> Result<Pkcs11Module, AuthFailure> {
    if !config.pkcs11_module.exists() {
        return Err(AuthFailure::new(
            FailureKind::NoModule,
            format!(
                "PKCS#11 module {} does not exist",
                config.pkcs11_module.display()
            ),
        ));
    }
    Pkcs11Module::load(&config.pkcs11_module).map_err(|error| match error {
        TokenError::Untrusted(_) => AuthFailure::new(FailureKind::Config, error.to_string()),
        _ => AuthFailure::new(FailureKind::NoModule, error.to_string()),
    })
}

/// The present tokens that pass the configured filter.
pub fn matching_tokens(
    backend: &dyn TokenBackend,
    config: &Config,
) -> Result<Vec<TokenIdentity>, AuthFailure> {
    let tokens = backend
        .tokens()
        .map_err(|error| AuthFailure::new(FailureKind::TokenUnavailable, error.to_string()))?;
    Ok(match &config.token_filter {
        Some(filter) => tokens
            .into_iter()
            .filter(|token| {
                let wanted = filter.matches(token);
                if !wanted {
                    tracing::debug!(id = "auth.token.filtered_out", token = %token.describe(), %filter, "token does not match pkcs11.token; skipped");
                }
                wanted
            })
            .collect(),
        None => tokens,
    })
}

/// The usable tokens; when there are none and the policy says to wait,
/// asks for a card and waits for one until the deadline.
pub(crate) fn find_tokens(
    backend: &dyn TokenBackend,
    config: &Config,
    policy: &AuthPolicy,
    conversation: &mut dyn Conversation,
) -> Result<Vec<TokenIdentity>, AuthFailure> {
    if policy.wait_for_card.is_zero() {
        return matching_tokens(backend, config);
    }
    // The reader snapshot comes before the token list, so that a card
    // inserted between the two still ends the wait.
    let mut watcher = CardWatcher::start();
    let tokens = matching_tokens(backend, config)?;
    if !tokens.is_empty() {
        return Ok(tokens);
    }
    conversation.info("Insert your smart card")?;
    conversation.waiting_for_card(policy.wait_for_card)?;
    let deadline = Instant::now() + policy.wait_for_card;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(AuthFailure::new(
                FailureKind::NoToken,
                format!(
                    "no token inserted within {} s",
                    policy.wait_for_card.as_secs_f32()
                ),
            ));
        }
        watcher.wait(deadline - now);
        let tokens = matching_tokens(backend, config)?;
        if !tokens.is_empty() {
            return Ok(tokens);
        }
    }
}

/// Whether the public-key objects without a certificate are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareKeys {
    /// Read them: a rule matches keys against authorized files.
    Read,
    /// Leave them: no rule could map them.
    Skip,
}

impl BareKeys {
    /// What a login does: read them only when a rule uses authorized files.
    pub fn as_rules_need(config: &Config) -> Self {
        if config.rules.iter().any(|rule| rule.uses_authorized_files()) {
            BareKeys::Read
        } else {
            BareKeys::Skip
        }
    }
}

/// The certificate and key objects found on the tokens.
#[derive(Debug, Default)]
pub struct TokenObjects {
    /// Every X.509 certificate, token by token.
    pub certificates: Vec<TokenCertificate>,
    /// The public-key objects with no certificate next to them (same token,
    /// same CKA_ID): the keys of OpenPGP cards and bare PIV keys.
    pub bare_keys: Vec<TokenPublicKey>,
    /// Tokens whose objects could not be read, and why; the login skips them.
    pub unreadable: Vec<(TokenIdentity, TokenError)>,
}

impl TokenObjects {
    /// Reads the objects of `tokens`; a token whose objects cannot be read is
    /// skipped with a warning.
    pub fn read(backend: &dyn TokenBackend, tokens: &[TokenIdentity], bare_keys: BareKeys) -> Self {
        let mut objects = TokenObjects::default();
        for token in tokens {
            match backend.certificates(token) {
                Ok(found) => {
                    tracing::debug!(id = "auth.token.certificates_found", token = %token.describe(), count = found.len(), "certificates found");
                    objects.certificates.extend(found);
                }
                Err(error) => {
                    tracing::warn!(id = "auth.token.certificates_unreadable", token = %token.describe(), %error, "cannot read certificates; token skipped");
                    objects.unreadable.push((token.clone(), error));
                }
            }
        }
        if bare_keys == BareKeys::Skip {
            return objects;
        }
        for token in tokens {
            match backend.public_keys(token) {
                Ok(found) => {
                    let certificates = &objects.certificates;
                    objects.bare_keys.extend(found.into_iter().filter(|key| {
                        !certificates
                            .iter()
                            .any(|c| c.token == key.token && c.id == key.id)
                    }))
                }
                Err(error) => {
                    tracing::warn!(id = "auth.token.keys_unreadable", token = %token.describe(), %error, "cannot read public keys; token skipped");
                    objects.unreadable.push((token.clone(), error));
                }
            }
        }
        objects
    }
}
