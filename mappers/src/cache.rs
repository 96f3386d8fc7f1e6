//! A local cache of successful directory mappings, so that login keeps working
//! while the directory is unreachable.
//!
//! Root-only: the file is written by root with mode 0600 and read only when
//! it is root-owned and private. Unprivileged callers (screen lockers) cannot
//! read it; they skip it, which the explanation and the debug log say.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Largest cache file read.
pub const MAX_CACHE_SIZE: u64 = 16 * 1024 * 1024;

/// The cache file and how long entries stay valid.
#[derive(Debug, Clone)]
pub struct MappingCache {
    path: PathBuf,
    ttl: u64,
}

/// What the cache had for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    Unusable(String),
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

    fn read(&self) -> Result<Vec<Entry>, String> {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)
        {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(format!("{}: {error}", self.path.display())),
        };
        let metadata = file
            .metadata()
            .map_err(|error| format!("{}: {error}", self.path.display()))?;
        if metadata.uid() != 0 || metadata.mode() & 0o077 != 0 || !metadata.is_file() {
            return Err(format!(
                "{}: not a root-owned private file; ignored",
                self.path.display()
            ));
        }
        let mut text = String::new();
        file.take(MAX_CACHE_SIZE)
            .read_to_string(&mut text)
            .map_err(|error| format!("{}: {error}", self.path.display()))?;
        Ok(text.lines().filter_map(parse_line).collect())
    }

    /// Looks up the users stored for certificate `sha256` under rule `rule`.
    pub fn lookup(&self, rule: &str, sha256: &str, now: u64) -> CacheLookup {
        let entries = match self.read() {
            Ok(entries) => entries,
            Err(reason) => return CacheLookup::Unusable(reason),
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
    ) -> Result<(), String> {
        let mut entries = self.read()?;
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
        let directory = self
            .path
            .parent()
            .ok_or_else(|| format!("{}: no directory", self.path.display()))?;
        if !directory.exists() {
            std::fs::create_dir_all(directory)
                .and_then(|()| {
                    std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|error| format!("{}: {error}", directory.display()))?;
        }
        let temporary = directory.join(format!(
            ".{}.{}",
            self.path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        let mut text =
            String::from("# tessera mapping cache: sha256 rule(hex) stored(unix) users\n");
        for entry in &entries {
            text.push_str(&format!(
                "{} {} {} {}\n",
                entry.certificate,
                entry.rule,
                entry.stored,
                entry.users.join(",")
            ));
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
            format!("{}: {error}", self.path.display())
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

    #[test]
    fn store_then_hit_then_expire() {
        if std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1)
            != 0
        {
            eprintln!("skipped: the cache is root-only");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cache = MappingCache::new(dir.path().join("cache/mapping"), 100);
        assert_eq!(cache.lookup("r", "aa", 10), CacheLookup::Miss);
        cache.store("r", "aa", &["alice".into()], 10).unwrap();
        cache
            .store("other rule", "aa", &["bob".into()], 10)
            .unwrap();
        assert_eq!(
            cache.lookup("r", "aa", 50),
            CacheLookup::Hit {
                users: vec!["alice".into()],
                age: 40
            }
        );
        assert_eq!(
            cache.lookup("r", "aa", 200),
            CacheLookup::Expired { age: 190 }
        );
        let mode = std::fs::metadata(cache.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            cache.lookup("r", "aa", 50),
            CacheLookup::Unusable(_)
        ));
    }
}
