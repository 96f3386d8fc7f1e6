//! tessera-eventd under test: as a real systemd unit inside a
//! [`crate::systemd`] namespace, with logins through pam_systemd that hold
//! their logind session open, and a scripted screen locker in each session;
//! or as a plain process on the host against the login1 stand-in.
//!
//! The unit is here; the logins and the locker are in `eventd/session.rs`,
//! the host process and the stand-in in `eventd/host.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bins::artefact;
use crate::pcscd::Pcscd;
use crate::run;

mod host;
mod session;

pub use host::{HostEventd, Login1StandIn};
pub use session::{add_system_user, locked_hint, session_alive, Locker, Session};

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
