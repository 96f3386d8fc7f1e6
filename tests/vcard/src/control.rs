//! The control socket: one command per line (`pull`, `insert`, `status`,
//! `quit`), each answered with one line starting `ok` or `err`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::link::Switch;
use tessera_vcard::piv::PivCard;

/// A client gets this long to send its line before the server gives up on it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds the control socket, replacing a stale socket file left by a
/// killed instance (but never another kind of file).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(_) => {}
    }
    UnixListener::bind(path)
}

/// Serves clients until the process exits; one thread per client so a
/// silent client cannot block the others.
pub fn serve(listener: UnixListener, switch: Arc<Switch>, card: Arc<Mutex<PivCard>>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let (switch, card) = (Arc::clone(&switch), Arc::clone(&card));
        std::thread::spawn(move || {
            if let Err(e) = client(conn, &switch, &card) {
                eprintln!("tessera-vcard: control client: {e}");
            }
        });
    }
}

fn client(conn: UnixStream, switch: &Switch, card: &Mutex<PivCard>) -> io::Result<()> {
    conn.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut writer = conn.try_clone()?;
    for line in BufReader::new(conn).lines() {
        let line = line?;
        let command = line.trim();
        if command.is_empty() {
            continue;
        }
        let reply = execute(command, switch, card);
        writer.write_all(reply.as_bytes())?;
        writer.write_all(b"\n")?;
        if command == "quit" {
            // Quit only after the reply is out, so the client sees it.
            switch.quit();
            break;
        }
    }
    Ok(())
}

fn execute(command: &str, switch: &Switch, card: &Mutex<PivCard>) -> String {
    match command {
        "pull" => {
            switch.pull();
            eprintln!("tessera-vcard: pull requested");
            "ok pulled".to_owned()
        }
        "insert" => {
            switch.insert();
            eprintln!("tessera-vcard: insert requested");
            "ok inserted".to_owned()
        }
        "status" => {
            let link = switch.status();
            let (pin, puk) = card
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .tries_left();
            format!(
                "ok card={} link={} pin_tries_left={pin} puk_tries_left={puk}",
                if link.inserted { "inserted" } else { "pulled" },
                if link.connected { "up" } else { "down" },
            )
        }
        "quit" => "ok quitting".to_owned(),
        other => format!("err unknown command {other:?} (pull, insert, status, quit)"),
    }
}

/// Sends one command and returns the reply line (the `ctl` subcommand).
pub fn request(path: &Path, command: &str) -> io::Result<String> {
    let mut conn = UnixStream::connect(path)?;
    conn.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    conn.write_all(command.as_bytes())?;
    conn.write_all(b"\n")?;
    let mut reply = String::new();
    BufReader::new(conn).read_line(&mut reply)?;
    if reply.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(reply.trim_end().to_owned())
}
