//! Mapfiles: `<key> <user>` lines, loaded once into a hash index.
//!
//! The user is the last whitespace-separated word, so keys may contain
//! spaces (DNs do); pam_pkcs11's `<key> -> <user>` form is read too. A key
//! that is not in the file is a miss: unlike pam_pkcs11, the key itself is
//! never used as a user name.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Longest line accepted.
pub const MAX_LINE_LEN: usize = 8192;
/// Largest mapfile accepted.
pub const MAX_MAPFILE_SIZE: u64 = 256 * 1024 * 1024;

/// Why a mapfile could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MapFileError {
    /// Reading failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A line that is not `<key> <user>`.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// A loaded mapfile.
#[derive(Debug, Default)]
pub struct MapFile {
    path: PathBuf,
    index: HashMap<String, Vec<(String, usize)>>,
    lines: usize,
}

impl MapFile {
    /// Reads a mapfile from `reader`; `path` names it in errors.
    pub fn read(path: &Path, reader: impl Read) -> Result<Self, MapFileError> {
        let mut reader = BufReader::new(reader.take(MAX_MAPFILE_SIZE + 1));
        let mut map = MapFile {
            path: path.to_owned(),
            ..MapFile::default()
        };
        let mut buffer = Vec::new();
        let mut number = 0usize;
        let mut total = 0u64;
        loop {
            buffer.clear();
            let read = (&mut reader)
                .take(MAX_LINE_LEN as u64 + 2)
                .read_until(b'\n', &mut buffer)
                .map_err(|error| MapFileError::Io {
                    path: path.to_owned(),
                    message: error.to_string(),
                })?;
            if read == 0 {
                break;
            }
            number += 1;
            total += read as u64;
            if total > MAX_MAPFILE_SIZE {
                return Err(MapFileError::Io {
                    path: path.to_owned(),
                    message: format!("larger than {MAX_MAPFILE_SIZE} bytes"),
                });
            }
            let line_error = |message: String| MapFileError::Line {
                path: path.to_owned(),
                line: number,
                message,
            };
            if buffer.last() == Some(&b'\n') {
                buffer.pop();
            } else if buffer.len() > MAX_LINE_LEN {
                return Err(line_error(format!("line longer than {MAX_LINE_LEN} bytes")));
            }
            if buffer.last() == Some(&b'\r') {
                buffer.pop();
            }
            if buffer.len() > MAX_LINE_LEN {
                return Err(line_error(format!("line longer than {MAX_LINE_LEN} bytes")));
            }
            let line = std::str::from_utf8(&buffer)
                .map_err(|_| line_error("not UTF-8".to_owned()))?
                .trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, user) =
                split_line(line).ok_or_else(|| line_error("expected `<key> <user>`".to_owned()))?;
            map.index
                .entry(key.to_owned())
                .or_default()
                .push((user.to_owned(), number));
            map.lines += 1;
        }
        Ok(map)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of mapping lines.
    pub fn len(&self) -> usize {
        self.lines
    }

    /// Whether the file maps nothing.
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// The users `key` maps to, with their line numbers; empty on a miss.
    pub fn get(&self, key: &str) -> &[(String, usize)] {
        self.index.get(key).map(Vec::as_slice).unwrap_or_default()
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
    fn keys_with_spaces_arrows_comments_and_duplicates() {
        let map = read(
            "# comment\n\nCN=Alice Smith,O=Example alice\nab12   bob\r\nkey -> carol\nab12 bob2\n",
        )
        .unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(map.get("CN=Alice Smith,O=Example"), [("alice".into(), 3)]);
        assert_eq!(map.get("key"), [("carol".into(), 5)]);
        assert_eq!(map.get("ab12"), [("bob".into(), 4), ("bob2".into(), 6)]);
    }

    #[test]
    fn a_miss_is_a_miss_never_the_key() {
        let map = read("alice alice2\n").unwrap();
        assert!(map.get("bob").is_empty());
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let error = read("a b\nlonely\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "/etc/tessera/map:2: expected `<key> <user>`"
        );
        let long = format!("ok user\n{} user\n", "k".repeat(MAX_LINE_LEN + 10));
        let error = read(&long).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("/etc/tessera/map:2: line longer than {MAX_LINE_LEN} bytes")
        );
        assert!(MapFile::read(Path::new("/m"), &b"k \xff\n"[..]).is_err());
    }
}
