//! Session bindings: which logind session was opened with which token.
//!
//! `pam_sm_open_session` writes one record per session into
//! [`SESSIONS_DIR`]; tessera-eventd reads them to lock exactly the sessions
//! of a pulled card. Records are root-owned TOML files written atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::token::TokenIdentity;

/// Where session bindings live.
pub const SESSIONS_DIR: &str = "/run/tessera/sessions";

/// Current record format.
pub const BINDING_VERSION: u32 = 1;

/// Largest record read; real ones are a few hundred bytes.
const MAX_BINDING_SIZE: u64 = 16 * 1024;

pub use tessera_ipc::{AuthRecord, BoundToken};

impl From<&TokenIdentity> for BoundToken {
    fn from(token: &TokenIdentity) -> Self {
        Self {
            label: token.label.clone(),
            manufacturer: token.manufacturer.clone(),
            model: token.model.clone(),
            serial: token.serial.clone(),
            slot_description: token.slot_description.clone(),
        }
    }
}

/// One session binding record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionBinding {
    /// Record format version.
    pub version: u32,
    /// logind session id (XDG_SESSION_ID, or looked up by PID).
    pub session_id: String,
    /// The user's uid.
    pub uid: u32,
    /// The user's name.
    pub user: String,
    /// The PAM service that opened the session.
    pub service: String,
    /// PAM_TTY, if any.
    pub tty: String,
    /// PID of the PAM application that opened the session.
    pub pid: u32,
    /// Seconds since the epoch when the record was written.
    pub created: u64,
    /// SHA-256 of the certificate that authenticated the user.
    pub certificate_sha256: String,
    /// The token that signed the login challenge.
    pub token: BoundToken,
}

/// Why a binding could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The session id cannot name a file safely.
    #[error("session id {0:?} is not a valid logind session id")]
    BadSessionId(String),
    /// The record is not a root-owned, root-only regular file.
    #[error("{path}: {reason}; ignored")]
    Untrusted {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The record does not parse.
    #[error("{path}: malformed session binding: {message}")]
    Malformed {
        /// The path.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
}

/// logind session ids are short alphanumerics ("2", "c1"); anything else
/// could escape the directory or collide, and is refused.
pub fn validate_session_id(session_id: &str) -> Result<(), BindingError> {
    let valid = !session_id.is_empty()
        && session_id.len() <= 64
        && session_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(BindingError::BadSessionId(session_id.to_owned()))
    }
}

/// The record path for `session_id` in `dir`.
pub fn binding_path(dir: &Path, session_id: &str) -> Result<PathBuf, BindingError> {
    validate_session_id(session_id)?;
    Ok(dir.join(format!("{session_id}.toml")))
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BindingError + '_ {
    move |source| BindingError::Io {
        path: path.to_owned(),
        source,
    }
}

impl SessionBinding {
    /// Writes the record into `dir` (created 0700 if missing) as
    /// `<session_id>.toml`, mode 0600, through a temporary file and rename so
    /// readers never see half a record.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, BindingError> {
        let path = binding_path(dir, &self.session_id)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))?;
        let text = toml::to_string(self).map_err(|error| BindingError::Malformed {
            path: path.clone(),
            message: error.to_string(),
        })?;
        let temporary = dir.join(format!(".{}.{}.tmp", self.session_id, std::process::id()));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&temporary, &path)
        })();
        if let Err(source) = result {
            let _ = fs::remove_file(&temporary);
            return Err(BindingError::Io { path, source });
        }
        Ok(path)
    }

    /// Reads and checks a record: a regular root-owned file that nobody else
    /// can write, within the size bound, well-formed.
    pub fn read(path: &Path) -> Result<Self, BindingError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(path)
            .map_err(io_error(path))?;
        let metadata = file.metadata().map_err(io_error(path))?;
        let untrusted = |reason: String| BindingError::Untrusted {
            path: path.to_owned(),
            reason,
        };
        if !metadata.is_file() {
            return Err(untrusted("not a regular file".to_owned()));
        }
        if metadata.uid() != 0 {
            return Err(untrusted(format!(
                "owned by uid {}, not root",
                metadata.uid()
            )));
        }
        if metadata.permissions().mode() & 0o022 != 0 {
            return Err(untrusted(format!(
                "mode {:04o} lets group or others write it",
                metadata.permissions().mode() & 0o7777
            )));
        }
        let mut text = String::new();
        read_bounded(file, &mut text).map_err(io_error(path))?;
        if text.len() as u64 > MAX_BINDING_SIZE {
            return Err(untrusted(format!("larger than {MAX_BINDING_SIZE} bytes")));
        }
        Self::parse(path, &text)
    }

    /// Parses and checks the text of a record read from `path` (used only
    /// in messages): well-formed, this version, a safe session id.
    pub fn parse(path: &Path, text: &str) -> Result<Self, BindingError> {
        let malformed = |message: String| BindingError::Malformed {
            path: path.to_owned(),
            message,
        };
        let binding: SessionBinding =
            toml::from_str(text).map_err(|error| malformed(error.message().to_owned()))?;
        if binding.version != BINDING_VERSION {
            return Err(malformed(format!(
                "unsupported version {}",
                binding.version
            )));
        }
        validate_session_id(&binding.session_id)?;
        Ok(binding)
    }

    /// Removes the record of `session_id` from `dir` only if `written_by`
    /// accepts it: close_session removes the record its own transaction
    /// wrote, never one another transaction wrote for the same session. A
    /// missing record is fine (`Ok(false)`); an unreadable or refused one is
    /// left alone (`Ok(false)`). `Ok(true)`: removed.
    pub fn remove_if(
        dir: &Path,
        session_id: &str,
        written_by: impl FnOnce(&SessionBinding) -> bool,
    ) -> Result<bool, BindingError> {
        let path = binding_path(dir, session_id)?;
        let record = match Self::read(&path) {
            Ok(record) => record,
            Err(BindingError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(false)
            }
            Err(BindingError::Io { path, source }) => {
                return Err(BindingError::Io { path, source })
            }
            Err(_) => return Ok(false),
        };
        if record.session_id != session_id || !written_by(&record) {
            return Ok(false);
        }
        Self::remove(dir, session_id).map(|()| true)
    }

    /// Removes the record of `session_id` from `dir`; a missing one is fine.
    pub fn remove(dir: &Path, session_id: &str) -> Result<(), BindingError> {
        let path = binding_path(dir, session_id)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(BindingError::Io { path, source }),
        }
    }
}

fn read_bounded(file: File, text: &mut String) -> io::Result<usize> {
    file.take(MAX_BINDING_SIZE + 1).read_to_string(text)
}

#[cfg(test)]
mod tests_support {
    use super::*;

    pub(super) fn sample(session_id: &str) -> SessionBinding {
        SessionBinding {
            version: BINDING_VERSION,
            session_id: session_id.to_owned(),
            uid: 1000,
            user: "alice".into(),
            service: "login".into(),
            tty: "tty1".into(),
            pid: 42,
            created: 1_763_900_000,
            certificate_sha256: "ab".repeat(32),
            token: BoundToken {
                label: "alice".into(),
                manufacturer: "piv_II".into(),
                model: "PKCS#15 emulated".into(),
                serial: "0123456789abcdef".into(),
                slot_description: "Virtual PCD 00 00".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::sample;
    use super::*;

    #[test]
    #[ignore = "needs root: records must be root-owned"]
    fn written_records_read_back_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = dir.path().join("sessions");
        let path = sample("c1").write(&sessions).unwrap();
        assert_eq!(path, sessions.join("c1.toml"));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&sessions).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(SessionBinding::read(&path).unwrap(), sample("c1"));
        SessionBinding::remove(&sessions, "c1").unwrap();
        assert!(!path.exists());
        SessionBinding::remove(&sessions, "c1").unwrap();
    }

    #[test]
    fn hostile_session_ids_cannot_name_files() {
        for id in ["", "../x", "a/b", ".hidden", "c1\n", &"x".repeat(65)] {
            assert!(binding_path(Path::new("/run"), id).is_err(), "{id:?}");
        }
    }

    #[test]
    #[ignore = "needs root: chowns records to other users"]
    fn foreign_owned_writable_or_malformed_records_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample("7").write(dir.path()).unwrap();

        fs::set_permissions(&path, fs::Permissions::from_mode(0o622)).unwrap();
        assert!(matches!(
            SessionBinding::read(&path),
            Err(BindingError::Untrusted { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();

        std::os::unix::fs::chown(&path, Some(1000), None).unwrap();
        assert!(matches!(
            SessionBinding::read(&path),
            Err(BindingError::Untrusted { .. })
        ));
        std::os::unix::fs::chown(&path, Some(0), None).unwrap();

        fs::write(&path, "version = 1\nsession_id = 3\n").unwrap();
        assert!(matches!(
            SessionBinding::read(&path),
            Err(BindingError::Malformed { .. })
        ));

        // A record padded past the bound with a comment: well-formed, too big.
        let padded = format!(
            "{}#{}\n",
            toml::to_string(&sample("7")).unwrap(),
            "x".repeat(MAX_BINDING_SIZE as usize)
        );
        fs::write(&path, &padded).unwrap();
        match SessionBinding::read(&path) {
            Err(BindingError::Untrusted { reason, .. }) => {
                assert!(reason.contains("larger than 16384 bytes"), "{reason}")
            }
            other => panic!("oversized record: {other:?}"),
        }
        assert_eq!(
            SessionBinding::parse(&path, &padded).unwrap(),
            sample("7"),
            "only the size made it unacceptable"
        );

        let link = dir.path().join("8.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(
            SessionBinding::read(&link).is_err(),
            "symlinks are not followed"
        );
    }
}

/// The logind session of this process: `session-<id>.scope` in its cgroup
/// path, as sd_pid_get_session() finds it. Used when the PAM environment has
/// no XDG_SESSION_ID.
pub fn session_id_from_cgroup(cgroup_file: &str) -> Option<String> {
    cgroup_file.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.split('/').find_map(|component| {
            let id = component.strip_prefix("session-")?.strip_suffix(".scope")?;
            validate_session_id(id).ok().map(|()| id.to_owned())
        })
    })
}

/// logind's state directory: one file per session, `KEY=value` lines.
pub const LOGIND_SESSIONS_DIR: &str = "/run/systemd/sessions";

/// The `LEADER=` PID in a logind session state file: the process that
/// called CreateSession, which pam_systemd does with the PAM application's
/// own PID.
pub fn session_leader(state_file: &str) -> Option<u32> {
    state_file
        .lines()
        .find_map(|line| line.strip_prefix("LEADER="))
        .and_then(|pid| pid.trim().parse().ok())
}

/// Why open_session binds nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotBound {
    /// No XDG_SESSION_ID: pam_systemd created no session in this transaction.
    NoSession,
    /// XDG_SESSION_ID cannot name a record file.
    BadSessionId(String),
    /// logind's state file names another leader than the PAM application.
    OtherLeader {
        /// The session.
        session: String,
        /// The leader logind names, if it names one.
        leader: Option<u32>,
    },
}

/// The logind session this PAM transaction created, to be bound.
///
/// Only XDG_SESSION_ID from this handle's PAM environment counts:
/// pam_systemd sets it only when it created the session. A PAM application
/// that runs inside a session already (`su` or `sudo` in a desktop session)
/// gets none, and the session its process sits in belongs to its caller:
/// binding that one would rebind the caller's session to another card, and
/// close_session would then delete the caller's binding. Where logind's
/// state file (`logind_state`) could be read, its leader must be the PAM
/// application itself (pam_systemd's CreateSession passes the
/// application's PID); where it could not, XDG_SESSION_ID is all there is.
pub fn session_to_bind(
    xdg_session_id: Option<&str>,
    logind_state: Option<&str>,
    host_pid: u32,
) -> Result<String, NotBound> {
    let id = xdg_session_id
        .filter(|id| !id.is_empty())
        .ok_or(NotBound::NoSession)?;
    validate_session_id(id).map_err(|error| NotBound::BadSessionId(error.to_string()))?;
    match logind_state.map(session_leader) {
        None => Ok(id.to_owned()),
        Some(Some(leader)) if leader == host_pid => Ok(id.to_owned()),
        Some(leader) => Err(NotBound::OtherLeader {
            session: id.to_owned(),
            leader,
        }),
    }
}

impl SessionBinding {
    /// Whether this record is the one the PAM transaction of `host_pid`,
    /// `service`, `user` and the certificate `certificate_sha256` wrote:
    /// close_session removes only that one.
    pub fn written_by(
        &self,
        host_pid: u32,
        service: &str,
        user: &str,
        certificate_sha256: &str,
    ) -> bool {
        self.pid == host_pid
            && self.service == service
            && self.user == user
            && self.certificate_sha256 == certificate_sha256
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn only_a_session_this_transaction_created_is_bound() {
        let state = |leader: u32| format!("UID=1000\nLEADER={leader}\n");
        assert_eq!(session_to_bind(None, None, 7), Err(NotBound::NoSession));
        assert_eq!(session_to_bind(Some(""), None, 7), Err(NotBound::NoSession));
        assert!(matches!(
            session_to_bind(Some("../c1"), None, 7),
            Err(NotBound::BadSessionId(_))
        ));
        assert_eq!(
            session_to_bind(Some("c1"), Some(&state(7)), 7),
            Ok("c1".to_owned())
        );
        // su in a desktop session: the session is its caller's.
        assert_eq!(
            session_to_bind(Some("c1"), Some(&state(3266)), 7),
            Err(NotBound::OtherLeader {
                session: "c1".to_owned(),
                leader: Some(3266)
            })
        );
        assert_eq!(
            session_to_bind(Some("c1"), Some("UID=1000\n"), 7),
            Err(NotBound::OtherLeader {
                session: "c1".to_owned(),
                leader: None
            })
        );
        // No state file to compare with: XDG_SESSION_ID is trusted.
        assert_eq!(session_to_bind(Some("c1"), None, 7), Ok("c1".to_owned()));
    }

    #[test]
    fn close_session_removes_only_the_record_its_transaction_wrote() {
        let record = super::tests_support::sample("c3");
        let sha256 = "ab".repeat(32);
        assert!(record.written_by(42, "login", "alice", &sha256));
        assert!(!record.written_by(43, "login", "alice", &sha256));
        assert!(!record.written_by(42, "sudo", "alice", &sha256));
        assert!(!record.written_by(42, "login", "bob", &sha256));
        assert!(!record.written_by(42, "login", "alice", &"cd".repeat(32)));
    }

    #[test]
    fn the_session_leader_comes_from_loginds_state_file() {
        let state = "# This is private data. Do not parse.\nUID=1000\nUSER=alice\nACTIVE=1\nLEADER=3266\nTYPE=tty\n";
        assert_eq!(session_leader(state), Some(3266));
        assert_eq!(session_leader("UID=1000\n"), None);
        assert_eq!(session_leader("LEADER=x\n"), None);
    }

    #[test]
    #[ignore = "needs root: records must be root-owned"]
    fn remove_if_leaves_a_record_another_transaction_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = super::tests_support::sample("c3");
        record.write(dir.path()).unwrap();
        assert!(!SessionBinding::remove_if(dir.path(), "c3", |r| r.pid == 7).unwrap());
        assert!(dir.path().join("c3.toml").exists());
        record.pid = 7;
        record.write(dir.path()).unwrap();
        assert!(SessionBinding::remove_if(dir.path(), "c3", |r| r.pid == 7).unwrap());
        assert!(!dir.path().join("c3.toml").exists());
        assert!(!SessionBinding::remove_if(dir.path(), "c3", |_| true).unwrap());
    }

    #[test]
    fn session_id_comes_from_the_session_scope() {
        let unified = "0::/user.slice/user-1000.slice/session-c12.scope\n";
        assert_eq!(session_id_from_cgroup(unified).as_deref(), Some("c12"));
        let hybrid = "12:pids:/user.slice/user-0.slice/session-3.scope\n0::/user.slice/user-0.slice/session-3.scope\n";
        assert_eq!(session_id_from_cgroup(hybrid).as_deref(), Some("3"));
        assert_eq!(
            session_id_from_cgroup("0::/system.slice/ssh.service\n"),
            None
        );
        assert_eq!(session_id_from_cgroup("0::/session-../x.scope\n"), None);
    }
}
