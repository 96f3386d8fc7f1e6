//! What the rules consult besides the certificate: NSS, trusted files, the
//! directory and the mapping cache, as the caller hands them in.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use crate::authorized::Account;
use crate::cache::MappingCache;
use crate::certificate::CertificateFields;
use crate::conditions::TokenInfo;
use crate::ldap::LdapDirectory;
use crate::mapfile::{MapFile, MapFileError};
use crate::public_key::PublicKey;

/// NSS, as the mapping sees it.
pub trait Accounts {
    /// The account called `name`, `Ok(None)` when there is none.
    fn lookup(&self, name: &str) -> std::io::Result<Option<Account>>;
}

/// Why a trusted file could not be opened (owner, mode, I/O), as the caller's
/// opener says it; the message names the file.
pub type OpenError = Box<dyn std::error::Error + Send + Sync>;

/// Opens files that only root may have written (mapfiles).
pub type OpenTrusted<'a> = &'a dyn Fn(&Path) -> Result<std::fs::File, OpenError>;

/// What the rules can consult besides the certificate.
pub struct MappingContext<'a> {
    pub(super) accounts: &'a dyn Accounts,
    open_trusted: OpenTrusted<'a>,
    pub(super) ldap: Option<&'a LdapDirectory>,
    pub(super) cache: Option<&'a MappingCache>,
    pub(super) privileged: bool,
    pub(super) now: u64,
    mapfiles: RefCell<HashMap<PathBuf, Rc<Result<MapFile, MapFileError>>>>,
}

impl fmt::Debug for MappingContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappingContext")
            .field("ldap", &self.ldap.is_some())
            .field("cache", &self.cache)
            .field("privileged", &self.privileged)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl<'a> MappingContext<'a> {
    /// A context. `privileged` says whether the caller runs as root (the
    /// cache is written only then); `now` is Unix time in seconds.
    pub fn new(
        accounts: &'a dyn Accounts,
        open_trusted: OpenTrusted<'a>,
        ldap: Option<&'a LdapDirectory>,
        cache: Option<&'a MappingCache>,
        privileged: bool,
        now: u64,
    ) -> Self {
        Self {
            accounts,
            open_trusted,
            ldap,
            cache,
            privileged,
            now,
            mapfiles: RefCell::new(HashMap::new()),
        }
    }

    /// The mapfile at `path`, loaded on first use and kept for this context.
    pub fn mapfile(&self, path: &Path) -> Rc<Result<MapFile, MapFileError>> {
        if let Some(loaded) = self.mapfiles.borrow().get(path) {
            return loaded.clone();
        }
        let loaded = Rc::new(
            (self.open_trusted)(path)
                .map_err(|source| MapFileError::Open {
                    path: path.to_owned(),
                    source: Arc::from(source),
                })
                .and_then(|file| MapFile::read(path, file)),
        );
        self.mapfiles
            .borrow_mut()
            .insert(path.to_owned(), loaded.clone());
        loaded
    }
}

/// What is being mapped: a certificate, or a bare key, on a token.
#[derive(Debug, Clone, Copy)]
pub struct MappingInput<'a> {
    /// The certificate; `None` for a token key without a certificate.
    pub certificate: Option<&'a CertificateFields>,
    /// The public key (the certificate's, or the bare key's).
    pub key: Option<&'a PublicKey>,
    /// The token it is on.
    pub token: &'a TokenInfo,
    /// The user the application asked for, if any.
    pub requested_user: Option<&'a str>,
}
