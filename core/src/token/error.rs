//! What goes wrong talking to a PKCS#11 module or token.

use std::path::PathBuf;

use cryptoki::error::{Error as CryptokiError, RvError};

use crate::filetrust::TrustError;

/// What went wrong talking to the PKCS#11 module or token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The module file is not protected from non-root writers.
    #[error("refusing PKCS#11 module: {0}")]
    Untrusted(#[from] TrustError),
    /// The module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {path}: {source}")]
    Load {
        /// Module path.
        path: PathBuf,
        /// Underlying error.
        source: CryptokiError,
    },
    /// A PKCS#11 call failed.
    #[error("PKCS#11 {0}")]
    Call(#[from] CryptokiError),
    /// A private key with the certificate's CKA_ID was not found.
    #[error("no private key with CKA_ID {0} on the token")]
    NoPrivateKey(String),
    /// Several private keys share the certificate's CKA_ID.
    #[error("{count} private keys share CKA_ID {id}; refusing to guess")]
    AmbiguousPrivateKey {
        /// Hex CKA_ID.
        id: String,
        /// How many keys matched.
        count: usize,
    },
}

/// Which step of a PIN unblock failed.
#[derive(Debug, thiserror::Error)]
pub enum UnblockError {
    /// No read-write session could be opened.
    #[error("{0}")]
    Session(TokenError),
    /// The token refused the PUK (C_Login as SO).
    #[error("PUK login: {0}")]
    Puk(TokenError),
    /// The token refused the new PIN (C_InitPIN).
    #[error("setting the new PIN: {0}")]
    NewPin(TokenError),
}

impl TokenError {
    /// The PKCS#11 return value, when this is a failed call.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            TokenError::Call(CryptokiError::Pkcs11(rv, _))
            | TokenError::Load {
                source: CryptokiError::Pkcs11(rv, _),
                ..
            } => Some(*rv),
            _ => None,
        }
    }

    /// True when the token went away during the call.
    pub fn token_gone(&self) -> bool {
        matches!(
            self.rv(),
            Some(
                RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::SessionClosed
                    | RvError::SlotIdInvalid
            )
        )
    }
}
