//! Mapfiles: `<key> <user>` lines, loaded once into a sorted index.
//!
//! The user is the last whitespace-separated word, so keys may contain
//! spaces (DNs do); pam_pkcs11's `<key> -> <user>` form is read too. A key
//! that is not in the file is a miss: unlike pam_pkcs11, the key itself is
//! never used as a user name.
//!
//! The file is kept as one string, with (key, user, line) ranges into it and
//! a hash table of indices: loading does not allocate per line (freeing
//! 100,000 small strings cost more than reading them), and a look-up is one
//! hash probe.

use std::hash::BuildHasher;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hashbrown::HashTable;

/// Longest line accepted.
pub const MAX_LINE_LEN: usize = 8192;
/// Largest mapfile accepted.
pub const MAX_MAPFILE_SIZE: u64 = 256 * 1024 * 1024;

/// Why a mapfile could not be used; each names the file, and the line when
/// one is at fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MapFileError {
    /// The file could not be opened or is not trusted (owner, mode). The
    /// opener's error names the file: core's trust checks do.
    #[error("{source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What the opener said.
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// Reading failed.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: Arc<std::io::Error>,
    },
    /// Larger than [`MAX_MAPFILE_SIZE`].
    #[error("{}: larger than {MAX_MAPFILE_SIZE} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A line is not UTF-8.
    #[error("{}:{line}: not UTF-8", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A line is longer than [`MAX_LINE_LEN`].
    #[error("{}:{line}: line longer than {MAX_LINE_LEN} bytes", path.display())]
    LineTooLong {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A line that is not `<key> <user>`.
    #[error("{}:{line}: expected `<key> <user>`", path.display())]
    NotKeyAndUser {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    key: Range<usize>,
    user: Range<usize>,
    line: usize,
    /// The next entry with the same key, in file order.
    next: Option<usize>,
}

/// A loaded mapfile.
#[derive(Debug, Default)]
pub struct MapFile {
    path: PathBuf,
    text: String,
    entries: Vec<Entry>,
    /// (first, last) entry of each distinct key.
    index: HashTable<(usize, usize)>,
    hasher: std::hash::RandomState,
}

impl MapFile {
    /// Reads a mapfile from `reader`; `path` names it in errors.
    pub fn read(path: &Path, reader: impl Read) -> Result<Self, MapFileError> {
        let mut bytes = Vec::new();
        reader
            .take(MAX_MAPFILE_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| MapFileError::Read {
                path: path.to_owned(),
                source: Arc::new(source),
            })?;
        if bytes.len() as u64 > MAX_MAPFILE_SIZE {
            return Err(MapFileError::TooLarge {
                path: path.to_owned(),
            });
        }
        let text = String::from_utf8(bytes).map_err(|error| {
            let valid = error.utf8_error().valid_up_to();
            let line = error.as_bytes()[..valid]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            MapFileError::NotUtf8 {
                path: path.to_owned(),
                line,
            }
        })?;
        let mut entries = Vec::new();
        for (index, raw) in text.split_inclusive('\n').enumerate() {
            let number = index + 1;
            let content = raw.strip_suffix('\n').unwrap_or(raw);
            let content = content.strip_suffix('\r').unwrap_or(content);
            if content.len() > MAX_LINE_LEN {
                return Err(MapFileError::LineTooLong {
                    path: path.to_owned(),
                    line: number,
                });
            }
            let line = content.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, user) = split_line(line).ok_or_else(|| MapFileError::NotKeyAndUser {
                path: path.to_owned(),
                line: number,
            })?;
            // Byte range of a subslice of `text` (str::substr_range is unstable).
            let range = |part: &str| {
                let begin = part.as_ptr() as usize - text.as_ptr() as usize;
                begin..begin + part.len()
            };
            entries.push(Entry {
                key: range(key),
                user: range(user),
                line: number,
                next: None,
            });
        }
        let hasher = std::hash::RandomState::new();
        let mut index: HashTable<(usize, usize)> = HashTable::with_capacity(entries.len());
        for position in 0..entries.len() {
            let key = &text[entries[position].key.clone()];
            let hash = hasher.hash_one(key);
            let same_key = |&(first, _): &(usize, usize)| text[entries[first].key.clone()] == *key;
            match index.find_mut(hash, same_key) {
                Some((_, last)) => {
                    entries[*last].next = Some(position);
                    *last = position;
                }
                None => {
                    index.insert_unique(hash, (position, position), |&(first, _)| {
                        hasher.hash_one(&text[entries[first].key.clone()])
                    });
                }
            }
        }
        Ok(MapFile {
            path: path.to_owned(),
            text,
            entries,
            index,
            hasher,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of mapping lines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file maps nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The users `key` maps to, with their line numbers, in file order;
    /// empty on a miss.
    pub fn get(&self, key: &str) -> Vec<(&str, usize)> {
        let hash = self.hasher.hash_one(key);
        let Some(&(first, _)) = self.index.find(hash, |&(first, _)| {
            self.text[self.entries[first].key.clone()] == *key
        }) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut next = Some(first);
        while let Some(position) = next {
            let entry = &self.entries[position];
            found.push((&self.text[entry.user.clone()], entry.line));
            next = entry.next;
        }
        found
    }
}

fn split_line(line: &str) -> Option<(&str, &str)> {
    if let Some((key, user)) = line.rsplit_once(" -> ") {
        let (key, user) = (key.trim(), user.trim());
        return (!key.is_empty() && !user.is_empty() && !user.contains(char::is_whitespace))
            .then_some((key, user));
    }
    let split = line.rfind(char::is_whitespace)?;
    let (key, user) = (line[..split].trim_end(), line[split..].trim_start());
    (!key.is_empty() && !user.is_empty()).then_some((key, user))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<MapFile, MapFileError> {
        MapFile::read(Path::new("/etc/tessera/map"), text.as_bytes())
    }

    #[test]
    fn a_mapfile_over_256_mib_is_refused_unread() {
        let endless = std::io::repeat(b'#');
        let error = MapFile::read(Path::new("/etc/tessera/map"), endless).unwrap_err();
        assert!(
            matches!(&error, MapFileError::TooLarge { path } if path == Path::new("/etc/tessera/map")),
            "{error:?}"
        );
    }

    #[test]
    fn keys_with_spaces_arrows_comments_and_duplicates() {
        let map = read(
            "# comment\n\nCN=Alice Smith,O=Example alice\nab12   bob\r\nkey -> carol\nab12 bob2\n",
        )
        .unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(map.get("CN=Alice Smith,O=Example"), [("alice", 3)]);
        assert_eq!(map.get("key"), [("carol", 5)]);
        assert_eq!(map.get("ab12"), [("bob", 4), ("bob2", 6)]);
    }

    #[test]
    fn a_miss_is_a_miss_never_the_key() {
        let map = read("alice alice2\n").unwrap();
        assert!(map.get("bob").is_empty());
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let error = read("a b\nlonely\n").unwrap_err();
        assert!(
            matches!(&error, MapFileError::NotKeyAndUser { path, line: 2 } if path == Path::new("/etc/tessera/map")),
            "{error:?}"
        );
        // The message is what admins read: file:line first.
        assert_eq!(
            error.to_string(),
            "/etc/tessera/map:2: expected `<key> <user>`"
        );
        let long = format!("ok user\n{} user\n", "k".repeat(MAX_LINE_LEN + 10));
        let error = read(&long).unwrap_err();
        assert!(
            matches!(error, MapFileError::LineTooLong { line: 2, .. }),
            "{error:?}"
        );
        let error = MapFile::read(Path::new("/m"), &b"a b\nk \xff\n"[..]).unwrap_err();
        assert!(
            matches!(error, MapFileError::NotUtf8 { line: 2, .. }),
            "{error:?}"
        );
    }
}
