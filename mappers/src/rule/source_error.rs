//! Why a rule's source failed: the errors that stop the mapping (fail
//! closed), typed so that callers decide on variants, never on text.

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::cache::CacheError;
use crate::ldap::ServerFailure;
use crate::mapfile::MapFileError;

/// A source that could not give an answer; no later rule is tried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// The mapfile is untrusted, unreadable or malformed.
    #[error(transparent)]
    MapFile(#[from] MapFileError),
    /// The rule searches the directory, but there is no `[ldap]` section.
    #[error("no [ldap] section")]
    NoDirectory,
    /// A directory server answered with an error, or its reply broke a
    /// bound: an answer, so no other server was asked.
    #[error("{0}")]
    DirectoryRefused(ServerFailure),
    /// No directory server answered, and the mapping cache could not stand in.
    #[error("no LDAP server answered; {cache}")]
    DirectoryUnreachable {
        /// Every server, in the order tried.
        failures: Vec<ServerFailure>,
        /// Why the cache gave no users.
        cache: CacheFallback,
    },
}

impl SourceError {
    /// Whether the source was unreachable rather than broken: the login may
    /// then fall back to a password (PAM_AUTHINFO_UNAVAIL, not PAM_SERVICE_ERR).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, SourceError::DirectoryUnreachable { .. })
    }
}

/// Serialised as `message` and `unavailable`, the explanation's JSON fields.
impl Serialize for SourceError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("message", &self.to_string())?;
        map.serialize_entry("unavailable", &self.is_unavailable())?;
        map.end()
    }
}

/// Why the mapping cache did not stand in for an unreachable directory.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheFallback {
    /// `[mapping] cache` is not set.
    #[error("no mapping cache configured")]
    NotConfigured,
    /// Nothing stored for this certificate and rule.
    #[error("cache: miss")]
    Miss,
    /// Stored longer ago than `cache_ttl`.
    #[error("cache: expired (stored {age} s ago)")]
    Expired {
        /// Seconds since it was stored.
        age: u64,
    },
    /// The file could not be read (unprivileged caller, owner, mode, size).
    #[error("cache: skipped: {0}")]
    Skipped(CacheError),
}
