//! The call log: one line per PKCS#11 call, `FUNCTION N RV [NOTE...]`, where
//! N counts the calls of that function from 1. Tests read it to learn which
//! functions the flow called, in what order, and which faults fired.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use cryptoki_sys::CK_RV;

use crate::rv;

/// Call counters and the optional log file.
#[derive(Debug)]
pub struct CallLog {
    file: Mutex<Option<File>>,
    counts: Mutex<HashMap<&'static str, u64>>,
}

impl CallLog {
    /// Opens (appends to) the log at `path`; without a path only counts.
    pub fn open(path: Option<&Path>) -> Result<Self, String> {
        let file = path
            .map(|path| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| format!("cannot open call log {}: {error}", path.display()))
            })
            .transpose()?;
        Ok(Self {
            file: Mutex::new(file),
            counts: Mutex::default(),
        })
    }

    /// Counts a call of `function`; returns its number, from 1.
    pub fn count(&self, function: &'static str) -> u64 {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(function).or_default();
        *count += 1;
        *count
    }

    /// Appends the line for a finished call.
    pub fn record(&self, function: &str, call: u64, rv: CK_RV, notes: &[String]) {
        self.write_line(&format!("{function} {call} {}", rv::name(rv)), notes);
    }

    /// Appends the line for a call that will never return (`fault` is
    /// `hang` or `abort`): `FUNCTION N - fault=FAULT injected`.
    pub fn record_unfinished(&self, function: &str, call: u64, fault: &str) {
        self.write_line(
            &format!("{function} {call} -"),
            &[format!("fault={fault}"), "injected".to_owned()],
        );
    }

    fn write_line(&self, start: &str, notes: &[String]) {
        let mut line = start.to_owned();
        for note in notes {
            line.push(' ');
            line.push_str(note);
        }
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = file.as_mut() {
            // One write per line, so lines from several threads never interleave.
            if let Err(error) = file.write_all(line.as_bytes()) {
                eprintln!("tessera-p11fault: cannot write the call log: {error}");
            }
        }
    }
}

/// The process's peak resident memory (VmHWM) in KiB, so tests can bound
/// what a hostile token made the caller allocate.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cryptoki_sys::{CKR_DEVICE_ERROR, CKR_OK};

    #[test]
    fn lines_name_the_function_its_call_number_the_code_and_notes() {
        let dir = std::env::temp_dir().join(format!("p11fault-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("calls.log");
        let log = CallLog::open(Some(&path)).unwrap();
        assert_eq!(log.count("C_Sign"), 1);
        log.record("C_Sign", 1, CKR_OK, &[]);
        assert_eq!(log.count("C_Sign"), 2);
        assert_eq!(log.count("C_Login"), 1);
        log.record("C_Sign", 2, CKR_DEVICE_ERROR, &["injected".to_owned()]);
        log.record_unfinished("C_Login", 1, "hang");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            text,
            "C_Sign 1 CKR_OK\nC_Sign 2 CKR_DEVICE_ERROR injected\nC_Login 1 - fault=hang injected\n"
        );
    }

    #[test]
    fn peak_memory_is_read_from_proc() {
        assert!(peak_rss_kb().is_some_and(|kb| kb > 0));
    }
}
