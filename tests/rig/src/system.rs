//! Real PAM clients (su, sudo, pamtester) against system paths, without
//! touching the system: each runs in a private mount namespace where test
//! files are bind-mounted over /etc/pam.d, /etc/passwd, /etc/sudoers...

use std::path::{Path, PathBuf};
use std::process::Command;

/// Files to lay over system paths for one command.
#[derive(Debug)]
pub struct Overlay {
    dir: PathBuf,
    binds: Vec<(PathBuf, PathBuf)>,
    pam_dir: Option<PathBuf>,
    overlays: Vec<(PathBuf, PathBuf, PathBuf)>,
}

impl Overlay {
    /// Keeps the replacement files under `dir`.
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("overlay dir");
        Self {
            dir: dir.to_owned(),
            binds: Vec::new(),
            pam_dir: None,
            overlays: Vec::new(),
        }
    }

    /// Lays a writable overlayfs over the directory `target`; returns its
    /// upper directory. Files put there before [`Overlay::command`] runs
    /// appear in `target`, and whatever the command writes there lands in
    /// the upper directory, never in the real `target`.
    pub fn overlay_dir(&mut self, target: &str) -> PathBuf {
        let name = target.trim_start_matches('/').replace('/', "_");
        let upper = self.dir.join(format!("{name}.upper"));
        let work = self.dir.join(format!("{name}.work"));
        std::fs::create_dir_all(&upper).expect("overlay upper dir");
        std::fs::create_dir_all(&work).expect("overlay work dir");
        self.overlays
            .push((PathBuf::from(target), upper.clone(), work));
        upper
    }

    /// Replaces the existing file `target` with `contents` (mode `mode`, root-owned).
    pub fn file(&mut self, target: &str, contents: &str, mode: u32) -> &mut Self {
        use std::os::unix::fs::PermissionsExt;
        let source = self
            .dir
            .join(target.trim_start_matches('/').replace('/', "_"));
        std::fs::write(&source, contents).expect("write overlay file");
        std::fs::set_permissions(&source, std::fs::Permissions::from_mode(mode))
            .expect("chmod overlay file");
        self.binds.push((source, PathBuf::from(target)));
        self
    }

    /// Lays an empty directory over the directory `target`, e.g.
    /// `/run/pcscd`, so that a command cannot reach a daemon of other tests.
    /// Nothing to hide (and nothing to mount on) when `target` is absent.
    pub fn empty_dir(&mut self, target: &str) -> &mut Self {
        if !Path::new(target).is_dir() {
            return self;
        }
        let source = self.dir.join(format!(
            "{}.empty",
            target.trim_start_matches('/').replace('/', "_")
        ));
        std::fs::create_dir_all(&source).expect("empty overlay dir");
        self.binds.push((source, PathBuf::from(target)));
        self
    }

    /// Adds `/etc/passwd` and `/etc/group` entries (to copies of the real files).
    pub fn users(&mut self, users: &[(&str, u32)]) -> &mut Self {
        let mut passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
        let mut group = std::fs::read_to_string("/etc/group").expect("read /etc/group");
        for (name, uid) in users {
            passwd.push_str(&format!("{name}:x:{uid}:{uid}:{name}:/tmp:/bin/sh\n"));
            group.push_str(&format!("{name}:x:{uid}:\n"));
        }
        self.file("/etc/passwd", &passwd, 0o644);
        self.file("/etc/group", &group, 0o644)
    }

    /// Puts PAM service `name` into a copy of /etc/pam.d laid over the real one.
    pub fn pam_service(&mut self, name: &str, stack: &str) -> &mut Self {
        let dir = match &self.pam_dir {
            Some(dir) => dir.clone(),
            None => {
                let dir = self.dir.join("pam.d");
                crate::run(Command::new("cp").args(["-a", "/etc/pam.d"]).arg(&dir));
                self.binds.push((dir.clone(), PathBuf::from("/etc/pam.d")));
                self.pam_dir = Some(dir.clone());
                dir
            }
        };
        std::fs::write(dir.join(name), stack).expect("write PAM service");
        self
    }

    /// A command that runs `program` with the overlay in place, in a private
    /// mount namespace (nothing outside sees the bind mounts).
    pub fn command(&self, program: &str) -> Command {
        let mut script = String::from("set -e\n");
        for index in 0..self.overlays.len() {
            script.push_str(&format!(
                "mount -t overlay overlay -o \"lowerdir=$TESSERA_OVL_DST_{index},upperdir=$TESSERA_OVL_UPPER_{index},workdir=$TESSERA_OVL_WORK_{index}\" \"$TESSERA_OVL_DST_{index}\"\n"
            ));
        }
        for index in 0..self.binds.len() {
            script.push_str(&format!(
                "mount --bind \"$TESSERA_BIND_SRC_{index}\" \"$TESSERA_BIND_DST_{index}\"\n"
            ));
        }
        script.push_str("exec \"$@\"\n");
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(script)
            .arg("sh")
            .arg(program);
        for (index, (target, upper, work)) in self.overlays.iter().enumerate() {
            command
                .env(format!("TESSERA_OVL_DST_{index}"), target)
                .env(format!("TESSERA_OVL_UPPER_{index}"), upper)
                .env(format!("TESSERA_OVL_WORK_{index}"), work);
        }
        for (index, (source, target)) in self.binds.iter().enumerate() {
            command
                .env(format!("TESSERA_BIND_SRC_{index}"), source)
                .env(format!("TESSERA_BIND_DST_{index}"), target);
        }
        command
    }
}
