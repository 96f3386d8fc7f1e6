//! Refuses files that someone other than root could have written.
//!
//! The config decides who may log in and the PKCS#11 module is code that runs
//! inside `login`, `sudo` and `gdm`; both, and every directory above them, must
//! be writable by root alone.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

const GROUP_OR_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// Why a file is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The file or a directory on its path cannot be examined.
    #[error("{path}: {source}")]
    Io {
        /// Path of the file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The path is relative; trust decisions need absolute paths.
    #[error("{0}: path must be absolute")]
    Relative(PathBuf),
    /// Owned by someone other than root.
    #[error("{path}: owned by uid {uid}, must be owned by root")]
    Owner {
        /// Offending path.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Writable by group or others.
    #[error("{path}: mode {mode:04o} lets group or others write it; run chmod go-w {path}")]
    Writable {
        /// Offending path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a regular file.
    #[error("{0}: not a regular file")]
    NotAFile(PathBuf),
    /// A symbolic link someone other than root made.
    #[error("{path}: a symbolic link owned by uid {uid}; only root's links are followed")]
    SymlinkOwner {
        /// The link.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
}

/// Whether a root-owned sticky directory counts as safe: yes above the
/// trusted file or directory (others cannot replace entries they do not
/// own), never for the trusted directory itself (anyone can add entries).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sticky {
    Ancestor,
    Trusted,
}

fn check_owner_and_mode(
    path: &Path,
    metadata: &Metadata,
    sticky: Sticky,
) -> Result<(), TrustError> {
    if metadata.uid() != 0 {
        return Err(TrustError::Owner {
            path: path.to_owned(),
            uid: metadata.uid(),
        });
    }
    let mode = metadata.mode() & 0o7777;
    // A root-owned sticky directory such as /tmp is safe: others cannot
    // replace or rename entries they do not own.
    let sticky_dir = sticky == Sticky::Ancestor && metadata.is_dir() && mode & STICKY != 0;
    if mode & GROUP_OR_OTHER_WRITE != 0 && !sticky_dir {
        return Err(TrustError::Writable {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

fn check_ancestors(path: &Path) -> Result<(), TrustError> {
    let mut ancestor = PathBuf::new();
    let components: Vec<Component> = path.components().collect();
    // Every directory above the file: a writable one could swap the file.
    for component in &components[..components.len().saturating_sub(1)] {
        ancestor.push(component);
        check_link(&ancestor)?;
        let metadata = std::fs::metadata(&ancestor).map_err(|source| TrustError::Io {
            path: ancestor.clone(),
            source,
        })?;
        check_owner_and_mode(&ancestor, &metadata, Sticky::Ancestor)?;
    }
    Ok(())
}

/// A symbolic link is followed only if root made it: in a sticky directory
/// anyone may plant one pointing at any root-owned file.
fn check_link(path: &Path) -> Result<(), TrustError> {
    let metadata = std::fs::symlink_metadata(path).map_err(|source| TrustError::Io {
        path: path.to_owned(),
        source,
    })?;
    if metadata.file_type().is_symlink() && metadata.uid() != 0 {
        return Err(TrustError::SymlinkOwner {
            path: path.to_owned(),
            uid: metadata.uid(),
        });
    }
    Ok(())
}

/// Checks that `path`, its target if it is a symlink, and all their parent
/// directories are owned by root and not writable by group or others.
pub fn check_trusted_path(path: &Path) -> Result<(), TrustError> {
    trusted_real_path(path).map(drop)
}

/// [`check_trusted_path`], returning the path with symlinks resolved.
fn trusted_real_path(path: &Path) -> Result<PathBuf, TrustError> {
    if !path.is_absolute() {
        return Err(TrustError::Relative(path.to_owned()));
    }
    check_ancestors(path)?;
    check_link(path)?;
    let real = std::fs::canonicalize(path).map_err(|source| TrustError::Io {
        path: path.to_owned(),
        source,
    })?;
    if real != path {
        check_ancestors(&real)?;
    }
    let metadata = std::fs::metadata(&real).map_err(|source| TrustError::Io {
        path: real.clone(),
        source,
    })?;
    check_owner_and_mode(&real, &metadata, Sticky::Trusted)?;
    Ok(real)
}

/// Opens a trusted regular file for reading, re-checking the opened
/// descriptor so the file read is the file checked.
pub fn open_trusted_file(path: &Path) -> Result<File, TrustError> {
    let real = trusted_real_path(path)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(real)
        .map_err(|source| TrustError::Io {
            path: path.to_owned(),
            source,
        })?;
    let metadata = file.metadata().map_err(|source| TrustError::Io {
        path: path.to_owned(),
        source,
    })?;
    if !metadata.is_file() {
        return Err(TrustError::NotAFile(path.to_owned()));
    }
    check_owner_and_mode(path, &metadata, Sticky::Trusted)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn running_as_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn root_owned_private_file_is_trusted_and_group_writable_is_not() {
        if !running_as_root() {
            eprintln!("skipped: needs root to create root-owned files");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tessera.toml");
        std::fs::write(&file, "version = 1\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(open_trusted_file(&file).is_ok());

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
        let error = open_trusted_file(&file).unwrap_err();
        assert!(
            matches!(error, TrustError::Writable { mode: 0o664, .. }),
            "{error}"
        );
    }

    #[test]
    fn writable_parent_directory_is_refused() {
        if !running_as_root() {
            eprintln!("skipped: needs root to create root-owned files");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("conf");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).unwrap();
        let file = sub.join("tessera.toml");
        std::fs::write(&file, "version = 1\n").unwrap();
        let error = check_trusted_path(&file).unwrap_err();
        assert!(
            matches!(&error, TrustError::Writable { path, .. } if *path == sub),
            "{error}"
        );
    }

    #[test]
    fn file_owned_by_another_user_is_refused() {
        if !running_as_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tessera.toml");
        std::fs::write(&file, "version = 1\n").unwrap();
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        let error = check_trusted_path(&file).unwrap_err();
        assert!(
            matches!(error, TrustError::Owner { uid: 65534, .. }),
            "{error}"
        );
    }

    #[test]
    fn a_sticky_directory_is_safe_above_a_trusted_file_but_never_trusted_itself() {
        if !running_as_root() {
            eprintln!("skipped: needs root to create root-owned files");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let file = shared.join("ca.pem");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            check_trusted_path(&file).is_ok(),
            "root's file below /tmp-like"
        );
        assert!(open_trusted_file(&file).is_ok());
        // As a CA directory, anyone could add anchors to it.
        let error = check_trusted_path(&shared).unwrap_err();
        assert!(
            matches!(&error, TrustError::Writable { path, mode: 0o1777 } if *path == shared),
            "{error}"
        );
    }

    #[test]
    fn a_users_symlink_to_a_root_owned_file_is_refused() {
        if !running_as_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let target = dir.path().join("some-root-ca.pem");
        std::fs::write(&target, "x").unwrap();
        let link = shared.join("planted.pem");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        let error = check_trusted_path(&link).unwrap_err();
        assert!(
            matches!(&error, TrustError::SymlinkOwner { uid: 65534, path } if *path == link),
            "{error}"
        );
        assert!(open_trusted_file(&link).is_err());
        // The same link made by root is followed.
        std::os::unix::fs::lchown(&link, Some(0), Some(0)).unwrap();
        assert!(check_trusted_path(&link).is_ok());
    }

    #[test]
    fn relative_path_is_refused() {
        assert!(matches!(
            check_trusted_path(Path::new("etc/tessera.toml")),
            Err(TrustError::Relative(_))
        ));
    }
}
