//! What tokens report: their identity and PIN state, and the certificate
//! and public-key objects on them.

use rustls_pki_types::CertificateDer;
use tessera_mappers::PublicKey;

/// At most this many certificate objects are read from one token; a hostile
/// or broken token cannot make us read without end.
pub const MAX_CERTIFICATES_PER_TOKEN: usize = 32;

/// Identity and state of a token in a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    /// The slot the token sits in.
    pub slot_id: u64,
    /// The slot's description (often the reader name).
    pub slot_description: String,
    /// CKA token label.
    pub label: String,
    /// Token manufacturer.
    pub manufacturer: String,
    /// Token model.
    pub model: String,
    /// Token serial number.
    pub serial: String,
    /// CKF_USER_PIN_LOCKED.
    pub pin_locked: bool,
    /// CKF_USER_PIN_FINAL_TRY.
    pub pin_final_try: bool,
    /// CKF_USER_PIN_COUNT_LOW.
    pub pin_count_low: bool,
    /// CKF_PROTECTED_AUTHENTICATION_PATH (PIN pad).
    pub protected_authentication_path: bool,
    /// CKF_SO_PIN_LOCKED: the PUK (SO PIN) is locked too.
    pub so_pin_locked: bool,
    /// CKF_SO_PIN_FINAL_TRY.
    pub so_pin_final_try: bool,
}

impl TokenIdentity {
    /// A short human description, e.g. `"Alice's PIV card" (serial 0123)`.
    pub fn describe(&self) -> String {
        if self.serial.is_empty() {
            format!("\"{}\"", self.label)
        } else {
            format!("\"{}\" (serial {})", self.label, self.serial)
        }
    }
}

/// An X.509 certificate object found on a token.
#[derive(Debug, Clone)]
pub struct TokenCertificate {
    /// The token it was found on.
    pub token: TokenIdentity,
    /// CKA_ID, which links it to its private key.
    pub id: Vec<u8>,
    /// CKA_LABEL.
    pub label: String,
    /// CKA_VALUE: the DER certificate (owned, so a validated view of it can
    /// borrow it for as long as the certificate list lives).
    pub der: CertificateDer<'static>,
}

/// Largest attribute of a public-key object read (an RSA-16384 modulus is 2 KiB).
pub const MAX_PUBLIC_KEY_ATTRIBUTE: usize = 4096;

/// A public-key object found on a token.
#[derive(Debug, Clone)]
pub struct TokenPublicKey {
    /// The token it was found on.
    pub token: TokenIdentity,
    /// CKA_ID, which links it to its private key.
    pub id: Vec<u8>,
    /// CKA_LABEL.
    pub label: String,
    /// The key, or why it cannot be used.
    pub key: Result<PublicKey, String>,
}

/// CKA_ID in hex for messages.
pub fn hex_id(id: &[u8]) -> String {
    id.iter().map(|byte| format!("{byte:02x}")).collect()
}
