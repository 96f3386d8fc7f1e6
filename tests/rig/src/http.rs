//! A tiny HTTP/1.1 server on 127.0.0.1 for CRLs and canned OCSP responses,
//! with the misbehaviours the tests need (truncated, slow, error status).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest request head read.
const MAX_HEAD: usize = 64 * 1024;

/// What a path answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this body.
    Body(Vec<u8>),
    /// 200 announcing `declared` bytes, sending `body`, then closing.
    Truncated {
        /// Content-Length sent.
        declared: usize,
        /// Bytes actually sent.
        body: Vec<u8>,
    },
    /// 200 with this body after a delay.
    Slow(Duration, Vec<u8>),
    /// This status with an empty body.
    Status(u16),
}

type Routes = Arc<Mutex<HashMap<String, Reply>>>;
type Hits = Arc<Mutex<HashMap<String, usize>>>;

/// A running server; stopped on drop.
#[derive(Debug)]
pub struct HttpServer {
    port: u16,
    routes: Routes,
    hits: Hits,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Starts a server on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let routes: Routes = Arc::default();
        let hits: Hits = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (routes, hits, stop) = (routes.clone(), hits.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (routes, hits) = (routes.clone(), hits.clone());
                    std::thread::spawn(move || serve(stream, &routes, &hits));
                }
            })
        };
        Self {
            port,
            routes,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// Makes `path` answer `reply` from now on.
    pub fn route(&self, path: &str, reply: Reply) {
        self.routes
            .lock()
            .unwrap()
            .insert(format!("/{}", path.trim_start_matches('/')), reply);
    }

    /// Requests served for `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .get(&format!("/{}", path.trim_start_matches('/')))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut stream: TcpStream, routes: &Routes, hits: &Hits) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < MAX_HEAD {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length.min(MAX_HEAD)];
    if stream.read_exact(&mut body).is_err() {
        return;
    }
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let reply = routes.lock().unwrap().get(&path).cloned();
    let (status, declared, body, delay) = match reply {
        Some(Reply::Body(body)) => (200, body.len(), body, None),
        Some(Reply::Truncated { declared, body }) => (200, declared, body, None),
        Some(Reply::Slow(delay, body)) => (200, body.len(), body, Some(delay)),
        Some(Reply::Status(status)) => (status, 0, Vec::new(), None),
        None => (404, 0, Vec::new(), None),
    };
    if let Some(delay) = delay {
        std::thread::sleep(delay);
    }
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
    );
    let _ = stream.write_all(&body);
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}
