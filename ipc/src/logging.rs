//! Logging for the module and its helper: journald or syslog with identifier
//! `pam_tessera`, installed as a scoped dispatcher for one PAM call so
//! nothing leaks into the host application's own tracing setup. Never stdout.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use tracing::level_filters::LevelFilter;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Where log records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// journald when its socket exists, otherwise syslog.
    Auto,
    /// The systemd journal.
    Journald,
    /// syslog through /dev/log (facility authpriv).
    Syslog,
    /// Standard error of the PAM application, for debugging with pamtester.
    Stderr,
}

impl LogTarget {
    /// The name used in `log=` and on the helper's command line.
    pub fn name(self) -> &'static str {
        match self {
            LogTarget::Auto => "auto",
            LogTarget::Journald => "journald",
            LogTarget::Syslog => "syslog",
            LogTarget::Stderr => "stderr",
        }
    }

    /// The target called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            LogTarget::Auto,
            LogTarget::Journald,
            LogTarget::Syslog,
            LogTarget::Stderr,
        ]
        .into_iter()
        .find(|target| target.name() == name)
    }
}

/// The syslog identifier / journald SYSLOG_IDENTIFIER.
pub const IDENTIFIER: &str = "pam_tessera";

const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";
const SYSLOG_SOCKET: &str = "/dev/log";
const FACILITY_AUTHPRIV: u8 = 10;

fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// One syslog record, sent as a datagram to /dev/log when dropped. Records are
/// dropped silently when no syslog daemon listens: logging must never fail a login.
struct SyslogRecord {
    severity: u8,
    buffer: Vec<u8>,
}

impl Write for SyslogRecord {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogRecord {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buffer);
        send_syslog(self.severity, text.trim());
    }
}

/// An RFC 3164 record for /dev/log; the receiver adds the timestamp.
fn syslog_datagram(severity: u8, message: &str, pid: u32) -> String {
    let priority = FACILITY_AUTHPRIV * 8 + severity;
    format!("<{priority}>{IDENTIFIER}[{pid}]: {message}")
}

fn send_syslog(severity: u8, message: &str) {
    let datagram = syslog_datagram(severity, message, std::process::id());
    if let Ok(socket) = UnixDatagram::unbound() {
        let _ = socket.send_to(datagram.as_bytes(), SYSLOG_SOCKET);
    }
}

struct SyslogWriter;

impl<'a> MakeWriter<'a> for SyslogWriter {
    type Writer = SyslogRecord;

    fn make_writer(&'a self) -> Self::Writer {
        SyslogRecord {
            severity: 6,
            buffer: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        SyslogRecord {
            severity: severity(meta.level()),
            buffer: Vec::new(),
        }
    }
}

/// Records as text, for syslog and stderr: `LEVEL message field=value...`,
/// so a record's stable ID reads `id="pam.helper.failed"`.
fn text_layer<S>() -> tracing_subscriber::fmt::Layer<S, DefaultFields, Format<Full, ()>>
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .without_time()
        .with_target(false)
}

/// Runs `body` with the module's logger installed for the current thread.
pub fn with_logger<T>(debug: bool, target: LogTarget, body: impl FnOnce() -> T) -> T {
    let level = if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    };
    let target = match target {
        LogTarget::Auto if Path::new(JOURNALD_SOCKET).exists() => LogTarget::Journald,
        LogTarget::Auto => LogTarget::Syslog,
        other => other,
    };
    let layer: Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync> = match target {
        LogTarget::Journald => match tracing_journald::layer() {
            Ok(journald) => journald
                .with_syslog_identifier(IDENTIFIER.to_owned())
                .with_filter(level)
                .boxed(),
            Err(_) => text_layer()
                .with_writer(SyslogWriter)
                .with_filter(level)
                .boxed(),
        },
        LogTarget::Stderr => text_layer()
            .with_writer(io::stderr)
            .map_event_format(|format| format.with_target(false))
            .with_filter(level)
            .boxed(),
        LogTarget::Syslog | LogTarget::Auto => text_layer()
            .with_writer(SyslogWriter)
            .with_filter(level)
            .boxed(),
    };
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, body)
}

/// Logs an error when no logger is set up (bad arguments, a panic):
/// straight to syslog, never stderr, with its stable `id` written as the
/// logger writes it.
pub fn emergency(id: &str, message: &str) {
    send_syslog(3, &format!("{message} id=\"{id}\""));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_targets_round_trip_by_name() {
        for target in [
            LogTarget::Auto,
            LogTarget::Journald,
            LogTarget::Syslog,
            LogTarget::Stderr,
        ] {
            assert_eq!(LogTarget::from_name(target.name()), Some(target));
        }
        assert_eq!(LogTarget::from_name("file"), None);
    }

    #[test]
    fn syslog_records_use_authpriv_and_the_pam_tessera_identifier() {
        assert_eq!(
            syslog_datagram(severity(&Level::WARN), "certificate rejected", 42),
            "<84>pam_tessera[42]: certificate rejected"
        );
        assert_eq!(severity(&Level::ERROR), 3);
        assert_eq!(severity(&Level::DEBUG), 7);
    }

    #[test]
    fn a_record_carries_its_stable_id_after_the_message() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }

        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::registry().with(text_layer().with_writer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(id = "pam.test.event", service = "login", "token skipped");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text.trim(),
            r#"WARN token skipped id="pam.test.event" service="login""#
        );
    }
}
