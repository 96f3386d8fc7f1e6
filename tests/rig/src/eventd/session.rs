//! Logins through real libpam (pam_tessera, then pam_systemd) that hold
//! their logind session open, and the scripted screen locker that runs in
//! such a session; what logind says about a session.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bins::artefact;
use crate::login::{LoginRig, PIN};
use crate::pcscd::stop_child;

/// Lines a child prints, one JSON object each, read on a thread.
#[derive(Debug)]
struct JsonLines(Receiver<Value>);

impl JsonLines {
    fn follow(stdout: std::process::ChildStdout) -> JsonLines {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(value) = serde_json::from_str(&line) {
                    if sender.send(value).is_err() {
                        break;
                    }
                }
            }
        });
        JsonLines(receiver)
    }

    fn wait(&self, event: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let value = self.0.recv_timeout(left).ok()?;
            if value["event"] == event {
                return Some(value);
            }
        }
    }
}

/// A login through real libpam (pam_tessera, then pam_systemd) whose
/// transaction and logind session stay open until dropped.
#[derive(Debug)]
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The logind session id (XDG_SESSION_ID).
    pub id: String,
    /// The user.
    pub user: String,
    /// The user's uid.
    pub uid: u32,
}

/// Adds `user` to the namespace's `/etc/passwd` and `/etc/group` with the
/// uid the rig's fake passwd gives them, so logind knows them.
pub fn add_system_user(rig: &LoginRig, user: &str) {
    let uid = rig.uid_of(user);
    let mut passwd = std::fs::OpenOptions::new()
        .append(true)
        .open("/etc/passwd")
        .unwrap();
    writeln!(passwd, "{user}:x:{uid}:{uid}:{user}:/nonexistent:/bin/sh").unwrap();
    let mut group = std::fs::OpenOptions::new()
        .append(true)
        .open("/etc/group")
        .unwrap();
    writeln!(group, "{user}:x:{uid}:").unwrap();
}

impl Session {
    /// Logs `user` in with their card and PIN; panics unless every step succeeds.
    pub fn login(rig: &LoginRig, user: &str) -> Session {
        let mut child = rig
            .harness_command(
                Some(user),
                &[PIN],
                &[
                    "authenticate",
                    "acct_mgmt",
                    "open_session",
                    "env=XDG_SESSION_ID",
                    "wait",
                ],
                &[],
            )
            .arg("--stop-on-failure")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let lines = JsonLines::follow(child.stdout.take().unwrap());
        let mut id = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(event) = lines.0.recv_timeout(left) else {
                panic!("login of {user} did not finish");
            };
            if event["event"] == "result" {
                assert_eq!(event["name"], "PAM_SUCCESS", "login of {user}: {event}");
            }
            if event["event"] == "env" {
                id = event["value"].as_str().map(str::to_owned);
            }
            if event["event"] == "waiting" {
                break;
            }
        }
        Session {
            child,
            stdin,
            id: id.unwrap_or_else(|| {
                panic!("no XDG_SESSION_ID for {user}: is pam_systemd in the stack?")
            }),
            user: user.to_owned(),
            uid: rig.uid_of(user),
        }
    }

    /// The session's cgroup (its scope unit), inside the namespace.
    pub fn scope(&self) -> PathBuf {
        PathBuf::from(format!(
            "/sys/fs/cgroup/user.slice/user-{}.slice/session-{}.scope",
            self.uid, self.id
        ))
    }

    /// Ends the PAM transaction (the session closes).
    pub fn logout(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.stdin.take());
        stop_child(&mut self.child, "tessera-pam-harness");
    }
}

/// The scripted locker, running as the session's user inside its scope.
#[derive(Debug)]
pub struct Locker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: JsonLines,
}

impl Locker {
    /// Starts the locker in `session`; it answers Lock unless `ignore`.
    pub fn start(session: &Session, ignore: bool) -> Locker {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            // Join the session's scope as root, then become the user.
            .arg(r#"echo $$ > "$1/cgroup.procs" && uid=$2 && shift 2 && exec setpriv --reuid="$uid" --regid="$uid" --clear-groups -- "$@""#)
            .arg("sh")
            .arg(session.scope())
            .arg(session.uid.to_string())
            .arg(artefact("tessera-rig-locker"))
            .args(["--session", &session.id]);
        if ignore {
            command.arg("--ignore");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let lines = JsonLines::follow(child.stdout.take().unwrap());
        let ready = lines
            .wait("ready", Duration::from_secs(10))
            .expect("locker ready");
        assert_eq!(
            ready["in_session"], true,
            "the locker runs inside the session: {ready}"
        );
        Locker {
            child,
            stdin,
            lines,
        }
    }

    /// Waits for the next event named `event`.
    pub fn wait(&self, event: &str, timeout: Duration) -> Option<Value> {
        self.lines.wait(event, timeout)
    }

    /// Every event received so far, without waiting.
    pub fn drain(&self) -> Vec<Value> {
        self.lines.0.try_iter().collect()
    }

    /// Sets LockedHint back to false, as a user unlocking would.
    pub fn unlock(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "unlock").unwrap();
        stdin.flush().unwrap();
        self.lines
            .wait("hint", Duration::from_secs(5))
            .expect("unlocked");
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        drop(self.stdin.take());
        stop_child(&mut self.child, "tessera-rig-locker");
    }
}

/// logind's LockedHint for a session.
pub fn locked_hint(session: &str) -> bool {
    let output = Command::new("loginctl")
        .args(["show-session", session, "-p", "LockedHint", "--value"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim() == "yes"
}

/// Whether logind still knows the session (and it is not closing).
pub fn session_alive(session: &str) -> bool {
    let output = Command::new("loginctl")
        .args(["show-session", session, "-p", "State", "--value"])
        .output()
        .unwrap();
    let state = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    output.status.success() && state != "closing"
}
