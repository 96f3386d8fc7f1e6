//! The token operations the login flow and the PIN change use, behind a
//! trait: cryptoki is one implementation, a scripted fake another.

use cryptoki::mechanism::Mechanism;
use tessera_ipc::Secret;

use super::error::{TokenError, UnblockError};
use super::identity::{TokenCertificate, TokenIdentity, TokenPublicKey};

/// The token operations of a login and a PIN change. [`super::Pkcs11Module`]
/// implements them with cryptoki; tests script them.
pub trait TokenBackend {
    /// Every token present in any slot.
    fn tokens(&self) -> Result<Vec<TokenIdentity>, TokenError>;
    /// `token` as it is now (fresh PIN flags).
    fn refresh(&self, token: &TokenIdentity) -> Result<TokenIdentity, TokenError>;
    /// The X.509 certificates on `token`, at most [`super::MAX_CERTIFICATES_PER_TOKEN`].
    fn certificates(&self, token: &TokenIdentity) -> Result<Vec<TokenCertificate>, TokenError>;
    /// The public-key objects on `token`, at most [`super::MAX_CERTIFICATES_PER_TOKEN`].
    fn public_keys(&self, token: &TokenIdentity) -> Result<Vec<TokenPublicKey>, TokenError>;
    /// The token's PIN length limits (ulMinPinLen, ulMaxPinLen).
    fn pin_length_range(&self, token: &TokenIdentity) -> Result<(usize, usize), TokenError>;
    /// Changes the user PIN: logs in with `old`, then sets `new`.
    fn set_pin(&self, token: &TokenIdentity, old: &Secret, new: &Secret) -> Result<(), TokenError>;
    /// Unblocks the user PIN with the PUK (SO PIN) and sets it to `new`.
    fn unblock_pin(
        &self,
        token: &TokenIdentity,
        puk: &Secret,
        new: &Secret,
    ) -> Result<(), UnblockError>;
    /// Opens a session on `token` for logging in and signing.
    fn open_session<'s>(
        &'s self,
        token: &TokenIdentity,
    ) -> Result<Box<dyn SigningSession + 's>, TokenError>;
}

/// A session on one token: log in, then sign with a private key.
pub trait SigningSession {
    /// Logs the user in with `pin`, or through the PIN pad when `None`. A
    /// PIN is always verified, even if the token says it is logged in.
    fn login(&mut self, pin: Option<&Secret>) -> Result<(), TokenError>;
    /// Signs `data` with the one private key whose CKA_ID is `key_id`.
    fn sign(
        &mut self,
        key_id: &[u8],
        mechanism: &Mechanism<'_>,
        data: &[u8],
    ) -> Result<Vec<u8>, TokenError>;
}
