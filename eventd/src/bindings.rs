//! The session registry's source: the binding records pam_tessera writes
//! into the sessions directory, watched with inotify on a thread of its own.
//!
//! Every record is checked by [`SessionBinding::read`] (root-owned, not
//! writable by others, well-formed) and must be named after the session it
//! describes; anything else is logged and ignored.

use std::ffi::OsStr;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent};
use tessera_core::binding::{validate_session_id, BindingError, SessionBinding};

use crate::engine::MAX_SESSIONS;
use crate::events::InputSender;
use crate::model::Input;

/// After an inotify failure, wait this long before watching again.
const REWATCH_DELAY: Duration = Duration::from_secs(2);

/// The session id a record file is named for: `<id>.toml`, not hidden
/// (pam_tessera's temporary files start with a dot).
fn session_id_of(name: &OsStr) -> Option<String> {
    let name = name.to_str()?;
    let id = name.strip_suffix(".toml")?;
    validate_session_id(id).ok()?;
    Some(id.to_owned())
}

/// Reads and checks one record; logs why it is refused.
pub fn read_record(dir: &Path, session_id: &str) -> Option<SessionBinding> {
    let path = dir.join(format!("{session_id}.toml"));
    match SessionBinding::read(&path) {
        Ok(binding) if binding.session_id == session_id => Some(binding),
        Ok(binding) => {
            tracing::warn!(
                id = "eventd.binding.refused",
                path = %path.display(),
                "record names session {:?}, not the one it is filed under; ignored",
                binding.session_id
            );
            None
        }
        Err(BindingError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            None
        }
        Err(error) => {
            tracing::warn!(id = "eventd.binding.refused", path = %path.display(), %error, "session binding ignored");
            None
        }
    }
}

/// Every valid record in `dir`, at most [`MAX_SESSIONS`].
pub fn scan(dir: &Path) -> Vec<SessionBinding> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot list session bindings");
            return Vec::new();
        }
    };
    let mut bindings = Vec::new();
    for entry in entries.flatten() {
        if bindings.len() == MAX_SESSIONS {
            tracing::error!(dir = %dir.display(), "more than {MAX_SESSIONS} session bindings; ignoring the rest");
            break;
        }
        if let Some(session_id) = session_id_of(&entry.file_name()) {
            bindings.extend(read_record(dir, &session_id));
        }
    }
    bindings
}

/// Creates the directory (root-only) if it is missing.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Starts the watcher thread: a full scan first, then one input per change.
pub fn spawn(dir: PathBuf, events: InputSender) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("bindings".to_owned())
        .spawn(move || loop {
            if let Err(error) = watch(&dir, &events) {
                tracing::error!(dir = %dir.display(), %error, "watching session bindings failed; retrying");
            }
            std::thread::sleep(REWATCH_DELAY);
        })?;
    Ok(())
}

fn watch(dir: &Path, events: &InputSender) -> nix::Result<()> {
    if let Err(error) = ensure_dir(dir) {
        tracing::warn!(dir = %dir.display(), %error, "cannot create the session binding directory");
    }
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(
        dir,
        AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR
            | AddWatchFlags::IN_DONT_FOLLOW,
    )?;
    // Scan after the watch is in place, so nothing written in between is missed.
    events.send(Input::BindingsRescanned(scan(dir)));
    loop {
        let batch = match inotify.read_events() {
            Ok(batch) => batch,
            Err(Errno::EINTR) => continue,
            Err(error) => return Err(error),
        };
        for event in batch {
            if !handle(dir, &event, events) {
                // The directory itself went away: watch it anew.
                return Ok(());
            }
        }
    }
}

/// False when the watch is gone and must be set up again.
fn handle(dir: &Path, event: &InotifyEvent, events: &InputSender) -> bool {
    if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
        tracing::warn!("inotify queue overflowed; rescanning session bindings");
        events.send(Input::BindingsRescanned(scan(dir)));
        return true;
    }
    if event.mask.intersects(
        AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF,
    ) {
        tracing::warn!(dir = %dir.display(), "session binding directory removed or moved; watching it anew");
        return false;
    }
    let Some(session_id) = event.name.as_deref().and_then(session_id_of) else {
        return true;
    };
    let binding = read_record(dir, &session_id).map(Box::new);
    events.send(Input::Binding {
        session_id,
        binding,
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_files_are_named_after_their_session() {
        assert_eq!(session_id_of(OsStr::new("c1.toml")), Some("c1".into()));
        assert_eq!(session_id_of(OsStr::new("12.toml")), Some("12".into()));
        assert_eq!(session_id_of(OsStr::new(".c1.4242.tmp")), None);
        assert_eq!(session_id_of(OsStr::new(".c1.toml")), None);
        assert_eq!(session_id_of(OsStr::new("c1.toml.bak")), None);
        assert_eq!(session_id_of(OsStr::new("c1")), None);
    }
}
