//! The authentication flow, free of PAM: token → certificates → validation →
//! mapping → PIN → challenge signature → verification.

use std::fmt;
use std::time::Instant;

use cryptoki::error::RvError;
use rustls_pki_types::{CertificateDer, UnixTime};
use tessera_mappers::{
    CertificateFields, MappingContext, MappingInput, Outcome, PublicKey, TokenInfo,
};
use zeroize::Zeroizing;

use crate::challenge::{Challenge, KeyAlgorithm};
use crate::config::Config;
use crate::mapping;
use crate::pki::{self, Rejection, TrustStore, ValidatedCertificate};
use crate::policy::{AuthPolicy, PinSource};
use crate::token::{
    Pkcs11Module, TokenCertificate, TokenError, TokenIdentity, TokenPublicKey, TokenSession,
};
use crate::wait::CardWatcher;

pub use tessera_ipc::{Conversation, ConversationError, FailureKind, Secret};

/// What the caller knows when authentication starts.
#[derive(Debug)]
pub struct AuthRequest<'a> {
    /// The user name the application asked for; `None` when the user is to be
    /// found from the certificate (GDM's smart-card login).
    pub user: Option<&'a str>,
    /// The time certificates are checked against.
    pub now: UnixTime,
    /// The policy of the calling service.
    pub policy: &'a AuthPolicy,
    /// PAM_AUTHTOK set by an earlier module, used only as the policy allows.
    pub authtok: Option<Secret>,
}

/// A successful authentication.
#[derive(Debug)]
pub struct AuthSuccess {
    /// The authenticated user.
    pub user: String,
    /// The token that signed the challenge.
    pub token: TokenIdentity,
    /// Subject DN of the certificate used.
    pub subject: String,
    /// SHA-256 fingerprint of the certificate used.
    pub certificate_sha256: String,
    /// The rule that mapped the certificate to the user.
    pub rule: String,
    /// The certificate's notBefore and notAfter, seconds since the epoch,
    /// for account checks after authentication.
    pub validity: (u64, u64),
    /// The PIN, kept only when the policy exports it as PAM_AUTHTOK.
    pub pin: Option<Secret>,
}

/// A failed authentication: its class and a message for the log.
#[derive(Debug, Clone)]
pub struct AuthFailure {
    /// The class of failure.
    pub kind: FailureKind,
    /// What happened, for the log (never contains the PIN).
    pub message: String,
}

impl AuthFailure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ConversationError> for AuthFailure {
    fn from(error: ConversationError) -> Self {
        AuthFailure::new(FailureKind::Conversation, error.to_string())
    }
}

/// How possession of the key is proven and checked.
enum Proof<'a> {
    /// A certificate that passed path validation; the signature is checked
    /// with it.
    Certificate {
        der: &'a [u8],
        // Boxed: the webpki view is large next to a key.
        validated: Box<ValidatedCertificate<'a>>,
    },
    /// A key listed in the user's authorized files (no chain validation
    /// applies); the signature is checked with the listed key.
    Key(PublicKey),
}

/// A certificate or key that may log in, with the users it maps to.
struct Candidate<'a> {
    token: &'a TokenIdentity,
    /// CKA_ID of the key pair.
    id: &'a [u8],
    /// The certificate's subject, or the key's fingerprint.
    subject: String,
    /// The certificate's SHA-256, or empty for a bare key.
    sha256: String,
    validity: (u64, u64),
    users: Vec<String>,
    rule: String,
    proof: Proof<'a>,
}

/// A mapping decision for one certificate or key.
pub(crate) struct Mapped {
    /// The rule that decided.
    pub(crate) rule: String,
    /// The users, in order.
    pub(crate) users: Vec<String>,
    /// Matched on the public key alone (authorized files).
    pub(crate) key_only: bool,
}

/// The mapping step: the users a certificate (or bare key) maps to under the
/// configured rules, restricted to the wanted user and to users that exist
/// in NSS. `Ok(None)` when it is not for this login; `Err` when a mapping
/// source failed (fail closed: no later rule or certificate is tried).
pub(crate) fn map_to_users(
    config: &Config,
    context: &MappingContext<'_>,
    fields: Option<&CertificateFields>,
    key: Option<&PublicKey>,
    token: &TokenIdentity,
    wanted: Option<&str>,
) -> Result<Option<Mapped>, AuthFailure> {
    let token_info = TokenInfo {
        label: token.label.clone(),
        serial: token.serial.clone(),
    };
    let input = MappingInput {
        certificate: fields,
        key,
        token: &token_info,
        requested_user: wanted,
    };
    match mapping::map(config, context, &input).outcome {
        Outcome::Matched {
            rule,
            users,
            key_only,
        } => Ok(Some(Mapped {
            rule,
            users,
            key_only,
        })),
        Outcome::NoMatch => Ok(None),
        Outcome::Error {
            rule,
            message,
            unavailable,
        } => {
            let kind = if unavailable {
                FailureKind::MappingUnavailable
            } else {
                FailureKind::Config
            };
            Err(AuthFailure::new(
                kind,
                format!("mapping rule \"{rule}\": {message}"),
            ))
        }
    }
}

/// Loads the configured PKCS#11 module.
pub(crate) fn load_module(config: &Config) -> Result<Pkcs11Module, AuthFailure> {
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
pub(crate) fn matching_tokens(
    module: &Pkcs11Module,
    config: &Config,
) -> Result<Vec<TokenIdentity>, AuthFailure> {
    let tokens = module
        .tokens()
        .map_err(|error| AuthFailure::new(FailureKind::TokenUnavailable, error.to_string()))?;
    Ok(match &config.token_filter {
        Some(filter) => tokens
            .into_iter()
            .filter(|token| {
                let wanted = filter.matches(token);
                if !wanted {
                    tracing::debug!(token = %token.describe(), %filter, "token does not match pkcs11.token; skipped");
                }
                wanted
            })
            .collect(),
        None => tokens,
    })
}

/// The usable tokens; when there are none and the policy says to wait,
/// asks for a card and waits for one until the deadline.
fn find_tokens(
    module: &Pkcs11Module,
    config: &Config,
    policy: &AuthPolicy,
    conversation: &mut dyn Conversation,
) -> Result<Vec<TokenIdentity>, AuthFailure> {
    if policy.wait_for_card.is_zero() {
        return matching_tokens(module, config);
    }
    // The reader snapshot comes before the token list, so that a card
    // inserted between the two still ends the wait.
    let mut watcher = CardWatcher::start();
    let tokens = matching_tokens(module, config)?;
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
        let tokens = matching_tokens(module, config)?;
        if !tokens.is_empty() {
            return Ok(tokens);
        }
    }
}

/// The public-key objects on `tokens` that have no certificate next to them
/// (same token, same CKA_ID): the keys of OpenPGP cards and bare PIV keys.
fn read_bare_keys(
    module: &Pkcs11Module,
    tokens: &[TokenIdentity],
    certificates: &[TokenCertificate],
) -> Vec<TokenPublicKey> {
    let mut keys = Vec::new();
    for token in tokens {
        match module.public_keys(token) {
            Ok(found) => keys.extend(found.into_iter().filter(|key| {
                !certificates
                    .iter()
                    .any(|c| c.token == key.token && c.id == key.id)
            })),
            Err(error) => {
                tracing::warn!(token = %token.describe(), %error, "cannot read public keys; token skipped")
            }
        }
    }
    keys
}

/// Every X.509 certificate on `tokens`; a token whose objects cannot be read
/// is skipped with a warning.
pub(crate) fn read_certificates(
    module: &Pkcs11Module,
    tokens: &[TokenIdentity],
) -> Vec<TokenCertificate> {
    let mut certificates = Vec::new();
    for token in tokens {
        match module.certificates(token) {
            Ok(found) => {
                tracing::debug!(token = %token.describe(), count = found.len(), "certificates found");
                certificates.extend(found);
            }
            Err(error) => {
                tracing::warn!(token = %token.describe(), %error, "cannot read certificates; token skipped")
            }
        }
    }
    certificates
}

/// Runs the whole flow against the tokens of `config`'s PKCS#11 module.
pub fn authenticate(
    config: &Config,
    request: &AuthRequest<'_>,
    conversation: &mut dyn Conversation,
) -> Result<AuthSuccess, AuthFailure> {
    let store = TrustStore::load(&config.ca_paths)
        .map_err(|error| AuthFailure::new(FailureKind::Config, error.to_string()))?;
    tracing::debug!(anchors = store.len(), "trust anchors loaded");

    let module = load_module(config)?;
    tracing::debug!(module = %config.pkcs11_module.display(), "PKCS#11 module loaded");
    let tokens = find_tokens(&module, config, request.policy, conversation)?;
    tracing::debug!(count = tokens.len(), "tokens present");
    if tokens.is_empty() {
        return Err(AuthFailure::new(
            FailureKind::NoToken,
            match &config.token_filter {
                Some(filter) => format!("no token matching {filter} present"),
                None => "no token present".to_owned(),
            },
        ));
    }
    let token_certificates = read_certificates(&module, &tokens);
    let ders: Vec<CertificateDer<'_>> = token_certificates
        .iter()
        .map(|certificate| CertificateDer::from(certificate.der.as_slice()))
        .collect();

    // One revocation budget for the whole login, however many certificates.
    let deadline = pki::Deadline::after(config.pki.revocation_timeout);
    let bare_keys = if config.rules.iter().any(|rule| rule.uses_authorized_files()) {
        read_bare_keys(&module, &tokens, &token_certificates)
    } else {
        Vec::new()
    };
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    let mut rejections: Vec<(String, Rejection)> = Vec::new();
    let now = Some(request.now.as_secs());
    mapping::with_context(config, now, |context| -> Result<(), AuthFailure> {
        for (index, certificate) in token_certificates.iter().enumerate() {
            let fields = match CertificateFields::from_der(&certificate.der) {
                Ok(fields) => fields,
                Err(error) => {
                    tracing::info!(token = %certificate.token.describe(), label = %certificate.label, %error, "certificate skipped");
                    continue;
                }
            };
            let Some(mapped) = map_to_users(
                config,
                context,
                Some(&fields),
                fields.public_key.as_ref(),
                &certificate.token,
                request.user,
            )?
            else {
                continue;
            };
            let (proof, validity) = if mapped.key_only {
                let Some(key) = fields.public_key.clone() else {
                    continue;
                };
                tracing::info!(subject = %fields.subject, rule = %mapped.rule, "certificate key is in the user's authorized files; no chain validation");
                (Proof::Key(key), (0, u64::MAX))
            } else {
                // Intermediates may sit on the same token, next to the user's certificate.
                let intermediates: Vec<CertificateDer<'_>> = ders
                    .iter()
                    .enumerate()
                    .filter(|(other, _)| {
                        *other != index && token_certificates[*other].token == certificate.token
                    })
                    .map(|(_, der)| der.clone())
                    .collect();
                match pki::validate(
                    &store,
                    &config.pki,
                    &ders[index],
                    &intermediates,
                    request.now,
                    &deadline,
                ) {
                    Ok(validated) => {
                        tracing::debug!(subject = %fields.subject, "certificate valid");
                        (
                            Proof::Certificate {
                                der: &certificate.der,
                                validated: Box::new(validated),
                            },
                            pki::validity_window(&certificate.der),
                        )
                    }
                    Err(rejection) => {
                        tracing::warn!(subject = %fields.subject, token = %certificate.token.describe(), reason = %rejection, "certificate rejected");
                        rejections.push((fields.subject.clone(), rejection));
                        continue;
                    }
                }
            };
            candidates.push(Candidate {
                token: &certificate.token,
                id: &certificate.id,
                subject: fields.subject.clone(),
                sha256: fields.sha256_hex.clone(),
                validity,
                users: mapped.users,
                rule: mapped.rule,
                proof,
            });
        }
        for bare in &bare_keys {
            let key = match &bare.key {
                Ok(key) => key,
                Err(error) => {
                    tracing::debug!(token = %bare.token.describe(), label = %bare.label, %error, "public key skipped");
                    continue;
                }
            };
            let Some(mapped) =
                map_to_users(config, context, None, Some(key), &bare.token, request.user)?
            else {
                continue;
            };
            candidates.push(Candidate {
                token: &bare.token,
                id: &bare.id,
                subject: format!("{} key {}", key.kind(), key.fingerprint()),
                sha256: String::new(),
                // No certificate, so no validity period: the authorized file decides.
                validity: (0, u64::MAX),
                users: mapped.users,
                rule: mapped.rule,
                proof: Proof::Key(key.clone()),
            });
        }
        Ok(())
    })?;

    if candidates.is_empty() {
        if let Some((subject, rejection)) = rejections.into_iter().next() {
            conversation.error(&format!("Smart card certificate rejected: {rejection}"))?;
            return Err(AuthFailure::new(
                FailureKind::CertificateRejected,
                format!("certificate {subject} rejected: {rejection}"),
            ));
        }
        // Say so before the stack moves on to a password: otherwise the user
        // wonders why the card in the reader was not used.
        match request.user {
            Some(user) if !token_certificates.is_empty() => {
                conversation.error(&format!("The smart card does not belong to {user}"))?
            }
            _ => {}
        }
        return Err(AuthFailure::new(
            FailureKind::NoMatchingCertificate,
            match request.user {
                Some(user) => format!("no valid certificate on the token(s) maps to user {user}"),
                None => "no valid certificate on the token(s) maps to any user".to_owned(),
            },
        ));
    }

    let (candidate, user) = choose(candidates, conversation)?;
    if request.user.is_none() {
        conversation.info(&format!("Logging in as {user}"))?;
    }
    let pin = prove_possession(&module, &candidate, request, conversation)?;

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

/// Picks one (certificate, user) pair; asks the user when there are several.
fn choose<'a>(
    candidates: Vec<Candidate<'a>>,
    conversation: &mut dyn Conversation,
) -> Result<(Candidate<'a>, String), AuthFailure> {
    let mut options: Vec<(usize, String)> = candidates
        .iter()
        .enumerate()
        .flat_map(|(index, candidate)| {
            candidate
                .users
                .iter()
                .map(move |user| (index, user.clone()))
        })
        .collect();
    let chosen = if options.len() == 1 {
        0
    } else {
        let mut listing = String::from("Several certificates can log you in:");
        for (number, (index, user)) in options.iter().enumerate() {
            let candidate = &candidates[*index];
            listing.push_str(&format!(
                "\n  {}. {user}: {} on {}",
                number + 1,
                candidate.subject,
                candidate.token.describe()
            ));
        }
        conversation.info(&listing)?;
        // People type their PIN here by mistake: the answer is wiped, and
        // neither logged nor shown back.
        let answer = Zeroizing::new(
            conversation.prompt_visible(&format!("Choose [1-{}]: ", options.len()))?,
        );
        match answer.trim().parse::<usize>() {
            Ok(number) if (1..=options.len()).contains(&number) => number - 1,
            _ => {
                conversation.error("Invalid choice")?;
                return Err(AuthFailure::new(
                    FailureKind::WrongPin,
                    format!(
                        "the answer to the certificate choice was not a number from 1 to {}",
                        options.len()
                    ),
                ));
            }
        }
    };
    let (index, user) = options.swap_remove(chosen);
    let candidate = candidates
        .into_iter()
        .nth(index)
        .ok_or_else(|| AuthFailure::new(FailureKind::Internal, "candidate index out of range"))?;
    Ok((candidate, user))
}

/// Logs in with the PIN, has the token sign a fresh challenge with the key of
/// the certificate's CKA_ID, and verifies the signature with that certificate.
/// Returns the PIN that worked (None with a PIN pad).
fn prove_possession(
    module: &Pkcs11Module,
    candidate: &Candidate<'_>,
    request: &AuthRequest<'_>,
    conversation: &mut dyn Conversation,
) -> Result<Option<Secret>, AuthFailure> {
    let token = candidate.token;
    let algorithm = match &candidate.proof {
        Proof::Certificate { der, .. } => KeyAlgorithm::of_certificate(der).map_err(|error| {
            AuthFailure::new(FailureKind::CertificateRejected, error.to_string())
        })?,
        Proof::Key(key) => KeyAlgorithm::of_public_key(key),
    };

    if token.pin_locked {
        conversation.error(&format!("The PIN of {} is locked", token.label))?;
        return Err(AuthFailure::new(
            FailureKind::PinLocked,
            format!("PIN of token {} is locked", token.describe()),
        ));
    }

    let mut session = module
        .open_session(token)
        .map_err(|error| AuthFailure::new(FailureKind::TokenUnavailable, error.to_string()))?;

    let pin = if token.protected_authentication_path {
        conversation.info("Enter your PIN on the reader's PIN pad")?;
        session
            .login(None)
            .map_err(|error| login_failure(error, token))?;
        None
    } else {
        Some(log_in_with_pin(
            module,
            &mut session,
            token,
            request,
            conversation,
        )?)
    };
    tracing::debug!(token = %token.describe(), "logged in to the token");

    let proof_failed = |error: &dyn fmt::Display| {
        AuthFailure::new(
            FailureKind::ProofFailed,
            format!("proof of possession with {}: {error}", token.describe()),
        )
    };
    let key = session
        .private_key(candidate.id)
        .map_err(|error| proof_failed(&error))?;
    let challenge = Challenge::generate().map_err(|error| {
        AuthFailure::new(
            FailureKind::Internal,
            format!("no randomness for the challenge: {error}"),
        )
    })?;
    let (mechanism, input) = algorithm.signing_input(&challenge);
    let signature = session
        .sign(&mechanism, key, &input)
        .map_err(|error| proof_failed(&error))?;
    tracing::debug!(bytes = signature.len(), "token signed the challenge");
    match &candidate.proof {
        Proof::Certificate { validated, .. } => {
            algorithm.verify(validated.end_entity(), &challenge, &signature)
        }
        Proof::Key(key) => algorithm.verify_with_key(key, &challenge, &signature),
    }
    .map_err(|error| proof_failed(&error))?;
    tracing::debug!(token = %token.describe(), ?algorithm, "challenge signature verified");
    Ok(pin)
}

/// Warns about a low retry counter, then logs in with PAM_AUTHTOK or a
/// prompted PIN as the policy says. An empty PIN never reaches C_Login.
fn log_in_with_pin(
    module: &Pkcs11Module,
    session: &mut TokenSession,
    token: &TokenIdentity,
    request: &AuthRequest<'_>,
    conversation: &mut dyn Conversation,
) -> Result<Secret, AuthFailure> {
    // A password meant for an earlier module must not spend the last PIN
    // tries: with the retry counter low, the person is asked instead.
    let counter_low = token.pin_final_try || token.pin_count_low;
    let first_pass = match request.policy.pin_source {
        PinSource::Prompt => None,
        PinSource::UseFirstPass | PinSource::TryFirstPass if counter_low => {
            tracing::info!(token = %token.describe(), "the PIN retry counter is low; asking for the PIN instead of trying PAM_AUTHTOK");
            None
        }
        PinSource::UseFirstPass | PinSource::TryFirstPass => request
            .authtok
            .as_ref()
            .filter(|authtok| !authtok.expose().is_empty()),
    };
    if let Some(authtok) = first_pass {
        match try_login(session, token, authtok) {
            Ok(()) => return Ok(Secret::new(authtok.expose().clone())),
            Err(failure)
                if failure.kind == FailureKind::WrongPin
                    && request.policy.pin_source == PinSource::TryFirstPass =>
            {
                tracing::info!(token = %token.describe(), "PAM_AUTHTOK is not the PIN; asking for it");
            }
            Err(failure) => {
                report_login_failure(&failure, token, conversation)?;
                return Err(failure);
            }
        }
    } else if request.policy.pin_source == PinSource::UseFirstPass && !counter_low {
        return Err(AuthFailure::new(
            FailureKind::WrongPin,
            "pin_source = \"use_first_pass\" but no earlier module set PAM_AUTHTOK",
        ));
    }

    // A failed PAM_AUTHTOK try may have changed the PIN flags.
    let fresh = module.refresh(token).unwrap_or_else(|_| token.clone());
    if fresh.pin_locked {
        conversation.error(&format!("The PIN of {} is locked", token.label))?;
        return Err(AuthFailure::new(
            FailureKind::PinLocked,
            format!("PIN of token {} is locked", token.describe()),
        ));
    }
    if fresh.pin_final_try {
        conversation.error("Warning: one more wrong PIN will lock the card")?;
    } else if fresh.pin_count_low {
        conversation.error("Warning: a wrong PIN was entered recently")?;
    }
    let pin = Secret::new(conversation.prompt_secret(&format!("PIN for {}: ", token.label))?);
    if pin.expose().is_empty() {
        return Err(AuthFailure::new(FailureKind::WrongPin, "empty PIN"));
    }
    if let Err(failure) = try_login(session, token, &pin) {
        report_login_failure(&failure, token, conversation)?;
        return Err(failure);
    }
    Ok(pin)
}

fn try_login(
    session: &mut TokenSession,
    token: &TokenIdentity,
    pin: &Secret,
) -> Result<(), AuthFailure> {
    if pin.expose().is_empty() {
        return Err(AuthFailure::new(FailureKind::WrongPin, "empty PIN"));
    }
    session
        .login(Some(pin.expose()))
        .map_err(|error| login_failure(error, token))
}

fn report_login_failure(
    failure: &AuthFailure,
    token: &TokenIdentity,
    conversation: &mut dyn Conversation,
) -> Result<(), AuthFailure> {
    match failure.kind {
        FailureKind::WrongPin => conversation.error("Incorrect PIN")?,
        FailureKind::PinLocked => {
            conversation.error(&format!("The PIN of {} is locked", token.label))?
        }
        _ => {}
    }
    Ok(())
}

pub(crate) fn login_failure(error: TokenError, token: &TokenIdentity) -> AuthFailure {
    let kind = match error.rv() {
        Some(RvError::PinIncorrect | RvError::PinLenRange | RvError::PinInvalid) => {
            FailureKind::WrongPin
        }
        Some(RvError::PinLocked) => FailureKind::PinLocked,
        _ if error.token_gone() => FailureKind::TokenUnavailable,
        // Fail closed: any other login error is an authentication failure.
        _ => FailureKind::ProofFailed,
    };
    AuthFailure::new(
        kind,
        format!("login to {} failed: {error}", token.describe()),
    )
}
