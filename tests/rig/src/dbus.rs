//! A private system bus (`dbus-daemon --config-file`) in a scratch
//! directory, with the stock system-bus default policy, logind's policy and
//! tessera-eventd's own policy file from `etc/`; clients reach it through
//! `DBUS_SYSTEM_BUS_ADDRESS`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pcscd::stop_child;

/// logind's policy as Debian installs it.
pub const LOGIN1_POLICY: &str = "/usr/share/dbus-1/system.d/org.freedesktop.login1.conf";

/// tessera-eventd's bus policy in the source tree.
pub fn eventd_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/dbus-1/system.d/org.tessera.EventD1.conf")
}

/// A running private system bus; stopped by PID on drop.
#[derive(Debug)]
pub struct PrivateBus {
    child: Child,
    socket: PathBuf,
}

impl PrivateBus {
    /// Starts the bus with its files in `dir`.
    pub fn start(dir: &Path) -> PrivateBus {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("system_bus_socket");
        let config = dir.join("system-bus.conf");
        std::fs::write(&config, config_text(&socket)).unwrap();
        let log = File::create(dir.join("dbus.log")).unwrap();
        let child = Command::new("dbus-daemon")
            .arg("--config-file")
            .arg(&config)
            .args(["--nofork", "--nopidfile"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dbus-daemon (is the dbus package installed?)");
        let bus = PrivateBus { child, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !bus.socket.exists() {
            assert!(Instant::now() < deadline, "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        bus
    }

    /// The bus address.
    pub fn address(&self) -> String {
        format!("unix:path={}", self.socket.display())
    }

    /// `DBUS_SYSTEM_BUS_ADDRESS` for clients.
    pub fn env(&self) -> (String, String) {
        ("DBUS_SYSTEM_BUS_ADDRESS".to_owned(), self.address())
    }

    /// Waits until `name` has an owner on this bus.
    pub fn wait_for_name(&self, name: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let owned = Command::new("busctl")
                .arg(format!("--address={}", self.address()))
                .args(["status", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if owned {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        stop_child(&mut self.child, "dbus-daemon");
    }
}

fn config_text(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{login1}</include>
  <include>{eventd}</include>
</busconfig>
"#,
        socket = socket.display(),
        login1 = LOGIN1_POLICY,
        eventd = eventd_policy().display(),
    )
}
