//! `tessera-rig-locker`: a screen locker for tests. It runs in a logind
//! session as the session's user, answers logind's `Lock` signal with
//! `SetLockedHint(true)` (or, with `--ignore`, never does, like a text
//! console), and prints one JSON line per event. The line `unlock` on
//! standard input sets the hint back to false, as a user unlocking would.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;

use clap::Parser;
use futures_util::StreamExt;
use serde_json::json;
use zbus::{proxy, Connection, OwnedObjectPath};

#[derive(Parser, Debug)]
#[command(about = "A scripted screen locker for a logind session")]
struct Cli {
    /// The logind session id.
    #[arg(long)]
    session: String,
    /// Never answer Lock.
    #[arg(long)]
    ignore: bool,
}

#[proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait Manager {
    fn get_session(&self, id: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(name = "GetSessionByPID")]
    fn get_session_by_pid(&self, pid: u32) -> zbus::Result<OwnedObjectPath>;
}

#[proxy(
    interface = "org.freedesktop.login1.Session",
    default_service = "org.freedesktop.login1"
)]
trait Session {
    fn set_locked_hint(&self, locked: bool) -> zbus::Result<()>;
    #[zbus(signal)]
    fn lock(&self) -> zbus::Result<()>;
    #[zbus(signal)]
    fn unlock(&self) -> zbus::Result<()>;
}

/// Prints one event with the wall-clock time it happened, in microseconds
/// since the epoch (benchmarks compare it with the time of the pull).
#[allow(clippy::disallowed_methods)]
fn say(mut value: serde_json::Value) {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0);
    value["t_us"] = json!(micros);
    println!("{value}");
}

fn main() {
    let cli = Cli::parse();
    zbus::block_on(async {
        let connection = Connection::system().await.expect("system bus");
        let manager = ManagerProxy::new(&connection).await.expect("login1");
        let path = manager
            .get_session(&cli.session)
            .await
            .expect("the session exists");
        // Report whether logind counts this process as part of the session,
        // as it does for a real locker started inside it.
        let own = manager
            .get_session_by_pid(std::process::id())
            .await
            .map(|own| own == path)
            .unwrap_or(false);
        let session = SessionProxy::builder(&connection)
            .path(path.clone())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .expect("session proxy");
        let mut locks = session.receive_lock().await.expect("subscribe Lock").fuse();
        let mut unlocks = session
            .receive_unlock()
            .await
            .expect("subscribe Unlock")
            .fuse();
        say(json!({"event": "ready", "session": cli.session, "in_session": own}));

        let (lines, mut unlock_requests) = futures_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if lines.unbounded_send(line).is_err() {
                    break;
                }
            }
        });
        loop {
            futures_util::select! {
                lock = locks.next() => {
                    if lock.is_none() { break; }
                    say(json!({"event": "lock"}));
                    if !cli.ignore {
                        session.set_locked_hint(true).await.expect("SetLockedHint(true)");
                        say(json!({"event": "hint", "value": true}));
                    }
                }
                unlock = unlocks.next() => {
                    if unlock.is_none() { break; }
                    say(json!({"event": "unlock-signal"}));
                }
                line = unlock_requests.next() => {
                    match line.as_deref() {
                        Some("unlock") => {
                            session.set_locked_hint(false).await.expect("SetLockedHint(false)");
                            say(json!({"event": "hint", "value": false}));
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            }
        }
    });
}

/// A channel from the stdin thread into the async loop.
fn futures_channel() -> (
    futures_channel::mpsc::UnboundedSender<String>,
    futures_util::stream::Fuse<futures_channel::mpsc::UnboundedReceiver<String>>,
) {
    let (sender, receiver) = futures_channel::mpsc::unbounded();
    (sender, receiver.fuse())
}
