//! What a login starts from and what a successful one yields.

use rustls_pki_types::UnixTime;
use tessera_ipc::Secret;

use crate::policy::AuthPolicy;
use crate::token::TokenIdentity;

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
