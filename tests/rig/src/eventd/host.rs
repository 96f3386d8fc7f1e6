//! tessera-eventd as a plain process on the host, and the login1 stand-in
//! it talks to on a private bus, for the faults real logind will not
//! produce.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bins::artefact;
use crate::pcscd::stop_child;

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
