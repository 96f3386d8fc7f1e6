//! A real OpenSSL OCSP responder (`openssl ocsp -port`) over an index.txt
//! the tests write, and offline responses made by the same tool.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::run;

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate's line in index.txt.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    /// Serial number.
    pub serial: u64,
    /// Subject, in OpenSSL's /O=../CN=.. form.
    pub subject: String,
    /// Revocation reason (openssl's spelling, e.g. `keyCompromise`); None: valid.
    pub revoked: Option<&'static str>,
}

/// Writes an OpenSSL CA database listing `entries`.
pub fn write_index(path: &Path, entries: &[IndexEntry]) {
    let expiry = "351231235959Z";
    let mut text = String::new();
    for entry in entries {
        let serial = format!("{:X}", entry.serial);
        let serial = if serial.len() % 2 == 1 {
            format!("0{serial}")
        } else {
            serial
        };
        match entry.revoked {
            None => writeln!(text, "V\t{expiry}\t\t{serial}\tunknown\t{}", entry.subject),
            Some(reason) => {
                let when = OffsetDateTime::now_utc() - time::Duration::hours(2);
                let when = format!(
                    "{:02}{:02}{:02}{:02}{:02}{:02}Z",
                    when.year() % 100,
                    u8::from(when.month()),
                    when.day(),
                    when.hour(),
                    when.minute(),
                    when.second()
                );
                writeln!(
                    text,
                    "R\t{expiry}\t{when},{reason}\t{serial}\tunknown\t{}",
                    entry.subject
                )
            }
        }
        .unwrap();
    }
    std::fs::write(path, text).expect("write index.txt");
}

/// The PEM files a responder signs with.
#[derive(Debug, Clone)]
pub struct ResponderFiles {
    /// index.txt.
    pub index: PathBuf,
    /// The issuing CA's certificate.
    pub ca: PathBuf,
    /// The signer's certificate.
    pub signer: PathBuf,
    /// The signer's key.
    pub key: PathBuf,
}

impl ResponderFiles {
    /// Writes the CA certificate, the signer's certificate and key under `dir` with prefix `name`.
    pub fn write(dir: &Path, name: &str, ca_pem: &str, signer: &(String, String)) -> Self {
        let files = Self {
            index: dir.join(format!("{name}-index.txt")),
            ca: dir.join(format!("{name}-ca.pem")),
            signer: dir.join(format!("{name}-signer.pem")),
            key: dir.join(format!("{name}-signer.key")),
        };
        std::fs::write(&files.ca, ca_pem).unwrap();
        std::fs::write(&files.signer, &signer.0).unwrap();
        std::fs::write(&files.key, &signer.1).unwrap();
        files
    }

    fn signing_args(&self) -> Vec<String> {
        [
            "-index",
            path(&self.index),
            "-CA",
            path(&self.ca),
            "-rsigner",
            path(&self.signer),
            "-rkey",
            path(&self.key),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Answers a DER request offline, the way the responder would, with
    /// nextUpdate `days` ahead (0: none).
    pub fn respond(&self, request: &[u8], days: u32, dir: &Path) -> Vec<u8> {
        let request_path = dir.join("offline-request.der");
        let response_path = dir.join("offline-response.der");
        std::fs::write(&request_path, request).unwrap();
        let mut command = Command::new("openssl");
        command.arg("ocsp").args(self.signing_args()).args([
            "-reqin",
            path(&request_path),
            "-respout",
            path(&response_path),
        ]);
        if days > 0 {
            command.args(["-ndays", &days.to_string()]);
        }
        run(&mut command);
        std::fs::read(&response_path).unwrap()
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// A free TCP port on 127.0.0.1 (free when asked; the daemon binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

/// `openssl ocsp -port`, stopped by PID on drop.
#[derive(Debug)]
pub struct OcspResponder {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl OcspResponder {
    /// Starts a responder for `files` (nextUpdate one day ahead), logging into `dir`.
    pub fn start(files: &ResponderFiles, dir: &Path) -> Self {
        let port = free_port();
        let log = dir.join(format!("ocsp-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("responder log");
        let child = Command::new("openssl")
            .arg("ocsp")
            .args(["-port", &port.to_string()])
            .args(files.signing_args())
            .args(["-ndays", "1"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start openssl ocsp");
        let mut responder = Self {
            child: Some(child),
            port,
            log,
        };
        let started = Instant::now();
        // Not a probe connection: the single-threaded responder would wait
        // on it forever. It says when it listens.
        while !responder
            .log()
            .contains("waiting for OCSP client connections")
        {
            if let Some(Some(status)) = responder
                .child
                .as_mut()
                .map(|child| child.try_wait().unwrap())
            {
                panic!("openssl ocsp exited with {status}: {}", responder.log());
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "openssl ocsp did not listen on {port}: {}",
                responder.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        responder
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it: kill by PID, then reap.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OcspResponder {
    fn drop(&mut self) {
        self.stop();
    }
}
