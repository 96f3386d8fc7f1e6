//! A local cache of successful directory mappings, so that login keeps working
//! while the directory is unreachable.
//!
//! Root-only: the file is written by root with mode 0600 and read only when
//! it is root-owned and private. Unprivileged callers (screen lockers) cannot
//! read it; they skip it, which the explanation and the debug log say.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest cache file read.
pub const MAX_CACHE_SIZE: u64 = 16 * 1024 * 1024;

/// The first line of the file.
const HEADER: &str = "# tessera mapping cache: sha256 rule(hex) stored(unix) users\n";

/// The cache file and how long entries stay valid.
#[derive(Debug, Clone)]
pub struct MappingCache {
    path: PathBuf,
    ttl: u64,
}

/// What the cache had for a key.
#[derive(Debug, Clone)]
pub enum CacheLookup {
    /// An entry younger than the TTL.
    Hit {
        /// The users stored.
        users: Vec<String>,
        /// Seconds since it was stored.
        age: u64,
    },
    /// An entry older than the TTL (not used).
    Expired {
        /// Seconds since it was stored.
        age: u64,
    },
    /// No entry.
    Miss,
    /// The cache could not be read (unprivileged, wrong owner or mode, broken).
    Unusable(CacheError),
}

/// Why the cache file could not be read or written; each names the file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    /// Opening, reading or writing failed (unprivileged callers fail here).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: Arc<std::io::Error>,
    },
    /// Not a root-owned private regular file.
    #[error("{}: not a root-owned private file; ignored", path.display())]
    NotPrivate {
        /// The file.
        path: PathBuf,
    },
    /// Larger than [`MAX_CACHE_SIZE`]: stores keep it under, so something
    /// else wrote it.
    #[error("{}: larger than the mapping cache bound of {MAX_CACHE_SIZE} bytes; ignored", path.display())]
    Oversized {
        /// The file.
        path: PathBuf,
    },
    /// The configured path has no parent directory.
    #[error("{}: no directory", path.display())]
    NoDirectory {
        /// The file.
        path: PathBuf,
    },
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source: Arc::new(source),
    }
}

#[derive(Debug, Clone)]
struct Entry {
    certificate: String,
    rule: String,
    stored: u64,
    users: Vec<String>,
}

impl MappingCache {
    /// A cache at `path` whose entries live `ttl` seconds.
    pub fn new(path: PathBuf, ttl: u64) -> Self {
        Self { path, ttl }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Vec<Entry>, CacheError> {
        let io = io_error(&self.path);
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)
        {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io(error)),
        };
        let metadata = file.metadata().map_err(&io)?;
        if metadata.uid() != 0 || metadata.mode() & 0o077 != 0 || !metadata.is_file() {
            return Err(CacheError::NotPrivate {
                path: self.path.clone(),
            });
        }
        // Read one byte past the bound, so that a file that grew after the
        // stat is refused too rather than cut mid-line (a cut user name is
        // another user's name).
        let mut text = String::new();
        file.take(MAX_CACHE_SIZE + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if metadata.len() > MAX_CACHE_SIZE || text.len() as u64 > MAX_CACHE_SIZE {
            return Err(CacheError::Oversized {
                path: self.path.clone(),
            });
        }
        Ok(text.lines().filter_map(parse_line).collect())
    }

    /// Looks up the users stored for certificate `sha256` under rule `rule`.
    pub fn lookup(&self, rule: &str, sha256: &str, now: u64) -> CacheLookup {
        let entries = match self.read() {
            Ok(entries) => entries,
            Err(error) => return CacheLookup::Unusable(error),
        };
        let rule = hex::encode(rule);
        match entries
            .into_iter()
            .rev()
            .find(|entry| entry.certificate == sha256 && entry.rule == rule)
        {
            None => CacheLookup::Miss,
            Some(entry) => {
                let age = now.saturating_sub(entry.stored);
                if age > self.ttl || entry.stored > now {
                    CacheLookup::Expired { age }
                } else {
                    CacheLookup::Hit {
                        users: entry.users,
                        age,
                    }
                }
            }
        }
    }

    /// Stores a successful mapping (root only; the caller checks privilege).
    /// Expired entries are dropped on the way; the file is replaced atomically.
    pub fn store(
        &self,
        rule: &str,
        sha256: &str,
        users: &[String],
        now: u64,
    ) -> Result<(), CacheError> {
        let mut entries = match self.read() {
            Ok(entries) => entries,
            // Starting afresh is all a cache can do with such a file.
            Err(error @ CacheError::Oversized { .. }) => {
                tracing::warn!(id = "auth.mapping.cache_replaced", "{error}; replacing it");
                Vec::new()
            }
            Err(error) => return Err(error),
        };
        let rule = hex::encode(rule);
        entries.retain(|entry| {
            !(entry.certificate == sha256 && entry.rule == rule)
                && now.saturating_sub(entry.stored) <= self.ttl
        });
        entries.push(Entry {
            certificate: sha256.to_owned(),
            rule,
            stored: now,
            users: users.to_vec(),
        });
        let directory = self.path.parent().ok_or_else(|| CacheError::NoDirectory {
            path: self.path.clone(),
        })?;
        if !directory.exists() {
            std::fs::create_dir_all(directory)
                .and_then(|()| {
                    std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(io_error(directory))?;
        }
        let temporary = directory.join(format!(
            ".{}.{}",
            self.path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        // Newest last; the oldest entries go first when the file would pass
        // the bound.
        let lines: Vec<String> = entries
            .iter()
            .map(|entry| {
                format!(
                    "{} {} {} {}\n",
                    entry.certificate,
                    entry.rule,
                    entry.stored,
                    entry.users.join(",")
                )
            })
            .collect();
        let mut first_kept = lines.len();
        let mut size = HEADER.len();
        for line in lines.iter().rev() {
            if (size + line.len()) as u64 > MAX_CACHE_SIZE {
                break;
            }
            size += line.len();
            first_kept -= 1;
        }
        if first_kept > 0 {
            tracing::info!(
                id = "auth.mapping.cache_trimmed",
                dropped = first_kept,
                "mapping cache full ({MAX_CACHE_SIZE} bytes); oldest entries dropped"
            );
        }
        let mut text = String::with_capacity(size);
        text.push_str(HEADER);
        for line in &lines[first_kept..] {
            text.push_str(line);
        }
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.path)
        };
        write().map_err(|error| {
            let _ = std::fs::remove_file(&temporary);
            io_error(&self.path)(error)
        })
    }
}

fn parse_line(line: &str) -> Option<Entry> {
    if line.starts_with('#') {
        return None;
    }
    let mut words = line.split(' ');
    let certificate = words.next()?.to_owned();
    let rule = words.next()?.to_owned();
    let stored = words.next()?.parse().ok()?;
    let users: Vec<String> = words
        .next()?
        .split(',')
        .filter(|user| crate::username::validate_username(user).is_ok())
        .map(str::to_owned)
        .collect();
    (!users.is_empty()).then_some(Entry {
        certificate,
        rule,
        stored,
        users,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A private cache file holding `text`.
    fn write_private(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Four users of 200 bytes each.
    fn long_users() -> Vec<String> {
        (0..4).map(|n| format!("u{n}{}", "x".repeat(198))).collect()
    }

    /// A cache line for certificate number `index` with [`long_users`].
    fn long_line(index: usize, rule: &str, stored: u64) -> String {
        format!(
            "{index:064x} {} {stored} {}\n",
            hex::encode(rule),
            long_users().join(",")
        )
    }

    #[test]
    #[ignore = "needs root: the cache is root-only"]
    fn a_cache_file_over_16_mib_is_refused_and_the_next_store_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MappingCache::new(dir.path().join("mapping"), 100);
        let mut text = format!("{} {} 10 alice\n", "aa", hex::encode("r"));
        text.push_str(&"#".repeat(MAX_CACHE_SIZE as usize + 1 - text.len()));
        write_private(cache.path(), &text);
        match cache.lookup("r", "aa", 10) {
            CacheLookup::Unusable(CacheError::Oversized { path }) => {
                assert_eq!(path, cache.path());
            }
            other => panic!("an oversized cache was read: {other:?}"),
        }
        // One byte less is read whole.
        text.pop();
        write_private(cache.path(), &text);
        assert!(matches!(
            cache.lookup("r", "aa", 10),
            CacheLookup::Hit { .. }
        ));
        text.push('#');
        write_private(cache.path(), &text);
        cache.store("r", "bb", &["bob".into()], 20).unwrap();
        assert!(matches!(
            cache.lookup("r", "bb", 20),
            CacheLookup::Hit { .. }
        ));
        assert!(matches!(cache.lookup("r", "aa", 20), CacheLookup::Miss));
        assert!(std::fs::metadata(cache.path()).unwrap().len() < 1024);
    }

    #[test]
    #[ignore = "needs root: the cache is root-only"]
    fn a_full_cache_drops_its_oldest_entries_to_stay_under_16_mib() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MappingCache::new(dir.path().join("mapping"), 1000);
        // As many entries as fit with the header: one more does not.
        let header = HEADER.len();
        let line = long_line(0, "r", 50).len();
        let count = (MAX_CACHE_SIZE as usize - header) / line;
        let text: String = (0..count).map(|index| long_line(index, "r", 50)).collect();
        write_private(cache.path(), &text);
        let key = |index: usize| format!("{index:064x}");
        assert!(matches!(
            cache.lookup("r", &key(0), 60),
            CacheLookup::Hit { .. }
        ));

        cache.store("r", &key(count), &long_users(), 60).unwrap();
        assert!(std::fs::metadata(cache.path()).unwrap().len() <= MAX_CACHE_SIZE);
        assert!(matches!(
            cache.lookup("r", &key(count), 60),
            CacheLookup::Hit { users, age: 0 } if users == long_users()
        ));
        assert!(matches!(cache.lookup("r", &key(0), 60), CacheLookup::Miss));
        assert!(matches!(
            cache.lookup("r", &key(1), 60),
            CacheLookup::Hit { .. }
        ));
        assert!(matches!(
            cache.lookup("r", &key(count - 1), 60),
            CacheLookup::Hit { .. }
        ));
    }

    #[test]
    #[ignore = "needs root: the cache is root-only"]
    fn store_then_hit_then_expire() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MappingCache::new(dir.path().join("cache/mapping"), 100);
        assert!(matches!(cache.lookup("r", "aa", 10), CacheLookup::Miss));
        cache.store("r", "aa", &["alice".into()], 10).unwrap();
        cache
            .store("other rule", "aa", &["bob".into()], 10)
            .unwrap();
        assert!(matches!(
            cache.lookup("r", "aa", 50),
            CacheLookup::Hit { users, age: 40 } if users == ["alice"]
        ));
        assert!(matches!(
            cache.lookup("r", "aa", 200),
            CacheLookup::Expired { age: 190 }
        ));
        let mode = std::fs::metadata(cache.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            cache.lookup("r", "aa", 50),
            CacheLookup::Unusable(CacheError::NotPrivate { .. })
        ));
    }
}
