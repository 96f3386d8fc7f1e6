//! `tessera-rig-login1`: a stand-in for systemd-logind on a private bus, for
//! the faults real logind will not produce on demand (slow replies, errors,
//! a name that appears late). It matches logind's interface, object paths
//! (session "1" is /org/freedesktop/login1/session/_31) and error names, and
//! appends every call it receives to a JSON-lines log.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::json;
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection, ObjectServer, OwnedObjectPath};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Locker {
    /// A screen locker answers Lock with SetLockedHint(true).
    Answer,
    /// Nothing listens to Lock (a text console).
    Never,
}

#[derive(Parser, Debug)]
#[command(about = "A login1 stand-in with scripted faults and a call log")]
struct Cli {
    /// A session as ID:USER:UID (repeatable).
    #[arg(long = "session")]
    sessions: Vec<String>,
    /// Append one JSON line per call here.
    #[arg(long)]
    log: PathBuf,
    /// Answer the first N LockSession calls with org.freedesktop.DBus.Error.Failed.
    #[arg(long, default_value_t = 0)]
    fail_lock: u32,
    /// Delay the reply to the first LockSession call by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_first_lock_ms: u64,
    /// What the session's locker does.
    #[arg(long, value_enum, default_value_t = Locker::Answer)]
    locker: Locker,
}

/// logind's object path escaping (sd_bus_path_encode): "1" -> "_31".
fn session_path(id: &str) -> OwnedObjectPath {
    let mut label = String::new();
    for (index, c) in id.chars().enumerate() {
        if c.is_ascii_alphabetic() || (index > 0 && c.is_ascii_digit()) {
            label.push(c);
        } else {
            label.push_str(&format!("_{:02x}", c as u32));
        }
    }
    OwnedObjectPath::try_from(format!("/org/freedesktop/login1/session/{label}")).unwrap()
}

#[derive(Debug)]
struct Log {
    file: Mutex<std::fs::File>,
    start: Instant,
}

impl Log {
    fn call(&self, call: &str, session: &str) {
        let line = json!({"call": call, "session": session, "ms": self.start.elapsed().as_millis() as u64});
        let mut file = self.file.lock().unwrap();
        writeln!(file, "{line}").unwrap();
        file.flush().unwrap();
    }
}

#[derive(zbus::DBusError, Debug)]
#[zbus(prefix = "org.freedesktop.login1")]
enum LoginError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NoSuchSession(String),
    NoSessionForPID(String),
}

#[derive(zbus::DBusError, Debug)]
#[zbus(prefix = "org.freedesktop.DBus.Error")]
enum BusError {
    #[zbus(error)]
    ZBus(zbus::Error),
    Failed(String),
}

#[derive(Debug, Clone)]
struct SessionInfo {
    id: String,
    user: String,
    uid: u32,
}

struct Manager {
    sessions: Arc<Mutex<Vec<SessionInfo>>>,
    log: Arc<Log>,
    fail_lock: u32,
    delay_first_lock: Duration,
    lock_calls: u32,
    locker: Locker,
}

impl Manager {
    fn find(&self, id: &str) -> Result<SessionInfo, LoginError> {
        self.sessions
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or_else(|| LoginError::NoSuchSession(format!("No session '{id}' known")))
    }
}

#[interface(name = "org.freedesktop.login1.Manager", spawn = false)]
impl Manager {
    fn get_session(&self, id: &str) -> Result<OwnedObjectPath, LoginError> {
        self.log.call("GetSession", id);
        self.find(id).map(|s| session_path(&s.id))
    }

    fn get_session_by_pid(&self, pid: u32) -> Result<OwnedObjectPath, LoginError> {
        self.log.call("GetSessionByPID", &pid.to_string());
        Err(LoginError::NoSessionForPID(format!(
            "PID {pid} does not belong to any known session"
        )))
    }

    fn list_sessions(&self) -> Vec<(String, u32, String, String, OwnedObjectPath)> {
        self.log.call("ListSessions", "");
        self.sessions
            .lock()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s.id.clone(),
                    s.uid,
                    s.user.clone(),
                    "seat0".into(),
                    session_path(&s.id),
                )
            })
            .collect()
    }

    async fn lock_session(
        &mut self,
        id: &str,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<(), BusOrLogin> {
        self.log.call("LockSession", id);
        self.lock_calls += 1;
        if self.lock_calls == 1 && !self.delay_first_lock.is_zero() {
            std::thread::sleep(self.delay_first_lock);
        }
        if self.lock_calls <= self.fail_lock {
            return Err(BusOrLogin::Bus(BusError::Failed("scripted failure".into())));
        }
        let session = self.find(id).map_err(BusOrLogin::Login)?;
        lock(server, &session.id, self.locker).await;
        Ok(())
    }

    async fn lock_sessions(&mut self, #[zbus(object_server)] server: &ObjectServer) {
        self.log.call("LockSessions", "");
        let sessions = self.sessions.lock().unwrap().clone();
        for session in sessions {
            lock(server, &session.id, self.locker).await;
        }
    }

    async fn terminate_session(
        &mut self,
        id: &str,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), LoginError> {
        self.log.call("TerminateSession", id);
        let session = self.find(id)?;
        self.sessions.lock().unwrap().retain(|s| s.id != id);
        let path = session_path(&session.id);
        server.remove::<Session, _>(&path).await.ok();
        Manager::session_removed(&emitter, &session.id, path)
            .await
            .map_err(LoginError::ZBus)
    }

    #[zbus(signal)]
    async fn session_removed(
        emitter: &SignalEmitter<'_>,
        id: &str,
        path: OwnedObjectPath,
    ) -> zbus::Result<()>;
}

/// Either error family a LockSession reply can carry.
#[derive(Debug)]
enum BusOrLogin {
    Bus(BusError),
    Login(LoginError),
}

impl zbus::DBusError for BusOrLogin {
    fn create_reply(&self, msg: &zbus::message::Header<'_>) -> zbus::Result<zbus::Message> {
        match self {
            BusOrLogin::Bus(error) => error.create_reply(msg),
            BusOrLogin::Login(error) => error.create_reply(msg),
        }
    }
    fn name(&self) -> zbus::names::ErrorName<'_> {
        match self {
            BusOrLogin::Bus(error) => error.name(),
            BusOrLogin::Login(error) => error.name(),
        }
    }
    fn description(&self) -> Option<&str> {
        match self {
            BusOrLogin::Bus(error) => error.description(),
            BusOrLogin::Login(error) => error.description(),
        }
    }
}

impl From<zbus::Error> for BusOrLogin {
    fn from(error: zbus::Error) -> Self {
        BusOrLogin::Login(LoginError::ZBus(error))
    }
}

/// What logind does on LockSession: the Lock signal on the session; the
/// scripted locker then answers (or not).
async fn lock(server: &ObjectServer, id: &str, locker: Locker) {
    let path = session_path(id);
    let Ok(iface) = server.interface::<_, Session>(&path).await else {
        return;
    };
    let _ = Session::lock(iface.signal_emitter()).await;
    if locker == Locker::Answer {
        iface.get_mut().await.locked_hint = true;
        let _ = iface
            .get()
            .await
            .locked_hint_changed(iface.signal_emitter())
            .await;
    }
}

struct Session {
    info: SessionInfo,
    locked_hint: bool,
    log: Arc<Log>,
}

#[interface(name = "org.freedesktop.login1.Session", spawn = false)]
impl Session {
    #[zbus(name = "Lock")]
    async fn lock_method(&self, #[zbus(signal_emitter)] emitter: SignalEmitter<'_>) {
        self.log.call("Session.Lock", &self.info.id);
        let _ = Session::lock(&emitter).await;
    }

    async fn set_locked_hint(
        &mut self,
        locked: bool,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) {
        self.log.call("SetLockedHint", &self.info.id);
        self.locked_hint = locked;
        let _ = self.locked_hint_changed(&emitter).await;
    }

    #[zbus(property)]
    fn id(&self) -> String {
        self.info.id.clone()
    }

    #[zbus(property)]
    fn name(&self) -> String {
        self.info.user.clone()
    }

    #[zbus(property)]
    fn user(&self) -> (u32, OwnedObjectPath) {
        (
            self.info.uid,
            OwnedObjectPath::try_from(format!("/org/freedesktop/login1/user/_{}", self.info.uid))
                .unwrap(),
        )
    }

    #[zbus(property, name = "TTY")]
    fn tty(&self) -> String {
        "tty1".into()
    }

    #[zbus(property, name = "Type")]
    fn session_type(&self) -> String {
        "tty".into()
    }

    #[zbus(property)]
    fn active(&self) -> bool {
        true
    }

    #[zbus(property)]
    fn remote(&self) -> bool {
        false
    }

    #[zbus(property)]
    fn locked_hint(&self) -> bool {
        self.locked_hint
    }

    #[zbus(signal)]
    async fn lock(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;
}

fn main() {
    let cli = Cli::parse();
    let log = Arc::new(Log {
        file: Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&cli.log)
                .expect("call log"),
        ),
        start: Instant::now(),
    });
    let sessions: Vec<SessionInfo> = cli
        .sessions
        .iter()
        .map(|spec| {
            let mut parts = spec.splitn(3, ':');
            let (id, user, uid) = (parts.next(), parts.next(), parts.next());
            SessionInfo {
                id: id.expect("ID").to_owned(),
                user: user.expect("USER").to_owned(),
                uid: uid.expect("UID").parse().expect("numeric UID"),
            }
        })
        .collect();
    zbus::block_on(async {
        let manager = Manager {
            sessions: Arc::new(Mutex::new(sessions.clone())),
            log: log.clone(),
            fail_lock: cli.fail_lock,
            delay_first_lock: Duration::from_millis(cli.delay_first_lock_ms),
            lock_calls: 0,
            locker: cli.locker,
        };
        let connection: Connection = zbus::connection::Builder::system()
            .serve_at("/org/freedesktop/login1", manager)
            .build()
            .await
            .expect("connect to the bus");
        for info in sessions {
            connection
                .object_server()
                .at(
                    session_path(&info.id),
                    Session {
                        info,
                        locked_hint: false,
                        log: log.clone(),
                    },
                )
                .await
                .expect("serve session");
        }
        // Take the name last, so clients never see it without its objects.
        connection
            .request_name("org.freedesktop.login1")
            .await
            .expect("own org.freedesktop.login1");
        println!("ready");
        std::future::pending::<()>().await;
    });
}
