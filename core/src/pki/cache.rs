//! The on-disk cache of fetched CRLs and OCSP responses.
//!
//! Only root writes it. Entries are re-verified (signature, update times) on
//! every use, so the cache saves round trips but is never trusted more than
//! the network. Unprivileged callers (screen lockers) read it when they
//! can and never write it; a cache that cannot be used is skipped with a
//! debug line, never an error.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::filetrust;

/// A usable cache directory.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    writable: bool,
}

impl Cache {
    /// Opens (as root: creates) the cache at `dir`; `None` when it cannot be used.
    pub fn open(dir: &Path) -> Option<Self> {
        let root = nix::unistd::geteuid().is_root();
        if root && !dir.exists() {
            if let Err(error) = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
            {
                tracing::warn!(id = "auth.revocation.cache_create_failed", dir = %dir.display(), %error, "cannot create the revocation cache; not caching");
                return None;
            }
        }
        if let Err(error) = filetrust::check_trusted_path(dir) {
            if root {
                tracing::warn!(id = "auth.revocation.cache_unused", %error, "revocation cache not used");
            } else {
                tracing::debug!(id = "auth.revocation.cache_unused_unprivileged", %error, "revocation cache not used (unprivileged)");
            }
            return None;
        }
        if !root {
            tracing::debug!(id = "auth.revocation.cache_read_only", dir = %dir.display(), "unprivileged: revocation cache is read-only");
        }
        Some(Self {
            dir: dir.to_owned(),
            writable: root,
        })
    }

    /// The entry `name`, if present, trusted and at most `max_bytes` long.
    pub fn read(&self, name: &str, max_bytes: u64) -> Option<Vec<u8>> {
        let path = self.dir.join(name);
        if !path.exists() {
            return None;
        }
        let file = match filetrust::open_trusted_file(&path) {
            Ok(file) => file,
            Err(error) => {
                tracing::debug!(id = "auth.revocation.cache_entry_untrusted", %error, "cache entry skipped");
                return None;
            }
        };
        let mut bytes = Vec::new();
        match file.take(max_bytes + 1).read_to_end(&mut bytes) {
            Ok(_) if bytes.len() as u64 <= max_bytes => Some(bytes),
            Ok(_) => {
                tracing::debug!(id = "auth.revocation.cache_entry_too_large", path = %path.display(), max_bytes, "cache entry too large; skipped");
                None
            }
            Err(error) => {
                tracing::debug!(id = "auth.revocation.cache_entry_unreadable", path = %path.display(), %error, "cache entry unreadable; skipped");
                None
            }
        }
    }

    /// Deletes the entry `name` (one that failed verification), so that it
    /// is not read again; unprivileged callers leave it. Failures are logged.
    pub fn remove(&self, name: &str) {
        if !self.writable {
            tracing::debug!(
                id = "auth.revocation.cache_evict_skipped",
                name,
                "unprivileged: not evicting the revocation cache entry"
            );
            return;
        }
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(id = "auth.revocation.cache_evict_failed", path = %path.display(), %error, "cannot evict the revocation cache entry")
            }
        }
    }

    /// Stores `bytes` as `name`, atomically; failures are logged, not returned.
    pub fn write(&self, name: &str, bytes: &[u8]) {
        if !self.writable {
            tracing::debug!(
                id = "auth.revocation.cache_write_skipped",
                name,
                "unprivileged: not writing the revocation cache"
            );
            return;
        }
        let target = self.dir.join(name);
        let temporary = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&temporary)
            .and_then(|mut file| {
                file.write_all(bytes)?;
                file.sync_all()
            })
            .and_then(|()| fs::rename(&temporary, &target));
        if let Err(error) = written {
            // Best effort: a stale temporary would block the next write.
            let _ = fs::remove_file(&temporary);
            tracing::warn!(id = "auth.revocation.cache_write_failed", path = %target.display(), %error, "cannot write the revocation cache");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    #[ignore = "needs root: the revocation cache is root-only"]
    fn root_writes_and_reads_back_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        let cache = Cache::open(&cache_dir).unwrap();
        let mode = fs::metadata(&cache_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        cache.write("crl-x.der", b"abc");
        assert_eq!(cache.read("crl-x.der", 10).as_deref(), Some(&b"abc"[..]));
        assert_eq!(cache.read("crl-x.der", 2), None, "over the size bound");
        assert_eq!(cache.read("absent", 10), None);
        cache.remove("crl-x.der");
        assert_eq!(cache.read("crl-x.der", 10), None, "evicted");
        cache.remove("crl-x.der");
    }

    #[test]
    #[ignore = "needs root: the revocation cache is root-only"]
    fn a_group_writable_cache_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        fs::create_dir(&cache_dir).unwrap();
        fs::set_permissions(&cache_dir, fs::Permissions::from_mode(0o775)).unwrap();
        assert!(Cache::open(&cache_dir).is_none());
    }
}
