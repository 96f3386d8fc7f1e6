//! Per-user files, as pam_p11 reads them: `~/.ssh/authorized_keys` and
//! `~/.config/tessera/authorized_certificates` (PEM certificates). A key
//! listed there maps to that user.
//!
//! A file is used only when it, and every directory from the home directory
//! down to it, is owned by the user or root and not writable by group or
//! others: otherwise someone else could have added their key.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use der::Encode;
use x509_cert::Certificate;

use crate::public_key::{is_ssh_key_type, KeyError, PublicKey};

/// Largest per-user file read.
pub const MAX_AUTHORIZED_FILE_SIZE: u64 = 1024 * 1024;
/// Longest line of an authorized_keys file.
pub const MAX_AUTHORIZED_LINE_LEN: usize = 16 * 1024;

/// The files read below the home directory, in order.
pub const AUTHORIZED_FILES: [&str; 2] = [
    ".ssh/authorized_keys",
    ".config/tessera/authorized_certificates",
];

/// A user account from NSS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Home directory.
    pub home: PathBuf,
}

/// A key found in a user's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedKey {
    /// The key.
    pub key: PublicKey,
    /// The file it is in.
    pub file: PathBuf,
    /// 1-based line (authorized_keys) or certificate number (PEM file).
    pub line: usize,
}

/// Why a user's file was refused; each names the file or directory at
/// fault, and the line when one is.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthorizedFileError {
    /// Owned by someone other than the user or root.
    #[error("{} is owned by uid {owner}, not by the user ({uid}) or root", path.display())]
    Owner {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The user's uid.
        uid: u32,
    },
    /// Writable by group or others.
    #[error("{} has mode {mode:04o}: group or others can write it", path.display())]
    Writable {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A component of the path is not a directory (a symlink, say).
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The path component.
        path: PathBuf,
    },
    /// The file is not a regular file.
    #[error("{} is not a regular file", path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// Opening failed; a symlink fails here (`O_NOFOLLOW`).
    #[error("{}: {source} (symlinks are refused)", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: Arc<std::io::Error>,
    },
    /// Examining or reading failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: Arc<std::io::Error>,
    },
    /// Larger than [`MAX_AUTHORIZED_FILE_SIZE`].
    #[error("{}: larger than {MAX_AUTHORIZED_FILE_SIZE} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// An authorized_keys line longer than [`MAX_AUTHORIZED_LINE_LEN`].
    #[error("{}:{line}: line longer than {MAX_AUTHORIZED_LINE_LEN} bytes", path.display())]
    LineTooLong {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A plain authorized_keys line whose key does not decode.
    #[error("{}:{line}: {source}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the key.
        source: KeyError,
    },
    /// The certificates file is not PEM certificates.
    #[error("{}: not PEM certificates: {source}", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        source: der::Error,
    },
    /// A certificate whose key tessera cannot use.
    #[error("{}: certificate {number}: {source}", path.display())]
    BadCertificateKey {
        /// The file.
        path: PathBuf,
        /// 1-based position of the certificate in the file.
        number: usize,
        /// What is wrong with the key.
        source: KeyError,
    },
}

/// What reading one file gave.
#[derive(Debug, Clone)]
pub enum FileOutcome {
    /// The file does not exist.
    Absent(PathBuf),
    /// The file was refused (ownership, mode, size, syntax).
    Refused(PathBuf, AuthorizedFileError),
    /// The keys read.
    Read(PathBuf, Vec<AuthorizedKey>),
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> AuthorizedFileError + '_ {
    move |source| AuthorizedFileError::Io {
        path: path.to_owned(),
        source: Arc::new(source),
    }
}

fn check_owner_and_mode(
    path: &Path,
    metadata: &Metadata,
    uid: u32,
) -> Result<(), AuthorizedFileError> {
    if metadata.uid() != uid && metadata.uid() != 0 {
        return Err(AuthorizedFileError::Owner {
            path: path.to_owned(),
            owner: metadata.uid(),
            uid,
        });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(AuthorizedFileError::Writable {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

fn open_checked(account: &Account, relative: &str) -> Result<Option<File>, AuthorizedFileError> {
    let path = account.home.join(relative);
    // The home directory and every directory below it on the way to the file.
    let mut directory = account.home.clone();
    let mut components: Vec<&str> = relative.split('/').collect();
    components.pop();
    for component in std::iter::once("").chain(components) {
        if !component.is_empty() {
            directory.push(component);
        }
        let metadata = match std::fs::symlink_metadata(&directory) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error(&directory)(error)),
        };
        if !metadata.is_dir() {
            return Err(AuthorizedFileError::NotADirectory { path: directory });
        }
        check_owner_and_mode(&directory, &metadata, account.uid)?;
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(AuthorizedFileError::Open {
                path,
                source: Arc::new(error),
            })
        }
    };
    let metadata = file.metadata().map_err(io_error(&path))?;
    if !metadata.is_file() {
        return Err(AuthorizedFileError::NotAFile { path });
    }
    check_owner_and_mode(&path, &metadata, account.uid)?;
    Ok(Some(file))
}

/// Reads the user's authorized files. Each file's outcome is reported so that
/// the explanation can say what was found, absent or refused.
pub fn read_authorized(account: &Account) -> Vec<FileOutcome> {
    AUTHORIZED_FILES
        .iter()
        .map(|relative| {
            let path = account.home.join(relative);
            match read_one(account, relative, &path) {
                Ok(Some(keys)) => FileOutcome::Read(path, keys),
                Ok(None) => FileOutcome::Absent(path),
                Err(error) => FileOutcome::Refused(path, error),
            }
        })
        .collect()
}

/// The keys of one file, `None` when it does not exist.
fn read_one(
    account: &Account,
    relative: &str,
    path: &Path,
) -> Result<Option<Vec<AuthorizedKey>>, AuthorizedFileError> {
    let Some(file) = open_checked(account, relative)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    file.take(MAX_AUTHORIZED_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    if bytes.len() as u64 > MAX_AUTHORIZED_FILE_SIZE {
        return Err(AuthorizedFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    if relative.ends_with("authorized_keys") {
        parse_authorized_keys(path, &bytes).map(Some)
    } else {
        parse_certificates(path, &bytes).map(Some)
    }
}

/// Parses an `authorized_keys` file; lines with key types tokens never hold
/// are skipped, and so are lines with options (`cert-authority`, `restrict`,
/// `command=`, `from=`, `expiry-time=`, …: a CA key or a key sshd would
/// restrict is no login key), each with a debug log line naming file and
/// line; malformed plain lines are an error naming the line.
pub fn parse_authorized_keys(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<AuthorizedKey>, AuthorizedFileError> {
    let mut keys = Vec::new();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        if line.len() > MAX_AUTHORIZED_LINE_LEN {
            return Err(AuthorizedFileError::LineTooLong {
                path: path.to_owned(),
                line: number,
            });
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if let Some(options) = option_names(text) {
            // sshd would limit this key (command=, from=, restrict,
            // expiry-time=, …) or treat it as a CA (cert-authority); a login
            // through tessera could honour none of that.
            tracing::debug!(
                id = "auth.mapping.authorized_line_skipped",
                "{}:{number}: key with options ({}) skipped: only plain key lines log in",
                path.display(),
                options.join(", ")
            );
            continue;
        }
        match PublicKey::from_authorized_keys_line(text) {
            Ok(Some(key)) => keys.push(AuthorizedKey {
                key,
                file: path.to_owned(),
                line: number,
            }),
            Ok(None) => {}
            Err(source) => {
                return Err(AuthorizedFileError::BadKey {
                    path: path.to_owned(),
                    line: number,
                    source,
                })
            }
        }
    }
    Ok(keys)
}

/// The option names of a line that carries options before its key type,
/// lower-cased and without their values (`command="a b",no-pty ssh-ed25519 …`
/// gives `command`, `no-pty`); `None` for a plain line, and for a line with
/// no key type.
fn option_names(line: &str) -> Option<Vec<String>> {
    let is_blank = |c: char| c == ' ' || c == '\t';
    // As sshd reads it, the options field is the first word; quoted values
    // (`command="a b"`) may hold blanks and commas.
    let mut fields = split_outside_quotes(line, is_blank).filter(|field| !field.is_empty());
    let options = fields.next()?;
    if is_ssh_key_type(options) || !fields.any(is_ssh_key_type) {
        return None;
    }
    let names = split_outside_quotes(options, |c| c == ',')
        .filter_map(|option| option.split('=').next())
        .filter(|name| !name.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    Some(names)
}

/// Splits `text` at the characters `is_separator` accepts, except inside
/// double quotes, where `\"` does not end the quote.
fn split_outside_quotes(
    text: &str,
    is_separator: impl Fn(char) -> bool,
) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut escaped = false;
    // `split` calls the predicate once per character, in order, so it can
    // track the quotes it has passed.
    text.split(move |c: char| {
        if escaped {
            escaped = false;
            return false;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ => return !quoted && is_separator(c),
        }
        false
    })
}

/// Parses a file of PEM certificates into their public keys.
pub fn parse_certificates(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<AuthorizedKey>, AuthorizedFileError> {
    let certificates =
        Certificate::load_pem_chain(bytes).map_err(|source| AuthorizedFileError::NotPem {
            path: path.to_owned(),
            source,
        })?;
    let mut keys = Vec::new();
    for (index, certificate) in certificates.iter().enumerate() {
        let number = index + 1;
        let key = certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|error| KeyError::Malformed(error.to_string()))
            .and_then(|spki| PublicKey::from_spki_der(&spki))
            .map_err(|source| AuthorizedFileError::BadCertificateKey {
                path: path.to_owned(),
                number,
                source,
            })?;
        keys.push(AuthorizedKey {
            key,
            file: path.to_owned(),
            line: number,
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_authorized_keys_line_over_16_kib_is_refused_naming_it() {
        let path = Path::new("/home/alice/.ssh/authorized_keys");
        let long = format!("# ok\n{}\n", "x".repeat(MAX_AUTHORIZED_LINE_LEN + 1));
        let error = parse_authorized_keys(path, long.as_bytes()).unwrap_err();
        assert!(
            matches!(&error, AuthorizedFileError::LineTooLong { path: named, line: 2 } if named == path),
            "{error:?}"
        );
        let at_bound = format!("#{}\n", "x".repeat(MAX_AUTHORIZED_LINE_LEN - 1));
        assert!(parse_authorized_keys(path, at_bound.as_bytes())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn an_authorized_file_over_1_mib_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let comment = format!("#{}\n", "x".repeat(1022));
        let big = comment.repeat((MAX_AUTHORIZED_FILE_SIZE / 1024) as usize + 1);
        write_keys(home.path(), &big);
        let outcomes = read_authorized(&account(home.path()));
        assert!(
            matches!(
                &outcomes[0],
                FileOutcome::Refused(_, AuthorizedFileError::TooLarge { .. })
            ),
            "{outcomes:?}"
        );
        write_keys(
            home.path(),
            &comment.repeat((MAX_AUTHORIZED_FILE_SIZE / 1024) as usize),
        );
        let outcomes = read_authorized(&account(home.path()));
        assert!(
            matches!(&outcomes[0], FileOutcome::Read(_, keys) if keys.is_empty()),
            "{outcomes:?}"
        );
    }

    /// The key the tests list in authorized files.
    fn listed_key() -> PublicKey {
        PublicKey::Ed25519(vec![9; 32])
    }

    fn account(home: &Path) -> Account {
        Account {
            name: "alice".into(),
            uid: nix_uid(),
            home: home.to_owned(),
        }
    }

    fn nix_uid() -> u32 {
        std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(0)
    }

    fn write_keys(home: &Path, text: &str) -> PathBuf {
        let ssh = home.join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).unwrap();
        let file = ssh.join("authorized_keys");
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        file
    }

    #[test]
    fn keys_are_read_from_a_private_file() {
        let home = tempfile::tempdir().unwrap();
        let key = listed_key();
        write_keys(
            home.path(),
            &format!("# mine\n{} me\n", key.authorized_keys_line()),
        );
        let outcomes = read_authorized(&account(home.path()));
        match &outcomes[0] {
            FileOutcome::Read(_, keys) => {
                assert_eq!(keys.len(), 1);
                assert_eq!(keys[0].key, key);
                assert_eq!(keys[0].line, 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(outcomes[1], FileOutcome::Absent(_)));
    }

    #[test]
    fn world_writable_file_or_directory_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let key = listed_key();
        let file = write_keys(home.path(), &key.authorized_keys_line());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let outcomes = read_authorized(&account(home.path()));
        assert!(
            matches!(
                &outcomes[0],
                FileOutcome::Refused(_, AuthorizedFileError::Writable { mode: 0o666, .. })
            ),
            "{outcomes:?}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(
            home.path().join(".ssh"),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        let outcomes = read_authorized(&account(home.path()));
        assert!(
            matches!(
                &outcomes[0],
                FileOutcome::Refused(_, AuthorizedFileError::Writable { path, mode: 0o777 })
                    if path == &home.path().join(".ssh")
            ),
            "{outcomes:?}"
        );
    }

    #[test]
    fn file_of_another_user_is_refused() {
        let home = tempfile::tempdir().unwrap();
        write_keys(home.path(), &listed_key().authorized_keys_line());
        let mut other = account(home.path());
        other.uid = other.uid.wrapping_add(4242);
        let outcomes = read_authorized(&other);
        if nix_uid() == 0 {
            // Files made by root are acceptable for any user.
            assert!(matches!(outcomes[0], FileOutcome::Read(..)));
        } else {
            assert!(
                matches!(
                    outcomes[0],
                    FileOutcome::Refused(_, AuthorizedFileError::Owner { .. })
                ),
                "{outcomes:?}"
            );
        }
    }

    #[test]
    fn symlinked_file_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let real = write_keys(home.path(), &listed_key().authorized_keys_line());
        let moved = home.path().join("elsewhere");
        std::fs::rename(&real, &moved).unwrap();
        std::os::unix::fs::symlink(&moved, &real).unwrap();
        let outcomes = read_authorized(&account(home.path()));
        assert!(
            matches!(
                outcomes[0],
                FileOutcome::Refused(_, AuthorizedFileError::Open { .. })
            ),
            "{outcomes:?}"
        );
    }

    /// Every line that carries options, in the forms sshd accepts: none of
    /// them may log in like a plain key (a CA key, a forced-command backup
    /// key, a key limited to some hosts or to a date).
    const OPTION_FORMS: [&str; 10] = [
        "cert-authority",
        "restrict",
        "command=\"/usr/bin/backup --x\",no-pty",
        "from=\"10.0.0.0/8,192.168.1.*\"",
        "expiry-time=\"20300101\"",
        "Cert-Authority",
        "restrict,pty",
        "no-port-forwarding,command=\"echo \\\"a b\\\"\"",
        "environment=\"A=b c\",no-agent-forwarding",
        "principals=\"alice\",cert-authority",
    ];

    #[test]
    fn lines_with_options_are_skipped_and_the_same_key_on_a_plain_line_matches() {
        let path = Path::new("/home/alice/.ssh/authorized_keys");
        let key = listed_key();
        let plain = key.authorized_keys_line();
        for options in OPTION_FORMS {
            for separator in [" ", "\t", "  "] {
                let text = format!("{options}{separator}{plain} backup@host\n");
                assert_eq!(
                    parse_authorized_keys(path, text.as_bytes()).unwrap(),
                    [],
                    "{text}"
                );
            }
        }
        let text = format!(
            "{}\n{plain} alice@laptop\n",
            OPTION_FORMS
                .iter()
                .map(|options| format!("{options} {plain}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let keys = parse_authorized_keys(path, text.as_bytes()).unwrap();
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_eq!(keys[0].key, key);
        assert_eq!(keys[0].line, OPTION_FORMS.len() + 1);
    }

    #[test]
    fn option_names_drop_values_and_plain_lines_have_none() {
        let plain = listed_key().authorized_keys_line();
        let expected: [&[&str]; 10] = [
            &["cert-authority"],
            &["restrict"],
            &["command", "no-pty"],
            &["from"],
            &["expiry-time"],
            &["cert-authority"],
            &["restrict", "pty"],
            &["no-port-forwarding", "command"],
            &["environment", "no-agent-forwarding"],
            &["principals", "cert-authority"],
        ];
        for (options, names) in OPTION_FORMS.iter().zip(expected) {
            let line = format!("{options}\t{plain} backup@host");
            assert_eq!(option_names(&line).unwrap(), names, "{line}");
        }
        assert_eq!(option_names(&format!("{plain} alice@laptop")), None);
        // No key type after the first word: nothing for sshd to restrict.
        assert_eq!(option_names("restrict garbage"), None);
    }

    #[test]
    fn a_key_with_options_in_a_users_file_is_not_read() {
        let home = tempfile::tempdir().unwrap();
        let key = listed_key();
        write_keys(
            home.path(),
            &format!("cert-authority {} ca@example\n", key.authorized_keys_line()),
        );
        let outcomes = read_authorized(&account(home.path()));
        assert!(
            matches!(&outcomes[0], FileOutcome::Read(_, keys) if keys.is_empty()),
            "{outcomes:?}"
        );
    }

    /// The events logged while it is the default: level and message.
    type Events = std::sync::Arc<std::sync::Mutex<Vec<(tracing::Level, String)>>>;

    struct Captured(Events);

    struct Message<'a>(&'a mut String);

    impl tracing::field::Visit for Message<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                *self.0 = format!("{value:?}");
            }
        }
    }

    impl tracing::Subscriber for Captured {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut message = String::new();
            event.record(&mut Message(&mut message));
            if let Ok(mut events) = self.0.lock() {
                events.push((*event.metadata().level(), message));
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn a_skipped_line_is_logged_at_debug_naming_file_and_line() {
        let path = Path::new("/home/alice/.ssh/authorized_keys");
        let plain = listed_key().authorized_keys_line();
        let text =
            format!("# backups\ncommand=\"/usr/bin/backup --x\",no-pty {plain} backup\n{plain}\n");
        let events = Events::default();
        let keys = tracing::subscriber::with_default(Captured(events.clone()), || {
            parse_authorized_keys(path, text.as_bytes()).unwrap()
        });
        assert_eq!(keys.len(), 1);
        let events = events.lock().unwrap().clone();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, tracing::Level::DEBUG);
        assert!(
            events[0]
                .1
                .starts_with("/home/alice/.ssh/authorized_keys:2: "),
            "{events:?}"
        );
        assert!(events[0].1.contains("command, no-pty"), "{events:?}");
        assert!(!events[0].1.contains("backup --x"), "{events:?}");
    }

    #[test]
    fn malformed_line_names_the_line() {
        let error =
            parse_authorized_keys(Path::new("/h/.ssh/authorized_keys"), b"\nssh-ed25519 !!\n")
                .unwrap_err();
        assert!(
            matches!(error, AuthorizedFileError::BadKey { line: 2, .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().starts_with("/h/.ssh/authorized_keys:2: "),
            "{error}"
        );
    }
}
