//! tessera-eventd under test: as a real systemd unit inside a
//! [`crate::systemd`] namespace, with logins through pam_systemd that hold
//! their logind session open, and a scripted screen locker in each session;
//! or as a plain process on the host against the login1 stand-in.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bins::artefact;
use crate::login::{LoginRig, PIN};
use crate::pcscd::{stop_child, Pcscd};
use crate::run;

/// The unit's name.
pub const UNIT: &str = "tessera-eventd.service";
/// Where the unit reads its configuration (inside the namespace).
pub const CONFIG: &str = "/etc/tessera/tessera.toml";

/// The source tree's `etc/` directory.
pub fn etc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc")
}

/// tessera-eventd installed as a systemd unit in the namespace.
#[derive(Debug)]
pub struct EventdUnit {
    since: String,
}

/// Where the unit runs the daemon from inside the namespace.
const INSTALLED_BINARY: &str = "/usr/local/sbin/tessera-eventd";

impl EventdUnit {
    /// Installs the unit from `etc/` with a drop-in pointing at the built
    /// binary, the bus policy, `/etc/tessera/tessera.toml` (with `eventd`
    /// appended as its `[eventd]` section) and pcscd's `OPENSC_CONF`.
    pub fn install(pcscd: &Pcscd, eventd: &str) -> EventdUnit {
        let etc = etc_dir();
        std::fs::create_dir_all("/etc/tessera/ca").unwrap();
        std::fs::copy(pcscd.opensc_conf(), "/etc/tessera/opensc.conf").unwrap();
        write_config(eventd);
        std::fs::copy(
            etc.join("systemd/tessera-eventd.service"),
            "/etc/systemd/system/tessera-eventd.service",
        )
        .unwrap();
        // The unit's PrivateTmp hides /tmp, where a checkout may live: run a
        // copy from /usr/local/sbin (the namespace's overlay, not the host).
        std::fs::create_dir_all("/usr/local/sbin").unwrap();
        std::fs::copy(artefact("tessera-eventd"), INSTALLED_BINARY).unwrap();
        let dropin = "/etc/systemd/system/tessera-eventd.service.d";
        std::fs::create_dir_all(dropin).unwrap();
        std::fs::write(
            format!("{dropin}/test.conf"),
            format!(
                "[Service]\nExecStart=\nExecStart={INSTALLED_BINARY} --debug\nEnvironment=OPENSC_CONF=/etc/tessera/opensc.conf\n"
            ),
        )
        .unwrap();
        std::fs::copy(
            etc.join("dbus-1/system.d/org.tessera.EventD1.conf"),
            "/etc/dbus-1/system.d/org.tessera.EventD1.conf",
        )
        .unwrap();
        run(Command::new("busctl").args([
            "--system",
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "ReloadConfig",
        ]));
        run(Command::new("systemctl").arg("daemon-reload"));
        EventdUnit {
            since: String::new(),
        }
    }

    /// `systemctl start`, which returns once the daemon sent READY=1.
    pub fn start(&mut self) {
        self.since = journal_cursor();
        let status = Command::new("systemctl")
            .args(["start", UNIT])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "systemctl start failed:\n{}",
            self.log_text()
        );
    }

    /// The daemon's PID.
    pub fn main_pid(&self) -> u32 {
        let output =
            run(Command::new("systemctl").args(["show", "-p", "MainPID", "--value", UNIT]));
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap()
    }

    /// The unit's journal records (JSON objects) since it was started.
    pub fn journal(&self) -> Vec<Value> {
        let mut command = Command::new("journalctl");
        command.args(["-u", UNIT, "-o", "json", "--no-pager"]);
        if !self.since.is_empty() {
            command.arg(format!("--after-cursor={}", self.since));
        }
        let output = command.output().unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Records whose stable ID (`TESSERA_ID`) is `id`.
    pub fn records(&self, id: &str) -> Vec<Value> {
        self.journal()
            .into_iter()
            .filter(|record| record["TESSERA_ID"] == id)
            .collect()
    }

    /// Waits until `count` records with `id` are in the journal.
    pub fn wait_records(&self, id: &str, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.records(id);
            if records.len() >= count {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "{count} journal record(s) {id} expected within {timeout:?}, got {}:\n{}",
                records.len(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The journal as text, for failure messages.
    pub fn log_text(&self) -> String {
        self.journal()
            .iter()
            .map(|record| {
                // The record's own fields (reader, session, error...), not
                // journald's trusted `_` ones or the source location.
                let fields: String = record
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(name, _)| {
                        !name.starts_with('_')
                            && !name.starts_with("CODE_")
                            && !name.starts_with("__")
                            && ![
                                "MESSAGE",
                                "TESSERA_ID",
                                "PRIORITY",
                                "SYSLOG_IDENTIFIER",
                                "SYSLOG_FACILITY",
                                "TARGET",
                            ]
                            .contains(&name.as_str())
                    })
                    .map(|(name, value)| format!(" {}={}", name.to_lowercase(), value))
                    .collect();
                format!(
                    "{} {}{fields}\n",
                    record["TESSERA_ID"].as_str().unwrap_or("-"),
                    record["MESSAGE"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }

    /// `systemctl reload` (SIGHUP).
    pub fn reload(&self) {
        run(Command::new("systemctl").args(["reload", UNIT]));
    }

    /// `systemctl stop`; true when it stopped cleanly (exit status 0).
    pub fn stop(&self) -> bool {
        run(Command::new("systemctl").args(["stop", UNIT]));
        let output =
            run(Command::new("systemctl").args(["show", "-p", "ExecMainStatus", "--value", UNIT]));
        String::from_utf8_lossy(&output.stdout).trim() == "0"
    }
}

/// Writes `/etc/tessera/tessera.toml` (root, 0644) with `eventd` as its `[eventd]` section.
pub fn write_config(eventd: &str) {
    std::fs::write(
        CONFIG,
        format!(
            "version = 1\n[pkcs11]\nmodule = \"{}\"\n[pki]\nca = [\"/etc/tessera/ca\"]\n[[rule]]\nuser = \"{{cn}}\"\n[eventd]\n{eventd}",
            crate::pcscd::OPENSC_PKCS11
        ),
    )
    .unwrap();
}

fn journal_cursor() -> String {
    let output = Command::new("journalctl")
        .args(["-n", "0", "--show-cursor", "--no-pager", "-q"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("-- cursor: "))
        .unwrap_or_default()
        .to_owned()
}

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

/// tessera-eventd as a plain process on the host (for the login1
/// stand-in on a private bus), logging to a file; stopped by PID.
#[derive(Debug)]
pub struct HostEventd {
    child: Child,
    log: PathBuf,
}

impl HostEventd {
    /// Starts `tessera-eventd --config CONFIG --log stderr` with `env`.
    pub fn start(
        config: &Path,
        log: &Path,
        env: &[(String, std::ffi::OsString)],
        extra: &[&str],
    ) -> HostEventd {
        Self::start_under(&[], config, log, env, extra)
    }

    /// Like [`HostEventd::start`], run by `wrapper` (a program and its
    /// arguments, such as valgrind).
    pub fn start_under(
        wrapper: &[&str],
        config: &Path,
        log: &Path,
        env: &[(String, std::ffi::OsString)],
        extra: &[&str],
    ) -> HostEventd {
        let file = std::fs::File::create(log).unwrap();
        let eventd = artefact("tessera-eventd");
        let mut program: Vec<&std::ffi::OsStr> = wrapper.iter().map(std::ffi::OsStr::new).collect();
        program.push(eventd.as_os_str());
        let child = Command::new(program[0])
            .args(&program[1..])
            .arg("--config")
            .arg(config)
            .args(["--log", "stderr", "--debug"])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        HostEventd {
            child,
            log: log.to_owned(),
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines carrying the stable ID `id`.
    pub fn lines(&self, id: &str) -> Vec<String> {
        let needle = format!("id=\"{id}\"");
        self.log()
            .lines()
            .filter(|line| line.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    /// Waits for `count` lines with `id`.
    pub fn wait_lines(&self, id: &str, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines(id);
            if lines.len() >= count {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{count} log line(s) {id} expected within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM; the exit status code once it stopped (None: it had to be killed).
    pub fn terminate(mut self) -> Option<i32> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for HostEventd {
    fn drop(&mut self) {
        stop_child(&mut self.child, "tessera-eventd");
    }
}

/// The login1 stand-in (`tessera-rig-login1`) on a private bus.
#[derive(Debug)]
pub struct Login1StandIn {
    child: Child,
    calls: PathBuf,
}

impl Login1StandIn {
    /// Starts it with `args` and waits until it owns its name.
    pub fn start(bus: &crate::dbus::PrivateBus, calls: &Path, args: &[&str]) -> Login1StandIn {
        let (key, value) = bus.env();
        let mut child = Command::new(artefact("tessera-rig-login1"))
            .arg("--log")
            .arg(calls)
            .args(args)
            .env(key, value)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready");
        Login1StandIn {
            child,
            calls: calls.to_owned(),
        }
    }

    /// Every call received so far, as (method, session).
    pub fn calls(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .map(|call| {
                (
                    call["call"].as_str().unwrap_or_default().to_owned(),
                    call["session"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// How many times `method` was called for `session`.
    pub fn count(&self, method: &str, session: &str) -> usize {
        self.calls()
            .iter()
            .filter(|(m, s)| m == method && s == session)
            .count()
    }

    /// Waits until `method` was called `count` times for `session`.
    pub fn wait_calls(&self, method: &str, session: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count(method, session) < count {
            assert!(
                Instant::now() < deadline,
                "{method}({session}) x{count} expected within {timeout:?}; calls: {:?}",
                self.calls()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Login1StandIn {
    fn drop(&mut self) {
        stop_child(&mut self.child, "tessera-rig-login1");
    }
}
