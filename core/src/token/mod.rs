//! Tokens: what the login flow needs of them ([`TokenBackend`]), the
//! identities and objects they report, and their errors. The PKCS#11
//! implementation is [`Pkcs11Module`]; tests use a scripted fake.

mod backend;
mod error;
mod identity;
mod pkcs11;
#[cfg(test)]
pub(crate) mod scripted;

pub use backend::{SigningSession, TokenBackend};
pub use error::{TokenError, UnblockError};
pub use identity::{
    hex_id, TokenCertificate, TokenIdentity, TokenPublicKey, MAX_CERTIFICATES_PER_TOKEN,
    MAX_PUBLIC_KEY_ATTRIBUTE,
};
pub use pkcs11::{Pkcs11Module, Pkcs11Session};
