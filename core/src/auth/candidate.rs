//! A certificate or key that may log in: what discovery hands to the
//! choice and to the proof of possession.

use tessera_mappers::PublicKey;

use crate::pki::ValidatedCertificate;
use crate::token::TokenIdentity;

pub use tessera_mappers::TrustBasis;

/// How possession of the key is proven and checked.
pub(crate) enum Proof<'a> {
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
pub(crate) struct Candidate<'a> {
    pub(crate) token: &'a TokenIdentity,
    /// CKA_ID of the key pair.
    pub(crate) id: &'a [u8],
    /// The certificate's subject, or the key's fingerprint.
    pub(crate) subject: String,
    /// The certificate's SHA-256, or empty for a bare key.
    pub(crate) sha256: String,
    /// notBefore and notAfter, seconds since the epoch.
    pub(crate) validity: (u64, u64),
    pub(crate) users: Vec<String>,
    pub(crate) rule: String,
    pub(crate) proof: Proof<'a>,
}
