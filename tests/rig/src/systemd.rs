//! Real systemd as PID 1 in private namespaces, with real dbus-daemon and
//! systemd-logind, on an overlay of the host's root file system (writes
//! stay in the overlay). Boots in about half a second.
//!
//! Tests run inside it through [`in_namespace`]: the test binary boots a
//! namespace and runs itself again in there (through `nsenter`) with only
//! that test selected, so the whole test body (pcscd, the virtual cards,
//! PAM logins through pam_systemd, tessera-eventd as a systemd unit, the
//! locker) sees the namespace's own `/run`, loopback, bus and logind.
//! Nothing is shared with the host's pcscd, so these tests do not take the
//! pcscd lock.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Set (to the test's name) in the environment of the run inside.
pub const INNER: &str = "TESSERA_NS_TEST";

const BOOT_TIMEOUT: Duration = Duration::from_secs(20);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(10);

/// What runs as the namespace's first process: mounts, then systemd.
const INIT_SCRIPT: &str = r#"
set -eu
R=$1
shift
mount -t tmpfs -o mode=0755 tmpfs "$R"
mkdir -p "$R/lower" "$R/upper" "$R/work" "$R/merged"
# Non-recursive: host mounts under / (other tmpfs, /proc) stay out.
mount --bind / "$R/lower"
mount -t overlay overlay -o "lowerdir=$R/lower,upperdir=$R/upper,workdir=$R/work" "$R/merged"
M=$R/merged
mount -t proc proc "$M/proc"
# Read-only sysfs keeps udev away from the host's devices.
mount -t sysfs -o ro sysfs "$M/sys"
mount -t cgroup2 -o rw,nsdelegate cgroup2 "$M/sys/fs/cgroup"
mount -t tmpfs -o mode=0755 tmpfs "$M/dev"
for d in null zero full random urandom tty; do
    touch "$M/dev/$d"
    mount --bind "/dev/$d" "$M/dev/$d"
done
mkdir -p "$M/dev/pts" "$M/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$M/dev/pts"
ln -s pts/ptmx "$M/dev/ptmx"
mount -t tmpfs tmpfs "$M/dev/shm"
mount -t tmpfs -o mode=0755 tmpfs "$M/run"
mount -t tmpfs -o mode=1777 tmpfs "$M/tmp"
# The checkout and its build output stay visible at their own paths, even
# under /tmp or /run, so the tests can run their binaries inside.
for keep in "$@"; do
    mkdir -p "$M$keep"
    mount --bind "$keep" "$M$keep"
done
mkdir -p "$M/run/systemd"
echo tessera > "$M/run/systemd/container"
# Only what the tests need: the bus and logind, not the host's services.
cat > "$M/etc/systemd/system/tessera-test.target" <<EOT
[Unit]
Description=tessera test system
Requires=basic.target dbus.socket
Wants=dbus.service systemd-logind.service
After=basic.target
AllowIsolate=yes
EOT
# The tests run their own pcscd (tessera_testrig::pcscd). Debian's
# socket-activated one, started by sockets.target or by eventd's
# Wants=pcscd.socket, would rebind /run/pcscd/pcscd.comm behind the tests'
# back and answer with readers of its own.
ln -sf /dev/null "$M/etc/systemd/system/pcscd.socket"
ln -sf /dev/null "$M/etc/systemd/system/pcscd.service"
mkdir -p "$M/oldroot"
cd "$M"
pivot_root . oldroot
umount -l /oldroot
exec env -i container=tessera /lib/systemd/systemd --unit=tessera-test.target
"#;

/// A booted namespace; powered off and cleaned up on drop.
#[derive(Debug)]
pub struct Namespace {
    launcher: Child,
    pid1: u32,
    cgroup: PathBuf,
    root: PathBuf,
}

/// The cgroup2 hierarchy: `/sys/fs/cgroup` on pure cgroup2 machines, its
/// `unified` subdirectory on hybrid ones.
fn cgroup2_root() -> Result<PathBuf, String> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|dir| {
            dir.join("cgroup.procs").exists() && dir.join("cgroup.subtree_control").exists()
        })
        .ok_or_else(|| "no cgroup2 hierarchy mounted".to_owned())
}

fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The workspace and the cargo output directory, canonical and de-duplicated.
fn kept_directories() -> Vec<std::path::PathBuf> {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = crate::bins::bin_dir().join("..");
    let mut kept: Vec<std::path::PathBuf> = [workspace, target]
        .iter()
        .filter_map(|dir| fs::canonicalize(dir).ok())
        .collect();
    kept.sort();
    kept.dedup();
    // A directory inside another is already covered by the outer bind.
    let all = kept.clone();
    kept.retain(|dir| {
        !all.iter()
            .any(|outer| outer != dir && dir.starts_with(outer))
    });
    kept
}

impl Namespace {
    /// Boots systemd and waits until logind answers on the bus.
    pub fn boot() -> Result<Namespace, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root".to_owned());
        }
        let name = format!("tessera-ns-{}-{}", std::process::id(), unique());
        let cgroup = cgroup2_root()?.join(&name);
        fs::create_dir(&cgroup).map_err(|e| format!("{}: {e}", cgroup.display()))?;
        // Processes of the tests inside go here, below the namespace's root.
        fs::create_dir(cgroup.join("tessera-tests")).map_err(|e| e.to_string())?;
        let root = std::env::temp_dir().join(format!("{name}-root"));
        fs::create_dir(&root).map_err(|e| e.to_string())?;
        // The shell moves itself (not its parent) into the cgroup, then
        // becomes unshare, whose forked child is the namespace's PID 1.
        let launcher = Command::new("sh")
            .arg("-c")
            .arg(r#"cg=$1; script=$2; shift 2; echo $$ > "$cg/cgroup.procs" && exec unshare --mount --propagation private --pid --fork --uts --ipc --net --cgroup sh -c "$script" init "$@""#)
            .arg("sh")
            .arg(&cgroup)
            .arg(INIT_SCRIPT)
            .arg(&root)
            .args(kept_directories())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn unshare: {e}"))?;
        let mut namespace = Namespace {
            pid1: 0,
            launcher,
            cgroup,
            root,
        };
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            if let Ok(Some(status)) = namespace.launcher.try_wait() {
                let mut error = String::new();
                if let Some(mut stderr) = namespace.launcher.stderr.take() {
                    std::io::Read::read_to_string(&mut stderr, &mut error).ok();
                }
                return Err(format!("namespace init exited with {status}: {error}"));
            }
            if namespace.pid1 == 0 {
                if let Some(pid) = children(namespace.launcher.id()).first() {
                    namespace.pid1 = *pid;
                }
            } else if namespace
                .command("busctl")
                .args(["--system", "status", "org.freedesktop.login1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
            {
                return Ok(namespace);
            }
            if Instant::now() > deadline {
                return Err(format!("logind not up within {BOOT_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// PID 1 of the namespace, as the host sees it.
    pub fn pid1(&self) -> u32 {
        self.pid1
    }

    /// A command that runs `program` inside the namespace, in its cgroup
    /// tree (logind looks callers up by cgroup).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && pid=$2 && shift 2 && exec nsenter -t "$pid" -m -p -n -u -i -C -- "$@""#)
            .arg("sh")
            .arg(self.cgroup.join("tessera-tests"))
            .arg(self.pid1.to_string())
            .arg(program);
        command
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Removes a cgroup and its children, deepest first.
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if self.pid1 != 0 {
            // SIGRTMIN+4 is systemd's "power off"; nix has no real-time signals.
            let _ = Command::new("kill")
                .arg(format!("-{}", nix::libc::SIGRTMIN() + 4))
                .arg(self.pid1.to_string())
                .status();
        }
        let deadline = Instant::now() + POWEROFF_TIMEOUT;
        loop {
            match self.launcher.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!("tessera-testrig: namespace did not power off; killing it");
                    if self.pid1 != 0 {
                        let _ = kill(Pid::from_raw(self.pid1 as i32), Signal::SIGKILL);
                    }
                    let _ = self.launcher.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let deadline = Instant::now() + POWEROFF_TIMEOUT;
        while self.cgroup.exists() && Instant::now() < deadline {
            remove_cgroup(&self.cgroup);
            if self.cgroup.exists() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = fs::remove_dir(&self.root);
    }
}

/// Runs `body` inside a freshly booted namespace. Called as the whole body
/// of a test: outside, it boots the namespace and runs the same test binary
/// in it with only this test selected (failing if that run fails); inside,
/// it runs `body`. The test is named by libtest's thread, not by the
/// caller, so a copied test cannot run another test's body.
pub fn in_namespace(body: impl FnOnce()) {
    let current = std::thread::current();
    let name = current
        .name()
        .filter(|name| *name != "main")
        .expect("in_namespace runs as the body of a #[test], on libtest's thread named after it");
    if let Ok(inner) = std::env::var(INNER) {
        assert_eq!(inner, name, "the namespace was booted for another test");
        body();
        return;
    }
    // One namespace per test process at a time: they are light, but the
    // tests inside are timing-sensitive on two cores.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Build the card on the host: the overlay would hide the result from it.
    let vcard = crate::vcard::vcard_binary().expect("tessera-vcard");
    let started = Instant::now();
    let namespace = Namespace::boot()
        .unwrap_or_else(|error| panic!("cannot boot systemd in a namespace: {error}"));
    eprintln!("namespace booted in {:?}", started.elapsed());
    let exe = std::env::current_exe().expect("test executable");
    let output = namespace
        .command(&exe)
        .args([
            name,
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, name)
        .env("TESSERA_VCARD", vcard)
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("XDG_SESSION_ID")
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run the test inside the namespace");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("--- inside the namespace ---\n{stdout}{stderr}");
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the test failed inside the namespace ({})",
        output.status
    );
}
