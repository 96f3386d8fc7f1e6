//! The authentication flow, free of PAM, in three steps:
//! - [`mod@discover`]: token → certificates → validation → mapping
//!   ([`tokens`] finds the tokens and their objects, [`mod@discover`] examines them);
//! - `choose`: one (certificate, user) pair, asked when there are several;
//! - `prove`: PIN → C_Login → challenge signature → verification.
//!
//! The leaves [`failure`], [`request`] and `candidate` hold the types the
//! steps share, so no step imports another (discovery's two halves aside:
//! [`mod@discover`] reads what [`tokens`] found). This file only wires them.

mod candidate;
mod choose;
pub mod discover;
pub mod failure;
#[cfg(test)]
mod flow_tests;
mod prove;
pub mod request;
#[cfg(test)]
pub(crate) mod scripted_conversation;
#[cfg(test)]
mod tests;
pub mod tokens;

use crate::config::Config;
use crate::pki::TrustStore;
use crate::token::TokenBackend;

pub use candidate::TrustBasis;
pub use discover::{discover, Examined, Object, Scope, Verdict};
pub use failure::AuthFailure;
pub use request::{AuthRequest, AuthSuccess};
pub use tessera_ipc::{Conversation, ConversationError, FailureKind, Secret};
pub use tokens::{load_module, matching_tokens, BareKeys, TokenObjects};

/// Runs the whole flow against the tokens of `config`'s PKCS#11 module.
pub fn authenticate(
    config: &Config,
    request: &AuthRequest<'_>,
    conversation: &mut dyn Conversation,
) -> Result<AuthSuccess, AuthFailure> {
    let store = TrustStore::load(&config.ca_paths)
        .map_err(|error| AuthFailure::new(FailureKind::Config, error.to_string()))?;
    tracing::debug!(
        id = "auth.anchors.loaded",
        anchors = store.len(),
        "trust anchors loaded"
    );

    let module = load_module(config)?;
    tracing::debug!(id = "auth.token.module_loaded", module = %config.pkcs11_module.display(), "PKCS#11 module loaded");
    authenticate_with(config, &store, &module, request, conversation)
}

/// The flow against the tokens of `backend`: discover, choose, prove.
pub fn authenticate_with(
    config: &Config,
    store: &TrustStore,
    backend: &dyn TokenBackend,
    request: &AuthRequest<'_>,
    conversation: &mut dyn Conversation,
) -> Result<AuthSuccess, AuthFailure> {
    let tokens = tokens::find_tokens(backend, config, request.policy, conversation)?;
    tracing::debug!(
        id = "auth.token.listed",
        count = tokens.len(),
        "tokens present"
    );
    if tokens.is_empty() {
        return Err(AuthFailure::new(
            FailureKind::NoToken,
            match &config.token_filter {
                Some(filter) => format!("no token matching {filter} present"),
                None => "no token present".to_owned(),
            },
        ));
    }
    let objects = TokenObjects::read(backend, &tokens, BareKeys::as_rules_need(config));
    let scope = Scope::Login { user: request.user };
    let examined = discover(config, store, &objects, scope, request.now)?;
    let (candidates, rejections) = discover::candidates(examined);
    if candidates.is_empty() {
        return Err(no_candidate(
            request,
            !objects.certificates.is_empty(),
            rejections,
            conversation,
        )?);
    }

    let (candidate, user) = choose::choose(candidates, conversation)?;
    if request.user.is_none() {
        conversation.info(&format!("Logging in as {user}"))?;
    }
    let pin = prove::prove_possession(backend, &candidate, request, conversation)?;

    Ok(AuthSuccess {
        user,
        token: candidate.token.clone(),
        subject: candidate.subject,
        certificate_sha256: candidate.sha256,
        rule: candidate.rule,
        validity: candidate.validity,
        pin: pin.filter(|_| request.policy.export_pin_as_authtok),
    })
}

/// The failure when nothing can log in, told to the person first.
fn no_candidate(
    request: &AuthRequest<'_>,
    certificates_present: bool,
    rejections: Vec<(String, crate::pki::Rejection)>,
    conversation: &mut dyn Conversation,
) -> Result<AuthFailure, ConversationError> {
    if let Some((subject, rejection)) = rejections.into_iter().next() {
        conversation.error(&format!("Smart card certificate rejected: {rejection}"))?;
        return Ok(AuthFailure::new(
            FailureKind::CertificateRejected,
            format!("certificate {subject} rejected: {rejection}"),
        ));
    }
    // Say so before the stack moves on to a password: otherwise the user
    // wonders why the card in the reader was not used.
    match request.user {
        Some(user) if certificates_present => {
            conversation.error(&format!("The smart card does not belong to {user}"))?
        }
        _ => {}
    }
    Ok(AuthFailure::new(
        FailureKind::NoMatchingCertificate,
        match request.user {
            Some(user) => format!("no valid certificate on the token(s) maps to user {user}"),
            None => "no valid certificate on the token(s) maps to any user".to_owned(),
        },
    ))
}
