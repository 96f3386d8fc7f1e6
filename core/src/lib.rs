//! tessera's core: configuration, PKCS#11 tokens, certificate validation and
//! the authentication flow. It never calls PAM; it talks to the user through
//! [`auth::Conversation`].

pub mod auth;
pub mod binding;
pub mod challenge;
pub mod config;
pub mod eventd_api;
pub mod mapping;
pub mod pin_change;
pub mod pkcs11_uri;
pub mod pki;
pub mod policy;
pub mod token;
pub mod wait;

/// File-trust checks live with the helper protocol, which the PAM module links.
pub use tessera_ipc::filetrust;

pub use auth::{authenticate, AuthFailure, AuthRequest, AuthSuccess, Conversation, FailureKind};
pub use config::Config;
