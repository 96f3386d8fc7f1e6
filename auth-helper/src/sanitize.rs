//! The first thing the helper does: drop whatever the PAM application's
//! caller could have handed down, before any configuration is read or any
//! PKCS#11 code is loaded.
//!
//! The module already started us with an empty environment, default signal
//! dispositions, an empty signal mask and our own process group. What a
//! spawn cannot reset is done here: descriptors, working directory, umask,
//! resource limits, real and effective ids, core dumps.

use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::prctl;
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
use nix::sys::signal::Signal;
use nix::sys::stat::{umask, Mode};
use nix::unistd::{getresgid, getresuid, setgroups, setresgid, setresuid};

/// Limits a hostile caller could lower to make the token stack fail in
/// ways we did not plan for, or raise to make it dump a PIN to disk.
/// (resource, soft limit wanted); the hard limit is raised where we may.
const LIMITS: &[(Resource, u64)] = &[
    (Resource::RLIMIT_CORE, 0),
    (Resource::RLIMIT_CPU, RLIM_INFINITY),
    (Resource::RLIMIT_FSIZE, RLIM_INFINITY),
    (Resource::RLIMIT_DATA, RLIM_INFINITY),
    (Resource::RLIMIT_AS, RLIM_INFINITY),
    (Resource::RLIMIT_STACK, 8 * 1024 * 1024),
    (Resource::RLIMIT_NOFILE, 1024),
    (Resource::RLIMIT_NPROC, RLIM_INFINITY),
    (Resource::RLIMIT_MEMLOCK, 8 * 1024 * 1024),
];

/// Cleans the process; returns the socket to the module (moved off
/// standard input, close-on-exec). Errors say what could not be reset:
/// the helper then refuses to go on.
pub fn process() -> Result<OwnedFd, String> {
    let socket = take_socket()?;
    close_inherited_descriptors(&socket)?;
    std::env::set_current_dir("/").map_err(|error| format!("cannot change to /: {error}"))?;
    umask(Mode::from_bits_truncate(0o077));
    equalise_ids()?;
    reset_limits()?;
    // No core dumps and no ptrace by the (real) user: the process holds a PIN.
    prctl::set_dumpable(false).map_err(|errno| format!("PR_SET_DUMPABLE: {errno}"))?;
    // Set after the id change, which clears it. A host that dies takes us along.
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(|errno| format!("PR_SET_PDEATHSIG: {errno}"))?;
    Ok(socket)
}

/// The module's socket arrives as standard input; it moves to a
/// close-on-exec descriptor and /dev/null takes its place.
fn take_socket() -> Result<OwnedFd, String> {
    let socket = nix::unistd::dup(std::io::stdin().as_fd())
        .map_err(|errno| format!("no socket on standard input: {errno}"))?;
    fcntl(&socket, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|errno| format!("cannot set close-on-exec on the socket: {errno}"))?;
    let null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| format!("cannot open /dev/null: {errno}"))?;
    nix::unistd::dup2_stdin(&null).map_err(|errno| format!("cannot replace stdin: {errno}"))?;
    Ok(socket)
}

/// Closes every descriptor but 0-2 and the socket: whatever the caller left
/// open without close-on-exec must not reach the token stack.
fn close_inherited_descriptors(socket: &OwnedFd) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|error| format!("cannot list /proc/self/fd: {error}"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open {
        if fd > 2 && fd != socket.as_raw_fd() {
            // The directory listing's own descriptor is already gone: EBADF.
            let _ = nix::unistd::close(fd);
        }
    }
    Ok(())
}

/// A setuid host (su, sudo) runs us with the caller's real uid: make real,
/// effective and saved ids the effective ones, so that nothing below
/// mistakes us for the caller or runs in secure-execution half-states.
/// As root, the caller's groups go too: gid 0, no supplementary groups.
fn equalise_ids() -> Result<(), String> {
    let uids = getresuid().map_err(|errno| format!("getresuid: {errno}"))?;
    let gids = getresgid().map_err(|errno| format!("getresgid: {errno}"))?;
    // su is setuid but not setgid: as root, the caller's group must not
    // own what the helper creates (caches, session bindings).
    let gid = if uids.effective.is_root() {
        setgroups(&[]).map_err(|errno| format!("cannot drop supplementary groups: {errno}"))?;
        nix::unistd::Gid::from_raw(0)
    } else {
        gids.effective
    };
    setresgid(gid, gid, gid).map_err(|errno| format!("setresgid: {errno}"))?;
    setresuid(uids.effective, uids.effective, uids.effective)
        .map_err(|errno| format!("setresuid: {errno}"))?;
    Ok(())
}

/// Puts the limits of [`LIMITS`] in place. As root the hard limit is
/// raised as needed; otherwise the soft limit is capped by the hard one the
/// caller left (an unprivileged caller can only hurt itself).
fn reset_limits() -> Result<(), String> {
    let root = nix::unistd::geteuid().is_root();
    for &(resource, wanted) in LIMITS {
        let (_, hard) =
            getrlimit(resource).map_err(|errno| format!("getrlimit {resource:?}: {errno}"))?;
        let capped = (wanted.min(hard), hard);
        let raised = (wanted, if wanted == 0 { 0 } else { hard.max(wanted) });
        // Raising a hard limit needs CAP_SYS_RESOURCE, which a root in a
        // container may lack: then the caller's hard limit caps ours.
        let result = if root && raised != capped {
            setrlimit(resource, raised.0, raised.1)
                .or_else(|_| setrlimit(resource, capped.0, capped.1))
        } else {
            setrlimit(resource, capped.0, capped.1)
        };
        result.map_err(|errno| format!("setrlimit {resource:?}: {errno}"))?;
    }
    Ok(())
}
